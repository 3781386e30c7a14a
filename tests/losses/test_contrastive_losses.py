"""SimCSE and SwAV losses (Secrets of RLHF II, Eqs. 7–9) and SwAV's Sinkhorn codes, against hand-computed values."""

import math

import pytest
import torch

from lit_rlhf.losses.contrastive import simcse_loss, sinkhorn, swav_loss

I2 = torch.eye(2)


def test_simcse_hand_computed():
    # identical orthogonal views, τ = 1: logits [[1, 0], [0, 1]] -> ℓ = log(1 + e^-1) = 0.3132617
    assert torch.allclose(simcse_loss(I2, I2, temperature=1.0), torch.tensor([0.3132617, 0.3132617]), atol=1e-6)
    # τ = 0.5: ℓ = log(1 + e^-2) = 0.1269280; scaling the vectors changes nothing (cosine)
    assert torch.allclose(simcse_loss(3 * I2, 0.5 * I2, temperature=0.5), torch.tensor([0.1269280] * 2), atol=1e-6)
    # swapped views: the positive has cosine 0, the negative 1 -> ℓ = log(1 + e) = 1.3132617
    assert torch.allclose(simcse_loss(I2, I2.flip(0), temperature=1.0), torch.tensor([1.3132617] * 2), atol=1e-6)
    # h2 = [[1, 1], [0, 1]]: row 0 has cos(pos) = 1/√2, cos(neg) = 0 -> log(1 + e^-0.7071) = 0.4008335;
    # row 1 has cos(pos) = 1, cos(neg) = 1/√2 -> log(1 + e^(0.7071 - 1)) = 0.5573858
    h2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert torch.allclose(simcse_loss(I2, h2, temperature=1.0), torch.tensor([0.4008335, 0.5573858]), atol=1e-6)


def test_simcse_default_temperature_and_gradients():
    torch.manual_seed(0)
    h1 = torch.randn(6, 8, requires_grad=True)
    h2 = (h1.detach() + 0.1 * torch.randn(6, 8)).requires_grad_()
    loss = simcse_loss(h1, h2)
    z1, z2 = torch.nn.functional.normalize(h1, dim=-1), torch.nn.functional.normalize(h2, dim=-1)
    manual = -torch.log_softmax(z1 @ z2.T / 0.05, dim=-1).diagonal()
    assert loss.shape == (6,) and torch.allclose(loss, manual, atol=1e-5)
    loss.sum().backward()
    assert h1.grad.abs().sum() > 0 and h2.grad.abs().sum() > 0


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1) @ torch.nn.functional.normalize(
        torch.randn(8, 16), dim=-1).T
    q = sinkhorn(scores, epsilon=0.05, iterations=3)
    assert q.shape == (40, 8) and not q.requires_grad and (q >= 0).all()
    assert torch.allclose(q.sum(1), torch.ones(40), atol=1e-5)  # every row is a distribution
    # prototype mass moves towards N/K = 5 (3 iterations) and reaches it when converged, whereas the
    # unconstrained assignment softmax(s/ε) is far from balanced
    unbalanced = (torch.softmax(scores / 0.05, dim=1).sum(0) - 5).abs().max()
    assert unbalanced > 3 and (q.sum(0) - 5).abs().max() < 1.5, (unbalanced, q.sum(0))
    converged = sinkhorn(scores, epsilon=0.05, iterations=200)
    assert torch.allclose(converged.sum(0), torch.full((8,), 5.0), atol=1e-3)
    assert torch.allclose(converged.sum(1), torch.ones(40), atol=1e-5)


def test_sinkhorn_hand_computed():
    # identical rows: the equal partition forces uniform codes whatever the scores
    assert torch.allclose(sinkhorn(torch.tensor([[1.0, 0.0], [1.0, 0.0]])), torch.full((2, 2), 0.5), atol=1e-6)
    # a one-to-one assignment is already balanced: q = softmax(s / ε) row-wise = [1/(1+e^-20), e^-20/(1+e^-20)]
    q = sinkhorn(I2, epsilon=0.05)
    assert torch.allclose(q, torch.tensor([[1.0, 2.0612e-9], [2.0612e-9, 1.0]]), rtol=1e-4, atol=0)
    # large scores / tiny ε stay finite
    assert torch.isfinite(sinkhorn(torch.tensor([[1.0, -1.0], [0.9, 1.0]]), epsilon=1e-3)).all()


def test_swav_hand_computed():
    # codes are ~one-hot (see above); p = softmax([1, 0]) so each direction costs log(1 + e^-1) = 0.3132617
    # (+ 2.06e-9 × 1.313 for the tiny off-code mass): both directions summed = 0.6265234
    assert torch.allclose(swav_loss(I2, I2, I2, temperature=1.0), torch.tensor([0.6265234] * 2), atol=1e-6)
    # identical rows -> uniform codes -> ℓ = −Σ_k ½ log p_k per direction; p = softmax([1, 0] / 0.5)
    h = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    logp = torch.log_softmax(torch.tensor([2.0, 0.0]), 0)
    expected = -2 * 0.5 * logp.sum()
    assert math.isclose(expected.item(), 2 + 2 * 0.1269280, rel_tol=1e-6)  # log p = [−0.127, −2.127]
    assert torch.allclose(swav_loss(h, h, I2, temperature=0.5), expected.expand(2), atol=1e-6)


def test_swav_symmetric_agreement_and_gradients():
    torch.manual_seed(0)
    h1 = torch.randn(32, 16)
    h2 = h1 + 0.1 * torch.randn(32, 16)
    prototypes = torch.randn(8, 16, requires_grad=True)
    loss = swav_loss(h1, h2, prototypes)
    assert loss.shape == (32,)
    assert torch.allclose(loss, swav_loss(h2, h1, prototypes), atol=1e-6)
    shuffled = swav_loss(h1, h2[torch.randperm(32)], prototypes)
    assert loss.mean() < shuffled.mean() - 0.5, (loss.mean(), shuffled.mean())
    a, b = h1.clone().requires_grad_(), h2.clone().requires_grad_()
    swav_loss(a, b, prototypes).sum().backward()
    for t in (a, b, prototypes):
        assert t.grad is not None and t.grad.abs().sum() > 0


@pytest.mark.parametrize("loss_fn", [simcse_loss, lambda a, b: swav_loss(a, b, torch.randn(8, 16))])
def test_agreeing_views_cost_less_than_shuffled(loss_fn):
    torch.manual_seed(1)
    h1 = torch.randn(32, 16)
    h2 = h1 + 0.05 * torch.randn(32, 16)
    assert loss_fn(h1, h2).mean() < loss_fn(h1, h2.roll(1, 0)).mean()
