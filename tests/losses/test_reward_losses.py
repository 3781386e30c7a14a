"""Bradley–Terry loss and reward centering, against values computed by hand."""

import math

import pytest
import torch

from lit_rlhf.losses import LLAMA2_MARGINS, bradley_terry_loss, reward_centering_penalty


def test_hard_label_is_minus_log_sigmoid_of_difference():
    # r_c - r_r = 2 - 1 = 1  ->  -log σ(1) = log(1 + e^-1) = 0.31326
    # r_c - r_r = 0          ->  log 2 = 0.69315
    # r_c - r_r = -3         ->  log(1 + e^3) = 3.04859
    loss = bradley_terry_loss(torch.tensor([2.0, 0.5, 0.0]), torch.tensor([1.0, 0.5, 3.0]))
    assert torch.allclose(loss, torch.tensor([0.31326, 0.69315, 3.04859]), atol=1e-5)


def test_margin_is_subtracted_inside_the_sigmoid():
    # Δ = 2 - 1 - 1 = 0 -> log 2 ; Δ = 1 - 0 - 0.5 = 0.5 -> log(1 + e^-0.5) = 0.47408
    loss = bradley_terry_loss(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 0.0]), margin=torch.tensor([1.0, 0.5]))
    assert torch.allclose(loss, torch.tensor([math.log(2), 0.47408]), atol=1e-5)


def test_nan_margin_and_soft_label_mean_none():
    c, r = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    plain = bradley_terry_loss(c, r)
    assert torch.allclose(bradley_terry_loss(c, r, margin=torch.tensor([float("nan")] * 2)), plain)
    assert torch.allclose(bradley_terry_loss(c, r, soft_label=torch.tensor([float("nan")] * 2)), plain)


def test_soft_label_mixes_both_directions():
    # Δ = 1, p = 0.9: 0.9·log(1+e^-1) + 0.1·log(1+e^1) = 0.9·0.31326 + 0.1·1.31326 = 0.41326
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), soft_label=torch.tensor([0.9]))
    assert torch.allclose(loss, torch.tensor([0.41326]), atol=1e-5)
    # p = 0.5 makes the loss symmetric in the order of the pair
    a = bradley_terry_loss(torch.tensor([1.3]), torch.tensor([0.2]), soft_label=0.5)
    b = bradley_terry_loss(torch.tensor([0.2]), torch.tensor([1.3]), soft_label=0.5)
    assert torch.allclose(a, b)
    # p = 0 is the flipped pair
    flipped = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([1.0]))
    assert torch.allclose(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), soft_label=0.0), flipped)


def test_soft_label_minimum_is_at_the_logit_of_p():
    delta = torch.linspace(-4, 4, 8001, requires_grad=False)
    loss = bradley_terry_loss(delta, torch.zeros_like(delta), soft_label=0.8)
    assert delta[loss.argmin()].item() == pytest.approx(math.log(0.8 / 0.2), abs=2e-3)


def test_gradient_of_hard_label():
    c = torch.tensor([0.7], requires_grad=True)
    r = torch.tensor([0.2], requires_grad=True)
    bradley_terry_loss(c, r).sum().backward()
    # d/dc softplus(-(c - r)) = -σ(-(c - r)) = -σ(-0.5) = -0.37754
    assert c.grad.item() == pytest.approx(-0.37754, abs=1e-5)
    assert r.grad.item() == pytest.approx(0.37754, abs=1e-5)


def test_centering_penalty():
    out = reward_centering_penalty(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
    assert torch.allclose(out, torch.tensor([2.25, 0.0]))


def test_llama2_margin_tables():
    assert LLAMA2_MARGINS["small"]["better"] == pytest.approx(2 / 3)
    assert LLAMA2_MARGINS["large"]["significantly better"] == 3.0
    assert LLAMA2_MARGINS["small"]["negligibly better / unsure"] == 0.0


def test_soft_label_one_and_zero_margin_reduce_to_plain_bradley_terry():
    c, r = torch.randn(16), torch.randn(16)
    plain = -torch.nn.functional.logsigmoid(c - r)
    assert torch.allclose(bradley_terry_loss(c, r), plain, atol=1e-6)
    assert torch.allclose(bradley_terry_loss(c, r, margin=torch.zeros(16), soft_label=torch.ones(16)), plain, atol=1e-6)
    assert torch.allclose(bradley_terry_loss(c, r, soft_label=1.0), plain, atol=1e-6)
