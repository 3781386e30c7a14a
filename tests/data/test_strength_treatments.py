"""Strength treatments: flipping the weakest pairs and soft labels by strength band."""

import json

import pytest
import torch

from lit_rlhf.data import DataError, PreferenceDataModule, PreferenceRow
from lit_rlhf.data.strength import apply_strength_treatments, flip, strength_quantiles


def _rows(strengths):
    return [PreferenceRow(prompt="p", chosen=f"c{i}", rejected=f"r{i}", strength=s, where=f"f:{i + 1}")
            for i, s in enumerate(strengths)]


def test_quantiles_rank_the_strengths():
    q = strength_quantiles(_rows([0.5, -1.0, 2.0, 0.0]))
    assert torch.allclose(q, torch.tensor([0.5, 0.0, 0.75, 0.25], dtype=torch.float64))


def test_flip_swaps_and_negates():
    row = PreferenceRow(prompt="p", chosen="a", rejected="b", strength=-0.4, soft_label=0.8)
    out = flip(row)
    assert (out.chosen, out.rejected, out.strength, out.meta["flipped"]) == ("b", "a", 0.4, True)
    assert out.soft_label == pytest.approx(0.2)


def test_flip_fraction_and_bands():
    rows = _rows([0.5, -1.0, 2.0, 0.0, 1.0])  # quantiles 0.4, 0.0, 0.8, 0.2, 0.6
    out, counts = apply_strength_treatments(
        rows, flip_fraction=0.2, soft_label_bands=[(0.2, 0.4, 0.7), (0.8, 1.0, 0.95)]
    )
    assert [r.chosen for r in out] == ["c0", "r1", "c2", "c3", "c4"]
    assert [r.soft_label for r in out] == [None, None, 0.95, 0.7, None]
    assert counts == {"flipped": 1, "soft_label=0.7": 1, "soft_label=0.95": 1}


def test_missing_strength_names_the_row():
    with pytest.raises(DataError, match=r"f:2: field 'strength'"):
        apply_strength_treatments(_rows([0.1, None]), flip_fraction=0.5)


def test_datamodule_reads_strength_mean_and_flips(tmp_path):
    path = tmp_path / "s.jsonl"
    with path.open("w") as f:
        for i, s in enumerate([0.9, -2.0, 0.3, 1.5]):
            f.write(json.dumps({"prompt": "q", "chosen": f"good{i}", "rejected": f"bad{i}", "strength_mean": s,
                                "strength_std": 0.1}) + "\n")
    dm = PreferenceDataModule(train=str(path), tokenizer="lit-rlhf:tiny-llama", flip_fraction=0.25)
    rows = dm.read("train")
    assert [r.chosen for r in rows] == ["good0", "bad1", "good2", "good3"]
    assert rows[1].strength == 2.0 and rows[0].meta["strength_std"] == 0.1
