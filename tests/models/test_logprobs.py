"""Log-prob helpers: token log-probs, completion sums with the causal shift, last-token indexing."""

from __future__ import annotations

import math

import pytest
import torch

from lit_rlhf.models import completion_logps, gather_last, last_token_index, token_logps


def test_token_logps_matches_log_softmax_gather():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 3
    targets = torch.randint(0, 11, (3, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    got = token_logps(logits, targets)
    assert got.shape == (3, 5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_token_logps_upcasts_half_precision_and_clamps_negative_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7).to(torch.bfloat16)
    targets = torch.tensor([[1, -100, 3, 0], [6, 5, -100, 2]])
    got = token_logps(logits, targets)
    assert got.dtype == torch.float32
    expected = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got, expected)
    assert torch.isfinite(got).all()


def test_token_logps_hand_computed():
    # logits [0, ln 2, ln 5] -> softmax [1/8, 2/8, 5/8]
    logits = torch.tensor([[[0.0, math.log(2), math.log(5)]]])
    for tgt, p in [(0, 1 / 8), (1, 2 / 8), (2, 5 / 8)]:
        assert token_logps(logits, torch.tensor([[tgt]])).item() == pytest.approx(math.log(p), abs=1e-6)


def test_completion_logps_hand_computed_three_token_vocab():
    # One sequence, vocab {0, 1, 2}. input_ids = [0, 1, 2, 1]; completion = positions 2 and 3.
    # Logits at position t predict token t+1:
    #   t=0: [0, 0, 0]        -> predicts ids[1]=1 (prompt, no loss)
    #   t=1: [ln 1, ln 1, ln 2] -> p = [1/4, 1/4, 2/4];  ids[2] = 2 -> log(1/2)
    #   t=2: [ln 3, ln 1, 0]  -> p = [3/5, 1/5, 1/5];    ids[3] = 1 -> log(1/5)
    #   t=3: anything (no next token)
    logits = torch.tensor([[
        [0.0, 0.0, 0.0],
        [0.0, 0.0, math.log(2)],
        [math.log(3), 0.0, 0.0],
        [9.0, -9.0, 4.0],
    ]])
    input_ids = torch.tensor([[0, 1, 2, 1]])
    completion_mask = torch.tensor([[0, 0, 1, 1]])
    total, count = completion_logps(logits, input_ids, completion_mask)
    assert total.shape == count.shape == (1,)
    assert total.item() == pytest.approx(math.log(1 / 2) + math.log(1 / 5), abs=1e-6)  # = -2.302585
    assert total.item() == pytest.approx(-math.log(10), abs=1e-6)
    assert count.item() == 2.0

    # only the last token: log(1/5)
    total, count = completion_logps(logits, input_ids, torch.tensor([[0, 0, 0, 1]]))
    assert total.item() == pytest.approx(math.log(1 / 5), abs=1e-6)
    assert count.item() == 1.0

    # the prompt token at position 1 (predicted from t=0 uniform logits) would add log(1/3)
    total, count = completion_logps(logits, input_ids, torch.tensor([[0, 1, 1, 1]]))
    assert total.item() == pytest.approx(math.log(1 / 3) - math.log(10), abs=1e-6)
    assert count.item() == 3.0


def test_completion_logps_batched_rows_are_independent():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    ids = torch.randint(0, 5, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]])
    total, count = completion_logps(logits, ids, mask)
    lp = torch.log_softmax(logits, -1)
    expected0 = sum(lp[0, t - 1, ids[0, t]] for t in (2, 3, 4))
    expected1 = sum(lp[1, t - 1, ids[1, t]] for t in (1, 2))
    torch.testing.assert_close(total, torch.stack([expected0, expected1]))
    assert count.tolist() == [3.0, 2.0]


@pytest.mark.parametrize(
    "mask, expected",
    [
        ([[1, 1, 1, 0, 0]], [2]),  # right padding
        ([[0, 0, 1, 1, 1]], [4]),  # left padding
        ([[1, 1, 1, 1, 1]], [4]),  # full row
        ([[1, 0, 0, 0, 0]], [0]),  # one real token
        ([[1, 1, 0, 0, 0], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], [1, 4, 4, 2]),
    ],
)
def test_last_token_index(mask, expected):
    idx = last_token_index(torch.tensor(mask))
    assert idx.dtype == torch.long
    assert idx.tolist() == expected


def test_last_token_index_accepts_bool_mask():
    assert last_token_index(torch.tensor([[True, True, False], [False, True, True]])).tolist() == [1, 2]


def test_gather_last():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    out = gather_last(hidden, mask)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, torch.stack([hidden[0, 1], hidden[1, 3]]))
    assert out.tolist() == [[3.0, 4.0, 5.0], [21.0, 22.0, 23.0]]
    # (B, T) input -> (B,)
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]])
    assert gather_last(scores, torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])).tolist() == pytest.approx([0.3, 1.0])
