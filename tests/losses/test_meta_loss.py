"""MetaRM difference loss J (Secrets of RLHF II, Eq. 10) against values computed by hand."""

import math

import pytest
import torch

from lit_rlhf.losses.meta import meta_difference_loss


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_two_responses_by_hand():
    # K = 2, r = [0, 1]: (2/4) σ(1) = 0.5 · 0.7310586 = 0.3655293; r = [2, 2]: (2/4) σ(0) = 0.25
    j = meta_difference_loss(torch.tensor([[0.0, 1.0], [2.0, 2.0]]))
    assert j.shape == (2,)
    assert torch.allclose(j, torch.tensor([0.3655293, 0.25]), atol=1e-6)


def test_three_responses_by_hand():
    # K = 3, r = [0, 1, 3]: pairs |0-1| = 1, |0-3| = 3, |1-3| = 2
    # (2/9)(σ(1) + σ(3) + σ(2)) = (2/9)(0.7310586 + 0.9525741 + 0.8807971) = 0.5698733
    j = meta_difference_loss(torch.tensor([[0.0, 1.0, 3.0]]))
    assert j.item() == pytest.approx(0.5698733, abs=1e-6)
    assert j.item() == pytest.approx(2 / 9 * (sig(1) + sig(3) + sig(2)), abs=1e-6)


def test_order_and_sign_of_differences_do_not_matter():
    r = torch.tensor([[0.3, -1.2, 2.0, 0.7]])
    permuted = r[:, [2, 0, 3, 1]]
    assert torch.allclose(meta_difference_loss(r), meta_difference_loss(permuted))
    assert torch.allclose(meta_difference_loss(r), meta_difference_loss(-r))


def test_invariant_to_reward_shift():
    r = torch.randn(5, 4)
    assert torch.allclose(meta_difference_loss(r), meta_difference_loss(r + 7.5), atol=1e-6)


def test_increases_with_spread_between_its_bounds():
    base = torch.tensor([[0.0, 1.0, -0.5, 2.0]])
    scales = [0.0, 0.5, 1.0, 2.0, 10.0, 100.0]
    values = [meta_difference_loss(base * s).item() for s in scales]
    assert all(a < b for a, b in zip(values, values[1:])), values
    k = 4
    assert values[0] == pytest.approx((k - 1) / (2 * k))  # all ties: σ(0) = 1/2 per pair
    assert values[-1] == pytest.approx((k - 1) / k, abs=1e-6)  # fully spread: σ → 1


def test_gradient_ascent_pushes_rewards_apart():
    r = torch.tensor([[0.0, 0.5, 2.0]], requires_grad=True)
    meta_difference_loss(r).sum().backward()
    # dJ/dr_i = (2/K²) Σ_j σ'(|r_i - r_j|) sign(r_i - r_j): lowest reward pushed down, highest up
    assert r.grad[0, 0] < 0 < r.grad[0, 2]
    s1 = lambda x: sig(x) * (1 - sig(x))  # noqa: E731
    expected0 = 2 / 9 * (-s1(0.5) - s1(2.0))
    assert r.grad[0, 0].item() == pytest.approx(expected0, abs=1e-6)


def test_ties_have_zero_gradient_and_bad_shapes_are_errors():
    r = torch.zeros(2, 3, requires_grad=True)
    meta_difference_loss(r).sum().backward()
    assert torch.equal(r.grad, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="K >= 2"):
        meta_difference_loss(torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"\(G, K\)"):
        meta_difference_loss(torch.zeros(6))
