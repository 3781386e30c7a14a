"""Soft-target cross-entropy by hand."""

import math

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
