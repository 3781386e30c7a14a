"""Offline preference losses on sequence log-probs: DPO and every variant TRL 1.16 names, SimPO, ORPO.

Each loss type is a small function of :class:`PairTerms` registered in :data:`PAIR_LOSSES`;
:func:`dpo_loss` picks one by name, or sums several with weights (MPO-style combinations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

DPOLossType = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm", "simpo", "orpo",
]
DPO_LOSS_TYPES: tuple[str, ...] = get_args(DPOLossType)
#: loss types that read only the policy's log-probs (no reference model needed)
REFERENCE_FREE: frozenset[str] = frozenset({"sft", "simpo", "orpo"})
#: loss types that need completion lengths (token-mean log-probs)
NEEDS_LENGTHS: frozenset[str] = frozenset({"sft", "sigmoid_norm", "simpo", "orpo"})
#: valid range [low, high) of ``label_smoothing`` ε for the loss types that read it
SMOOTHING_RANGE: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0), "robust": (0.0, 0.5), "exo_pair": (1e-12, 1.0), "aot": (0.0, 1.0),
    "aot_unpaired": (0.0, 1.0),
}


@dataclass(frozen=True)
class PairTerms:
    """Everything a pair loss may read, each ``(B,)`` float32 except the scalars.

    ``pc``/``pr``: policy log-probs of chosen / rejected (sums over completion tokens); ``rc``/``rr``: the
    reference's; ``lc``/``lr``: completion lengths (``None`` if not given); ``beta`` = β, ``eps`` = ε
    (``label_smoothing``), ``tau`` = DiscoPOP τ, ``gamma`` = SimPO γ.
    """

    pc: torch.Tensor
    pr: torch.Tensor
    rc: torch.Tensor
    rr: torch.Tensor
    lc: torch.Tensor | None
    lr: torch.Tensor | None
    beta: float
    eps: float
    tau: float
    gamma: float

    @property
    def chosen_ratio(self) -> torch.Tensor:
        """``log π(y_c) − log π_ref(y_c)``."""
        return self.pc - self.rc

    @property
    def rejected_ratio(self) -> torch.Tensor:
        return self.pr - self.rr

    @property
    def h(self) -> torch.Tensor:
        """The DPO margin ``h = [log π(y_c) − log π_ref(y_c)] − [log π(y_r) − log π_ref(y_r)]``."""
        return self.chosen_ratio - self.rejected_ratio

    def per_token(self, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """``chosen / |y_c| − rejected / |y_r|`` (lengths clamped to ≥ 1)."""
        return chosen / self.lc.clamp(min=1) - rejected / self.lr.clamp(min=1)


def _smoothed_logistic(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``−(1 − ε) log σ(x) − ε log σ(−x)``."""
    return (1 - eps) * F.softplus(-x) + eps * F.softplus(x) if eps else F.softplus(-x)


def _ipo(t: PairTerms) -> torch.Tensor:
    h = t.h if t.lc is None else t.per_token(t.chosen_ratio, t.rejected_ratio)
    return (h - 1 / (2 * t.beta)) ** 2


def _exo_pair(t: PairTerms) -> torch.Tensor:
    x = t.beta * t.h  # KL(p_θ ‖ p_label) over {chosen, rejected}, p_θ = softmax(β·ratios), p_label = (1 − ε, ε)
    return (torch.sigmoid(x) * (F.logsigmoid(x) - math.log1p(-t.eps))
            + torch.sigmoid(-x) * (F.logsigmoid(-x) - math.log(t.eps)))


def _aot(x: torch.Tensor, y: torch.Tensor, t: PairTerms) -> torch.Tensor:
    delta = torch.sort(x, dim=0).values - torch.sort(y, dim=0).values  # quantiles matched across the batch
    return _smoothed_logistic(t.beta * delta, t.eps)


def _discopop(t: PairTerms) -> torch.Tensor:
    x = t.beta * t.h
    mix = torch.sigmoid(x / t.tau)
    return F.softplus(-x) * (1 - mix) + torch.exp(-x) * mix


def _sft(t: PairTerms) -> torch.Tensor:
    # token-mean NLL of the chosen completions over the whole batch, the same value for every pair
    return (-t.pc.sum() / t.lc.sum().clamp(min=1)).expand_as(t.pc)


def _orpo(t: PairTerms) -> torch.Tensor:
    mean_c, mean_r = t.pc / t.lc.clamp(min=1), t.pr / t.lr.clamp(min=1)  # log P of the mean token
    log_odds = (mean_c - mean_r) - (torch.log1p(-torch.exp(mean_c)) - torch.log1p(-torch.exp(mean_r)))
    return t.beta * F.softplus(-log_odds)


#: name -> per-pair loss ``(B,)``; the formula of each is in :func:`dpo_loss`'s docstring
PAIR_LOSSES: dict[str, Callable[[PairTerms], torch.Tensor]] = {
    "sigmoid": lambda t: _smoothed_logistic(t.beta * t.h, t.eps),
    "hinge": lambda t: torch.relu(1 - t.beta * t.h),
    "ipo": _ipo,
    "exo_pair": _exo_pair,
    "nca_pair": lambda t: (F.softplus(-t.beta * t.chosen_ratio) + 0.5 * F.softplus(t.beta * t.chosen_ratio)
                           + 0.5 * F.softplus(t.beta * t.rejected_ratio)),
    "robust": lambda t: ((1 - t.eps) * F.softplus(-t.beta * t.h) - t.eps * F.softplus(t.beta * t.h)) / (1 - 2 * t.eps),
    "bco_pair": lambda t: F.softplus(-t.beta * t.chosen_ratio) + F.softplus(t.beta * t.rejected_ratio),
    "sppo_hard": lambda t: (t.chosen_ratio - 0.5 / t.beta) ** 2 + (t.rejected_ratio + 0.5 / t.beta) ** 2,
    "aot": lambda t: _aot(t.pc - t.pr, t.rc - t.rr, t),
    "aot_unpaired": lambda t: _aot(t.chosen_ratio, t.rejected_ratio, t),
    "apo_zero": lambda t: 1 - torch.sigmoid(t.beta * t.chosen_ratio) + torch.sigmoid(t.beta * t.rejected_ratio),
    "apo_down": lambda t: torch.sigmoid(t.beta * t.chosen_ratio) + 1 - torch.sigmoid(t.beta * t.h),
    "discopop": _discopop,
    "sft": _sft,
    "sigmoid_norm": lambda t: F.softplus(-t.beta * t.per_token(t.chosen_ratio, t.rejected_ratio)),
    "simpo": lambda t: F.softplus(-(t.beta * t.per_token(t.pc, t.pr) - t.gamma)),
    "orpo": _orpo,
}


def implicit_rewards(terms: PairTerms, loss_types: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached rewards ``(B,)``: ``β·log(π/π_ref)``, or ``β·`` mean token log-prob when every type is reference-free
    and length-normalised (SimPO, ORPO: their papers' reward)."""
    if set(loss_types) <= REFERENCE_FREE and terms.lc is not None:
        return ((terms.beta * terms.pc / terms.lc.clamp(min=1)).detach(),
                (terms.beta * terms.pr / terms.lr.clamp(min=1)).detach())
    return (terms.beta * terms.chosen_ratio).detach(), (terms.beta * terms.rejected_ratio).detach()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType | Sequence[DPOLossType] = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    loss_weights: Sequence[float] | None = None,
    discopop_tau: float = 0.05,
    simpo_gamma: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair preference loss (one type, or a weighted sum of several) and the detached implicit rewards.

    With sequence log-probs summed over completion tokens, ``Δ_c = log π(y_c) − log π_ref(y_c)``,
    ``Δ_r`` likewise, ``h = Δ_c − Δ_r``, ε = ``label_smoothing``, σ the logistic function:

    * ``sigmoid`` (DPO, Rafailov et al. 2023, Eq. 7): ``−log σ(βh)``; with ε > 0 (cDPO)
      ``−(1 − ε) log σ(βh) − ε log σ(−βh)``;
    * ``hinge`` (SLiC-HF, Zhao et al. 2023): ``max(0, 1 − βh)``;
    * ``ipo`` (Azar et al. 2023, Eq. 17): ``(h − 1/(2β))²``; when lengths are given each log-ratio is divided
      by its completion length first: ``h = Δ_c / |y_c| − Δ_r / |y_r|``;
    * ``exo_pair`` (EXO, Ji et al. 2024, Eq. 16): ``KL(p_θ ‖ (1 − ε, ε))`` with ``p_θ = (σ(βh), σ(−βh))``, ε > 0;
    * ``nca_pair`` (NCA, Chen et al. 2024): ``−log σ(βΔ_c) − ½ log σ(−βΔ_c) − ½ log σ(−βΔ_r)``;
    * ``robust`` (Chowdhury et al. 2024): ``[−(1 − ε) log σ(βh) + ε log σ(−βh)] / (1 − 2ε)``, ε ∈ [0, ½);
    * ``bco_pair`` (BCO, Jung et al. 2024, without the running reward shift): ``−log σ(βΔ_c) − log σ(−βΔ_r)``;
    * ``sppo_hard`` (SPPO, Wu et al. 2024, Eq. 4.7 with P ∈ {0, 1}): ``(Δ_c − 1/(2β))² + (Δ_r + 1/(2β))²``;
    * ``aot`` / ``aot_unpaired`` (AOT, Melnyk et al. 2024): the logistic loss (with ε) on ``β·δ``, δ the
      difference of the batch-sorted ``log π(y_c) − log π(y_r)`` and ``log π_ref(y_c) − log π_ref(y_r)``
      (paired), or of the batch-sorted Δ_c and Δ_r (unpaired); a batch-level loss;
    * ``apo_zero`` / ``apo_down`` (APO, D'Oosterlinck et al. 2024, Eqs. 7–8):
      ``1 − σ(βΔ_c) + σ(βΔ_r)`` / ``σ(βΔ_c) + 1 − σ(βh)``;
    * ``discopop`` (Chris Lu et al. 2024, Eq. 5): ``m = σ(βh/τ)``, ``(1 − m)·(−log σ(βh)) + m·exp(−βh)``;
    * ``sft``: the token-mean NLL of the chosen completions over the batch (same value on every pair);
    * ``sigmoid_norm``: ``−log σ(β(Δ_c / |y_c| − Δ_r / |y_r|))``;
    * ``simpo`` (SimPO, Meng et al. 2024, Eq. 6; reference-free):
      ``−log σ(β log π(y_c)/|y_c| − β log π(y_r)/|y_r| − γ)``;
    * ``orpo`` (ORPO, Hong et al. 2024, Eqs. 4–7; reference-free; add ``sft`` for the full ORPO objective):
      ``β·(−log σ(log odds(y_c) − log odds(y_r)))``, ``odds(y) = P/(1 − P)``, ``P = exp(log π(y)/|y|)``.

    A list of types sums ``w_k · loss_k`` per pair (weights default to 1).

    Args:
        policy_chosen_logps: ``(B,)`` log π_θ(y_c | x), summed over completion tokens.
        policy_rejected_logps: ``(B,)`` log π_θ(y_r | x).
        ref_chosen_logps: ``(B,)`` log π_ref(y_c | x) (zeros for reference-free types).
        ref_rejected_logps: ``(B,)`` log π_ref(y_r | x).
        beta: β > 0 (ORPO's λ for ``orpo``).
        loss_type: one name of :data:`DPO_LOSS_TYPES`, or a list of them.
        label_smoothing: ε, the assumed probability that a label is flipped (sigmoid, robust, exo_pair, aot).
        chosen_lengths: ``(B,)`` completion token counts of y_c (needed by sft, sigmoid_norm, simpo, orpo).
        rejected_lengths: ``(B,)`` completion token counts of y_r.
        loss_weights: one weight per loss type (default 1 each).
        discopop_tau: DiscoPOP's temperature τ.
        simpo_gamma: SimPO's target margin γ.
    Returns:
        ``(losses (B,), chosen_rewards (B,), rejected_rewards (B,))``; rewards are β·log(π/π_ref), detached
        (β · mean token log-prob for SimPO / ORPO alone).
    Raises:
        ValueError: for an unknown loss type, β ≤ 0, ε out of range or unused, mismatched shapes, missing lengths
            or a wrong number of weights.
    """
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    unknown = [t for t in types if t not in PAIR_LOSSES]
    if not types or unknown:
        raise ValueError(f"unknown DPO loss_type {unknown or types!r}; expected names from {list(DPO_LOSS_TYPES)}")
    weights = [1.0] * len(types) if loss_weights is None else list(loss_weights)
    if len(weights) != len(types):
        raise ValueError(f"{len(weights)} loss_weights for {len(types)} loss types {types}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    _check_smoothing(types, label_smoothing)
    shape = policy_chosen_logps.shape
    for name, t in (("policy_rejected_logps", policy_rejected_logps), ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps)):
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} like policy_chosen_logps")
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("give both chosen_lengths and rejected_lengths, or neither")
    if chosen_lengths is None and NEEDS_LENGTHS & set(types):
        raise ValueError(f"loss types {sorted(NEEDS_LENGTHS & set(types))} need chosen_lengths and rejected_lengths")
    terms = PairTerms(
        policy_chosen_logps.float(), policy_rejected_logps.float(),
        ref_chosen_logps.float(), ref_rejected_logps.float(),
        None if chosen_lengths is None else chosen_lengths.float(),
        None if rejected_lengths is None else rejected_lengths.float(),
        beta, label_smoothing, discopop_tau, simpo_gamma,
    )
    losses = sum(w * PAIR_LOSSES[t](terms) for t, w in zip(types, weights))
    return (losses, *implicit_rewards(terms, types))


def _check_smoothing(types: list[str], eps: float) -> None:
    readers = [t for t in types if t in SMOOTHING_RANGE]
    if eps and not readers:
        raise ValueError(f"label_smoothing={eps} is not used by loss types {types}; use one of {list(SMOOTHING_RANGE)}")
    for t in readers:
        low, high = SMOOTHING_RANGE[t]
        if not low <= eps < high:
            raise ValueError(f"label_smoothing={eps} is not valid for loss_type={t!r} (needs [{low:g}, {high:g}))")
