"""The frontier envelope of benchmarks/dpo_frontier.py, against hand-computed values."""

import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[2] / "benchmarks" / "dpo_frontier.py"
_spec = importlib.util.spec_from_file_location("dpo_frontier", _path)
frontier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frontier)


def _curve(*points):
    return [{"gold/kl": k, "gold/reward": r} for k, r in points]


CURVES = {
    "DPO β=0.1 lr=0.001": _curve((0.0, 0.0), (1.0, 0.2), (3.0, 0.6)),
    "DPO β=1 lr=0.001": _curve((0.0, 0.0), (2.0, 0.1)),  # below the chord (1, 0.2)–(3, 0.6): never the envelope
    "Preferred-FT lr=0.001": _curve((0.0, 0.0), (0.5, 0.3), (0.4, 0.1)),
}


@pytest.mark.parametrize(("method", "kl", "expected"), [
    ("DPO", 0.0, 0.0),
    ("DPO", 0.5, 0.1),  # chord (0, 0)–(1, 0.2)
    ("DPO", 2.0, 0.4),  # chord (1, 0.2)–(3, 0.6), above the point (2, 0.1)
    ("DPO", 5.0, 0.6),  # beyond the last point: the best reached
    ("Preferred-FT", 0.25, 0.15),  # chord (0, 0)–(0.5, 0.3) beats (0, 0)–(0.4, 0.1)
    ("Preferred-FT", 0.45, 0.27),
    ("Preferred-FT", 1.0, 0.3),
])
def test_envelope_is_the_non_decreasing_upper_concave_hull(method, kl, expected):
    assert frontier.envelope(CURVES, method, kl) == pytest.approx(expected)


def test_envelope_keeps_methods_apart_and_max_kl():
    assert frontier.max_kl(CURVES, "DPO") == 3.0
    assert frontier.max_kl(CURVES, "Preferred-FT") == 0.5
    assert frontier.family("Preferred-FT lr=0.001") == "Preferred-FT"


def test_loss_families_cover_every_registered_loss_type():
    import inspect

    from lit_rlhf.losses.dpo import DPO_LOSS_TYPES

    covered = set()
    for fam in frontier.FAMILIES.values():
        default = inspect.signature(fam.cls).parameters.get("loss_type")
        for run in fam.runs:
            value = run.get("loss_type", default.default if default is not None else None)
            covered |= {value} if isinstance(value, str) else set(value or ())
        assert len(fam.runs) == 2, fam  # a two-value grid each
    assert set(DPO_LOSS_TYPES) <= covered, set(DPO_LOSS_TYPES) - covered
    assert frontier.FAMILIES["KTO"].data == "unpaired"


def test_unpaired_file_splits_each_pair(tmp_path):
    import json

    pairs = [{"prompt": "xy:", "chosen": "aa", "rejected": "hh"}, {"prompt": "zq:", "chosen": "ab", "rejected": "bh"}]
    files = {"train_pairs": frontier.write(tmp_path / "train_pairs.jsonl", pairs),
             "val_pairs": frontier.write(tmp_path / "val_pairs.jsonl", pairs[:1])}
    out = frontier.write_unpaired(files, tmp_path)
    train = [json.loads(line) for line in Path(out["train_unpaired"]).read_text().splitlines()]
    assert train == [{"prompt": "xy:", "completion": "aa", "label": True},
                     {"prompt": "xy:", "completion": "hh", "label": False},
                     {"prompt": "zq:", "completion": "ab", "label": True},
                     {"prompt": "zq:", "completion": "bh", "label": False}]
    val = [json.loads(line) for line in Path(out["val_unpaired"]).read_text().splitlines()]
    assert val == [{"prompt": "xy:", "completion": "aa", "label": True}]


def test_run_names_keep_the_family_first():
    assert frontier.run_name("sigmoid", {"loss_type": "sigmoid", "beta": 2.0}) == "sigmoid β=2"
    name = frontier.run_name("robust/cdpo", {"loss_type": "robust", "beta": 2.0, "label_smoothing": 0.1})
    assert name == "robust/cdpo robust β=2 ε=0.1" and frontier.family(name) == "robust/cdpo"
    assert frontier.run_name("sft", {"loss_type": "sft", "reference": "none", "lr": 1e-3}) == "sft lr=0.001"
