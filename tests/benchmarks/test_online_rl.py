"""benchmarks/online_rl.py: `--set` parsing, the process arms, and the `process` command end to end (tiny sizes)."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

_dir = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_dir))
_spec = importlib.util.spec_from_file_location("online_rl", _dir / "online_rl.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_overrides_are_typed():
    assert bench.parse_overrides(["num_iterations=2", "dynamic_sampling=true", "scale_rewards=none",
                                  "clip_high=0.28", "loss_level=sequence"]) == {
        "num_iterations": 2, "dynamic_sampling": True, "scale_rewards": None, "clip_high": 0.28,
        "loss_level": "sequence"}
    with pytest.raises(SystemExit, match="key=value"):
        bench.parse_overrides(["beta"])


def test_process_arms_differ_only_in_the_reward():
    arms = bench.process_arms(Path("p"), Path("o"))
    assert set(arms) == {"gold", "orm", "prm", "prm_dense"}
    assert [arms[a][0] for a in ("gold", "orm", "prm")] == ["grpo"] * 3 and arms["prm_dense"][0] == "reinforce_pp"
    assert arms["orm"][1] == [{"source": "orm", "path": "o"}]
    assert arms["prm"][1] == [{"source": "prm", "path": "p", "aggregate": "min"}]
    assert arms["prm_dense"][1][0]["offset"] == 0.5  # a step judged wrong is penalised where it happens


@pytest.mark.slow
def test_process_command_trains_verifiers_and_runs_every_arm(tmp_path, monkeypatch, capsys):
    """Generator, PRM and ORM are trained in the workdir and reused by a second call; every arm's run is stored with
    the trap and compensated shares; a rerun of the same command skips the finished runs.

    The verifiers' data are the task's own noisy solutions instead of the 2-step generator's samples (gibberish too
    long for the verifiers' ``max_length``); sampling has its own tests."""
    import random

    import prm_vs_orm

    def noisy_solutions(model, tokenizer, prompts, n, sampling):
        task = prm_vs_orm.make_task(argparse.Namespace(trap_prob=0.6, slip_prob=0.05, compensate_prob=0.3))
        problems = {p.prompt: p for p in task.problems("train", len(prompts), seed=1000)}
        rng = random.Random(0)
        return [[task.sample_solution(problems[prompt], rng).completion for _ in range(n)] for prompt in prompts]

    monkeypatch.setattr(prm_vs_orm, "sample_candidates", noisy_solutions)
    out, work = tmp_path / "process.json", tmp_path / "work"
    argv = ["online_rl.py", "process", "--seeds", "0", "--workdir", str(work), "--output", str(out),
            "--sft-steps", "2", "--train-problems", "8", "--train-samples", "2", "--verifier-epochs", "1",
            "--iterations", "2", "--prompts", "2", "--group-size", "2", "--max-new-tokens", "8",
            "--eval-every", "1", "--eval-prompts", "3", "--eval-samples", "1", "--kl-every", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    for folder in ("generator", "prm/export", "orm/export"):
        assert (work / "seed0" / folder / "config.json").is_file(), folder
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {f"{arm}/0" for arm in ("gold", "orm", "prm", "prm_dense")}
    for key, run in runs.items():
        assert not run.get("partial"), key
        assert [e["iteration"] for e in run["evals"]] == [0, 1, 2], key
        assert {"greedy", "sampled", "trap", "compensated", "kl", "length"} <= set(run["evals"][-1]), key
        assert 0.0 <= run["evals"][-1]["trap"] <= 1.0
    assert runs["prm_dense/0"]["settings"]["method"] == "reinforce_pp"
    assert runs["orm/0"]["settings"]["rewards"][0]["path"] == str(work / "seed0" / "orm" / "export")
    stamp = (work / "seed0" / "prm" / "export" / "config.json").stat().st_mtime
    capsys.readouterr()
    bench.main()  # everything is there: no training, no run
    assert "seed 0 it" not in capsys.readouterr().out
    assert (work / "seed0" / "prm" / "export" / "config.json").stat().st_mtime == stamp
    assert json.loads(out.read_text())["runs"] == runs
