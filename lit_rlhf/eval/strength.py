"""Preference strength from a reward-model ensemble (Secrets of RLHF II §2.2, Eq. 4).

``d_{i,m} = r_m(x_i, y_c) − r_m(x_i, y_r)`` for M reward models trained with different seeds and data
orders; strength ``μ̂_i = mean_m d_{i,m}`` and ``σ̂_i = std_m d_{i,m}`` (population std), computed
in-sample on the training pairs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_rlhf.data.schemas import PreferenceRow
from lit_rlhf.eval.wandb import finish_wandb_runs


@torch.no_grad()
def reward_differences(module: Any, datamodule: Any, split: str = "train", batch_size: int = 64) -> torch.Tensor:
    """``r(chosen) − r(rejected)`` for every row of ``split`` in row order (NaN for filtered rows).

    Args:
        module: a trained :class:`~lit_rlhf.modules.RewardModel`.
        datamodule: the :class:`~lit_rlhf.data.PreferenceDataModule` it was trained on.
    Returns:
        ``(P,)`` float32, ``P`` = number of rows read for ``split``.
    """
    items = datamodule.dataset(split).items
    kept = datamodule.kept_rows[split]
    collate = datamodule.collator()
    out = torch.full((len(datamodule.rows[split]),), float("nan"))
    was_training = module.training
    module.eval()
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size])
        rewards = module(batch["input_ids"].to(module.device), batch["attention_mask"].to(module.device))
        chosen, rejected = rewards.float().cpu().chunk(2)
        out[kept[start:start + batch_size]] = chosen - rejected
    module.train(was_training)
    return out


def strength_statistics(differences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble mean and population std over members.

    Args:
        differences: ``(M, P)``.
    Returns:
        ``(mean (P,), std (P,))``.
    """
    return differences.mean(0), differences.std(0, correction=0)


def preference_strength(
    build: Callable[[int], tuple[L.LightningModule, L.LightningDataModule, L.Trainer]], members: int
) -> torch.Tensor:
    """Train ``members`` reward models and return their in-sample differences ``(M, P)``.

    Args:
        build: ``member -> (reward model, preference data module, trainer)``; each member should get its
            own seed (initialisation and data order).
        members: ensemble size M (the paper uses 10).
    """
    rows = []
    for member in range(members):
        module, datamodule, trainer = build(member)
        try:
            trainer.fit(module, datamodule=datamodule)
        finally:  # each member its own W&B run (and run folder)
            finish_wandb_runs(trainer)
        rows.append(reward_differences(module, datamodule, "train"))
    return torch.stack(rows)


def write_with_strength(rows: list[PreferenceRow], mean: torch.Tensor, std: torch.Tensor, path: str | Path) -> Path:
    """Write the rows as TRL-style jsonl with ``strength_mean`` / ``strength_std`` columns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row, mu, sd in zip(rows, mean.tolist(), std.tolist()):
            record = {k: v for k, v in dataclasses.asdict(row).items() if k not in ("meta", "where", "strength")}
            record = {**row.meta, **{k: v for k, v in record.items() if v is not None}}
            record.update(strength_mean=mu, strength_std=sd, source=row.where)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def plot_strength(mean: torch.Tensor, std: torch.Tensor, path: str | Path, groups: int = 20) -> Path:
    """Histogram of μ̂ and, over ``groups`` groups sorted by μ̂, the mean of μ̂ and σ̂ (paper Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    valid = ~torch.isnan(mean)
    mean, std = mean[valid], std[valid]
    order = mean.argsort()
    chunks = [c for c in order.tensor_split(min(groups, len(order))) if len(c)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.hist(mean.numpy(), bins=40, color="tab:blue")
    left.axvline(0.0, color="k", lw=0.8)
    left.set(xlabel="preference strength (ensemble mean of r(chosen) - r(rejected))", ylabel="pairs",
             title=f"{(mean < 0).float().mean():.0%} of {len(mean)} pairs below 0")
    right.plot([mean[c].mean() for c in chunks], label="mean strength", marker="o")
    right.plot([std[c].mean() for c in chunks], label="mean std", marker="s")
    right.set(xlabel=f"group ({len(chunks)} groups sorted by strength)", ylabel="reward difference")
    right.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
