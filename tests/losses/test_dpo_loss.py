"""dpo_loss: every variant against values computed by hand with math.log / math.exp."""

import math

import pytest
import torch

from lit_rlhf.losses import bradley_terry_loss, dpo_loss

# two pairs: policy / reference sequence log-probs (sums over completion tokens)
PC, PR = torch.tensor([-4.0, -6.0]), torch.tensor([-7.0, -5.0])
RC, RR = torch.tensor([-5.0, -5.5]), torch.tensor([-6.0, -5.5])
# h = (pc - rc) - (pr - rr): pair 0: (1) - (-1) = 2 ; pair 1: (-0.5) - (0.5) = -1
H = [2.0, -1.0]


def log_sigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x))


def test_sigmoid_is_dpo():
    beta = 0.5
    losses, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=beta)
    expected = [-log_sigmoid(beta * h) for h in H]  # -log σ(1) = 0.31326, -log σ(-0.5) = 0.97408
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)
    assert expected[0] == pytest.approx(0.313262, abs=1e-6)
    assert torch.allclose(chosen, torch.tensor([0.5 * 1.0, 0.5 * -0.5]))
    assert torch.allclose(rejected, torch.tensor([0.5 * -1.0, 0.5 * 0.5]))
    assert not chosen.requires_grad


def test_cdpo_label_smoothing():
    beta, eps = 0.5, 0.2
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, label_smoothing=eps)
    expected = [-(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h) for h in H]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)


def test_label_smoothing_zero_is_dpo_and_dpo_is_bradley_terry_on_implicit_rewards():
    a, c, r = dpo_loss(PC, PR, RC, RR, beta=0.3, label_smoothing=0.0)
    b, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.3, loss_type="robust", label_smoothing=0.0)
    assert torch.allclose(a, b)
    assert torch.allclose(a, bradley_terry_loss(c, r))


def test_hinge():
    beta = 0.4
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="hinge")
    expected = [max(0.0, 1 - beta * h) for h in H]  # [0.2, 1.4]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=1.0, loss_type="hinge")
    assert losses[0].item() == 0.0  # βh = 2 > 1: no loss


def test_ipo_plain_and_length_normalised():
    beta = 0.25  # 1 / (2β) = 2
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="ipo")
    assert torch.allclose(losses, torch.tensor([(2.0 - 2) ** 2, (-1.0 - 2) ** 2]), atol=1e-6)
    lc, lr = torch.tensor([2.0, 5.0]), torch.tensor([4.0, 1.0])
    losses, chosen, _ = dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="ipo", chosen_lengths=lc, rejected_lengths=lr)
    # pair 0: 1/2 - (-1)/4 = 0.75 ; pair 1: -0.5/5 - 0.5/1 = -0.6
    assert torch.allclose(losses, torch.tensor([(0.75 - 2) ** 2, (-0.6 - 2) ** 2]), atol=1e-6)
    assert torch.allclose(chosen, torch.tensor([0.25, -0.125]))  # rewards stay unnormalised


def test_lengths_do_not_change_other_losses():
    lengths = torch.tensor([3.0, 7.0])
    a, _, _ = dpo_loss(PC, PR, RC, RR, chosen_lengths=lengths, rejected_lengths=lengths)
    assert torch.allclose(a, dpo_loss(PC, PR, RC, RR)[0])


def test_robust():
    beta, eps = 0.5, 0.1
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="robust", label_smoothing=eps)
    expected = [(-(1 - eps) * log_sigmoid(beta * h) + eps * log_sigmoid(-beta * h)) / (1 - 2 * eps) for h in H]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("sigmoid", 0.1), ("hinge", 0.0), ("ipo", 0.0),
                                           ("robust", 0.2)])
def test_gradient_raises_chosen_and_lowers_rejected(loss_type, eps):
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    losses, _, _ = dpo_loss(pc, pr, RC, RR, beta=0.1, loss_type=loss_type, label_smoothing=eps)
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"loss_type": "kto"}, "unknown DPO loss_type"),
    ({"beta": 0.0}, "beta must be > 0"),
    ({"loss_type": "robust", "label_smoothing": 0.5}, "label_smoothing"),
    ({"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing"),
    ({"chosen_lengths": torch.ones(2)}, "both chosen_lengths"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(PC, PR, RC, RR, **kwargs)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="ref_chosen_logps has shape"):
        dpo_loss(PC, PR, RC[:1], RR)
