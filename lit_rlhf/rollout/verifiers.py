"""Verifiers at inference (best-of-N, and the RL reward sources): per-step scores of a process reward model
(PRM), solution scores, and final-answer scores of an outcome reward model (ORM) — batched over many candidates.

Solution score (Lightman et al. 2023 §2.6): ``P(solution correct) = Π_i p_i`` with ``p_i`` the PRM's
probability that step ``i`` is correct (alternatives: ``min_i p_i``, or the last step's ``p``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_rlhf.data.collate import Collator
from lit_rlhf.data.schemas import StepRow, WeakLabelRow
from lit_rlhf.data.tokenize import Encoder

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


@torch.no_grad()
def score_steps(
    prm: Any, prompts: list[str], steps: list[list[str]], batch_size: int = 64, max_length: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """P(correct) of every step of every candidate, in one PRM forward per batch.

    The text is laid out exactly as in training (:meth:`Encoder.steps`: prompt, separator, then each
    step followed by the separator) and each step is read at its last token.

    Args:
        prm: a :class:`~lit_rlhf.modules.ProcessRewardModel` (``tokenizer``, ``step_separator``, ``step_probs``).
        prompts: ``B`` problem texts.
        steps: ``B`` lists of step texts.
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
    width = max((len(s) for s in steps), default=0)
    probs, mask = torch.zeros(len(items), width), torch.zeros(len(items), width, dtype=torch.bool)
    was_training = prm.training
    prm.eval()
    for start in range(0, len(items), batch_size):
        batch = collate([{k: it[k] for k in ("input_ids", "labels")} for it in items[start:start + batch_size]])
        token_probs = prm.step_probs(batch["input_ids"].to(_device(prm)), batch["attention_mask"].to(_device(prm)))
        for row, (p, labels) in enumerate(zip(token_probs.cpu(), batch["labels"])):
            found = p[labels != -100]
            probs[start + row, : len(found)] = found
            mask[start + row, : len(found)] = True
    prm.train(was_training)
    return probs, mask


@torch.no_grad()
def score_outcomes(orm: Any, texts: list[str], batch_size: int = 64, max_length: int = 2048) -> torch.Tensor:
    """ORM ``P(correct)`` of each full solution text (prompt + completion, as in its training rows), ``(B,)``."""
    encoder = Encoder(orm.tokenizer, max_length=max_length, truncation="error")
    items = [{"input_ids": encoder.weak(WeakLabelRow(t, 0, where=f"candidate {i}"), 2)["input_ids"]}
             for i, t in enumerate(texts)]
    collate = Collator(orm.tokenizer.pad_token_id)
    out = []
    was_training = orm.training
    orm.eval()
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size])
        device = _device(orm)
        out.append(orm.score(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu())
    orm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
