"""Checkpoint layer: run folders resolve to their newest .ckpt, and a checkpoint alone rebuilds its module.

The end-to-end case: SFT, then DPO from the SFT run folder, then the SFT run is deleted and the working
directory changes; the DPO run still loads (``load_module`` and ``DPO.load_from_checkpoint``), keeps its
reference, and exports a Hugging Face folder whose log-probs are the module's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import word_pairs, write_jsonl
from lightning.pytorch.loggers import CSVLogger

from lit_rlhf.data import PreferenceDataModule, SFTDataModule
from lit_rlhf.models import LoraSpec, build_byte_tokenizer, load_model, sequence_logps
from lit_rlhf.models.checkpoint import (
    NETWORK_KEY,
    PROVENANCE_KEY,
    load_head_model,
    load_module,
    load_policy,
    load_reward_head,
    resolve_checkpoint,
)
from lit_rlhf.modules import DPO, SFT, RewardModel


def fit_run(module: L.LightningModule, datamodule: L.LightningDataModule, root: Path, steps: int) -> Path:
    """Train ``steps`` steps with a logger, so the checkpoint lands in ``<root>/lit-rlhf/<run id>/checkpoints/``."""
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=CSVLogger(root, name="lit-rlhf"),
                        default_root_dir=root, limit_val_batches=0, num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    return root


def sft_data(tmp_path: Path) -> SFTDataModule:
    rows = [{"prompt": f"{i}:", "completion": "xy good" * (1 + i % 3)} for i in range(16)]
    return SFTDataModule(train=write_jsonl(tmp_path / "sft.jsonl", rows), batch_size=8, max_length=48)


def pair_data(tmp_path: Path) -> PreferenceDataModule:
    return PreferenceDataModule(train=word_pairs(tmp_path / "pairs.jsonl", 32, 0),
                                val=word_pairs(tmp_path / "val.jsonl", 8, 1), batch_size=8, max_length=48)


def test_resolve_checkpoint_accepts_files_and_run_folders_and_says_what_is_missing(tmp_path):
    run = tmp_path / "runs" / "sft"
    folder = run / "lit-rlhf" / "abc123" / "checkpoints"
    folder.mkdir(parents=True)
    old, new = folder / "epoch=0-step=2.ckpt", folder / "last.ckpt"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    for path in (run, run / "lit-rlhf" / "abc123", folder, str(run)):
        assert resolve_checkpoint(path) == str(new)  # the newest file under any level of the run folder
    assert resolve_checkpoint(old) == str(old)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no \.ckpt file under this folder .*lit-rlhf/<run id>/"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing.ckpt: no such checkpoint file or run folder"):
        resolve_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "sharded.ckpt").mkdir()
    (tmp_path / "sharded.ckpt" / "shard.ckpt").write_bytes(b"z")
    with pytest.raises(ValueError, match="sharded checkpoint folder"):
        resolve_checkpoint(tmp_path / "sharded.ckpt")


def test_a_relative_path_is_resolved_against_the_working_directory_once(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "a.ckpt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("run") == str(tmp_path / "run" / "a.ckpt")  # absolute: valid from anywhere


@pytest.mark.parametrize("lora", [False, True], ids=["full-copy-reference", "lora-disabled-reference"])
def test_dpo_run_loads_and_exports_after_its_sft_run_is_gone(tiny_spec, tmp_path, monkeypatch, lora):
    from transformers import AutoModelForCausalLM

    spec = dataclasses.replace(tiny_spec, lora=LoraSpec(r=4, alpha=8, dropout=0.0)) if lora else tiny_spec
    adamw = lambda p: torch.optim.AdamW(p, lr=1e-2)  # noqa: E731
    sft_run = fit_run(SFT(model=spec, optimizer=adamw, gold_eval_batches=0), sft_data(tmp_path), tmp_path / "sft", 3)
    sft_ckpt = resolve_checkpoint(sft_run)
    assert Path(sft_ckpt).parent.name == "checkpoints" and Path(sft_ckpt).parents[2].name == "lit-rlhf"
    monkeypatch.chdir(tmp_path)
    dpo = DPO(model=spec, init_from="sft", reference="lora_disabled" if lora else "copy", beta=0.5,
              reference_cache="cache", optimizer=adamw)  # paths relative to the working directory
    dm = pair_data(tmp_path)
    dpo_run = fit_run(dpo, dm, tmp_path / "dpo", 2)
    batch = dm.collator()(dm.dataset("val").items)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    dpo.eval()
    with torch.no_grad():
        policy, reference = dpo.policy_logps(*args)[0], dpo.reference_logps(*args)
    assert not torch.allclose(policy, reference, atol=1e-3)  # DPO moved the policy away from the SFT reference

    ckpt = torch.load(resolve_checkpoint(dpo_run), map_location="cpu", weights_only=True)
    assert ckpt[PROVENANCE_KEY]["init_from"] == sft_ckpt and ckpt["hyper_parameters"]["init_from"] is None
    assert ckpt["hyper_parameters"]["reference_cache"] == str(tmp_path / "cache")
    assert ckpt[NETWORK_KEY]["spec"]["lora"] == (dataclasses.asdict(spec.lora) if lora else None)
    shutil.rmtree(sft_run)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    for loaded in (load_module(dpo_run), DPO.load_from_checkpoint(resolve_checkpoint(dpo_run), weights_only=True)):
        assert type(loaded) is DPO and loaded.reference == dpo.reference
        assert loaded.provenance["init_from"] == sft_ckpt
        loaded.eval()
        with torch.no_grad():
            assert torch.allclose(loaded.policy_logps(*args)[0], policy, atol=1e-5)
            assert torch.allclose(loaded.reference_logps(*args), reference, atol=1e-5)  # the SFT policy, kept
    folder = loaded.export(tmp_path / "export")
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.allclose(sequence_logps(hf, *args)[0], policy, atol=1e-4)
    tokenizer, net = load_policy(str(dpo_run))  # the policy alone, LoRA merged
    with torch.no_grad():
        assert torch.allclose(sequence_logps(net.eval(), *args)[0], policy, atol=1e-4)
    assert tokenizer.pad_token_id == dpo.tokenizer.pad_token_id


def test_reward_head_from_a_checkpoint_of_a_model_in_a_relative_folder(tmp_path, monkeypatch, tok):
    from conftest import TINY

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    load_model({"name": "lit-rlhf:tiny-llama", "config": TINY}, "causal_lm", tok).save_pretrained("base")
    build_byte_tokenizer().save_pretrained("base")
    rm = RewardModel(model="base", optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    dm = pair_data(tmp_path)
    run = fit_run(rm, dm, Path("rm"), 1)  # a relative run folder too
    ckpt = torch.load(resolve_checkpoint(run), weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["name"] == str(work / "base")  # portable: absolute folder
    assert ckpt[NETWORK_KEY]["head"] == {"num_outputs": 1, "pooling": "last", "squeeze": True, "bias": False,
                                         "pad_token_id": rm.tokenizer.eos_token_id}  # pads with EOS (HF's reading)
    batch = dm.collator()(dm.dataset("val").items)
    rm.eval()
    with torch.no_grad():
        expected = rm(batch["input_ids"], batch["attention_mask"])
    monkeypatch.chdir(tmp_path)
    head, tokenizer = load_reward_head(work / "rm")  # rebuilt from the recorded network, no module import
    with torch.no_grad():
        assert torch.allclose(head.eval()(batch["input_ids"], batch["attention_mask"]), expected, atol=1e-5)
    assert tokenizer.pad_token_id == rm.tokenizer.pad_token_id


def test_head_loaders_refuse_the_wrong_network(tiny_spec, tmp_path):
    sft = SFT(model=tiny_spec, gold_eval_batches=0)
    fit_run(sft, sft_data(tmp_path), tmp_path / "sft", 1)
    with pytest.raises(ValueError, match="holds a causal LM, not a head model"):
        load_head_model(tmp_path / "sft")
    from lit_rlhf.modules import OutcomeRewardModel

    orm = OutcomeRewardModel(model=tiny_spec)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(orm)
    trainer.save_checkpoint(tmp_path / "orm.ckpt")
    classifier, _ = load_head_model(tmp_path / "orm.ckpt")
    assert classifier.meta() == {"num_outputs": 2, "pooling": "last", "squeeze": False, "bias": False,
                                 "pad_token_id": orm.tokenizer.eos_token_id}  # bias-free like HF's `score` layer
    assert all(torch.equal(a, b) for a, b in zip(classifier.state_dict().values(), orm.model.state_dict().values()))
    with pytest.raises(ValueError, match="not a scalar reward model"):
        load_reward_head(tmp_path / "orm.ckpt")


def test_ppo_checkpoint_loads_without_its_init_run(tiny_spec, tmp_path, monkeypatch):
    from lit_rlhf.modules import PPO

    sft_run = fit_run(SFT(model=tiny_spec, gold_eval_batches=0), sft_data(tmp_path), tmp_path / "sft", 1)
    ppo = PPO(model=tiny_spec, init_from=str(sft_run), sampling={"max_new_tokens": 4, "temperature": 0.7})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(ppo)
    trainer.save_checkpoint(tmp_path / "ppo.ckpt")
    hparams = torch.load(tmp_path / "ppo.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["init_from"] is None and hparams["value_model"]["name"] == tiny_spec.name  # the critic's own spec
    shutil.rmtree(sft_run)
    monkeypatch.chdir(tmp_path)
    loaded = load_module("ppo.ckpt")
    assert type(loaded) is PPO
    expected = ppo.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())  # policy, reference and critic


def test_checkpoints_written_before_the_network_record_still_load(tiny_spec, tmp_path):
    from lit_rlhf.models.checkpoint import build_policy

    sft = SFT(model=tiny_spec, gold_eval_batches=0)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(sft)
    trainer.save_checkpoint(tmp_path / "sft.ckpt")
    ckpt = torch.load(tmp_path / "sft.ckpt", weights_only=True)
    del ckpt[NETWORK_KEY]  # an older file: only the hyperparameters say how the network was built
    torch.save(ckpt, tmp_path / "old.ckpt")
    _, net = build_policy(tiny_spec, tmp_path / "old.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), sft.model.state_dict().values()))
