"""GRPO module: every estimator's first ratio is exactly 1, groups stay intact, dynamic sampling, learning, resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import TINY, arithmetic_prompts
from conftest import online_trainer as trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_rlhf.modules import GRPO


def datamodule(n_train=8, batch_size=2):
    return arithmetic_prompts(n_train, batch_size)


def digit_reward(prompts, completions):
    """Fraction of the completion's characters that are digits (0 for an empty completion)."""
    return torch.tensor([sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions])


def make_grpo(**kwargs):
    args = dict(model={"config": TINY}, sampling={"temperature": 1.0, "max_new_tokens": 6}, group_size=4,
                num_iterations=2, num_mini_batches=2, reward_fn=digit_reward,
                optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    return GRPO(**{**args, **kwargs})


class Probe(L.Callback):
    """Per iteration: the first minibatch's statistics, the rest, the buffer's prompts and the logged metrics."""

    def __init__(self):
        self.first, self.later, self.prompts, self.metrics = [], [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.update_stats and (not self.metrics or pl_module.last_metrics is not self.metrics[-1]):
            self.first.append(pl_module.update_stats[0])
            self.later += pl_module.update_stats[1:]
            self.prompts.append(list(pl_module.buffer.texts["prompts"]))
            self.metrics.append(pl_module.last_metrics)


VARIANTS = [
    {"advantage": "grpo"},
    {"advantage": "grpo", "beta": 0.04, "aggregation": "sequence_mean", "scale_rewards": "batch"},
    {"advantage": "dr_grpo"},
    {"advantage": "rloo", "beta": 0.05},
    {"advantage": "reinforce_pp", "beta": 0.05},
    {"advantage": "reinforce_pp", "beta": 0.05, "group_size": 1},  # Hu (2025): one completion per prompt
    {"advantage": "reinforce_pp_baseline"},
    {"advantage": "grpo", "clip_high": 0.28, "loss_level": "sequence"},  # DAPO clip-higher, GSPO ratio
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_first_minibatch_ratio_is_exactly_one_and_groups_stay_intact(tmp_path, variant):
    torch.manual_seed(0)
    module, probe = make_grpo(**variant), Probe()
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer(tmp_path, 8, [probe]).fit(module, datamodule())
    assert len(probe.first) == 2  # 8 optimizer steps = 2 iterations x 2 passes x 2 minibatches
    for stats in probe.first:
        assert (stats["epoch"], stats["minibatch"]) == (0, 0)
        assert stats["ratio"] == 1.0 and stats["clipfrac"] == 0.0 and stats["clip_region"] == 0.0
    assert any(s["ratio"] != 1.0 for s in probe.later)  # the policy moved within an update
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.parameters()))
    assert (module.ref_model is None) == (variant.get("beta", 0.0) == 0.0)  # beta 0: no reference in memory
    G = variant.get("group_size", 4)
    for prompts in probe.prompts:  # 2 prompts x G: rows 0..G-1 share one prompt, rows G..2G-1 another
        assert len(prompts) == 2 * G and all(len(set(prompts[g * G:(g + 1) * G])) == 1 for g in range(2))
        assert prompts[0] != prompts[G]
    logged = probe.metrics[-1]
    for key in ("reward", "completions/mean_length", "clip_ratio/low_mean", "clip_ratio/high_mean",
                "clip_ratio/region_mean", "entropy", "time/generation", "time/update"):
        assert key in logged, key
    assert ("reward_std" in logged) == ("frac_reward_zero_std" in logged) == (G > 1)  # no spread in a group of one
    assert ("kl" in logged) == (variant.get("beta", 0.0) > 0)


class AlwaysRolloutLogprobs(GRPO):
    """GRPO that computes the old log-probs in the rollout pass even when the update is on-policy."""

    needs_rollout_logprobs = True


@pytest.mark.parametrize("variant", [{}, {"beta": 0.04}, {"advantage": "rloo", "beta": 0.05}], ids=str)
def test_on_policy_update_skips_the_rollout_policy_pass_and_updates_alike(tmp_path, variant):
    """One pass of one minibatch: the old log-probs are the training pass's own (detached), so the rollout
    pass of the policy is skipped (unless a KL in the reward needs them), with the same parameters after."""
    runs = {}
    for cls in (GRPO, AlwaysRolloutLogprobs):
        torch.manual_seed(0)
        module, probe = make_grpo(num_iterations=1, num_mini_batches=1, **variant), Probe()
        module.__class__ = cls
        trainer(tmp_path / cls.__name__, 2, [probe]).fit(module, datamodule())
        assert [s["ratio"] for s in probe.first] == [1.0, 1.0] and not probe.later
        runs[cls] = module
    skipped = variant.get("advantage", "grpo") == "grpo"
    assert ("logprobs" in runs[GRPO].buffer.data) != skipped
    assert "logprobs" in runs[AlwaysRolloutLogprobs].buffer.data
    for a, b in zip(runs[GRPO].model.parameters(), runs[AlwaysRolloutLogprobs].model.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(make_grpo().model.parameters(), runs[GRPO].model.parameters()))


def test_group_advantages_in_the_buffer(tmp_path):
    torch.manual_seed(0)
    module = make_grpo(advantage="dr_grpo")
    dm = datamodule()
    module.trainer = trainer(tmp_path, 1)
    dm.tokenizer = module.tokenizer
    module.rollout(dm.collator()(dm.dataset("train").items[:2]))
    buf = module.buffer
    scores, adv, mask = buf["scores"], buf["advantages"], buf["response_mask"]
    expected = scores.view(2, 4) - scores.view(2, 4).mean(-1, keepdim=True)  # Dr. GRPO: r - group mean
    assert torch.allclose(adv, expected.flatten().unsqueeze(-1) * mask)
    assert buf.texts["completions"] and buf["input_ids"].shape[0] == 8


def test_reinforce_pp_with_one_completion_per_prompt_whitens_the_returns_over_the_batch(tmp_path):
    """G = 1, β = 0 (Hu 2025): every token of completion i carries its outcome r_i (γ = 1, no KL), whitened over all
    valid tokens of the batch: (r_i − μ) / σ, μ and σ (Bessel) taken over tokens, so a long completion weighs more."""
    torch.manual_seed(0)
    module = make_grpo(advantage="reinforce_pp", group_size=1, reward_fn=digit_reward)
    dm = datamodule(n_train=8, batch_size=4)
    module.trainer = trainer(tmp_path, 1)
    dm.tokenizer = module.tokenizer
    module.rollout(dm.collator()(dm.dataset("train").items[:4]))
    buf = module.buffer
    scores, adv, mask = buf["scores"].float(), buf["advantages"], buf["response_mask"].float()
    assert len(set(buf.texts["prompts"])) == 4 and scores.unique().numel() > 1  # 4 distinct prompts, one sample each
    tokens = (scores.unsqueeze(-1) * mask)[mask.bool()]  # r_i repeated on each valid token of completion i
    expected = (scores.unsqueeze(-1) - tokens.mean()) / tokens.std() * mask
    assert torch.allclose(adv, expected, atol=1e-5)


def spread_only_on_first_prompt(prompts, completions):
    """A reward with spread only within the groups of one prompt (the first seen); others score 1.0 each."""
    first = spread_only_on_first_prompt.first = getattr(spread_only_on_first_prompt, "first", None) or prompts[0]
    return torch.tensor([float(len(c)) if p == first else 1.0 for p, c in zip(prompts, completions)])


def test_dynamic_sampling_drops_zero_spread_groups_and_refills(tmp_path):
    torch.manual_seed(0)
    spread_only_on_first_prompt.first = None
    module, probe = make_grpo(dynamic_sampling=True, max_sampling_batches=3, reward_fn=spread_only_on_first_prompt,
                              sampling={"temperature": 1.0, "max_new_tokens": 6}), Probe()
    # batches of 2 prompts; only prompt 0 (batch 0) has spread: 1 group kept from batch 0, then batches 1-2 add
    # none, so the cap (3 batches) releases an update with the one group
    trainer(tmp_path, 4, [probe], max_epochs=-1).fit(module, datamodule(n_train=8))
    m = probe.metrics[0]
    assert m["dynamic_sampling/batches"] == 3.0
    assert m["dynamic_sampling/kept_groups"] == 1.0 and m["dynamic_sampling/dropped_groups"] == 5.0
    assert m["frac_reward_zero_std"] == pytest.approx(5 / 6)  # over every group sampled for the update
    prompts = probe.prompts[0]
    assert len(prompts) == 4 and set(prompts) == {spread_only_on_first_prompt.first}


def test_a_reward_that_prefers_digits_is_raised(tmp_path):
    torch.manual_seed(0)
    module, probe = make_grpo(num_iterations=1, num_mini_batches=1, group_size=8,
                              optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3)), Probe()
    trainer(tmp_path, 40, [probe], max_epochs=-1).fit(module, datamodule(n_train=16, batch_size=4))
    rewards = [m["reward"] for m in probe.metrics]
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.1 and last > 2 * first, (first, last)  # measured: 0.045 -> 0.27


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="advantage"):
        make_grpo(advantage="ppo")
    with pytest.raises(ValueError, match="aggregation"):
        make_grpo(aggregation="sum")
    for advantage in ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"):
        with pytest.raises(ValueError, match="group_size"):
            make_grpo(group_size=1, advantage=advantage)
    with pytest.raises(ValueError, match="dynamic_sampling"):
        make_grpo(group_size=1, advantage="reinforce_pp", dynamic_sampling=True)
    with pytest.raises(ValueError, match="temperature"):
        make_grpo(sampling={"temperature": 0.0})
    assert make_grpo(advantage="dr_grpo").aggregation == "constant"


def _fit(tmp_path, max_steps, ckpt=None, every=None):
    torch.manual_seed(0)
    module = make_grpo(beta=0.05, dynamic_sampling=True, clip_high=0.28)
    callbacks = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1)] if every else []
    trainer(tmp_path, max_steps, callbacks, max_epochs=-1).fit(module, datamodule(n_train=4), ckpt_path=ckpt)
    return module


def test_resume_continues_exactly(tmp_path):
    full = _fit(tmp_path / "full", 12)
    _fit(tmp_path / "killed", 8, every=4)
    ckpts = sorted((tmp_path / "killed").glob("*step=8.ckpt"))
    assert len(ckpts) == 1, sorted(p.name for p in (tmp_path / "killed").iterdir())
    resumed = _fit(tmp_path / "resumed", 12, ckpt=str(ckpts[0]))
    assert resumed.buffer.texts["completions"] == full.buffer.texts["completions"]
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    # negative control: without the training RNG stream the resumed run samples other completions
    state = torch.load(ckpts[0], weights_only=True)
    assert "rl_state" in state
    del state["training_rng"]
    torch.save(state, tmp_path / "stateless.ckpt")
    stateless = _fit(tmp_path / "stateless", 12, ckpt=str(tmp_path / "stateless.ckpt"))
    assert stateless.buffer.texts["completions"] != full.buffer.texts["completions"]
