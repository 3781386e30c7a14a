"""ReferencePolicy: one reference (frozen copy, LoRA-disabled base, or none) for DPO and the RL core alike — its
log-probs, checkpoints (the copy kept under ref_model., filled in for a checkpoint without it) and gold/kl."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY, arithmetic_prompts
from conftest import online_trainer as trainer

from lit_rlhf.eval import GoldEval
from lit_rlhf.models import LoraSpec, ModelSpec, load_model, sequence_logps
from lit_rlhf.models.reference import REFERENCE_PREFIX, ReferencePolicy
from lit_rlhf.modules import DPO, GRPO, PPO

IDS = torch.tensor([[5, 6, 7, 8, 9], [5, 9, 8, 0, 0]])
ATTENTION = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
COMPLETION = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])


def logps(net, *args):
    return sequence_logps(net, *args)[0]


def test_copy_is_the_frozen_start_and_none_has_no_log_probs(tok):
    policy = load_model(ModelSpec(config=dict(TINY)), "causal_lm", tok)
    ref = ReferencePolicy(policy, "copy")
    start = logps(policy, IDS, ATTENTION, COMPLETION).detach()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1)
    assert torch.allclose(ref.logps(policy, logps, IDS, ATTENTION, COMPLETION), start)
    assert not any(p.requires_grad for p in ref.copy.parameters()) and not ref.copy.training
    assert ReferencePolicy.cheapest(policy) == "copy"
    none = ReferencePolicy(policy, "none")
    assert not none and none.copy is None and none.logps(policy, logps, IDS, ATTENTION, COMPLETION) is None
    with pytest.raises(ValueError, match="needs a LoRA policy"):
        ReferencePolicy(policy, "lora_disabled")
    with pytest.raises(ValueError, match="reference must be one of"):
        ReferencePolicy(policy, "frozen")


def test_lora_disabled_is_the_base_model(tok):
    spec = ModelSpec(config=dict(TINY), lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    policy = load_model(spec, "causal_lm", tok)
    torch.manual_seed(0)
    base = load_model(ModelSpec(config=dict(TINY)), "causal_lm", tok)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)  # the adapter now changes the outputs
    ref = ReferencePolicy(policy, ReferencePolicy.cheapest(policy))
    assert ref.kind == "lora_disabled" and ref.copy is None
    expected = logps(base, IDS, ATTENTION, COMPLETION)
    assert torch.allclose(ref.logps(policy, logps, IDS, ATTENTION, COMPLETION), expected, atol=1e-5)
    assert not torch.allclose(logps(policy, IDS, ATTENTION, COMPLETION), expected, atol=1e-3)


@pytest.mark.parametrize("make", [lambda: DPO(model={"config": TINY}, reference="copy"),
                                  lambda: GRPO(model={"config": TINY}, beta=0.1, group_size=2),
                                  lambda: PPO(model={"config": TINY})], ids=["dpo", "grpo", "ppo"])
def test_every_method_keeps_the_copy_in_checkpoints_and_fills_an_old_one(make):
    module = make()
    assert isinstance(module.reference_policy, ReferencePolicy) and module.ref_model is module.reference_policy.copy
    state = module.state_dict()
    copy_keys = {k for k in state if k.startswith(REFERENCE_PREFIX)}
    assert copy_keys == {REFERENCE_PREFIX + k for k in module.ref_model.state_dict()}
    checkpoint = {"state_dict": {k: v for k, v in state.items() if k not in copy_keys}}  # written without the copy
    module.on_load_checkpoint(checkpoint)
    assert {k for k in checkpoint["state_dict"] if k.startswith(REFERENCE_PREFIX)} == copy_keys
    module.train()
    assert module.model.training and not module.ref_model.training  # the copy stays in eval mode


def test_lora_grpo_logs_gold_kl_from_the_lora_disabled_reference(tmp_path):
    spec = dataclasses.asdict(ModelSpec(config=dict(TINY), lora=LoraSpec(r=4, alpha=8, dropout=0.0)))
    module = GRPO(model=spec, beta=0.05, group_size=2, sampling={"temperature": 1.0, "max_new_tokens": 6},
                  reward_fn=lambda p, c: torch.tensor([float(len(x)) for x in c]),
                  optimizer=lambda p: torch.optim.AdamW(p, lr=3e-2))
    assert module.reference_policy.kind == "lora_disabled" and module.ref_model is None
    assert not any(k.startswith(REFERENCE_PREFIX) for k in module.state_dict())  # nothing extra to checkpoint
    gold = GoldEval(num_prompts=4, sampling={"max_new_tokens": 6, "temperature": 1.0})
    trainer(tmp_path, 3, [gold], max_epochs=-1).fit(module, arithmetic_prompts(8, 2))
    assert gold.history[0]["gold/kl"] == pytest.approx(0.0, abs=1e-5)  # the policy is its reference at the start
    assert abs(gold.history[-1]["gold/kl"]) > 1e-4
