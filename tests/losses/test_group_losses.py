"""Group RL losses by hand: GRPO / Dr. GRPO / RLOO / REINFORCE++ advantages, the clipped policy-gradient loss
(clip-higher, GSPO sequence ratio, three aggregations), the k3 KL term and PPO's reward shaping."""

from __future__ import annotations

import math

import pytest
import torch

from lit_rlhf.losses import (
    entropy_from_logits,
    group_advantages,
    kl_loss,
    policy_gradient_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    shape_scores,
    token_rewards,
)


def assert_close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-5, atol=1e-6)


REWARDS = torch.tensor([1.0, 0.0, 0.0, 3.0, 3.0, 3.0])  # two groups of G = 3; the second has zero spread


def test_group_advantages_group_batch_and_none_scales():
    # group 1: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3) + 1e-4
    assert_close(group_advantages(REWARDS, 3), [2 / 3 / std, -1 / 3 / std, -1 / 3 / std, 0.0, 0.0, 0.0])
    # batch: mean 5/3, squared deviations 4/9 + 25/9 + 25/9 + 3 * 16/9 = 102/9, / 5
    bstd = math.sqrt(102 / 9 / 5) + 1e-4
    assert_close(group_advantages(REWARDS, 3, "batch"), [2 / 3 / bstd, -1 / 3 / bstd, -1 / 3 / bstd, 0, 0, 0])
    assert_close(group_advantages(REWARDS, 3, "none"), [2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0])  # Dr. GRPO


def test_group_functions_refuse_a_batch_that_is_not_whole_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(REWARDS, 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(REWARDS, 3, "median")
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(REWARDS, 1)


def test_rloo_leave_one_out_baseline():
    # r_i minus the mean of the other two: 1 - 0, 0 - 1/2, 0 - 1/2; the constant group gets 0
    assert_close(rloo_advantages(REWARDS, 3), [1.0, -0.5, -0.5, 0.0, 0.0, 0.0])
    # = k/(k-1) (r_i - mean)
    assert_close(rloo_advantages(REWARDS, 3), (1.5 * group_advantages(REWARDS, 3, "none")).tolist())


MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_reinforce_pp_kl_in_reward_returns_then_batch_normalised():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])  # 9.0 sits on padding
    adv = reinforce_pp_advantages(torch.tensor([1.0, 0.0]), MASK, kl, beta=0.5)
    # token rewards: [-.05, -.1, -.15 + 1], [-.2, -.25, pad]; returns-to-go: [.7, .75, .85], [-.45, -.25]
    returns = [0.7, 0.75, 0.85, -0.45, -0.25]
    mean = sum(returns) / 5
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 4)
    w = [(r - mean) / std for r in returns]
    assert_close(adv, [[w[0], w[1], w[2]], [w[3], w[4], 0.0]])
    # -baseline: the group mean (0.5) is subtracted from the scores first
    base = reinforce_pp_advantages(torch.tensor([1.0, 0.0]), MASK, None, group_size=2)
    # returns: 0.5 on each token of row 0, -0.5 on each of row 1: mean -0.1 / ... by hand over 5 tokens
    vals = [0.5, 0.5, 0.5, -0.5, -0.5]
    m = sum(vals) / 5
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / 4)
    assert_close(base, [[(0.5 - m) / s] * 3, [(-0.5 - m) / s] * 2 + [0.0]])


# ratios [1.5, 0.5, 1.0] (A = +1) and [1.1, 0.7, pad] (A = -2); eps_low 0.2, eps_high 0.28
RATIOS = torch.tensor([[1.5, 0.5, 1.0], [1.1, 0.7, 3.0]])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.0]])
NEW = OLD + RATIOS.log()
ADV = torch.tensor([1.0, -2.0])


@pytest.mark.parametrize("aggregation, expected", [
    # per-token losses: [-1.28 (clipped at 1.28), -0.5, -1.0] and [2.2, 1.6 (clipped at 0.8)]; sums -2.78, 3.8
    ("token_mean", [-2.78 / 2.5, 3.8 / 2.5]),  # mean over the batch = Σ / 5 tokens (DAPO)
    ("sequence_mean", [-2.78 / 3, 3.8 / 2]),  # GRPO
    ("constant", [-2.78 / 4, 3.8 / 4]),  # Dr. GRPO with L = 4
])
def test_policy_gradient_loss_clip_higher_and_aggregations(aggregation, expected):
    losses, stats = policy_gradient_loss(NEW, OLD, ADV, MASK, 0.2, 0.28, aggregation=aggregation, max_length=4)
    assert_close(losses, expected)
    assert stats["ratio"].item() == pytest.approx((1.5 + 0.5 + 1.0 + 1.1 + 0.7) / 5, rel=1e-6)
    assert stats["clip_high"].item() == pytest.approx(0.2)  # 1.5 > 1.28 with A > 0
    assert stats["clip_low"].item() == pytest.approx(0.2)  # 0.7 < 0.8 with A < 0 (0.5 has A > 0: not counted)
    assert stats["clip_region"].item() == pytest.approx(0.4)
    assert stats["clipfrac"].item() == pytest.approx(0.4)
    # token-level advantages (B, T) give the same as (B,) broadcast
    same, _ = policy_gradient_loss(NEW, OLD, ADV.unsqueeze(-1).expand(2, 3), MASK, 0.2, 0.28,
                                   aggregation=aggregation, max_length=4)
    assert_close(same, expected)


def test_symmetric_clip_is_the_default():
    losses, _ = policy_gradient_loss(NEW, OLD, ADV, MASK, 0.2, aggregation="sequence_mean")
    assert_close(losses, [(-1.2 - 0.5 - 1.0) / 3, (2.2 + 1.6) / 2])  # 1.5 now clipped at 1.2


def test_gspo_sequence_level_ratio():
    losses, stats = policy_gradient_loss(NEW, OLD, ADV, MASK, 0.1, level="sequence", aggregation="sequence_mean")
    s0, s1 = 0.75 ** (1 / 3), 0.77 ** 0.5  # geometric means of the valid ratios: 0.9086, 0.8775
    # row 0 (A = 1): clip at 0.9 is not taken (min picks the smaller ρA); row 1 (A = -2): 2 × 0.9 > 2 × 0.8775
    assert_close(losses, [-s0, 2 * 0.9])
    assert stats["ratio"].item() == pytest.approx((3 * s0 + 2 * s1) / 5, rel=1e-6)
    assert stats["clip_low"].item() == pytest.approx(0.4)  # both tokens of row 1
    # the gradient is shared by a sequence's tokens: ∂(-s0)/∂logp_t = -s0 / 3 for each of row 0's tokens
    new = NEW.clone().requires_grad_(True)
    policy_gradient_loss(new, OLD, ADV, MASK, 0.1, level="sequence", aggregation="sequence_mean")[0].sum().backward()
    assert_close(new.grad[0], [-s0 / 3] * 3)
    assert_close(new.grad[1], [0.0, 0.0, 0.0])  # clipped: no gradient


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_ratio_one_on_policy_gives_no_clipping(level):
    losses, stats = policy_gradient_loss(OLD, OLD, ADV, MASK, 0.2, 0.28, level=level, aggregation="sequence_mean")
    assert stats["ratio"].item() == 1.0 and stats["clipfrac"].item() == 0.0 and stats["clip_region"].item() == 0.0
    assert_close(losses, [-1.0, 2.0])  # -A


def test_bad_level_and_aggregation():
    with pytest.raises(ValueError, match="level"):
        policy_gradient_loss(OLD, OLD, ADV, MASK, level="step")
    with pytest.raises(ValueError, match="aggregation"):
        policy_gradient_loss(OLD, OLD, ADV, MASK, aggregation="sum")


def test_k3_kl_loss_term():
    logprobs, ref = torch.tensor([[0.0, math.log(2.0)]]), torch.zeros(1, 2)
    losses, mean_kl = kl_loss(logprobs, ref, torch.ones(1, 2), aggregation="sequence_mean")
    k3 = 0.5 - 1 + math.log(2.0)  # π_ref/π − log(π_ref/π) − 1 with π_ref/π = 1/2
    assert_close(losses, [k3 / 2])
    assert mean_kl.item() == pytest.approx(k3 / 2)


def test_token_rewards_score_on_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    r = token_rewards(torch.tensor([2.0, -1.0]), kl, MASK, beta=0.5)
    assert_close(r, [[-0.05, -0.1, -0.15 + 2.0], [-0.2, -0.25 - 1.0, 0.0]])


def test_shape_scores_eos_penalty_norm_clip():
    scores, ended = torch.tensor([2.0, 4.0]), torch.tensor([True, False])
    assert_close(shape_scores(scores, ended, 1.0), [2.0, 3.0])
    assert_close(shape_scores(scores, ended, 1.0, mean=1.0, std=0.5, eps=0.0), [2.0, 4.0])
    assert_close(shape_scores(scores, ended, 1.0, mean=1.0, std=0.5, clip=3.0, eps=0.0), [2.0, 3.0])
    assert_close(shape_scores(scores, clip=2.5), [2.0, 2.5])


def test_entropy_from_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e9, -1e9]]])
    assert_close(entropy_from_logits(logits), [[math.log(4.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]])
