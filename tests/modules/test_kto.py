"""KTO module: learns from unpaired labels, reference point from mismatched pairs, imbalance warning, CLI."""

import warnings

import pytest
import torch
from conftest import quiet_trainer, word_pairs, write_jsonl

from lit_rlhf.data import UnpairedPreferenceDataModule
from lit_rlhf.losses import kto_loss, kto_reference_point
from lit_rlhf.modules import KTO


def _data(tmp_path, n=128):
    # each pair becomes a desirable ('good' inside) and an undesirable ('bad' inside) completion
    return UnpairedPreferenceDataModule(train=word_pairs(tmp_path / "train.jsonl", n, 0),
                                        val=word_pairs(tmp_path / "val.jsonl", 32, 99), batch_size=16, max_length=48)


def _kto(tiny_spec, **kwargs):
    torch.manual_seed(0)
    return KTO(model=tiny_spec, beta=0.5, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), **kwargs)


def test_kto_learns_desirable_from_undesirable(tiny_spec, tmp_path):
    module, dm = _kto(tiny_spec), _data(tmp_path)
    before = {k: v.detach().clone() for k, v in module.model.named_parameters()}
    trainer = quiet_trainer(tmp_path, max_steps=30)
    trainer.validate(module, datamodule=dm, verbose=False)
    start = {k: v.item() for k, v in trainer.callback_metrics.items()}
    margin = lambda m: m["val/rewards/chosen"] - m["val/rewards/rejected"]  # noqa: E731
    assert margin(start) == pytest.approx(0.0, abs=1e-5) and start["val/kl"] == 0.0
    assert start["val/loss"] == pytest.approx(0.5, abs=1e-5)  # λ(1 − σ(0))
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    end = {k: v.item() for k, v in trainer.callback_metrics.items()}
    assert margin(end) > 1.0 and end["val/loss"] < 0.8 * start["val/loss"], end
    assert end["val/rewards/chosen"] > 0  # desirable completions more likely than under the reference
    assert all(not torch.equal(v, before[k]) for k, v in module.model.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in module.ref_model.named_parameters())


def test_step_uses_the_mismatched_pairs_for_the_reference_point(tiny_spec, tmp_path):
    module, dm = _kto(tiny_spec), _data(tmp_path, n=16)
    dm.tokenizer = module.tokenizer
    with torch.no_grad():  # a noisier reference: the policy's log-ratios are then mostly > 0
        for p in module.ref_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = dm.collator()(dm.dataset("train").items[:6])
    out = module.step(batch, "train")
    kl_args = (batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_completion_mask"])
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with torch.no_grad():
        z0 = kto_reference_point(module.sequence_logps(module.model, *kl_args)[0],
                                 module.sequence_logps(module.ref_model, *kl_args)[0])
        policy = module.sequence_logps(module.model, *args)[0]
        ref = module.sequence_logps(module.ref_model, *args)[0]
    assert float(z0) > 0 and torch.allclose(out.metrics["kl"], z0)
    expected, _ = kto_loss(policy, ref, torch.tensor(batch["label"]), z0, 0.5)
    assert torch.allclose(out.loss, expected.mean(), atol=1e-6)


def test_imbalance_warning_names_the_weight_range(tiny_spec, tmp_path):
    rows = [{"prompt": "q", "completion": f"a{i}", "label": i < 2} for i in range(8)]  # 2 desirable, 6 not
    dm = UnpairedPreferenceDataModule(train=write_jsonl(tmp_path / "u.jsonl", rows), batch_size=4, max_length=32)
    with pytest.warns(UserWarning, match=r"2 desirable and 6 undesirable .* desirable_weight in \[3, 4\]"):
        quiet_trainer(tmp_path, max_steps=1).fit(_kto(tiny_spec), datamodule=dm)
    # weights inside the rule (3 · 2 / (1 · 6) = 1): no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(tmp_path, max_steps=1).fit(_kto(tiny_spec, desirable_weight=3.0), datamodule=dm)
    assert not [w for w in caught if "KTO:" in str(w.message)]


def test_precomputed_reference_is_refused(tiny_spec):
    with pytest.raises(ValueError, match="precomputed"):
        KTO(model=tiny_spec, reference="precomputed")


def test_pair_loss_arguments_are_refused_not_ignored(tiny_spec):
    with pytest.raises(ValueError, match="rpo_alpha"):
        KTO(model=tiny_spec, rpo_alpha=1.0)
