"""SFT loss: hand-computed NLL; prompt and padding positions carry neither loss nor gradient; the reductions."""

from __future__ import annotations

import math

import pytest
import torch

from lit_rlhf.losses import NLL_REDUCTIONS, completion_nll
from lit_rlhf.losses.sft import sft_loss


def test_uniform_logits_give_log_v_per_completion_token():
    V = 4
    logits = torch.zeros(2, 6, V)
    ids = torch.tensor([[1, 2, 3, 0, 1, 0], [3, 3, 2, 1, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]])
    nll, n = sft_loss(logits, ids, mask)
    assert nll.shape == n.shape == (2,)
    assert nll.tolist() == pytest.approx([3 * math.log(4), 2 * math.log(4)], abs=1e-6)
    assert n.tolist() == [3.0, 2.0]
    token_mean = nll.sum() / n.sum()
    assert token_mean.item() == pytest.approx(math.log(4), abs=1e-6)


def test_one_confident_token():
    # V=4, sequence [0, 2, 1], completion = positions 1 and 2.
    # t=0 logits put 10 on the right token 2: nll = log(1 + 3 e^-10) (≈ 1.36e-4)
    # t=1 logits put 10 on token 3 but the target is 1: nll = 10 + log(e^0*3 + e^10) - 10 = log(3 + e^10)
    logits = torch.tensor([[[0.0, 0.0, 10.0, 0.0], [0.0, 0.0, 0.0, 10.0], [0.0, 0.0, 0.0, 0.0]]])
    ids = torch.tensor([[0, 2, 1]])
    nll, n = sft_loss(logits, ids, torch.tensor([[0, 1, 0]]))
    assert nll.item() == pytest.approx(math.log(1 + 3 * math.exp(-10)), abs=1e-6)  # float32 cancellation
    assert n.item() == 1.0
    nll, n = sft_loss(logits, ids, torch.tensor([[0, 1, 1]]))
    assert nll.item() == pytest.approx(math.log(1 + 3 * math.exp(-10)) + math.log(3 + math.exp(10)), rel=1e-5)
    assert nll.item() == pytest.approx(10.0, abs=1e-3)
    assert n.item() == 2.0


def test_no_completion_tokens_gives_zero():
    nll, n = sft_loss(torch.randn(1, 4, 5), torch.tensor([[1, 2, 3, 4]]), torch.zeros(1, 4, dtype=torch.long))
    assert nll.item() == 0.0
    assert n.item() == 0.0


def _example():
    torch.manual_seed(0)
    V = 7
    # row 0: prompt 0..2, completion 3..5, padding 6..7; row 1: prompt 0..1, completion 2..3, padding 4..7
    ids = torch.tensor([[1, 5, 6, 4, 3, 2, 0, 0], [1, 6, 3, 2, 0, 0, 0, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]])
    logits = torch.randn(2, 8, V)
    return logits, ids, mask


def test_prompt_and_padding_logits_do_not_change_the_loss():
    logits, ids, mask = _example()
    base, _ = sft_loss(logits, ids, mask)
    # logits at t predict t+1: the positions used are t = (2, 3, 4) for row 0 and t = (1, 2) for row 1
    used = torch.zeros(2, 8, dtype=torch.bool)
    used[0, [2, 3, 4]] = True
    used[1, [1, 2]] = True
    changed = logits.clone()
    changed[~used] = torch.randn(int((~used).sum()), logits.shape[-1]) * 100
    after, _ = sft_loss(changed, ids, mask)
    torch.testing.assert_close(after, base)
    # the prompt token ids (and padding ids) can change too without changing the loss...
    ids2 = ids.clone()
    ids2[0, [0, 1, 6, 7]] = torch.tensor([3, 3, 3, 3])
    ids2[1, [0, 1, 4, 5]] = torch.tensor([4, 4, 4, 4])
    torch.testing.assert_close(sft_loss(logits, ids2, mask)[0], base)
    # ...but changing a used logit row does change it
    bumped = logits.clone()
    bumped[0, 3] += torch.linspace(-5, 5, logits.shape[-1])
    assert not torch.allclose(sft_loss(bumped, ids, mask)[0][0], base[0])
    torch.testing.assert_close(sft_loss(bumped, ids, mask)[0][1], base[1])


def test_gradient_flows_only_through_completion_predicting_positions():
    logits, ids, mask = _example()
    logits.requires_grad_(True)
    nll, n = sft_loss(logits, ids, mask)
    (nll.sum() / n.sum()).backward()
    nonzero = logits.grad.abs().sum(-1) > 0
    expected = torch.zeros(2, 8, dtype=torch.bool)
    expected[0, [2, 3, 4]] = True
    expected[1, [1, 2]] = True
    assert torch.equal(nonzero, expected)
    # d(-log softmax_y)/dz = softmax - onehot(y), divided by the 5 tokens of the token-mean
    p = torch.softmax(logits.detach()[0, 2], -1)
    onehot = torch.nn.functional.one_hot(ids[0, 3], logits.shape[-1]).float()
    torch.testing.assert_close(logits.grad[0, 2], (p - onehot) / 5)


def test_completion_nll_reductions_by_hand():
    # two completions: 3 tokens with log-prob sum -6 (2 nats a token), 1 token with -1
    logps, n = torch.tensor([-6.0, -1.0]), torch.tensor([3.0, 1.0])
    assert completion_nll(logps, n, "none").tolist() == [6.0, 1.0]
    assert completion_nll(logps, n, "sum").item() == 7.0
    assert completion_nll(logps, n, "token_mean").item() == pytest.approx(7 / 4)  # every token weighs the same
    assert completion_nll(logps, n, "sequence_mean").item() == pytest.approx((2 + 1) / 2)  # every example
    assert completion_nll(logps, n).item() == pytest.approx(7 / 4)  # default: token mean (SFT, RPO)
    assert set(NLL_REDUCTIONS) == {"none", "sum", "token_mean", "sequence_mean"}


def test_completion_nll_without_tokens_is_zero_not_nan():
    logps, n = torch.zeros(2), torch.zeros(2)
    assert completion_nll(logps, n, "token_mean").item() == 0.0
    assert completion_nll(logps, n, "sequence_mean").item() == 0.0


def test_completion_nll_unknown_reduction_is_named():
    with pytest.raises(ValueError, match="unknown NLL reduction 'mean'.*token_mean"):
        completion_nll(torch.zeros(1), torch.ones(1), "mean")


def test_sft_loss_composes_with_completion_nll_and_the_models_log_probs():
    from lit_rlhf.models.logprobs import completion_logps

    logits, ids, mask = _example()
    nll, n = sft_loss(logits, ids, mask)
    logps, lengths = completion_logps(logits, ids, mask)
    torch.testing.assert_close(nll, completion_nll(logps, lengths, "none"))
    torch.testing.assert_close(n, lengths)
    torch.testing.assert_close(completion_nll(-nll, n, "token_mean"), nll.sum() / n.sum())
