"""Sampling temperature for best-of-K (Llama 2 §3.2.3, Fig. 8: the best temperature depends on K)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def expected_best_of_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Unbiased estimate of ``E[max of k draws]`` per prompt from ``n ≥ k`` samples.

    With the samples sorted ascending ``x_(1) ≤ … ≤ x_(n)``: ``Σ_i C(i−1, k−1) / C(n, k) · x_(i)``
    (the probability that ``x_(i)`` is the largest of a random k-subset).

    Args:
        scores: ``(P, n)`` rewards of ``n`` samples for each of ``P`` prompts.
        k: best-of-k.
    Returns:
        ``(P,)``.
    """
    n = scores.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"best-of-{k} needs 1 <= k <= n = {n} samples per prompt")
    weights = torch.tensor([math.comb(i, k - 1) / math.comb(n, k) for i in range(n)], dtype=torch.float64)
    return (scores.double().sort(-1).values * weights).sum(-1).float()


def pick_temperature(
    sample_scores: Callable[[float, int], torch.Tensor], temperatures: Sequence[float], k: int, n: int | None = None
) -> tuple[float, dict[float, float]]:
    """The temperature that maximises the mean expected best-of-k reward.

    Args:
        sample_scores: ``(temperature, n) -> (P, n)`` rewards of ``n`` samples per prompt at that temperature.
        temperatures: candidates.
        k: best-of-k.
        n: samples per prompt (default ``k``; more gives a lower-variance estimate).
    Returns:
        ``(best temperature, {temperature: mean expected best-of-k reward})``.
    """
    if not temperatures:
        raise ValueError("no candidate temperatures")
    table = {float(t): expected_best_of_k(sample_scores(float(t), n or k), k).mean().item() for t in temperatures}
    return max(table, key=table.get), table
