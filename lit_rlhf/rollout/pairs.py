"""On-policy preference pairs labelled by a gold reward or an annotator (the DPO paper's IMDb recipe)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from lit_rlhf.rollout.generation import SamplingConfig, generate_texts
from lit_rlhf.rollout.rewards import score_completions


def sample_preference_pairs(
    model: torch.nn.Module,
    tokenizer: Any,
    task: Any,
    prompts: list[str],
    prompt_ids: list[list[int]],
    samples_per_prompt: int = 4,
    sampling: SamplingConfig | None = None,
    batch_size: int = 64,
    annotator: Callable[[list[str], list[str]], Any] | None = None,
) -> list[dict[str, Any]]:
    """Sample ``K`` completions per prompt and label all ``K(K−1)/2`` pairs by the gold reward (or an annotator).

    Rafailov et al. 2023, App. C.1: 4 completions per IMDb prefix, all 6 pairs labelled by the
    ground-truth reward (chosen = higher reward). Pairs with equal rewards or identical texts are skipped.

    Args:
        model: causal LM to sample from (the policy DPO will start from).
        tokenizer: its tokenizer.
        task: anything with ``reward(prompts, completions) -> (N,)`` (the gold reward), or ``None`` with an
            ``annotator``.
        prompts: prompt texts (written to the rows and handed to the rewards).
        prompt_ids: their token ids, as the model sees them.
        samples_per_prompt: K ≥ 2.
        sampling: decoding settings (default: temperature 1, 64 new tokens).
        batch_size: sequences per ``generate`` call.
        annotator: ``(prompts, completions) -> (N,)`` scores that decide the labels instead of the gold reward
            (a reward model, a judge function).
    Returns:
        the rows of :func:`label_pairs`.
    """
    if samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt must be >= 2, got {samples_per_prompt}")
    if len(prompts) != len(prompt_ids):
        raise ValueError(f"{len(prompts)} prompts but {len(prompt_ids)} prompt id lists")
    if task is None and annotator is None:
        raise ValueError("no reward to label the pairs by: give a task (gold reward) or an annotator")
    sampling = sampling or SamplingConfig(temperature=1.0)
    flat_ids = [ids for ids in prompt_ids for _ in range(samples_per_prompt)]
    texts = generate_texts(model, tokenizer, flat_ids, sampling, batch_size)
    flat_prompts = [p for p in prompts for _ in range(samples_per_prompt)]

    gold = None if task is None else score_completions(None, task, flat_prompts, texts).tolist()
    scores = None if annotator is None else score_completions(annotator, None, flat_prompts, texts).tolist()
    return label_pairs(prompts, texts, gold, samples_per_prompt, scores)


def label_pairs(
    prompts: list[str],
    completions: list[str],
    gold: list[float] | None,
    samples_per_prompt: int,
    scores: list[float] | None = None,
) -> list[dict[str, Any]]:
    """All ``K(K−1)/2`` pairs of each prompt's ``K`` completions, chosen = the higher score.

    Args:
        prompts: the ``N`` prompts.
        completions: ``N·K`` completions, prompt-major (prompt ``i``'s at ``i·K … i·K + K − 1``).
        gold: their gold rewards (written to every row as ``gold_reward_chosen`` / ``gold_reward_rejected``), or
            ``None`` (no gold reward: ``scores`` label the pairs).
        samples_per_prompt: ``K``.
        scores: the annotator's scores that decide the label (default: ``gold``); written as ``score_chosen`` /
            ``score_rejected`` when given.
    Returns:
        rows ``{prompt, chosen, rejected}`` with the fields above; pairs whose label scores tie, identical texts and
        empty completions are skipped.
    """
    if gold is None and scores is None:
        raise ValueError("label_pairs needs gold rewards or annotator scores")
    K = samples_per_prompt
    labels = gold if scores is None else scores
    rows = []
    for i, prompt in enumerate(prompts):
        part = slice(i * K, (i + 1) * K)
        group = list(zip(completions[part], labels[part], (gold or labels)[part]))
        for (a, sa, ga), (b, sb, gb) in itertools.combinations(group, 2):
            if sa == sb or a == b or not a.strip() or not b.strip():
                continue
            (chosen, sc, gc), (rejected, sr, gr) = ((a, sa, ga), (b, sb, gb)) if sa > sb else ((b, sb, gb), (a, sa, ga))
            row: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            if gold is not None:
                row.update(gold_reward_chosen=gc, gold_reward_rejected=gr)
            if scores is not None:
                row.update(score_chosen=sc, score_rejected=sr)
            rows.append(row)
    return rows
