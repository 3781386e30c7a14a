"""Soft-target cross-entropy and the PRM step loss, by hand."""

import math

import pytest
import torch

from lit_rlhf.losses import xent_loss


def test_xent_hand_values():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # softmax: [.5,.5], [.75,.25]
    targets = torch.tensor([[1.0, 0.0], [0.2, 0.8]])
    expected = torch.tensor([math.log(2), -(0.2 * math.log(0.75) + 0.8 * math.log(0.25))])  # 0.6931, 1.1666
    assert torch.allclose(xent_loss(logits, targets), expected, atol=1e-6)


def test_xent_with_one_hot_equals_cross_entropy():
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert torch.allclose(
        xent_loss(logits, one_hot), torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    )


def test_step_loss_hand_computed():
    from lit_rlhf.losses import step_loss

    # sequence 0: labelled tokens at t=1 (class 1) and t=2 (class 0); sequence 1: no labels
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [math.log(4.0), 0.0]],
                           [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    labels = torch.tensor([[-100, 1, 0], [-100, -100, -100]])
    # t=1: p(1) = 3/4; t=2: p(0) = 4/5
    expected = -(math.log(3 / 4) + math.log(4 / 5)) / 2
    out = step_loss(logits, labels)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(expected, rel=1e-6)
    assert out[1].item() == 0.0


def test_step_loss_three_classes_matches_cross_entropy():
    from lit_rlhf.losses import step_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(3, 5, 3), torch.randint(0, 3, (3, 5))
    labels[:, ::2] = -100
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    assert torch.allclose(step_loss(logits, labels), ce.sum(1) / (labels != -100).sum(1), atol=1e-6)


# -- weak-to-strong losses (Burns et al. 2023) ------------------------------------------------------------

def _binary_logits(p0):
    """Logits whose softmax puts ``p0`` on class 0."""
    p0 = torch.tensor(p0, dtype=torch.float64)
    return torch.stack([torch.log(p0 / (1 - p0)), torch.zeros_like(p0)], -1)


def _ce(target, p0):
    return -(target[0] * math.log(p0) + target[1] * math.log(1 - p0))


P0 = [0.9, 0.6, 0.3, 0.2]  # strong P(class 0); sorted [.2, .3, .6, .9]


def test_confidence_weight_schedules():
    from lit_rlhf.losses import confidence_weight

    # repo: aux * step_frac during warm-up, then a jump to aux
    assert confidence_weight(0.05, 0.5, 0.1, "repo") == pytest.approx(0.025)
    assert confidence_weight(0.10, 0.5, 0.1, "repo") == pytest.approx(0.05)
    assert confidence_weight(0.11, 0.5, 0.1, "repo") == 0.5
    # linear: aux * step_frac / warmup, then aux
    assert confidence_weight(0.05, 0.5, 0.1, "linear") == pytest.approx(0.25)
    assert confidence_weight(0.1, 0.75, 0.2, "linear") == pytest.approx(0.375)
    assert confidence_weight(0.9, 0.75, 0.2, "linear") == 0.75
    assert confidence_weight(0.0, 0.5, 0.0, "linear") == 0.5
    with pytest.raises(ValueError, match="schedule"):
        confidence_weight(0.5, schedule="cosine")


def test_logconf_hand_values_weak_prior_threshold():
    from lit_rlhf.losses import logconf_loss

    # weak P(class 1) mean = 0.25 -> t = quantile(p0, 0.25) = .2 + .75*(.3-.2) = .275 -> class 0 for p0 >= .275
    weak1 = [0.1, 0.2, 0.3, 0.4]
    hard = [[1, 0], [1, 0], [1, 0], [0, 1]]
    soft = torch.tensor([[1 - w, w] for w in weak1], dtype=torch.float64)
    out = logconf_loss(_binary_logits(P0), soft, step_frac=0.5, aux_coef=0.5, warmup_frac=0.1)
    expected = [_ce([0.5 * (1 - w) + 0.5 * h[0], 0.5 * w + 0.5 * h[1]], p) for w, h, p in zip(weak1, hard, P0)]
    assert out.shape == (4,)
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    # by hand, first row: target [.95, .05]
    assert out[0].item() == pytest.approx(-(0.95 * math.log(0.9) + 0.05 * math.log(0.1)), rel=1e-6)


def test_logconf_median_threshold_and_linear_schedule():
    from lit_rlhf.losses import logconf_loss

    # median of p0 = .45 -> hardened [0, 0, 1, 1] (class ids); linear schedule at step_frac .05 / warm-up .1 -> α = .25
    weak1 = [0.1, 0.2, 0.3, 0.4]
    hard = [[1, 0], [1, 0], [0, 1], [0, 1]]
    soft = torch.tensor([[1 - w, w] for w in weak1], dtype=torch.float64)
    out = logconf_loss(_binary_logits(P0), soft, 0.05, aux_coef=0.5, warmup_frac=0.1, schedule="linear",
                       threshold="median")
    a = 0.25
    expected = [_ce([(1 - a) * (1 - w) + a * h[0], (1 - a) * w + a * h[1]], p) for w, h, p in zip(weak1, hard, P0)]
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    # at step 0 both schedules give α = 0: logconf = xent
    assert torch.allclose(logconf_loss(_binary_logits(P0), soft, 0.0), xent_loss(_binary_logits(P0), soft))


def test_logconf_gradient_does_not_flow_through_hardened_targets():
    from lit_rlhf.losses import logconf_loss

    logits = _binary_logits(P0).requires_grad_()
    soft = torch.tensor([[0.5, 0.5]] * 4, dtype=torch.float64)
    logconf_loss(logits, soft, 1.0).sum().backward()
    target = 0.5 * soft + 0.5 * torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(logits.grad, torch.softmax(logits.detach(), -1) - target)  # ∂CE/∂z = p − target


def test_logconf_rejects_more_than_two_classes_and_unknown_threshold():
    from lit_rlhf.losses import logconf_loss

    with pytest.raises(ValueError, match="2 classes"):
        logconf_loss(torch.zeros(4, 3), torch.full((4, 3), 1 / 3), 0.5)
    with pytest.raises(ValueError, match="threshold"):
        logconf_loss(torch.zeros(4, 2), torch.full((4, 2), 0.5), 0.5, threshold="mean")


def test_product_hand_values():
    from lit_rlhf.losses import product_loss

    logits = torch.tensor([[math.log(3.0), 0.0]])  # p = [.75, .25]
    weak = torch.tensor([[0.2, 0.8]])  # p ⊙ y = [.15, .2] -> target [3/7, 4/7]
    expected = -(3 / 7 * math.log(0.75) + 4 / 7 * math.log(0.25))
    assert product_loss(logits, weak).item() == pytest.approx(expected, rel=1e-6)
    # beta = 0: the target is the weak label (xent); alpha = 0: the target is the prediction (entropy)
    assert torch.allclose(product_loss(logits, weak, beta=0.0), xent_loss(logits, weak))
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert product_loss(logits, weak, alpha=0.0).item() == pytest.approx(entropy)
    # alpha = 2, beta = .5: target ∝ [.75^.5 * .04, .25^.5 * .64]
    t = torch.tensor([0.75 ** 0.5 * 0.04, 0.25 ** 0.5 * 0.64])
    t = t / t.sum()
    assert product_loss(logits, weak, alpha=2.0, beta=0.5).item() == pytest.approx(
        -(t[0] * math.log(0.75) + t[1] * math.log(0.25)).item(), rel=1e-5)


def test_product_with_hard_weak_labels_is_cross_entropy_and_no_gradient_through_target():
    from lit_rlhf.losses import product_loss

    logits = torch.randn(6, 2, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    one_hot = torch.nn.functional.one_hot(labels, 2).float()
    out = product_loss(logits, one_hot)  # p ⊙ one-hot renormalised = one-hot
    assert torch.allclose(out, torch.nn.functional.cross_entropy(logits, labels, reduction="none"), atol=1e-6)
    out.sum().backward()
    assert torch.allclose(logits.grad, torch.softmax(logits.detach(), -1) - one_hot, atol=1e-6)
    with pytest.raises(ValueError, match="probability 0"):
        product_loss(torch.zeros(1, 2), torch.zeros(1, 2))
