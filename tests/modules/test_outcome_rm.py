"""OutcomeRewardModel: learns final-answer correctness-style labels; scores are P(correct)."""

import random

import pytest
import torch
from conftest import keyword_text, quiet_trainer, write_jsonl

from lit_rlhf.data import WeakLabelDataModule
from lit_rlhf.modules import OutcomeRewardModel
from lit_rlhf.tasks import Arithmetic


def _keyword_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        rows.append({"text": keyword_text(rng, label), "label": label})
    return rows


def test_orm_learns_and_scores(tiny_spec, tmp_path):
    orm = OutcomeRewardModel(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    dm = WeakLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _keyword_rows(512, 0)),
                             val=write_jsonl(tmp_path / "v.jsonl", _keyword_rows(128, 1)), batch_size=16, max_length=64)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    before = {k: v.detach().clone() for k, v in orm.named_parameters()}
    loss_before = trainer.validate(orm, datamodule=dm, verbose=False)[0]["val/loss"]
    trainer.fit(orm, datamodule=dm)
    metrics = trainer.validate(orm, datamodule=dm, verbose=False)[0]
    assert all(not torch.equal(v, before[k]) for k, v in orm.named_parameters())
    assert metrics["val/accuracy"] >= 0.95 and metrics["val/loss"] < 0.5 * loss_before
    batch = dm.collator()(dm.dataset("val").items[:8])
    scores = orm.score(batch["input_ids"], batch["attention_mask"])
    assert scores.shape == (8,) and ((scores > 0.5).long() == batch["label"]).float().mean() >= 0.875


def test_orm_loss_is_soft_target_cross_entropy(tiny_spec):
    orm = OutcomeRewardModel(model=tiny_spec)
    dm = WeakLabelDataModule(task=Arithmetic(), task_sizes={"train": 8, "val": 4, "test": 4}, tokenizer=None)
    dm.tokenizer = orm.tokenizer
    batch = dm.collator()(dm.dataset("train").items)
    out = orm.step(batch, "train")
    loss, stats = out.loss, out.metrics
    logits = orm(batch["input_ids"], batch["attention_mask"])
    expected = torch.nn.functional.cross_entropy(logits, batch["label"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["accuracy"].item() == pytest.approx((logits.argmax(-1) == batch["label"]).float().mean().item())
