"""On-policy preference pairs labelled by a gold reward (the DPO paper's IMDb recipe)."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from lit_rlhf.rollout.generation import SamplingConfig, generate_texts


def sample_preference_pairs(
    model: torch.nn.Module,
    tokenizer: Any,
    task: Any,
    prompts: list[str],
    prompt_ids: list[list[int]],
    samples_per_prompt: int = 4,
    sampling: SamplingConfig | None = None,
    batch_size: int = 64,
) -> list[dict[str, Any]]:
    """Sample ``K`` completions per prompt and label all ``K(K−1)/2`` pairs by the gold reward.

    Rafailov et al. 2023, App. C.1: 4 completions per IMDb prefix, all 6 pairs labelled by the
    ground-truth reward (chosen = higher reward). Pairs with equal rewards or identical texts are skipped.

    Args:
        model: causal LM to sample from (the policy DPO will start from).
        tokenizer: its tokenizer.
        task: anything with ``reward(prompts, completions) -> (N,)``.
        prompts: prompt texts (written to the rows and handed to the gold reward).
        prompt_ids: their token ids, as the model sees them.
        samples_per_prompt: K ≥ 2.
        sampling: decoding settings (default: temperature 1, 64 new tokens).
        batch_size: sequences per ``generate`` call.
    Returns:
        rows ``{prompt, chosen, rejected, gold_reward_chosen, gold_reward_rejected}``.
    """
    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be >= 2, got {samples_per_prompt}")
    if len(prompts) != len(prompt_ids):
        raise ValueError(f"{len(prompts)} prompts but {len(prompt_ids)} prompt id lists")
    sampling = sampling or SamplingConfig(temperature=1.0)
    flat_ids = [ids for ids in prompt_ids for _ in range(samples_per_prompt)]
    texts = generate_texts(model, tokenizer, flat_ids, sampling, batch_size)
    flat_prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    return label_pairs(prompts, texts, task.reward(flat_prompts, texts).tolist(), samples_per_prompt)


def label_pairs(
    prompts: list[str],
    completions: list[str],
    gold: list[float],
    samples_per_prompt: int,
    scores: list[float] | None = None,
) -> list[dict[str, Any]]:
    """All ``K(K−1)/2`` pairs of each prompt's ``K`` completions, chosen = the higher score.

    Args:
        prompts: the ``N`` prompts.
        completions: ``N·K`` completions, prompt-major (prompt ``i``'s at ``i·K … i·K + K − 1``).
        gold: their gold rewards (written to every row).
        samples_per_prompt: ``K``.
        scores: the annotator's scores that decide the label (default: ``gold``); written as ``score_chosen`` /
            ``score_rejected`` when given.
    Returns:
        rows ``{prompt, chosen, rejected, gold_reward_chosen, gold_reward_rejected}``; pairs whose label scores
        tie, identical texts and empty completions are skipped.
    """
    K = samples_per_prompt
    labels = gold if scores is None else scores
    rows = []
    for i, prompt in enumerate(prompts):
        group = list(zip(completions[i * K:(i + 1) * K], labels[i * K:(i + 1) * K], gold[i * K:(i + 1) * K]))
        for (a, sa, ga), (b, sb, gb) in itertools.combinations(group, 2):
            if sa == sb or a == b or not a.strip() or not b.strip():
                continue
            (chosen, sc, gc), (rejected, sr, gr) = ((a, sa, ga), (b, sb, gb)) if sa > sb else ((b, sb, gb), (a, sa, ga))
            row = {"prompt": prompt, "chosen": chosen, "rejected": rejected,
                   "gold_reward_chosen": gc, "gold_reward_rejected": gr}
            if scores is not None:
                row.update(score_chosen=sc, score_rejected=sr)
            rows.append(row)
    return rows
