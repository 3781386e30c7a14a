"""Rollout buffer minibatches, KL controllers, running statistics, response masks; state round trips."""

from __future__ import annotations

import pytest
import torch

from lit_rlhf.rollout import (
    AdaptiveKLController,
    FixedKLController,
    RolloutBuffer,
    RunningMoments,
    kl_controller,
    response_mask,
)


def filled_buffer(n=6):
    buf = RolloutBuffer()
    buf.add(response=torch.arange(n * 3).view(n, 3), scores=torch.arange(n).float(),
            prompts=[f"p{i}" for i in range(n)])
    return buf


def test_minibatches_cover_every_rollout_once_per_epoch():
    buf = filled_buffer(6)
    seen = {}
    for epoch, _i, mb in buf.minibatches(3, epochs=2, generator=torch.Generator().manual_seed(0)):
        assert mb["response"].shape == (2, 3)
        assert torch.equal(mb["response"][:, 0] // 3, mb["scores"].long())  # rows stay aligned across fields
        seen.setdefault(epoch, []).extend(mb["scores"].long().tolist())
    assert sorted(seen) == [0, 1]
    assert sorted(seen[0]) == sorted(seen[1]) == list(range(6))
    assert seen[0] != seen[1]  # a fresh permutation per epoch


def test_buffer_errors_and_state_round_trip():
    buf = filled_buffer(6)
    with pytest.raises(ValueError, match="equal minibatches"):
        list(buf.minibatches(4))
    with pytest.raises(ValueError, match="rows"):
        buf.add(values=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="empty"):
        list(RolloutBuffer().minibatches(1))
    other = RolloutBuffer()
    other.load_state_dict(buf.state_dict())
    assert len(other) == 6 and torch.equal(other["response"], buf["response"]) and other.texts["prompts"][5] == "p5"
    buf.clear()
    assert len(buf) == 0


def test_adaptive_controller_grows_by_the_clipped_factor():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(12.0, n_steps=64)  # KL = 2 x target: error clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    ctl.update(6.0 * 1.1, n_steps=100)  # error 0.1, inside the clip
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000) * (1 + 0.1 * 100 / 10000))
    before = ctl.value
    ctl.update(0.0, n_steps=1000)  # error -1 clipped to -0.2
    assert ctl.value == pytest.approx(before * (1 - 0.2 * 1000 / 10000))
    restored = AdaptiveKLController(1.0, target=6.0, horizon=10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_fixed_controller_and_factory():
    ctl = kl_controller(0.05)
    assert isinstance(ctl, FixedKLController) and not isinstance(ctl, AdaptiveKLController)
    assert ctl.update(100.0, 64) == 0.05
    assert isinstance(kl_controller(0.05, target=1.0, horizon=10), AdaptiveKLController)
    with pytest.raises(ValueError):
        kl_controller(-1.0)
    with pytest.raises(ValueError):
        kl_controller(0.1, target=0.0)


def test_running_moments_match_the_whole_history():
    torch.manual_seed(0)
    chunks = [torch.randn(n) * 3 + 2 for n in (5, 17, 1, 40)]
    rm = RunningMoments()
    for c in chunks:
        rm.update(c)
    everything = torch.cat(chunks).double()
    assert rm.mean == pytest.approx(everything.mean().item())
    assert rm.std == pytest.approx(everything.std(unbiased=False).item())
    assert rm.count == 63
    x = torch.tensor([100.0, rm.mean])
    out = rm.normalize(x, clip=5.0)
    assert out[0].item() == 5.0 and out[1].item() == pytest.approx(0.0, abs=1e-6)
    assert rm.normalize(x, shift_mean=False)[1].item() == pytest.approx(rm.mean / rm.std, rel=1e-5)
    other = RunningMoments()
    other.load_state_dict(rm.state_dict())
    assert other.state_dict() == rm.state_dict()


def test_response_mask_eos_pad_and_budget():
    EOS, PAD = 2, 0
    responses = torch.tensor([
        [5, 6, EOS, PAD, PAD],   # EOS at 2
        [5, 6, 7, 8, 9],         # cut by the budget
        [5, 6, PAD, PAD, PAD],   # stop string: padded while others went on
        [EOS, PAD, PAD, PAD, PAD],
    ])
    mask, ended = response_mask(responses, EOS, PAD)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5, [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, False, True, True]
    # pad == eos (many HF tokenizers): the first EOS ends the response, later ones are padding
    same = torch.tensor([[5, EOS, EOS, EOS], [5, 6, 7, 8]])
    mask, ended = response_mask(same, EOS, EOS)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ended.tolist() == [True, False]
