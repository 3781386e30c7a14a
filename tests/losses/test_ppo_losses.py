"""PPO losses by hand: GAE limits, whitening, clipped policy/value losses, KL estimators."""

from __future__ import annotations

import math

import pytest
import torch

from lit_rlhf.losses import gae, kl_penalty, ppo_policy_loss, ppo_value_loss, whiten

REWARDS = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 3.0, 0.0, 0.0]])
VALUES = torch.tensor([[0.2, 0.4, -0.3, 9.0], [1.5, -0.5, 7.0, 7.0]])  # 9, 7: padding, must be ignored


def assert_close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-5, atol=1e-6)


MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_gae_lambda1_gamma1_is_monte_carlo_return_minus_value():
    adv, ret = gae(REWARDS, VALUES, MASK, gamma=1.0, lam=1.0)
    # row 0: returns-to-go 1.5, 1.0, 2.0; row 1: 4.0, 3.0
    assert_close(ret, [[1.5, 1.0, 2.0, 0.0], [4.0, 3.0, 0.0, 0.0]])
    assert_close(adv, [[1.3, 0.6, 2.3, 0.0], [2.5, 3.5, 0.0, 0.0]])


def test_gae_lambda0_is_td0():
    gamma = 0.9
    adv, ret = gae(REWARDS, VALUES, MASK, gamma=gamma, lam=0.0)
    # δ_t = r_t + γ V_{t+1} − V_t with V after the last valid token = 0
    row0 = [0.5 + gamma * 0.4 - 0.2, -1.0 + gamma * -0.3 - 0.4, 2.0 + 0.0 + 0.3, 0.0]
    row1 = [1.0 + gamma * -0.5 - 1.5, 3.0 + 0.0 + 0.5, 0.0, 0.0]
    assert_close(adv, [row0, row1])
    assert_close(ret, [[row0[0] + 0.2, row0[1] + 0.4, row0[2] - 0.3, 0.0],
                                          [row1[0] + 1.5, row1[1] - 0.5, 0.0, 0.0]])


def test_gae_general_recursion_one_row():
    r, v, m = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 1.0]]), torch.ones(1, 2)
    g, lam = 0.8, 0.5
    d1 = 2.0 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    adv, _ = gae(r, v, m, gamma=g, lam=lam)
    assert_close(adv, [[d0 + g * lam * d1, d1]])


def test_whiten_mean0_std1_on_valid_tokens_and_zero_on_pads():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 10.0, -50.0, 0.0]])
    w = whiten(x, MASK)
    valid = w[MASK.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.std().item() == pytest.approx(1.0, abs=1e-5)
    assert w[~MASK.bool()].tolist() == [0.0, 0.0, 0.0]
    # by hand: valid values 1, 2, 3, 4, 10: mean 4, unbiased var (9+4+1+0+36)/4 = 12.5
    assert w[0, 0].item() == pytest.approx((1 - 4) / math.sqrt(12.5), rel=1e-6)
    kept = whiten(x, MASK, shift_mean=False)
    assert kept[MASK.bool()].mean().item() == pytest.approx(4.0, rel=1e-6)


def test_policy_loss_by_hand():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1 against old log-prob 0
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    losses, stats = ppo_policy_loss(logp, old, adv, torch.ones(1, 3), clip_range=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5;
    # token 2: max(2.2, 2.2) = 2.2 (inside the range: not clipped)
    assert losses.tolist() == pytest.approx([(-1.2 - 0.5 + 2.2) / 3])
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    assert stats["ratio"].item() == pytest.approx((1.5 + 0.5 + 1.1) / 3)
    assert stats["approxkl"].item() == pytest.approx(0.5 * sum(math.log(r) ** 2 for r in (1.5, 0.5, 1.1)) / 3)


def test_policy_loss_gradient_is_zero_where_clipped():
    logp = torch.log(torch.tensor([[1.5, 0.9]])).requires_grad_()
    losses, _ = ppo_policy_loss(logp, torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2))
    losses.sum().backward()
    assert logp.grad[0, 0].item() == 0.0
    assert logp.grad[0, 1].item() == pytest.approx(-0.9 / 2)  # d(-A ρ)/d logπ = -A ρ, token mean over 2


def test_policy_loss_is_token_mean_over_batch_and_ignores_pads():
    logp = torch.tensor([[0.1, 0.2, 0.3], [0.4, 5.0, 5.0]])
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    losses, stats = ppo_policy_loss(logp, logp.detach(), adv, mask)
    assert losses.mean().item() == pytest.approx(-(1 + 2 + 3 + 4) / 4)
    assert stats["ratio"].item() == 1.0 and stats["clipfrac"].item() == 0.0 and stats["approxkl"].item() == 0.0


def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 0.5]])
    old = torch.tensor([[0.5, 0.0, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 2.0]])
    losses, stats = ppo_value_loss(values, old, returns, torch.ones(1, 3), clip_range=0.2)
    # token 0: V=1 (unclipped err 1), clipped V=0.7 (err 0.49) -> 1
    # token 1: V=0 (err 1), clipped 0 (err 1) -> 1 ; token 2: V=0.5 (err 2.25), clipped 0.2 (err 3.24) -> 3.24
    assert losses.tolist() == pytest.approx([0.5 * (1 + 1 + 3.24) / 3])
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    unclipped, _ = ppo_value_loss(values, old, returns, torch.ones(1, 3), clip_range=None)
    assert unclipped.tolist() == pytest.approx([0.5 * (1 + 1 + 2.25) / 3])


def test_kl_estimators():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    k1 = [0.5, -1.0]
    assert_close(kl_penalty(logp, ref, "k1"), [k1])
    assert_close(kl_penalty(logp, ref, "k2"), [[0.125, 0.5]])
    assert_close(kl_penalty(logp, ref, "k3"), [[math.exp(-k) - 1 + k for k in k1]])
    assert (kl_penalty(logp, ref, "k3") >= 0).all()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(torch.zeros(1, 2), torch.zeros(1, 2), "k4")
    with pytest.raises(ValueError, match="shape"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="differ"):
        kl_penalty(torch.zeros(1, 2), torch.zeros(1, 3))
