"""benchmarks/prm_gsm.py: the candidate pool and its labels, the best-of-N figures on hand-made scores, the fit command
lines, the stage-by-stage resume logic (stages faked), and (slow tier) the whole driver at tiny sizes on a tiny Llama,
run, extended to more steps from its checkpoints, and rerun with nothing left to do."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_rlhf.cli import main
from lit_rlhf.eval.best_of_n import BestOfNResult

_dir = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_dir))
_spec = importlib.util.spec_from_file_location("prm_gsm", _dir / "prm_gsm.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

NEEDS_RG = "the gsm task needs the optional extra reasoning-gym: pip install 'lit-rlhf[gsm]'"
TINY = ["--model", "lit-rlhf:tiny-llama", "--set", 'data.init_args.task_sizes={"train": 16, "val": 4, "test": 4}',
        "data.init_args.max_length=1024", "trainer.val_check_interval=2"]


def options(**kwargs) -> argparse.Namespace:
    defaults = dict(steps=2, test_problems=2, pool=2, n=[2], trials=3, batch_size=4, model=None, set=[],
                    checkpoint_every=25)
    return argparse.Namespace(**{**defaults, **kwargs})


def test_pool_draws_known_solutions_with_their_kinds(tmp_path):
    pytest.importorskip("reasoning_gym", reason=NEEDS_RG)
    task, args = bench.make_task(), options(test_problems=6, pool=8)
    assert task.step_mix == yaml.safe_load((bench.ROOT / "configs" / "prm_gsm.yaml").read_text())["data"][
        "init_args"]["task"]["init_args"]["step_mix"]
    bench.make_pool(task, 0, args, tmp_path / "pool.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "pool.jsonl").read_text().splitlines()]
    problems = list(task.problems("test", 6, seed=0))
    assert [r["prompt"] for r in rows] == [p.question for p in problems]
    kinds = [k for r in rows for k in r["kinds"]]
    assert all(len(r["completions"]) == len(r["kinds"]) == 8 for r in rows)
    assert {"correct", "slip", "compensated"} <= set(kinds)  # right-answer-wrong-process candidates are in the pool
    for problem, row in zip(problems, rows):
        right = task.reward([problem.question] * 8, row["completions"]).bool().tolist()
        assert right == [k != "slip" for k in row["kinds"]]  # a compensated solution has the right final answer
        gold = task.render(problem).completion
        assert all((c == gold) == (k == "correct") for c, k in zip(row["completions"], row["kinds"]))
    again, other = tmp_path / "again.jsonl", tmp_path / "other.jsonl"
    bench.make_pool(bench.make_task(), 0, args, again)
    bench.make_pool(bench.make_task(), 1, args, other)
    assert again.read_text() == (tmp_path / "pool.jsonl").read_text() != other.read_text()


def save_scores(folder: Path, kinds: list[list[str]], scores: dict[str, list[list[float]]]) -> None:
    """A saved best-of-N result and pool: final answer right unless the kind is ``slip``."""
    prompts = [f"q{i}" for i in range(len(kinds))]
    bench.write(folder / "pool.jsonl", [{"prompt": p, "completions": [f"{p} {k}" for k in row], "kinds": row}
                                        for p, row in zip(prompts, kinds)])
    correct = torch.tensor([[k != "slip" for k in row] for row in kinds])
    answers = [["1" if k != "slip" else "2" for k in row] for row in kinds]
    BestOfNResult(prompts, [[f"{p} {k}" for k in row] for p, row in zip(prompts, kinds)], correct, answers,
                  {name: torch.tensor(s) for name, s in scores.items()}).save(folder / "best_of_n", plot=False)


def test_process_accuracy_tells_a_gold_pick_from_a_compensated_one(tmp_path):
    # two problems, each pool = the whole draw at N=3: the PRM picks the gold solution, the ORM the compensated one
    kinds = [["correct", "compensated", "slip"], ["slip", "compensated", "correct"]]
    save_scores(tmp_path, kinds, {"PRM (min)": [[0.9, 0.2, 0.1], [0.1, 0.3, 0.8]],
                                  "ORM": [[0.5, 0.7, 0.6], [0.2, 0.9, 0.4]]})
    figures = bench.tabulate(0, options(n=[3], trials=4), tmp_path)
    acc, process = figures["accuracy"], figures["process_accuracy"]
    assert acc["PRM (min)"][3] == acc["ORM"][3] == acc["majority"][3] == acc["pass@N"][3] == (1.0, 0.0)
    assert process["PRM (min)"][3] == (1.0, 0.0) and process["ORM"][3] == (0.0, 0.0)
    assert process["pass@N"][3] == (1.0, 0.0) and "majority" not in process
    # AUC over the 6 candidates: right answers (4) over slips (2); gold (2) over the rest (4). ORM: 0.5, 0.7, 0.4 and
    # 0.9 are right, 0.6 and 0.2 slips: 6 of 8 pairs ordered; 0.5 and 0.4 are gold: each above 0.2 only, 2 of 8
    assert figures["auc"] == {"PRM (min)": 1.0, "ORM": 0.75}
    assert figures["auc_gold"] == {"PRM (min)": 1.0, "ORM": 0.25}
    assert figures["pool"] == pytest.approx({"correct": 1 / 3, "slip": 1 / 3, "compensated": 1 / 3})


@pytest.mark.parametrize("name", ["prm", "orm"])
def test_fit_command_lines_parse_with_the_seed_steps_folder_and_overrides(name, tmp_path, capsys):
    args = options(steps=7, model="lit-rlhf:tiny-llama", set=["data.init_args.max_length=1024"])
    command = bench.fit_args(name, 3, args, tmp_path / name)
    assert command[0] == "fit" and "--ckpt_path=last" in command
    with pytest.raises(SystemExit):
        main([*command, "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["seed_everything"] == 3 and config["data"]["init_args"]["seed"] == 3
    assert config["trainer"]["max_steps"] == 7 and config["trainer"]["default_root_dir"] == str(tmp_path / name)
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == str(tmp_path / name)
    assert config["model"]["init_args"]["model"]["name"] == "lit-rlhf:tiny-llama"
    assert config["model"]["init_args"]["model"]["lora"]["r"] == 16  # the config's LoRA is kept
    assert config["data"]["init_args"]["max_length"] == 1024
    (checkpoint,) = config["trainer"]["callbacks"]  # last.ckpt every 25 steps, for a killed fit to resume from
    assert checkpoint["class_path"].endswith("ModelCheckpoint")
    assert {k: checkpoint["init_args"][k] for k in ("save_last", "save_top_k", "every_n_train_steps")} == {
        "save_last": True, "save_top_k": 0, "every_n_train_steps": 25}


def test_each_stage_runs_only_when_its_inputs_change(tmp_path, monkeypatch):
    calls = []

    def train(name, seed, args, folder):
        calls.append((name, args.steps))
        return {"steps": args.steps, "test": {}, "cpu_s": 0.0}

    def pool(task, seed, args, path):
        bench.write(path, [{"prompt": "q", "completions": ["a", "b"], "kinds": ["correct", "slip"]}])

    def best_of_n(output, **kwargs):
        calls.append(("best_of_n", kwargs["n"]))
        save_scores(Path(output).parent, [["correct", "slip"]], {"ORM": [[0.7, 0.2]]})

    monkeypatch.setattr(bench, "train", train)
    monkeypatch.setattr(bench, "make_task", lambda: None)
    monkeypatch.setattr(bench, "make_pool", pool)
    monkeypatch.setattr(bench, "best_of_n", best_of_n)
    bench.run_seed(0, options(), tmp_path)
    assert calls == [("prm", 2), ("orm", 2), ("best_of_n", [2])]
    bench.run_seed(0, options(), tmp_path)  # nothing changed: nothing runs
    bench.run_seed(0, options(n=[1, 2]), tmp_path)  # other N: only best-of-N again
    assert calls[3:] == [("best_of_n", [1, 2])]
    out = bench.run_seed(0, options(steps=5, n=[1, 2]), tmp_path)  # more steps: both verifiers extended, rescored
    assert calls[4:] == [("prm", 5), ("orm", 5), ("best_of_n", [1, 2])]
    assert out["best_of_n"]["inputs"]["prm_steps"] == 5 and out["best_of_n"]["accuracy"]["ORM"][2] == (1.0, 0.0)
    with pytest.raises(SystemExit, match="more than --steps 4"):
        bench.run_seed(0, options(steps=4), tmp_path)
    with pytest.raises(SystemExit, match="use another --workdir"):
        bench.run_seed(0, options(steps=5, model="lit-rlhf:tiny-llama"), tmp_path)


@pytest.mark.slow
def test_driver_trains_extends_from_the_checkpoints_and_resumes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("reasoning_gym", reason=NEEDS_RG)
    trained = []
    real_train = bench.train
    monkeypatch.setattr(bench, "train", lambda name, *a: trained.append(name) or real_train(name, *a))
    base = ["prm_gsm.py", "--workdir", str(tmp_path), "--seeds", "0", "--test-problems", "3", "--pool", "4",
            "--n", "1", "2", "--trials", "5", *TINY]

    def run(*extra: str) -> dict:
        monkeypatch.setattr(sys, "argv", [*base, *extra])
        bench.main()
        return json.loads((tmp_path / "seed0" / "results.json").read_text())

    def checkpoints(name: str) -> list[Path]:
        return sorted((tmp_path / "seed0" / name).rglob("*.ckpt"))

    first = run("--steps", "2")
    assert trained == ["prm", "orm"] and first["prm"]["steps"] == first["orm"]["steps"] == 2
    assert set(first["prm"]["test"]) == {"test/loss", "test/step_accuracy", "test/first_error_accuracy"}
    assert set(first["orm"]["test"]) == {"test/loss", "test/accuracy"}
    assert set(first["best_of_n"]["accuracy"]) == {"PRM (product)", "PRM (min)", "ORM", "majority", "pass@N"}
    assert "mean ± std over seeds [0]" in capsys.readouterr().out
    before = {name: checkpoints(name) for name in ("prm", "orm")}
    assert all(len(files) == 1 for files in before.values())

    extended = run("--steps", "4")  # the finished runs go on from their last.ckpt, in the same run folders
    assert trained == ["prm", "orm"] * 2 and extended["prm"]["steps"] == extended["orm"]["steps"] == 4
    for name in ("prm", "orm"):
        assert checkpoints(name) == before[name]
        ckpt = torch.load(before[name][0], map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 4 and ckpt["lit_rlhf_run"]["wandb_id"] == before[name][0].parents[1].name
        assert sorted(p.name for p in before[name][0].parents[1].glob("config*.yaml")) == ["config-2.yaml",
                                                                                         "config.yaml"]
    assert extended["best_of_n"]["inputs"]["prm_steps"] == 4

    again = run("--steps", "4")  # nothing left to do
    assert trained == ["prm", "orm"] * 2 and again["best_of_n"]["cpu_s"] == extended["best_of_n"]["cpu_s"]
    capsys.readouterr()
    run("--steps", "4", "--saved", "--n", "1", "2", "4")  # re-tabulates the saved scores for another N
    assert trained == ["prm", "orm"] * 2 and "| N=1 | N=2 | N=4 |" in capsys.readouterr().out
