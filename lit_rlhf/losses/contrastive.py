"""Contrastive losses on representations: SimCSE (InfoNCE) and SwAV (swapped prediction with Sinkhorn codes).

Used by the contrastive reward model of Secrets of RLHF II (§3.1, Eqs. 7–9): ``h1`` and ``h2`` are two views
(two dropout-perturbed forward passes) of the same ``N`` samples; row ``i`` of one view is the positive of row
``i`` of the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simcse_loss(h1: torch.Tensor, h2: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """SimCSE / InfoNCE loss over cosine similarities (Secrets of RLHF II, Eq. 9).

    ``ℓ_i = −log [ exp(sim(h1_i, h2_i)/τ) / Σ_j exp(sim(h1_i, h2_j)/τ) ]`` with ``sim`` the cosine
    similarity: the positive of row ``i`` is ``h2[i]``, the negatives are ``h2[j]``, ``j ≠ i``.

    Args:
        h1: ``(N, H)`` first view.
        h2: ``(N, H)`` second view.
        temperature: τ.
    Returns:
        ``(N,)`` losses (float32).
    """
    z1 = F.normalize(h1.float(), dim=-1)
    z2 = F.normalize(h2.float(), dim=-1)
    logits = z1 @ z2.T / temperature
    return F.cross_entropy(logits, torch.arange(len(z1), device=z1.device), reduction="none")


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Equal-partition Sinkhorn–Knopp codes as in SwAV (Caron et al. 2020, ``distributed_sinkhorn``).

    Starts from ``Q = exp(scores / ε)`` and alternately rescales prototypes (columns) to mass ``1/K`` and
    samples (rows) to mass ``1/N``; the result is multiplied by ``N`` so that every row is a distribution
    over the ``K`` prototypes (rows sum to 1 exactly) while each prototype receives about ``N/K`` of the
    total mass (exactly in the limit of many iterations). No gradient flows through the codes.

    Args:
        scores: ``(N, K)`` sample–prototype similarities.
        epsilon: ε, the entropic regularisation (smaller = sharper codes).
        iterations: Sinkhorn iterations (SwAV uses 3).
    Returns:
        ``(N, K)`` codes ``q``.
    """
    logits = scores.detach().float() / epsilon
    q = torch.exp(logits - logits.max())  # the global shift cancels in the normalisations
    q = q / q.sum()
    n, k = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=0, keepdim=True) / k
        q = q / q.sum(dim=1, keepdim=True) / n
    return q * n


def swav_loss(
    h1: torch.Tensor,
    h2: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
) -> torch.Tensor:
    """SwAV swapped-prediction loss (Secrets of RLHF II, Eqs. 7–8; Caron et al. 2020).

    Features and prototypes ``c_k`` are L2-normalised. Codes ``q_s = sinkhorn(h_s·C)`` of one view are
    predicted from the other view's ``p_t^(k) = softmax_k(h_t·c_k / τ)``, in both directions:
    ``ℓ = ℓ(h_2, q_1) + ℓ(h_1, q_2)``, ``ℓ(h_t, q_s) = −Σ_k q_s^(k) log p_t^(k)``. Gradients flow to the
    features and the prototypes through ``p``; the codes are targets (no gradient).

    Args:
        h1: ``(N, H)`` first view.
        h2: ``(N, H)`` second view.
        prototypes: ``(K, H)`` prototype vectors (a trainable parameter).
        temperature: τ of the prediction softmax.
        epsilon: ε of the Sinkhorn codes.
        sinkhorn_iterations: Sinkhorn iterations.
    Returns:
        ``(N,)`` losses (float32), symmetric in ``h1`` and ``h2``.
    """
    c = F.normalize(prototypes.float(), dim=-1)
    s1 = F.normalize(h1.float(), dim=-1) @ c.T
    s2 = F.normalize(h2.float(), dim=-1) @ c.T
    q1 = sinkhorn(s1, epsilon, sinkhorn_iterations)
    q2 = sinkhorn(s2, epsilon, sinkhorn_iterations)
    logp1 = F.log_softmax(s1 / temperature, dim=-1)
    logp2 = F.log_softmax(s2 / temperature, dim=-1)
    return -(q1 * logp2).sum(-1) - (q2 * logp1).sum(-1)
