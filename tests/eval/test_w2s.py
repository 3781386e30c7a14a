"""PGR by hand."""

import math

import pytest

from lit_rlhf.eval import performance_gap_recovered


def test_pgr_is_exactly_the_formula():
    assert performance_gap_recovered(0.6, 0.7, 0.8) == (0.7 - 0.6) / (0.8 - 0.6)
    assert performance_gap_recovered(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert performance_gap_recovered(0.6, 0.6, 0.8) == 0.0
    assert performance_gap_recovered(0.6, 0.8, 0.8) == 1.0
    assert performance_gap_recovered(0.7, 0.65, 0.8) == pytest.approx(-0.5)  # worse than the supervisor
    assert math.isnan(performance_gap_recovered(0.7, 0.75, 0.7))  # no gap to recover


# -- splits and the pipeline ------------------------------------------------------------------------------

import json  # noqa: E402
import random  # noqa: E402

from conftest import TINY, write_jsonl  # noqa: E402

from lit_rlhf.data import WeakLabelDataModule, WeakLabelRow  # noqa: E402
from lit_rlhf.eval.w2s import (  # noqa: E402
    FeatureProbe,
    W2SSettings,
    check_disjoint,
    parse_loss,
    row_view,
    run_w2s,
    split_rows,
)
from lit_rlhf.tasks import SalientSynthetic  # noqa: E402


def _rows(texts):
    return [WeakLabelRow(t, i % 2, None, f"x:{i}") for i, t in enumerate(texts)]


def test_split_rows_is_disjoint_deterministic_and_keeps_duplicates_together():
    rows = _rows([f"t{i}" for i in range(300)] + ["dup"] * 5)
    parts = split_rows(rows, 3, seed=0)
    assert sum(map(len, parts)) == len(rows) and all(90 <= len(p) <= 110 for p in parts)
    assert sum("dup" in {r.text for r in p} for p in parts) == 1  # equal texts never straddle two parts
    check_disjoint({f"p{k}": p for k, p in enumerate(parts)})
    assert [[r.text for r in p] for p in split_rows(rows, 3, 0)] == [[r.text for r in p] for p in parts]
    assert [r.text for r in split_rows(rows, 3, 1)[0]] != [r.text for r in parts[0]]  # the seed reshuffles
    with pytest.raises(ValueError, match="'a' and 'b' share a text"):
        check_disjoint({"a": _rows(["x", "y"]), "b": _rows(["z", "y"])})


def test_parse_loss():
    assert parse_loss("xent") == ("xent", {})
    assert parse_loss("logconf:linear:median") == ("logconf", {"schedule": "linear", "threshold": "median"})
    for bad in ("hinge", "product:linear", "logconf:cosine"):
        with pytest.raises(ValueError, match="unknown loss"):
            parse_loss(bad)


class _Spy:
    """Wraps a learner and records the texts it trains and predicts on."""

    def __init__(self, inner, seen):
        self.inner, self.seen = inner, seen

    def fit(self, rows, loss, seed):
        self.seen.append(("fit", {r.text for r in rows}))
        self.inner.fit(rows, loss, seed)

    def predict(self, rows):
        return self.inner.predict(rows)


def test_pipeline_never_trains_on_test_and_reports_exact_pgr(tmp_path):
    task = SalientSynthetic()
    sample = lambda split, n: [  # noqa: E731
        WeakLabelRow(r["text"], r["label"], None, w, r) for w, r in task.records("weak", split, n)
    ]
    pool, test = sample("train", 1200), sample("test", 400)
    pool += test[:50]  # a leak in the source: test texts inside the pool
    seen = []
    settings = W2SSettings(weak="w", strong="s", chain=["c"], losses=["xent", "logconf"], seeds=[0],
                           output=str(tmp_path))
    views = {"w": "weak_view", "c": "strong_view", "s": "strong_view"}
    learner = lambda name, role: _Spy(FeatureProbe(row_view(views[name]), lr=1e-3, epochs=1), seen)  # noqa: E731
    summary = run_w2s(settings, pool, test, learner, log=lambda _: None)
    test_texts = {r.text for r in test}
    assert all(not (texts & test_texts) for _, texts in seen)
    fits = [texts for _, texts in seen]
    assert not fits[0] & fits[1]  # weak training part vs the ceiling's part
    for run in summary["runs"]:
        assert run["pgr"] == (run["w2s_acc"] - run["weak_acc"]) / (run["strong_acc"] - run["weak_acc"])
        assert len(run["chain_accs"]) == 2
    assert set(summary["by_loss"]) == {"xent", "logconf"}
    assert json.loads((tmp_path / "summary.json").read_text())["runs"] == summary["runs"]
    # the weak labels file is OpenAI w2s jsonl that the data module reads back with gold labels
    dm = WeakLabelDataModule(train=str(tmp_path / "seed0" / "weak_labels.jsonl"))
    rows = dm.read("train")
    assert {r.text for r in rows} == fits[2] and all("gt_label" in r.meta for r in rows)  # the chain student's part
    weak_agree = sum(r.label == r.meta["gt_label"] for r in rows) / len(rows)
    assert weak_agree == pytest.approx(summary["runs"][0]["label_acc"])


def test_a_killed_sweep_resumes_and_more_seeds_or_losses_extend_it(tmp_path):
    """summary.json is written after every run; a rerun of the same experiment fits only what is missing, and
    other data is another experiment (nothing reused)."""
    task = SalientSynthetic()
    sample = lambda split, n: [  # noqa: E731
        WeakLabelRow(r["text"], r["label"], None, w, r) for w, r in task.records("weak", split, n)
    ]
    pool, test = sample("train", 600), sample("test", 200)
    views = {"w": "weak_view", "s": "strong_view"}
    fits: list[tuple[str, str]] = []

    class Counting(FeatureProbe):
        def fit(self, rows, loss, seed):
            if loss == "product" and fail:
                raise RuntimeError("killed")
            fits.append((self.name, loss))
            super().fit(rows, loss, seed)

    def learner(name, role):
        probe = Counting(row_view(views[name]), lr=1e-3, epochs=1)
        probe.name = name
        return probe

    def sweep(seeds, losses, data=pool):
        del fits[:]
        settings = W2SSettings(weak="w", strong="s", losses=losses, seeds=seeds, output=str(tmp_path))
        return run_w2s(settings, data, test, learner, log=lambda _: None, setup={"probe": "linear"})

    fail = True
    with pytest.raises(RuntimeError, match="killed"):
        sweep([0], ["xent", "product"])
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["seed"], r["loss"]) for r in saved["runs"]] == [(0, "xent")]  # written before the kill
    fail = False
    first = sweep([0], ["xent", "product"])
    assert fits == [("w", "xent"), ("s", "xent"), ("s", "product")]  # weak, ceiling, and the missing student
    assert first["runs"][0] == saved["runs"][0]
    extended = sweep([0, 1], ["xent", "product"])
    assert fits == [("w", "xent"), ("s", "xent"), ("s", "xent"), ("s", "product")]  # seed 1 only
    assert extended["runs"][:2] == first["runs"] and [r["seed"] for r in extended["runs"]] == [0, 0, 1, 1]
    fewer = sweep([1], ["product"])
    assert fits == [] and [(r["seed"], r["loss"]) for r in fewer["runs"]] == [(1, "product")]
    assert len(fewer["other_runs"]) == 3  # kept, not lost
    sweep([1], ["product"], data=pool[:500])
    assert len(fits) == 3  # other data: every model is fitted again


@pytest.mark.slow
def test_w2s_command_with_tiny_text_models(tmp_path, capsys):
    from lit_rlhf.cli import main

    rng = random.Random(0)

    def rows(n):
        out = []
        for _ in range(n):
            label = rng.randint(0, 1)
            noise = "".join(rng.choice("xyzqwv ") for _ in range(10))
            out.append({"text": f"{rng.randint(0, 10**6)} " + noise[:5] + ("right" if label else "wrong") + noise[5:],
                        "label": label})
        return out

    model = json.dumps({"name": "lit-rlhf:tiny-llama", "config": TINY})
    main(["w2s", "--config", "configs/w2s_synthetic.yaml", f"--w2s.weak={model}", f"--w2s.strong={model}",
          "--w2s.pool_size=null", "--w2s.test_size=null", "--data.task=null",
          f"--data.train={write_jsonl(tmp_path / 'train.jsonl', rows(96))}",
          f"--data.test={write_jsonl(tmp_path / 'test.jsonl', rows(32))}", "--data.max_length=48",
          "--trainer.max_epochs=1", "--model.optimizer.init_args.lr=0.003",
          "--losses", "xent", "product", "--seeds", "0", "--output", str(tmp_path / "out")])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["loss"] for r in summary["runs"]] == ["xent", "product"]
    assert all(0 <= r[k] <= 1 for r in summary["runs"] for k in ("weak_acc", "w2s_acc", "strong_acc"))
    assert "pgr" in capsys.readouterr().out
