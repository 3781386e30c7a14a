"""PPO module: exact first ratio, score placement, EOS penalty, reward-model sources, resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import TINY
from conftest import arithmetic_prompts as datamodule
from conftest import online_trainer as trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_rlhf.modules import PPO, RewardModel
from lit_rlhf.rollout.rewards import load_reward_head


def length_reward(prompts, completions):
    """A programmatic reward: longer completions score higher."""
    return torch.tensor([len(c) / 8.0 for c in completions])


def make_ppo(**kwargs):
    args = dict(model={"config": TINY}, sampling={"temperature": 0.7, "max_new_tokens": 6}, ppo_epochs=2,
                num_mini_batches=2, reward_fn=length_reward, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    return PPO(**{**args, **kwargs})


class RatioProbe(L.Callback):
    def __init__(self):
        self.first = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.first.append(pl_module.update_stats[0])
        self.later = pl_module.update_stats[1:]


@pytest.mark.parametrize("variant", [{}, {"value_head": True}, {"kl_estimator": "k3", "reward_norm": True}])
def test_first_minibatch_ratio_is_exactly_one(tmp_path, variant):
    torch.manual_seed(0)
    module, probe = make_ppo(**variant), RatioProbe()
    L.Trainer(accelerator="cpu", max_steps=12, logger=False, enable_checkpointing=False, callbacks=[probe],
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              default_root_dir=tmp_path).fit(module, datamodule())
    assert len(probe.first) == 3  # 12 optimizer steps = 3 iterations x 2 epochs x 2 minibatches
    for stats in probe.first:
        assert (stats["epoch"], stats["minibatch"]) == (0, 0)
        assert stats["ratio"] == 1.0 and stats["clipfrac"] == 0.0 and stats["approxkl"] == 0.0
    # the policy did move within an update (so the check above is not trivially true)
    assert any(s["ratio"] != 1.0 for s in probe.later)


def test_temperature_mismatch_would_break_the_ratio():
    module = make_ppo()
    ids = torch.randint(3, 90, (2, 9))
    mask = torch.ones_like(ids)
    a = module.forward_pass(module.model, ids, mask, 4)["logprobs"]
    module.sampling.temperature = 1.0
    b = module.forward_pass(module.model, ids, mask, 4)["logprobs"]
    assert not torch.allclose(a, b)


def test_score_on_last_real_token_and_missing_eos_penalty(tmp_path):
    module = make_ppo(kl_coef=0.0, missing_eos_penalty=1.0, whiten_advantages=False,
                      reward_fn=lambda p, c: torch.full((len(c),), 2.0))
    dm = datamodule()
    t = trainer(tmp_path, 1)
    module.trainer = t  # no fit: only the rollout
    dm.tokenizer = module.tokenizer
    batch = dm.collator()(dm.dataset("train").items[:4])
    metrics = module.rollout(batch)
    buf = module.buffer
    mask, rewards = buf["response_mask"], buf["rewards"]
    last = mask.sum(-1) - 1
    ended = (buf["input_ids"][:, -mask.shape[1]:] == module.tokenizer.eos_token_id).any(-1)
    for i in range(len(mask)):
        expected = torch.zeros(mask.shape[1])
        expected[last[i]] = 2.0 - (0.0 if ended[i] else 1.0)
        assert torch.equal(rewards[i], expected)  # nothing on padding, nothing before the last token
    assert metrics["objective/scores"].item() == 2.0  # raw score, before the penalty
    assert metrics["response_length/mean"].item() == mask.sum(-1).float().mean().item()
    assert (rewards * (1 - mask)).abs().sum() == 0


def test_reward_model_folder_as_reward_and_value_init(tmp_path):
    torch.manual_seed(0)
    rm = RewardModel(model={"config": TINY})
    rm.export(tmp_path / "rm")
    head, tok = load_reward_head(tmp_path / "rm")
    ids = torch.tensor([[1, 40, 41, 2]])
    assert torch.allclose(head(ids, torch.ones_like(ids)), rm(ids, torch.ones_like(ids)), atol=1e-5)
    module = make_ppo(reward_fn=None, reward_model=str(tmp_path / "rm"), value_init=str(tmp_path / "rm"))
    assert torch.equal(module.value_model.head.weight, rm.model.head.weight)
    scores = module.score(["1+1=", "2*3="], ["2", "6"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    # the critic is trainable and separate from the reward model used for scoring
    assert module.value_model.head.weight.requires_grad
    assert not any(p.requires_grad for p in module.reward_source.parameters())


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="temperature"):
        make_ppo(sampling={"temperature": 0.0})
    with pytest.raises(ValueError, match="either"):
        make_ppo(reward_model="x")
    with pytest.raises(FileNotFoundError):
        make_ppo(reward_fn=None, reward_model=str(tmp_path / "missing"))
    module = make_ppo(reward_fn=lambda p, c: torch.zeros(len(c) + 1))
    with pytest.raises(ValueError, match="shape"):
        module.score(["a"], ["b"])


@pytest.mark.parametrize("value_head", [False, True])
def test_value_lr_puts_the_critic_in_its_own_param_group(value_head):
    module = make_ppo(value_head=value_head, value_lr=3e-3)
    policy_group, critic_group = module.configure_optimizers().param_groups
    critic = module.value_head if value_head else module.value_model
    assert {id(p) for p in critic_group["params"]} == {id(p) for p in critic.parameters()}
    assert {id(p) for p in policy_group["params"]} == {id(p) for p in module.model.parameters()}
    assert critic_group["lr"] == 3e-3 and policy_group["lr"] == 1e-2
    assert len(make_ppo().configure_optimizers().param_groups) == 1  # default: one group, one learning rate
    with pytest.raises(ValueError, match="value_lr"):
        make_ppo(value_lr=0.0)


def _fit(tmp_path, max_steps, ckpt=None, every=None):
    torch.manual_seed(0)
    module = make_ppo(kl_target=0.5, kl_coef=0.2, kl_horizon=20, reward_norm=True, reward_clip=3.0)
    callbacks = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1)] if every else []
    t = trainer(tmp_path, max_steps, callbacks, max_epochs=-1)
    t.fit(module, datamodule(n_train=4), ckpt_path=ckpt)
    return module


def test_resume_restores_kl_coefficient_running_stats_and_rng(tmp_path):
    full = _fit(tmp_path / "full", 12)
    _fit(tmp_path / "killed", 8, every=4)  # "killed" after 2 of 3 iterations; checkpoint after each
    ckpt = tmp_path / "killed" / "epoch=1-step=8.ckpt"
    assert ckpt.exists(), sorted(p.name for p in (tmp_path / "killed").iterdir())
    resumed = _fit(tmp_path / "resumed", 12, ckpt=str(ckpt))
    assert full.kl_ctl.value != 0.2  # the controller did move
    assert resumed.kl_ctl.value == pytest.approx(full.kl_ctl.value, rel=1e-6)
    assert resumed.reward_stats.state_dict() == pytest.approx(full.reward_stats.state_dict(), rel=1e-6)
    assert resumed.buffer.texts["completions"] == full.buffer.texts["completions"]  # same samples after resume
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    # negative control: the same checkpoint without PPO's own state (KL controller, running reward statistics,
    # buffer) and the training RNG stream (sampling, shuffling) does not continue the run
    state = torch.load(ckpt, weights_only=True)
    assert "rng" not in state["ppo_state"]  # PPO's draws are the training stream's, saved once (TrainingRNG)
    del state["ppo_state"], state["training_rng"]
    torch.save(state, tmp_path / "stateless.ckpt")
    stateless = _fit(tmp_path / "stateless", 12, ckpt=str(tmp_path / "stateless.ckpt"))
    assert stateless.kl_ctl.value != pytest.approx(full.kl_ctl.value, rel=1e-6)
    assert stateless.reward_stats.count == 4 and full.reward_stats.count == 12
    assert stateless.buffer.texts["completions"] != full.buffer.texts["completions"]
