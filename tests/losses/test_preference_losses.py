"""SimPO, ORPO, KTO and the loss-type combination against values computed by hand with math."""

import math

import pytest
import torch

from lit_rlhf.losses import dpo_loss, kto_loss, kto_reference_point, kto_weight_bounds

PC, PR = torch.tensor([-4.0, -6.0]), torch.tensor([-7.0, -5.0])
LC, LR = torch.tensor([2.0, 3.0]), torch.tensor([7.0, 2.0])
ZERO = torch.zeros(2)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_simpo_is_length_normalised_and_reference_free():
    beta, gamma = 2.0, 1.0
    losses, chosen, rejected = dpo_loss(PC, PR, ZERO, ZERO, beta=beta, loss_type="simpo", chosen_lengths=LC,
                                        rejected_lengths=LR, simpo_gamma=gamma)
    # pair 0: β(-4/2 - -7/7) - γ = 2(-2 + 1) - 1 = -3 ; pair 1: 2(-2 + 2.5) - 1 = 0
    assert torch.allclose(losses, torch.tensor([softplus(3.0), softplus(0.0)]), atol=1e-6)
    assert torch.allclose(chosen, torch.tensor([2 * -2.0, 2 * -2.0]))  # β · mean token log-prob
    assert torch.allclose(rejected, torch.tensor([2 * -1.0, 2 * -2.5]))
    # a reference is ignored
    again, _, _ = dpo_loss(PC, PR, torch.ones(2), -torch.ones(2), beta=beta, loss_type="simpo", chosen_lengths=LC,
                           rejected_lengths=LR, simpo_gamma=gamma)
    assert torch.equal(losses, again)


def test_orpo_odds_ratio_plus_sft():
    lam = 0.1
    losses, _, _ = dpo_loss(PC, PR, ZERO, ZERO, beta=lam, loss_type=["orpo", "sft"], chosen_lengths=LC,
                            rejected_lengths=LR)
    nll = -(PC.sum() / LC.sum()).item()  # (4 + 6) / 5 = 2
    expected = []
    for pc, pr, lc, lr in zip(PC.tolist(), PR.tolist(), LC.tolist(), LR.tolist()):
        p_c, p_r = math.exp(pc / lc), math.exp(pr / lr)
        log_odds = math.log(p_c / (1 - p_c)) - math.log(p_r / (1 - p_r))
        expected.append(nll + lam * softplus(-log_odds))
    assert nll == pytest.approx(2.0)
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)


def test_weights_scale_each_term():
    a, _, _ = dpo_loss(PC, PR, ZERO, ZERO, loss_type="sigmoid")
    b, _, _ = dpo_loss(PC, PR, ZERO, ZERO, loss_type="hinge")
    both, _, _ = dpo_loss(PC, PR, ZERO, ZERO, loss_type=["sigmoid", "hinge"], loss_weights=[0.25, 2.0])
    assert torch.allclose(both, 0.25 * a + 2.0 * b)


@pytest.mark.parametrize("kwargs,match", [
    ({"loss_type": "nope"}, "unknown"),
    ({"loss_type": ["sigmoid", "hinge"], "loss_weights": [1.0]}, "loss_weights"),
    ({"loss_type": "simpo"}, "need chosen_lengths"),
    ({"loss_type": "hinge", "label_smoothing": 0.1}, "not used"),
    ({"loss_type": "exo_pair"}, "not valid"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(PC, PR, ZERO, ZERO, **kwargs)


def test_kto_by_hand():
    policy, ref = torch.tensor([-3.0, -5.0, -2.0]), torch.tensor([-4.0, -4.0, -2.5])
    desirable = torch.tensor([True, False, False])
    z0 = kto_reference_point(torch.tensor([-6.0, -4.0]), torch.tensor([-6.5, -4.3]))  # mean(0.5, 0.3) = 0.4
    assert float(z0) == pytest.approx(0.4)
    beta, lam_d, lam_u = 0.5, 1.2, 0.8
    losses, rewards = kto_loss(policy, ref, desirable, z0, beta, lam_d, lam_u)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [lam_d * (1 - sig(beta * (1.0 - 0.4))),   # desirable, r = 1
                lam_u * (1 - sig(beta * (0.4 + 1.0))),   # undesirable, r = -1
                lam_u * (1 - sig(beta * (0.4 - 0.5)))]   # undesirable, r = 0.5
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(rewards, torch.tensor([0.5, -0.5, 0.25]))


def test_kto_reference_point_clamped_and_detached():
    a = torch.tensor([-5.0], requires_grad=True)
    z0 = kto_reference_point(a, torch.tensor([-4.0]))
    assert float(z0) == 0.0 and not z0.requires_grad


def test_kto_imbalance_rule():
    ok, (low, high) = kto_weight_bounds(100, 300, 1.0, 1.0)  # 1·100 / (1·300) = 1/3: too few desirable
    assert not ok and low == pytest.approx(3.0) and high == pytest.approx(4.0)
    assert kto_weight_bounds(100, 300, 3.5, 1.0)[0]
    assert not kto_weight_bounds(100, 0, 1.0, 1.0)[0]
