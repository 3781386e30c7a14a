"""KL coefficient controllers and running reward statistics (both checkpointable)."""

from __future__ import annotations

import math
from typing import Any

import torch


class FixedKLController:
    """Constant KL coefficient β (TRL, "N+ implementation details")."""

    def __init__(self, beta: float) -> None:
        if beta < 0:
            raise ValueError(f"the KL coefficient must be >= 0, got {beta}")
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Adaptive β (Ziegler et al. 2019, §2.2): ``e = clip(KL / target − 1, ±0.2)``, ``β ← β (1 + e n / horizon)``.

    Args:
        init_beta: starting β.
        target: target KL in nats per sequence.
        horizon: episodes over which β may change by a factor ``e``.
    """

    def __init__(self, init_beta: float, target: float, horizon: int) -> None:
        super().__init__(init_beta)
        if target <= 0 or horizon <= 0:
            raise ValueError(f"need target > 0 and horizon > 0, got {target}, {horizon}")
        self.target, self.horizon = float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update β from the KL of the last batch of ``n_steps`` episodes; returns the new β."""
        if not math.isfinite(current_kl):
            raise FloatingPointError(f"non-finite KL {current_kl} passed to the KL controller")
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def kl_controller(beta: float, target: float | None = None, horizon: int = 10000) -> FixedKLController:
    """Adaptive controller if ``target`` is given, else a fixed one."""
    return FixedKLController(beta) if target is None else AdaptiveKLController(beta, target, horizon)


class RunningMoments:
    """Running mean/std over every value seen (Chan et al. parallel update), for reward normalisation
    (Secrets of RLHF I, Eq. 18: ``r̃ = clip((r − μ_hist) / σ_hist, ±δ)``)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        batch_mean, batch_var = x.mean().item(), x.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var, self.count = m2 / total, total

    def normalize(
        self, x: torch.Tensor, shift_mean: bool = True, clip: float | None = None, eps: float = 1e-8
    ) -> torch.Tensor:
        """``(x − μ) / σ`` (or ``x / σ``) with the current statistics, optionally clipped to ``±clip``."""
        out = ((x - self.mean) if shift_mean else x) / (self.std + eps)
        return out.clamp(-clip, clip) if clip is not None else out

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
