"""Weak-to-strong generalization metrics (Burns et al. 2023)."""

from __future__ import annotations

import math


def performance_gap_recovered(weak_acc: float, weak_to_strong_acc: float, strong_acc: float) -> float:
    """Performance gap recovered: ``PGR = (acc_w2s − acc_weak) / (acc_ceiling − acc_weak)``.

    0 = the student is no better than its supervisor, 1 = it matches the strong model trained on ground
    truth. ``nan`` when the ceiling equals the weak accuracy (no gap to recover).

    Args:
        weak_acc: gold accuracy of the weak supervisor.
        weak_to_strong_acc: gold accuracy of the strong student trained on weak labels.
        strong_acc: gold accuracy of the strong ceiling (trained on ground truth).
    """
    gap = float(strong_acc) - float(weak_acc)
    if gap == 0:
        return math.nan
    return (float(weak_to_strong_acc) - float(weak_acc)) / gap
