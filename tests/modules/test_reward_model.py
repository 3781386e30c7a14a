"""RewardModel: margins from each source, soft labels, and a tiny model that learns the preference."""

import lightning as L
import pytest
import torch
from conftest import word_pairs as _word_pairs

from lit_rlhf.data import PreferenceDataModule
from lit_rlhf.modules import RewardModel


def _batch(tok, pairs, **columns):
    from lit_rlhf.data import Collator, Encoder, PreferenceRow

    enc = Encoder(tok, max_length=64)
    rows = [PreferenceRow(prompt=p, chosen=c, rejected=r, **{k: v[i] for k, v in columns.items()})
            for i, (p, c, r) in enumerate(pairs)]
    return Collator(tok.pad_token_id, pair_keys=("chosen", "rejected"))([enc.preference(r) for r in rows])


PAIRS = [("1+2=", "3", "4"), ("2*3=", "6", "5")]


def test_batch_layout_and_rewards(tiny_spec):
    rm = RewardModel(model=tiny_spec)
    batch = _batch(rm.tokenizer, PAIRS)
    assert batch["input_ids"].shape[0] == 4
    out = rm.score_pairs(batch)
    manual = rm(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(out["chosen"], manual[:2]) and torch.allclose(out["rejected"], manual[2:])
    expected = torch.nn.functional.softplus(-(manual[:2] - manual[2:]))
    assert torch.allclose(out["losses"], expected, atol=1e-6)


@pytest.mark.parametrize(
    "source, columns, expected",
    [
        ("none", {"margin": [1.0, 2.0]}, None),
        ("column", {"margin": [1.0, None]}, [1.0, 0.0]),
        ("rating", {"rating": ["better", "Significantly better"]}, [2 / 3, 1.0]),
        ("adaptive", {"strength": [0.5, -1.0]}, [1.0, -2.0]),
    ],
)
def test_margin_sources(tiny_spec, source, columns, expected):
    rm = RewardModel(model=tiny_spec, margin=source, margin_scale=2.0)
    margin = rm.margins(_batch(rm.tokenizer, PAIRS, **columns), 2)
    if expected is None:
        assert margin is None
    else:
        assert torch.allclose(margin, torch.tensor(expected))


def test_large_table_and_clipping(tiny_spec):
    rm = RewardModel(model=tiny_spec, margin="rating", rating_margins="large")
    assert torch.allclose(rm.margins(_batch(rm.tokenizer, PAIRS, rating=["better", "slightly better"]), 2),
                          torch.tensor([2.0, 1.0]))
    clipped = RewardModel(model=tiny_spec, margin="adaptive", clip_margin=True)
    strengths = _batch(rm.tokenizer, PAIRS, strength=[0.5, -1.0])
    assert torch.allclose(clipped.margins(strengths, 2), torch.tensor([0.5, 0.0]))


def test_unknown_rating_and_missing_strength_are_errors(tiny_spec):
    rm = RewardModel(model=tiny_spec, margin="rating")
    with pytest.raises(ValueError, match="not in the margin table"):
        rm.margins(_batch(rm.tokenizer, PAIRS, rating=["better", "meh"]), 2)
    with pytest.raises(ValueError, match="strength"):
        RewardModel(model=tiny_spec, margin="adaptive").margins(_batch(rm.tokenizer, PAIRS), 2)
    with pytest.raises(ValueError, match=r"margin must be one of \['none', 'column', 'rating', 'adaptive'\], got"):
        RewardModel(model=tiny_spec, margin="colum")


def test_label_smoothing_and_soft_label_column(tiny_spec):
    rm = RewardModel(model=tiny_spec, label_smoothing=0.2)
    batch = _batch(rm.tokenizer, PAIRS, soft_label=[0.6, None])
    out = rm.score_pairs(batch)
    d = out["chosen"] - out["rejected"]
    sp = torch.nn.functional.softplus
    expected = torch.stack([0.6 * sp(-d[0]) + 0.4 * sp(d[0]), 0.8 * sp(-d[1]) + 0.2 * sp(d[1])])
    assert torch.allclose(out["losses"], expected, atol=1e-6)


def test_centering_adds_the_penalty(tiny_spec):
    torch.manual_seed(0)
    rm = RewardModel(model=tiny_spec, center_rewards=0.5)
    batch = _batch(rm.tokenizer, PAIRS)
    out = rm.score_pairs(batch)
    c, r = out["chosen"], out["rejected"]
    expected = torch.nn.functional.softplus(-(c - r)) + 0.5 * (c + r) ** 2
    assert torch.allclose(out["losses"], expected, atol=1e-6)


def test_tiny_reward_model_learns_the_preference(tiny_spec, tmp_path):
    rm = RewardModel(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    dm = PreferenceDataModule(train=_word_pairs(tmp_path / "train.jsonl", 512, 0),
                              val=_word_pairs(tmp_path / "val.jsonl", 128, 1), batch_size=16, max_length=64)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    before = {k: v.detach().clone() for k, v in rm.named_parameters()}
    trainer.validate(rm, datamodule=dm, verbose=False)
    acc_before, loss_before = (trainer.callback_metrics[k].item() for k in ("val/accuracy", "val/loss"))
    trainer.fit(rm, datamodule=dm)
    trainer.validate(rm, datamodule=dm, verbose=False)
    acc_after, loss_after = (trainer.callback_metrics[k].item() for k in ("val/accuracy", "val/loss"))
    assert all(not torch.equal(v, before[k]) for k, v in rm.named_parameters())
    assert acc_after >= 0.95, (acc_before, acc_after)
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)


def test_export_is_a_hf_sequence_classifier_with_the_same_rewards(tiny_spec, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    rm = RewardModel(model=tiny_spec)
    torch.nn.init.normal_(rm.model.head.weight)
    rm.export(tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    batch = tok(["1+2=3", "20*3=60</s>"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, -1] == 0  # right padding is exercised
    expected = rm(batch["input_ids"], batch["attention_mask"])
    got = hf(**batch).logits.squeeze(-1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_validation_reports_gold_agreement_and_per_rating_accuracy(tiny_spec, tmp_path):
    import json

    rows = [{"prompt": "q:", "chosen": f"a{i}", "rejected": f"b{i}", "rating": ["better", "slightly better"][i % 2],
             "gold_label": i % 2} for i in range(8)]
    path = tmp_path / "val.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    rm = RewardModel(model=tiny_spec)
    dm = PreferenceDataModule(train=str(path), val=str(path), batch_size=8)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(rm, datamodule=dm, verbose=False)[0]
    batch = dm.collator()(dm.dataset("val").items)
    chosen, rejected = rm(batch["input_ids"], batch["attention_mask"]).chunk(2)
    wins = (chosen > rejected).float()
    gold = torch.tensor([r["gold_label"] for r in rows], dtype=torch.float32)
    assert metrics["val/gold_agreement"] == pytest.approx((wins == gold).float().mean().item())
    assert metrics["val/accuracy/better"] == pytest.approx(wins[0::2].mean().item())
    assert metrics["val/accuracy/slightly better"] == pytest.approx(wins[1::2].mean().item())


def test_evaluation_adds_accuracy_per_rating_and_gold_agreement_over_their_own_pairs(tiny_spec):
    rm = RewardModel(model=tiny_spec, margin="none")
    pairs = PAIRS + [("3-1=", "2", "1"), ("4/2=", "2", "3")]
    batch = _batch(rm.tokenizer, pairs, rating=["better", None, "better", "slightly better"])
    batch["gold_label"] = torch.tensor([1.0, float("nan"), 0.0, 1.0])
    correct = (rm.score_pairs(batch)["chosen"] > rm.score_pairs(batch)["rejected"]).float()
    out = rm.step(batch, "val")
    assert out.counts == {"gold_agreement": 3, "accuracy/better": 2, "accuracy/slightly better": 1}
    gold = torch.tensor([1.0, 0.0, 1.0])
    assert out.metrics["gold_agreement"].item() == pytest.approx((correct[[0, 2, 3]] == gold).float().mean().item())
    assert out.metrics["accuracy/better"].item() == pytest.approx(correct[[0, 2]].mean().item())
    assert out.metrics["accuracy/slightly better"].item() == correct[3].item()
    assert out.metrics["accuracy"].item() == pytest.approx(correct.mean().item()) and out.batch_size == 4
    train = rm.step(batch, "train")
    assert set(train.metrics) == {"loss", "accuracy", "margin", "mean_reward"} and not train.counts
    torch.testing.assert_close(train.loss, out.loss)
