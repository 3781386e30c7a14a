"""Classification losses on soft targets, and the reading of step-classifier outputs (process supervision)."""

from __future__ import annotations

from typing import Literal, get_args

import torch


def xent_loss(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets, per example: ``L = −Σ_k q_k log softmax(z)_k``.

    Args:
        logits: ``(B, C)``.
        soft_labels: ``(B, C)`` target probabilities (one-hot for hard labels).
    Returns:
        ``(B,)``.
    """
    return -(soft_labels.float() * torch.log_softmax(logits.float(), dim=-1)).sum(-1)


def step_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Process supervision: cross-entropy of each labelled step token, averaged per sequence.

    ``L_b = −(1/|S_b|) Σ_{t ∈ S_b} log softmax(z_{b,t})_{y_{b,t}}``, ``S_b`` = positions whose label is not
    ``ignore_index`` (the last token of each supervised step, Lightman et al. 2023 §2.5).

    Args:
        logits: ``(B, T, C)`` per-token class logits.
        labels: ``(B, T)`` class ids, ``ignore_index`` where unsupervised.
    Returns:
        ``(B,)``; 0 for a sequence with no labelled step.
    """
    mask = labels != ignore_index
    logp = torch.log_softmax(logits.float(), dim=-1)
    token = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return token.sum(-1) / mask.sum(-1).clamp(min=1)


def correct_probability(logits: torch.Tensor, neutral_is_correct: bool = True) -> torch.Tensor:
    """``P(step correct)`` from step-class logits ``(..., C)`` → ``(...)``.

    2 classes (0 wrong, 1 correct): ``p_1``. 3 classes (0 negative, 1 neutral, 2 positive): ``p_2``, plus
    ``p_1`` when a neutral step counts as correct (the paper's default).
    """
    probs = logits.float().softmax(-1)
    if probs.shape[-1] == 2:
        return probs[..., 1]
    if probs.shape[-1] == 3:
        return probs[..., 2] + (probs[..., 1] if neutral_is_correct else 0.0)
    raise ValueError(f"step logits need 2 or 3 classes, got {probs.shape[-1]}")


def first_wrong_step(step_probs: torch.Tensor, step_mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Index of the first step with ``P(correct) < threshold``; ``-1`` when none is. Shapes ``(B, S)`` → ``(B,)``."""
    wrong = step_mask.bool() & (step_probs < threshold)
    return torch.where(wrong.any(-1), wrong.long().argmax(-1), -1)


def confidence_weight(
    step_frac: float, aux_coef: float = 0.5, warmup_frac: float = 0.1, schedule: str = "repo"
) -> float:
    """Weight ``α`` of the hardened strong predictions in :func:`logconf_loss`.

    * ``repo`` (openai/weak-to-strong ``loss.py``): ``α = aux_coef · step_frac`` while
      ``step_frac ≤ warmup_frac``, then ``α = aux_coef`` (a jump, not a ramp).
    * ``linear`` (paper): ``α = aux_coef · min(1, step_frac / warmup_frac)``.

    Args:
        step_frac: fraction of training done, in ``[0, 1]``.
    """
    if schedule == "repo":
        return (1.0 if step_frac > warmup_frac else step_frac) * aux_coef
    if schedule == "linear":
        return aux_coef * (1.0 if warmup_frac <= 0 else min(1.0, step_frac / warmup_frac))
    raise ValueError(f"unknown confidence schedule {schedule!r}; expected 'repo' or 'linear'")


def hardened_predictions(probs: torch.Tensor, soft_labels: torch.Tensor, threshold: str = "weak_prior") -> torch.Tensor:
    """One-hot strong predictions ``f̂_t(x)`` thresholded over the batch, ``(B, 2)``.

    ``t = quantile_b(p_0, q)`` and class 0 is predicted where ``p_0 ≥ t``. With ``weak_prior``
    ``q = mean_b(y_1)`` (the weak labels' share of class 1), so the hardened labels reproduce the weak
    labels' class balance (reference code); with ``median`` ``q = 0.5`` (paper, balanced datasets).

    Args:
        probs: ``(B, 2)`` strong class probabilities.
        soft_labels: ``(B, 2)`` weak labels.
    """
    if probs.shape[-1] != 2:
        raise ValueError(f"the confidence threshold is defined for 2 classes, got logits with {probs.shape[-1]}")
    if threshold == "weak_prior":
        q = soft_labels[:, 1].float().mean().clamp(0.0, 1.0)
    elif threshold == "median":
        q = torch.tensor(0.5)
    else:
        raise ValueError(f"unknown threshold rule {threshold!r}; expected 'weak_prior' or 'median'")
    p0 = probs[:, 0].detach().float()
    t = torch.quantile(p0, q.to(p0))
    class0 = (p0 >= t).float()
    return torch.stack([class0, 1.0 - class0], dim=-1)


def logconf_loss(
    logits: torch.Tensor,
    soft_labels: torch.Tensor,
    step_frac: float,
    aux_coef: float = 0.5,
    warmup_frac: float = 0.1,
    schedule: str = "repo",
    threshold: str = "weak_prior",
) -> torch.Tensor:
    """Auxiliary confidence loss (Burns et al. 2023, Eq. 1), per example.

    ``L = CE(z, (1 − α)·y_w + α·f̂_t)`` with ``α`` from :func:`confidence_weight` and the detached hardened
    predictions ``f̂_t`` of :func:`hardened_predictions`. The threshold is a quantile over the *batch given*:
    pass the whole optimisation batch (the module stacks micro-batch logits to do so).

    Args:
        logits: ``(B, 2)`` strong logits.
        soft_labels: ``(B, 2)`` weak labels (probabilities).
        step_frac: fraction of training done, in ``[0, 1]``.
        aux_coef: ``α_max`` (paper: 0.5, 0.75 for the largest students).
        warmup_frac: warm-up fraction of training (reference 0.1; paper 0.2 with ``linear``).
        schedule: ``repo`` or ``linear`` (see :func:`confidence_weight`).
        threshold: ``weak_prior`` or ``median`` (see :func:`hardened_predictions`).
    Returns:
        ``(B,)``.
    """
    coef = confidence_weight(step_frac, aux_coef, warmup_frac, schedule)
    hard = hardened_predictions(torch.softmax(logits.detach().float(), -1), soft_labels, threshold)
    return xent_loss(logits, (1.0 - coef) * soft_labels.float() + coef * hard)


def product_loss(
    logits: torch.Tensor, soft_labels: torch.Tensor, alpha: float = 1.0, beta: float = 1.0
) -> torch.Tensor:
    """Product loss (openai/weak-to-strong ``loss.py``): CE against the renormalised product of beliefs.

    ``target ∝ p^β ⊙ y_w^α`` (detached), ``L = CE(z, target)``, ``p = softmax(z)``; computed in log space.

    Args:
        logits: ``(B, C)``.
        soft_labels: ``(B, C)`` weak labels.
    Returns:
        ``(B,)``.
    """
    log_target = beta * torch.log_softmax(logits.detach().float(), -1)
    if alpha != 0:
        log_target = log_target + alpha * torch.log(soft_labels.float())
    if torch.isneginf(log_target).all(-1).any():
        raise ValueError("product_loss: a row's weak label gives every class probability 0")
    return xent_loss(logits, torch.softmax(log_target, -1))


W2SLoss = Literal["xent", "logconf", "product"]
W2S_LOSSES: tuple[str, ...] = get_args(W2SLoss)


def weak_to_strong_loss(
    name: W2SLoss,
    logits: torch.Tensor,
    soft_labels: torch.Tensor,
    step_frac: float = 0.0,
    aux_coef: float = 0.5,
    warmup_frac: float = 0.1,
    schedule: str = "repo",
    threshold: str = "weak_prior",
    alpha: float = 1.0,
    beta: float = 1.0,
) -> torch.Tensor:
    """The weak-to-strong loss ``name`` ∈ :data:`W2S_LOSSES` with its options, per example ``(B,)``."""
    if name == "xent":
        return xent_loss(logits, soft_labels)
    if name == "logconf":
        return logconf_loss(logits, soft_labels, step_frac, aux_coef, warmup_frac, schedule, threshold)
    if name == "product":
        return product_loss(logits, soft_labels, alpha, beta)
    raise ValueError(f"unknown weak-to-strong loss {name!r}; expected one of {W2S_LOSSES}")
