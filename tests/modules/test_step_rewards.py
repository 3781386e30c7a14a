"""PRM step rewards inside the RL core: dense per-token rewards on the tokens that close the steps, for PPO (GAE)
and REINFORCE++; the group estimators get the aggregate. Hand-computed rewards and advantages, and training."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, arithmetic_prompts, tiny_prm_checkpoint
from conftest import online_trainer as trainer

from lit_rlhf.losses import whiten
from lit_rlhf.modules import GRPO, PPO
from lit_rlhf.rollout.rewards import Rewards, RewardSource

TEXTS = ["ab\ncd\n#### 1", "xy"]  # steps "ab" and "cd" close at characters 2 and 5 (the "\n" tokens)
STEPS = [[[2.0, 0.5], [5.0, -1.0]], []]


class FixedSteps(RewardSource):
    """A step source with fixed step rewards at fixed character offsets."""

    has_steps = True

    def reward(self, prompts, completions, task):
        return torch.tensor([min((v for _, v in row), default=0.0) for row in STEPS])

    def steps(self, prompts, completions, task):
        return [list(map(list, row)) for row in STEPS]


def with_fixed_steps(module):
    """Outcome: 2.0 x [the completion ends with '#### 1']; plus the fixed step rewards."""
    rewards = Rewards([{"source": "format", "pattern": "#### 1$", "weight": 2.0}])
    rewards.sources.append(FixedSteps())
    rewards.weights.append(1.0)
    rewards.names.append("steps")
    module.reward_source = rewards
    return module


def hand_samples(tok):
    responses = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in TEXTS]
    prompt = tok("1+1=", add_special_tokens=False)["input_ids"]
    return {"prompt_ids": [prompt, prompt], "responses": responses, "ended": torch.tensor([True, True]),
            "prompts": ["1+1=", "1+1="], "completions": list(TEXTS)}


# token rewards by hand: row 0 (13 tokens, EOS at 12): 0.5 on token 2, -1 on token 5, the outcome 2.0 on the EOS;
# row 1 (3 tokens): nothing
REWARDS = torch.zeros(2, 13)
REWARDS[0, 2], REWARDS[0, 5], REWARDS[0, 12] = 0.5, -1.0, 2.0
MASK = torch.zeros(2, 13, dtype=torch.long)
MASK[0], MASK[1, :3] = 1, 1


def test_reinforce_pp_advantages_from_dense_step_rewards():
    module = with_fixed_steps(GRPO(model={"config": TINY}, advantage="reinforce_pp", group_size=2))
    samples, metrics = hand_samples(module.tokenizer), {}
    module.score_samples(samples, metrics)
    assert samples["scores"].tolist() == [2.0 + 0.5 - 1.0, 0.0] and samples["outcome_scores"].tolist() == [2.0, 0.0]
    assert metrics["rewards/format"].item() == 0.5 and metrics["rewards/steps"].item() == pytest.approx(-0.25)
    module.experience(samples, metrics)
    buf = module.buffer
    assert torch.equal(buf["response_mask"], MASK)
    assert torch.allclose(buf["step_rewards"], REWARDS * torch.tensor([[1.0] * 12 + [0.0]]))  # the steps alone
    returns = torch.zeros(2, 13)
    returns[0, :3], returns[0, 3:6], returns[0, 6:] = 1.5, 1.0, 2.0  # Σ_{s≥t} r_s by hand (γ = 1)
    valid = returns[MASK.bool()]
    expected = (returns - valid.mean()) / (valid.var() + 1e-8).sqrt() * MASK
    assert torch.allclose(buf["advantages"], expected, atol=1e-5)
    assert torch.allclose(buf["advantages"], whiten(returns, MASK) * MASK, atol=1e-5)


def test_group_estimators_take_the_aggregate_not_dense_rewards():
    module = with_fixed_steps(GRPO(model={"config": TINY}, advantage="grpo", group_size=2))
    samples, metrics = hand_samples(module.tokenizer), {}
    module.score_samples(samples, metrics)
    assert "step_rewards" not in samples
    assert samples["scores"].tolist() == [2.0 - 1.0, 0.0]  # format + min of the steps (FixedSteps.reward)


def test_ppo_token_rewards_hold_the_steps_at_their_separators():
    module = with_fixed_steps(PPO(model={"config": TINY}, kl_coef=0.0, whiten_advantages=False, gamma=1.0, lam=1.0))
    samples, metrics = hand_samples(module.tokenizer), {}
    module.score_samples(samples, metrics)
    module.experience(samples, metrics)
    buf = module.buffer
    assert torch.allclose(buf["rewards"], REWARDS)
    returns = REWARDS.flip(-1).cumsum(-1).flip(-1) * MASK  # GAE with γ = λ = 1: returns = Σ_{s≥t} r_s
    assert torch.allclose(buf["advantages"], (returns - buf["values"]) * MASK, atol=1e-5)
    assert metrics["objective/scores"].item() == pytest.approx(0.75)  # the totals' mean: (1.5 + 0) / 2


@pytest.fixture(scope="module")
def prm_ckpt(tmp_path_factory):
    return tiny_prm_checkpoint(tmp_path_factory.mktemp("prm"))


@pytest.mark.parametrize("method", ["ppo", "reinforce_pp"])
def test_training_with_prm_step_rewards_moves_the_policy(method, prm_ckpt, tmp_path):
    rewards = [{"source": "prm", "path": prm_ckpt}, {"source": "gold"}]
    sampling = {"temperature": 1.0, "max_new_tokens": 12}
    opt = lambda p: torch.optim.AdamW(p, lr=1e-2)  # noqa: E731
    module = (PPO(model={"config": TINY}, rewards=rewards, sampling=sampling, ppo_epochs=1, optimizer=opt)
              if method == "ppo" else
              GRPO(model={"config": TINY}, rewards=rewards, sampling=sampling, advantage=method, group_size=2,
                   optimizer=opt))
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer(tmp_path, 2).fit(module, arithmetic_prompts(8, 2))
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.parameters()))
    assert "rewards/prm" in module.last_metrics and "rewards/gold" in module.last_metrics
    dense = module.buffer["rewards"] if method == "ppo" else module.buffer["step_rewards"]
    assert dense.shape == module.buffer["response_mask"].shape and bool((dense != 0).any())
