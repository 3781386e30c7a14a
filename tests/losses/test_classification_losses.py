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
    assert torch.allclose(xent_loss(logits, one_hot), torch.nn.functional.cross_entropy(logits, labels, reduction="none"))


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
