"""DPO module: learns a toy preference, references (copy / LoRA disabled / precomputed cache) agree."""

import dataclasses

import pytest
import torch
from conftest import quiet_trainer, word_pairs, write_jsonl

from lit_rlhf.data import PreferenceDataModule, SFTDataModule
from lit_rlhf.models import LoraSpec, load_model, sequence_logps
from lit_rlhf.modules import DPO, SFT


def _trainer(tmp_path, steps, **kwargs):
    return quiet_trainer(tmp_path, max_steps=steps, **kwargs)


def _data(tmp_path, n=128, seed=0, **kwargs):
    train = word_pairs(tmp_path / f"train{seed}.jsonl", n, seed)
    val = word_pairs(tmp_path / "val.jsonl", 32, 99)
    return PreferenceDataModule(train=train, val=val, batch_size=16, max_length=48, **kwargs)


def _dpo(tiny_spec, tmp_path, **kwargs):
    torch.manual_seed(0)
    return DPO(model=tiny_spec, beta=0.5, reference_cache=str(tmp_path / "cache"),
               optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), **kwargs)


def _batch(dm, split="val", n=8):
    return dm.collator()(dm.dataset(split).items[:n])


def test_dpo_learns_the_preference_and_keeps_the_reference(tiny_spec, tmp_path):
    module, dm = _dpo(tiny_spec, tmp_path), _data(tmp_path)
    before = {k: v.detach().clone() for k, v in module.model.named_parameters()}
    trainer = _trainer(tmp_path, 24)
    trainer.validate(module, datamodule=dm, verbose=False)
    start = {k: v.item() for k, v in trainer.callback_metrics.items()}
    assert start["val/rewards/margins"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at start
    assert start["val/loss"] == pytest.approx(0.69315, abs=1e-4)
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    end = {k: v.item() for k, v in trainer.callback_metrics.items()}
    assert end["val/rewards/accuracies"] > 0.8 and end["val/rewards/margins"] > 1.0, end
    assert end["val/loss"] < 0.5 * start["val/loss"]
    assert all(not torch.equal(v, before[k]) for k, v in module.model.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in module.ref_model.named_parameters())
    assert not any(p.requires_grad for p in module.ref_model.parameters())


def test_precomputed_cache_equals_frozen_copy_is_reused_and_invalidated(tiny_spec, tmp_path, monkeypatch):
    dm = _data(tmp_path)
    module = _dpo(tiny_spec, tmp_path, reference="precomputed")
    assert module.ref_model is None
    _trainer(tmp_path, 1).fit(module, datamodule=dm)
    assert module.reference_status == {"train": "computed", "val": "computed"}
    copy_module = _dpo(tiny_spec, tmp_path)  # same seed: the same starting weights
    for split in ("train", "val"):
        batch = _batch(dm, split, n=16)
        cached = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
        frozen = copy_module.reference_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        assert torch.allclose(cached, frozen, atol=1e-5), split

    def no_pass(*args):
        raise AssertionError("the cached reference log-probs were not reused")

    monkeypatch.setattr(DPO, "_reference_pass", no_pass)
    again = _dpo(tiny_spec, tmp_path, reference="precomputed")
    _trainer(tmp_path, 1).fit(again, datamodule=_data(tmp_path))
    assert again.reference_status == {"train": "loaded", "val": "loaded"}
    monkeypatch.undo()
    changed = _dpo(tiny_spec, tmp_path, reference="precomputed")
    _trainer(tmp_path, 1).fit(changed, datamodule=_data(tmp_path, seed=1))  # other training pairs
    assert changed.reference_status == {"train": "computed", "val": "loaded"}


def test_lora_disabled_reference_equals_base_model(tiny_spec, tmp_path):
    spec = dataclasses.replace(tiny_spec, lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    module, dm = _dpo(spec, tmp_path, reference="lora_disabled"), _data(tmp_path, n=32)
    torch.manual_seed(0)
    base = load_model(tiny_spec, "causal_lm", module.tokenizer).eval()  # same seed: the LoRA model's base
    _trainer(tmp_path, 3, limit_val_batches=0).fit(module, datamodule=dm)
    batch = _batch(dm)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    module.eval()
    ref = module.reference_logps(*args)
    assert torch.allclose(ref, sequence_logps(base, *args)[0], atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(module.policy_logps(*args)[0], ref, atol=1e-3)  # the adapter has learned


def test_lora_disabled_needs_lora(tiny_spec, tmp_path):
    with pytest.raises(ValueError, match="needs a LoRA policy"):
        _dpo(tiny_spec, tmp_path, reference="lora_disabled")
    with pytest.raises(ValueError, match="loss_type"):
        _dpo(tiny_spec, tmp_path, loss_type="kto")


def test_rpo_adds_the_chosen_nll(tiny_spec, tmp_path, tok):
    dm = _data(tmp_path, n=16)
    dm.tokenizer = tok
    batch = _batch(dm, "train")
    plain_module = _dpo(tiny_spec, tmp_path)
    plain = plain_module.step(batch, "train")
    rpo = _dpo(tiny_spec, tmp_path, rpo_alpha=0.5).step(batch, "train")
    with torch.no_grad():
        logps = plain_module.policy_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])[0]
    chosen_nll = -logps[:8].sum() / batch["completion_mask"][:8, 1:].sum()  # token mean over the chosen completions
    assert torch.allclose(rpo.loss, plain.loss + 0.5 * chosen_nll, atol=1e-5)
    assert rpo.metrics["loss"] == rpo.loss.detach() and torch.allclose(plain.metrics["logps/chosen"], logps[:8].mean())


def test_metric_names_are_trls(tiny_spec, tmp_path):
    module = _dpo(tiny_spec, tmp_path)
    names = {split: [module.metric_name(split, k) for k in ("loss", "rewards/margins", "logps/chosen")]
             for split in ("train", "val")}
    assert names == {"train": ["train/loss", "rewards/margins", "logps/chosen"],
                     "val": ["val/loss", "val/rewards/margins", "val/logps/chosen"]}


def test_init_from_sft_and_the_checkpoint_keeps_the_reference(tiny_spec, tmp_path):
    sft = SFT(model=tiny_spec)
    dm = _data(tmp_path, n=32)
    trainer = _trainer(tmp_path, 2, limit_val_batches=0)
    trainer.fit(sft, datamodule=_sft_data(tmp_path))
    trainer.save_checkpoint(tmp_path / "sft.ckpt")
    module = _dpo(tiny_spec, tmp_path, init_from=str(tmp_path / "sft.ckpt"))
    for (name, p), q in zip(sft.model.named_parameters(), module.model.parameters()):
        assert torch.equal(p, q), name
    assert all(torch.equal(p, q) for p, q in zip(sft.model.parameters(), module.ref_model.parameters()))
    trainer = _trainer(tmp_path, 2, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "dpo.ckpt")
    ckpt = torch.load(tmp_path / "dpo.ckpt", weights_only=True)
    ref = {k[len("ref_model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("ref_model.")}
    assert ref.keys() == sft.model.state_dict().keys()  # self-contained: the reference is not rebuilt from init_from
    assert all(torch.equal(v, sft.model.state_dict()[k]) for k, v in ref.items())
    assert ckpt["hyper_parameters"]["init_from"] is None
    assert ckpt["lit_rlhf_provenance"]["init_from"] == str(tmp_path / "sft.ckpt")
    (tmp_path / "sft.ckpt").unlink()
    loaded = DPO.load_from_checkpoint(tmp_path / "dpo.ckpt", weights_only=True)
    assert all(torch.equal(p, q) for p, q in zip(loaded.model.parameters(), module.model.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(loaded.ref_model.parameters(), sft.model.parameters()))


def _sft_data(tmp_path):
    rows = [{"prompt": f"{i}:", "completion": "xy good" * (1 + i % 3)} for i in range(32)]
    return SFTDataModule(train=write_jsonl(tmp_path / "sft.jsonl", rows), batch_size=16, max_length=48)


def test_readme_subclass_example_and_shipped_simpo_compute_their_losses(tiny_spec, tmp_path, tok):
    """The README's MarginSimPO, run as written, and the shipped SimPO give their formulas on a real batch."""
    import re
    from pathlib import Path

    from lit_rlhf.modules import SimPO

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class MarginSimPO" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    dm = _data(tmp_path, n=16)
    dm.tokenizer = tok
    batch = _batch(dm, "train")
    for module, delta in ((namespace["MarginSimPO"](model=tiny_spec, beta=2.0, gamma=0.5, delta=0.1), 0.1),
                          (SimPO(model=tiny_spec, beta=2.0, simpo_gamma=0.5), 0.0)):
        assert module.ref_model is None
        out = module.step(batch, "train")
        with torch.no_grad():
            logps, lengths = module.policy_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        (pc, pr), (lc, lr) = logps.chunk(2), lengths.chunk(2)
        margin = 2.0 * pc / lc - 2.0 * pr / lr - 0.5 - delta * (lc - lr).abs()
        assert torch.allclose(out.loss, torch.log1p(torch.exp(-margin)).mean(), atol=1e-5), type(module).__name__


def test_init_from_lora_sft_merges_it_into_the_reference(tiny_spec, tmp_path):
    spec = dataclasses.replace(tiny_spec, lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    sft = SFT(model=spec, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    trainer = _trainer(tmp_path, 3, limit_val_batches=0)
    trainer.fit(sft, datamodule=_sft_data(tmp_path))
    trainer.save_checkpoint(tmp_path / "sft.ckpt")
    module = _dpo(spec, tmp_path, init_from=str(tmp_path), reference="lora_disabled")  # a folder: its newest .ckpt
    assert module.hparams.init_from == str(tmp_path / "sft.ckpt")
    dm = _data(tmp_path, n=16)
    dm.tokenizer = module.tokenizer
    batch = _batch(dm)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    sft.eval()
    module.eval()
    with torch.no_grad():
        trained = sequence_logps(sft.model, *args)[0]
        assert torch.allclose(module.reference_logps(*args), trained, atol=1e-4)  # the merged SFT policy
        assert torch.allclose(module.policy_logps(*args)[0], trained, atol=1e-4)  # fresh adapter: B = 0


def test_init_from_errors(tiny_spec, tmp_path):
    from lit_rlhf.models.checkpoint import build_policy, resolve_checkpoint

    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="no .ckpt file under"):
        resolve_checkpoint(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint of a lit_rlhf policy"):
        build_policy(tiny_spec, str(tmp_path / "other.ckpt"))
    # a config's init_from (the SFT run) that is not there: the field, and what to do
    hint = r"^init_from: .*runs/sft: no such checkpoint file or run folder; train that run first, .* init_from to null"
    for build in (lambda: build_policy(tiny_spec, str(tmp_path / "runs/sft")),
                  lambda: DPO(model=tiny_spec, init_from=str(tmp_path / "runs/sft"))):
        with pytest.raises(FileNotFoundError, match=hint):
            build()


def test_reference_pass_states_what_the_run_uses_and_reports_progress(tiny_spec, tmp_path, caplog):
    """A short run over a large pair file: the precomputing pass says it covers more than max_steps will use,
    estimates its time after the first batch and reports its progress (issue: a 5-step run computed 8,000 pairs
    without a word)."""
    import logging

    module = _dpo(tiny_spec, tmp_path, reference="precomputed", reference_batch_size=8)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        _trainer(tmp_path, 2, limit_val_batches=0).fit(module, datamodule=_data(tmp_path, n=64))
    lines = [r.getMessage() for r in caplog.records if "DPO reference log-probs" in r.getMessage()]
    plan = next(line for line in lines if "one pass" in line and "'train'" in line)
    assert "over all 64 'train' pairs" in plan and "max_steps=2 uses at most 32 of them" in plan, plan
    progress = [line for line in lines if "/64 'train' pairs in" in line]
    assert progress[0].startswith("[lit_rlhf] DPO reference log-probs: 8/64") and "s left" in progress[0]
    assert progress[-1].startswith("[lit_rlhf] DPO reference log-probs: 64/64") and "left" not in progress[-1]


def test_the_frozen_copy_alone_does_not_raise_lightnings_eval_mode_warning(tiny_spec, tmp_path):
    """Lightning warns of modules in eval mode at the start of training: not of the frozen reference copy (meant
    to be), still of any other module left in eval mode; and the silencing filter does not outlive the check."""
    import warnings

    def eval_mode_warnings(module):
        filters = list(warnings.filters)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _trainer(tmp_path, 1).fit(module, datamodule=_data(tmp_path, n=16))
        assert warnings.filters == filters  # nothing left behind
        return [str(w.message) for w in caught if "in eval mode at the start of training" in str(w.message)]

    assert eval_mode_warnings(_dpo(tiny_spec, tmp_path)) == []
    module = _dpo(tiny_spec, tmp_path)
    module.model.model.norm.eval()  # the user's own module left in eval mode: Lightning's warning counts it too
    expected = len(list(module.ref_model.modules())) + 1
    assert [w.split(" module(s)")[0] for w in eval_mode_warnings(module)] == [f"Found {expected}"]
