"""Preference-strength treatments of Secrets of RLHF II §2.4, as pure functions on preference rows.

Strength ``μ̂`` = the ensemble mean of ``r(chosen) − r(rejected)`` (``row.strength``; see
:mod:`lit_rlhf.eval.strength`). Low or negative strength marks likely mislabelled pairs.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import torch

from lit_rlhf.data.schemas import DataError, PreferenceRow


def strength_quantiles(rows: list[PreferenceRow]) -> torch.Tensor:
    """Rank of each row's strength as a quantile in ``[0, 1)`` (ties broken by position)."""
    missing = [r.where for r in rows if r.strength is None]
    if missing:
        raise DataError(missing[0], "strength", f"missing on {len(missing)} rows; run `lit-rlhf strength` first")
    order = torch.tensor([r.strength for r in rows], dtype=torch.float64).argsort(stable=True)
    quantile = torch.empty(len(rows), dtype=torch.float64)
    quantile[order] = torch.arange(len(rows), dtype=torch.float64) / len(rows)
    return quantile


def flip(row: PreferenceRow) -> PreferenceRow:
    """Swap chosen and rejected (strength and soft label follow the swap)."""
    return dataclasses.replace(
        row, chosen=row.rejected, rejected=row.chosen,
        strength=None if row.strength is None else -row.strength,
        soft_label=None if row.soft_label is None else 1.0 - row.soft_label,
        meta={**row.meta, "flipped": True},
    )


def apply_strength_treatments(
    rows: list[PreferenceRow],
    flip_fraction: float = 0.0,
    soft_label_bands: list[tuple[float, float, float]] | None = None,
) -> tuple[list[PreferenceRow], Counter]:
    """Flip the weakest pairs and/or give soft labels to strength bands.

    Args:
        rows: preference rows with ``strength``.
        flip_fraction: swap chosen/rejected of this lowest-strength fraction (paper: 0.1–0.2).
        soft_label_bands: ``(low_quantile, high_quantile, soft_label)`` triples; rows whose strength
            quantile lies in ``[low, high)`` get that target probability (e.g. ``(0.0, 0.2, 0.9)`` for
            the noisy bottom, ``(0.9, 1.0, 0.95)`` so the easiest pairs stop driving the loss to 0).
            Applied after flipping, on the original quantiles.
    Returns:
        ``(new_rows, counts)`` with counts of flipped and soft-labelled rows.
    """
    if not (flip_fraction or soft_label_bands):
        return rows, Counter()
    if not 0.0 <= flip_fraction <= 1.0:
        raise ValueError(f"flip_fraction must be in [0, 1], got {flip_fraction}")
    quantile = strength_quantiles(rows)
    out, counts = [], Counter()
    for row, q in zip(rows, quantile.tolist()):
        if q < flip_fraction:
            row = flip(row)
            counts["flipped"] += 1
        for low, high, label in soft_label_bands or []:
            if low <= q < high:
                row = dataclasses.replace(row, soft_label=float(label))
                counts[f"soft_label={label}"] += 1
        out.append(row)
    return out, counts
