"""WeakToStrong: learns from weak soft labels; exact whole-batch logconf with micro-batches; reference defaults."""

import random

import lightning as L
import pytest
import torch
from conftest import keyword_text, quiet_trainer, write_jsonl

from lit_rlhf.data import WeakLabelDataModule
from lit_rlhf.modules import WeakToStrong


def _weak_rows(n, seed, weak_error=0.25):
    """Keyword rows: gold = 'right' in the text; a weak supervisor wrong on ``weak_error`` of them (soft .8)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        gold = rng.randint(0, 1)
        text = keyword_text(rng, gold)
        weak = gold if rng.random() > weak_error else 1 - gold
        rows.append({"txt": text, "hard_label": weak,
                     "soft_label": [0.2, 0.8] if weak else [0.8, 0.2], "gt_label": gold})
    return rows


def _batch(module, rows, tmp_path):
    dm = WeakLabelDataModule(train=write_jsonl(tmp_path / "b.jsonl", rows), max_length=64)
    dm.tokenizer = module.tokenizer
    return dm.collator()(dm.dataset("train").items)


@pytest.mark.parametrize("loss", ["xent", "logconf"])
def test_student_beats_its_weak_labels_on_gold(tiny_spec, tmp_path, loss):
    module = WeakToStrong(model=tiny_spec, loss=loss, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    dm = WeakLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _weak_rows(384, 0)),
                             val=write_jsonl(tmp_path / "v.jsonl", _weak_rows(128, 1)), batch_size=32, max_length=64)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    start = trainer.validate(module, datamodule=dm, verbose=False)[0]
    trainer.fit(module, datamodule=dm)
    end = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert all(not torch.equal(v, before[k]) for k, v in module.named_parameters())
    assert start["val/accuracy"] == pytest.approx(0.5, abs=0.1)  # zero-init head: a constant prediction
    # the weak labels are 75% right; the student generalises past their errors
    assert end["val/accuracy"] > 0.85
    assert end["val/agreement/weak_wrong"] < 0.3 and end["val/agreement/weak_right"] > 0.85


def test_micro_batches_give_the_full_batch_logconf_gradient(tiny_spec, tmp_path, monkeypatch):
    from lit_rlhf.losses import logconf_loss

    monkeypatch.setattr(WeakToStrong, "step_frac", 0.5)  # past warm-up: α = 0.5
    rows = _weak_rows(8, 2)

    def gradient(size, per_chunk_quantile=False):
        torch.manual_seed(0)
        module = WeakToStrong(model=tiny_spec, loss="logconf", zero_init_head=False, micro_batch_size=size)
        batch = _batch(module, rows, tmp_path)
        module.train()
        if per_chunk_quantile:  # what naive gradient accumulation would do
            ids, mask, soft = (batch[k].split(size) for k in ("input_ids", "attention_mask", "soft_label"))
            loss = sum(logconf_loss(module(i, m), s, 0.5).sum() for i, m, s in zip(ids, mask, soft)) / 8
        else:
            loss = module.step(batch, "train").loss
        loss.backward()
        return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])

    full = gradient(None)
    assert torch.allclose(full, gradient(3), atol=1e-6)
    assert not torch.allclose(full, gradient(3, per_chunk_quantile=True), atol=1e-4)


def test_logconf_refuses_gradient_accumulation(tiny_spec, tmp_path):
    module = WeakToStrong(model=tiny_spec, loss="logconf")
    dm = WeakLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _weak_rows(16, 0)), batch_size=4, max_length=64)
    with pytest.raises(ValueError, match="micro_batch_size"):
        quiet_trainer(tmp_path, max_steps=2, accumulate_grad_batches=2).fit(module, datamodule=dm)


def test_step_frac_follows_trainer_progress(tiny_spec, tmp_path):
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(module.step_frac)

    module = WeakToStrong(model=tiny_spec, loss="logconf", warmup_frac=0.5, confidence_schedule="linear")
    dm = WeakLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _weak_rows(32, 0)), batch_size=8, max_length=64)
    quiet_trainer(tmp_path, max_epochs=2, callbacks=[Record()]).fit(module, datamodule=dm)
    assert seen == pytest.approx([k / 8 for k in range(8)])
    assert module.step_frac == 1.0 and WeakToStrong(model=tiny_spec).step_frac == 0.0  # no trainer: 0


def test_reference_defaults_dropout_off_zero_head_and_hparams(tmp_path):
    from lit_rlhf.models import ModelSpec, dropout_probabilities

    spec = ModelSpec(config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "attention_dropout": 0.5})
    module = WeakToStrong(model=spec, loss="product").train()
    assert module.model.backbone.training and set(dropout_probabilities(module.model.backbone)) == {0.0}
    assert 0.5 in dropout_probabilities(WeakToStrong(model=spec, train_dropout=True).model.backbone)
    batch = _batch(module, _weak_rows(4, 0), tmp_path)
    assert torch.equal(module(batch["input_ids"], batch["attention_mask"]), torch.zeros(4, 2))
    assert module.hparams["loss"] == "product"
    probe = WeakToStrong(model=spec, linear_probe=True)
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["model.head.weight"]
    with pytest.raises(ValueError, match="unknown weak-to-strong loss"):
        WeakToStrong(model=spec, loss="hinge")
