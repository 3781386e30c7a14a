"""Verifiers at inference (best-of-N, and the RL reward sources): per-step scores of a process reward model
(PRM), solution scores, and final-answer scores of an outcome reward model (ORM) — batched over many candidates.

Solution score (Lightman et al. 2023 §2.6): ``P(solution correct) = Π_i p_i`` with ``p_i`` the PRM's
probability that step ``i`` is correct (alternatives: ``min_i p_i``, or the last step's ``p``).

Candidates of one problem share its prompt: :func:`score_steps` and :func:`score_outcomes` encode it once per batch
where that is cheaper and exact (:class:`~lit_rlhf.models.ForwardLayout`), with the padded forward as the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal

import torch

from lit_rlhf.data.collate import Collator
from lit_rlhf.data.schemas import StepRow, WeakLabelRow
from lit_rlhf.data.tokenize import Encoder
from lit_rlhf.models.heads import HeadModel
from lit_rlhf.models.logprobs import ForwardLayout

Aggregate = Literal["product", "min", "last"]
AGGREGATES: tuple[str, ...] = ("product", "min", "last")


def solution_scores(
    step_probs: torch.Tensor, step_mask: torch.Tensor, aggregate: Aggregate = "product"
) -> torch.Tensor:
    """One score per solution from its step probabilities.

    Args:
        step_probs: ``(B, S)`` P(step correct), padded.
        step_mask: ``(B, S)`` bool, True on real steps (a prefix of each row).
        aggregate: ``product`` (Π p_i), ``min`` (min_i p_i) or ``last`` (p of the last step).
    Returns:
        ``(B,)``; 0 for a solution with no step (nothing to vouch for).
    """
    mask = step_mask.bool()
    has_steps = mask.any(-1)
    if aggregate == "product":
        score = torch.where(mask, step_probs.clamp(min=1e-30).log(), 0.0).sum(-1).exp()
    elif aggregate == "min":
        score = torch.where(mask, step_probs, torch.inf).amin(-1)
    elif aggregate == "last":
        last = (mask.long().sum(-1) - 1).clamp(min=0)
        score = step_probs.gather(-1, last.unsqueeze(-1)).squeeze(-1)
    else:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    return torch.where(has_steps, score, 0.0)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def group_ids(keys: Sequence[Any]) -> list[int]:
    """A group id per row, equal for rows with equal keys (numbered in order of first appearance; a key that cannot
    be hashed, e.g. a chat prompt's message list, by its ``repr``).

    A group only says which rows may share leading tokens: a prompt-once layout encodes the tokens the group's rows
    actually all start with, so any grouping gives the padded forward's outputs."""
    first: dict[Hashable, int] = {}
    return [first.setdefault(k if isinstance(k, Hashable) else repr(k), len(first)) for k in keys]


def _scoring_layout(shared_prefix: bool, layout: ForwardLayout | None) -> ForwardLayout | None:
    if not shared_prefix:
        return None
    return layout if layout is not None else ForwardLayout(padding_free=False, shared_prefix=True)


def layout_forward(scorer: Any, read: Callable[..., torch.Tensor], layout: ForwardLayout | None,
                   keys: Sequence[Any] | None, batch: dict[str, Any]) -> torch.Tensor:
    """``read(input_ids, attention_mask[, plan])`` on a collated batch, with a prompt-once plan where ``layout`` chooses
    one for the rows' ``keys`` (``scorer.model`` must be a :class:`~lit_rlhf.models.HeadModel`; else the plain
    forward)."""
    device = _device(scorer)
    input_ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    model = getattr(scorer, "model", None)
    if layout is None or keys is None or not isinstance(model, HeadModel):
        return read(input_ids, mask)
    plan = layout.head_plan(model, input_ids, mask, group_ids(keys))
    return read(input_ids, mask) if plan is None else read(input_ids, mask, plan)


@torch.no_grad()
def score_steps(
    prm: Any, prompts: list[str], steps: list[list[str]], batch_size: int = 64, max_length: int = 2048,
    shared_prefix: bool = True, layout: ForwardLayout | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """P(correct) of every step of every candidate, in one PRM forward per batch.

    The text is laid out exactly as in training (:meth:`Encoder.steps`: prompt, separator, then each
    step followed by the separator) and each step is read at its last token. Candidates of the same prompt
    (best-of-N, a GRPO group) have their common leading tokens — the prompt, its separator, and any steps they
    share — encoded once per batch where ``layout`` finds that cheaper and exact
    (:meth:`~lit_rlhf.models.ForwardLayout.head_plan`: a block-causal 4-D mask or a key/value cache); the per-token
    probabilities at the attended positions, hence the step scores, are those of the padded forward.

    Args:
        prm: a :class:`~lit_rlhf.modules.ProcessRewardModel` or :class:`~lit_rlhf.rollout.rewards.ProcessReward`
            (``tokenizer``, ``step_separator``, ``step_probs(input_ids, attention_mask[, plan])`` and a
            :class:`~lit_rlhf.models.HeadModel` ``model`` for the shared forward).
        prompts: ``B`` problem texts (rows with equal prompts form a group).
        steps: ``B`` lists of step texts.
        batch_size: candidates per forward (keep a prompt's candidates adjacent so that they meet in a batch).
        shared_prefix: encode each prompt once per batch where cheaper (``False``: the padded forward only).
        layout: the layout chooser to use; keep one per scorer across calls so that its check against the padded
            forward (on its first prompt-once batch) runs once (``None``: a new one for this call).
    Returns:
        ``(step_probs (B, S), step_mask (B, S))`` on the CPU, ``S`` = most steps of any candidate.
    """
    if len(prompts) != len(steps):
        raise ValueError(f"{len(prompts)} prompts but {len(steps)} step lists")
    encoder = Encoder(prm.tokenizer, max_length=max_length, truncation="error")
    items = [
        encoder.steps(StepRow(p, list(s), [1] * len(s), where=f"candidate {i}"), prm.step_separator, {1: 1}, "all")
        for i, (p, s) in enumerate(zip(prompts, steps))
    ]
    collate = Collator(prm.tokenizer.pad_token_id)
    layout = _scoring_layout(shared_prefix, layout)
    width = max((len(s) for s in steps), default=0)
    probs, mask = torch.zeros(len(items), width), torch.zeros(len(items), width, dtype=torch.bool)
    was_training = prm.training
    prm.eval()
    for start in range(0, len(items), batch_size):
        batch = collate([{k: it[k] for k in ("input_ids", "labels")} for it in items[start:start + batch_size]])
        token_probs = layout_forward(prm, prm.step_probs, layout, prompts[start:start + batch_size], batch)
        for row, (p, labels) in enumerate(zip(token_probs.cpu(), batch["labels"])):
            found = p[labels != -100]
            probs[start + row, : len(found)] = found
            mask[start + row, : len(found)] = True
    prm.train(was_training)
    return probs, mask


@torch.no_grad()
def score_outcomes(
    orm: Any, texts: list[str], batch_size: int = 64, max_length: int = 2048, groups: Sequence[Any] | None = None,
    shared_prefix: bool = True, layout: ForwardLayout | None = None,
) -> torch.Tensor:
    """ORM ``P(correct)`` of each full solution text (prompt + completion, as in its training rows), ``(B,)``.

    Args:
        orm: an :class:`~lit_rlhf.modules.OutcomeRewardModel` or :class:`~lit_rlhf.rollout.rewards.OutcomeReward`
            (``tokenizer``, ``score(input_ids, attention_mask[, plan])`` and a :class:`~lit_rlhf.models.HeadModel`
            ``model`` for the shared forward).
        texts: ``B`` solution texts (``task.solution_text(prompt, completion)``).
        batch_size: texts per forward.
        groups: a key per text, e.g. its prompt: texts with equal keys have the tokens they all start with encoded
            once per batch where ``layout`` finds that cheaper and exact (the scores are those of the padded forward);
            ``None``: no sharing.
        shared_prefix: ``False``: the padded forward only.
        layout: the layout chooser to reuse across calls (see :func:`score_steps`; ``None``: a new one).
    """
    if groups is not None and len(groups) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(groups)} group keys")
    encoder = Encoder(orm.tokenizer, max_length=max_length, truncation="error")
    items = [{"input_ids": encoder.weak(WeakLabelRow(t, 0, where=f"candidate {i}"), 2)["input_ids"]}
             for i, t in enumerate(texts)]
    collate = Collator(orm.tokenizer.pad_token_id)
    layout = _scoring_layout(shared_prefix, layout)
    out = []
    was_training = orm.training
    orm.eval()
    for start in range(0, len(items), batch_size):
        keys = None if groups is None else groups[start:start + batch_size]
        out.append(layout_forward(orm, orm.score, layout, keys, collate(items[start:start + batch_size])).float().cpu())
    orm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
