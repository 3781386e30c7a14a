"""The pipeline commands: jsonargparse parsers (--help, --config, --print_config), tiny real runs from a YAML
config, the earlier spellings (still working, with a deprecation note) and one-line data errors."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, quiet_trainer, word_pairs, write_jsonl

from lit_rlhf.cli import main
from lit_rlhf.data import DataError
from lit_rlhf.tasks import TASKS, Arithmetic

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ["export", "assets", "pairs", "best-of-n", "rs-temperature", "rounds", "strength", "w2s"]
TINY_MODEL = {"name": "lit-rlhf:tiny-llama", "config": TINY}


class CodeSumTask(Arithmetic):
    """Arithmetic prompts; gold reward = the sum of the completion's code points (ties are rare)."""

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([float(sum(map(ord, c))) for c in completions])


CODE_SUM = f"{CodeSumTask.__module__}.CodeSumTask"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder holding one checkpoint of a tiny SFT policy (1 step)."""
    from lit_rlhf.data import SFTDataModule
    from lit_rlhf.models import ModelSpec
    from lit_rlhf.modules import SFT

    folder = tmp_path_factory.mktemp("sft_run")
    torch.manual_seed(0)
    sft = SFT(model=ModelSpec(config=dict(TINY)))
    trainer = quiet_trainer(folder, max_steps=1, limit_val_batches=0)
    trainer.fit(sft, datamodule=SFTDataModule(task=Arithmetic(), task_sizes={"train": 8, "val": 2, "test": 2},
                                              batch_size=4))
    (folder / "checkpoints").mkdir()
    trainer.save_checkpoint(folder / "checkpoints" / "step1.ckpt")
    return folder


def run(argv: list[str]) -> int:
    """``main(argv)``'s exit status (0 when it returns)."""
    try:
        main(argv)
    except SystemExit as done:
        return done.code or 0
    return 0


def write_yaml(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("command", PIPELINES)
def test_every_pipeline_has_help_config_and_print_config(command, capsys):
    assert run([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lit-rlhf {command}")
    assert "--config CONFIG" in out and "--print_config" in out


PRINT_ARGS = {
    "export": ["run/last.ckpt", "out/hf"],
    "assets": ["--models", "false"],
    "pairs": ["--output", "pairs.jsonl", "--task", "Arithmetic", "--task.min_steps", "3"],
    "best-of-n": ["--output", "bon", "--n", "1", "4", "--aggregate", "min"],
    "rs-temperature": ["--policy", "runs/x", "--temperatures", "0.5", "1.5"],
    "rounds": ["--config", str(ROOT / "configs" / "rounds_rs.yaml"), "--reward_model.update", "meta_rm",
               "--rounds", "5"],
    "strength": ["--config", str(ROOT / "configs" / "reward.yaml"), "--output", "s.jsonl", "--members", "3"],
    "w2s": ["--config", str(ROOT / "configs" / "w2s_synthetic.yaml"), "--losses", "xent", "product", "--seeds", "4"],
}
PRINTED = {  # a few values the arguments above set, as printed
    "export": {"ckpt": "run/last.ckpt", "out_dir": "out/hf"},
    "assets": {"models": False, "data": True},
    "pairs": {"output": "pairs.jsonl", "task": {"class_path": "lit_rlhf.tasks.Arithmetic"}},
    "best-of-n": {"n": [1, 4], "aggregate": ["min"]},
    "rs-temperature": {"policy": "runs/x", "temperatures": [0.5, 1.5]},
    "rounds": {"rounds": 5, "reward_model": {"update": "meta_rm", "steps": 100}},
    "strength": {"members": 3, "model": {"class_path": "lit_rlhf.modules.RewardModel"}},
    "w2s": {"losses": ["xent", "product"], "seeds": [4], "w2s": {"weak": "synthetic:weak_view"}},
}


@pytest.mark.parametrize("command", PIPELINES)
def test_print_config_is_a_config_that_prints_the_same(command, capsys, tmp_path):
    assert run([command, *PRINT_ARGS[command], "--print_config"]) == 0
    printed = capsys.readouterr().out
    parsed = yaml.safe_load(printed)
    for key, value in PRINTED[command].items():
        if isinstance(value, dict):
            assert value.items() <= parsed[key].items(), (key, parsed[key])
        else:
            assert parsed[key] == value, key
    if command == "pairs":
        assert parsed["task"]["init_args"]["min_steps"] == 3
    (tmp_path / "printed.yaml").write_text(printed)
    assert run([command, "--config", str(tmp_path / "printed.yaml"), "--print_config"]) == 0
    assert capsys.readouterr().out == printed


def test_pairs_from_a_config_label_every_pair_by_the_gold_reward(run_folder, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    config = write_yaml(tmp_path / "pairs.yaml", {
        "task": {"class_path": CODE_SUM, "init_args": {"max_steps": 2}}, "policy": str(run_folder),
        "prompts": 3, "samples": 3, "max_new_tokens": 4, "batch_size": 8, "output": str(out)})
    assert run(["pairs", "--config", config]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    prompts = [r["prompt"] for _, r in CodeSumTask(max_steps=2).records("prompt", "train", 3)]
    assert 0 < len(rows) <= 3 * 3  # at most K(K-1)/2 = 3 pairs per prompt
    assert {r["prompt"] for r in rows} <= set(prompts)
    for r in rows:
        chosen, rejected = sum(map(ord, r["chosen"])), sum(map(ord, r["rejected"]))
        assert r["gold_reward_chosen"] == chosen > rejected == r["gold_reward_rejected"]
    assert f"wrote {out}: {len(rows)} pairs from 3 prompts x 3 samples" in capsys.readouterr().out


def test_pairs_and_rs_temperature_on_my_prompt_file_and_my_function(run_folder, tmp_path, capsys, monkeypatch):
    """A user's own plain-text prompts and judge function (a module in the working folder), no task: every pair is
    labelled by the function, the rows carry its scores and no gold reward; chat rows and a missing annotator are
    one-line errors."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_judge.py").write_text("SEEN = []\n\ndef score(prompts, completions):\n    SEEN.extend(prompts)\n"
                                          "    return [float(sum(map(ord, c)) % 97) for c in completions]\n")
    mine = [f"{a}+{a}=" for a in range(20)]
    write_jsonl(tmp_path / "my_prompts.jsonl", [{"prompt": p} for p in mine])
    args = ["pairs", "--task", "null", "--prompt_file", "my_prompts.jsonl", "--policy", str(run_folder), "--prompts",
            "5", "--samples", "3", "--max_new_tokens", "4", "--output", "mine.jsonl"]
    assert run([*args, "--reward_fn", "my_judge.score"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "mine.jsonl").read_text().splitlines()]
    assert rows and {r["prompt"] for r in rows} <= set(mine[:5])  # the first 5 rows of the file
    for r in rows:
        assert set(r) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}
        chosen, rejected = sum(map(ord, r["chosen"])) % 97, sum(map(ord, r["rejected"])) % 97
        assert r["score_chosen"] == chosen > rejected == r["score_rejected"]
    assert "labelled by the annotator (mean gap: annotator" in capsys.readouterr().out

    assert run(args) == 2  # no task and no annotator
    assert "no reward to label the pairs by" in capsys.readouterr().err
    write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "1+1="}, {"prompt": [{"role": "user", "content": "hi"}]}])
    assert run([*args[:4], "chat.jsonl", *args[5:], "--reward_fn", "my_judge.score"]) == 2
    err = capsys.readouterr().err
    assert "chat.jsonl:2: field 'prompt': lit-rlhf pairs takes plain-text prompts" in err and "Traceback" not in err

    write_jsonl(tmp_path / "reviews.jsonl", [{"prompt": "A fine film, and"}])  # a task that cannot grade them
    assert run(["pairs", "--task", "Arithmetic", "--prompt_file", "reviews.jsonl", *args[5:]]) == 2
    err = capsys.readouterr().err
    assert "reviews.jsonl:1: field 'prompt': the task Arithmetic cannot grade this prompt" in err

    # the same pieces pick a rejection-sampling temperature
    import my_judge  # the module the command line imported (from the working folder)

    my_judge.SEEN.clear()
    assert run(["rs-temperature", "--task", "null", "--prompt_file", "my_prompts.jsonl", "--policy", str(run_folder),
                "--prompts", "3", "--k", "2", "--temperatures", "0.5", "2.0", "--max_new_tokens", "3",
                "--reward_fn", "my_judge.score"]) == 0
    assert set(my_judge.SEEN) == set(mine[:3])
    assert capsys.readouterr().out.splitlines()[-1].startswith("best temperature: ")


def test_pairs_killed_midway_resumes_with_the_pairs_of_an_uninterrupted_run(run_folder, tmp_path, monkeypatch, capsys):
    """OUTPUT.partial keeps each finished batch of prompts; the same command after a kill samples only the rest,
    and the file it writes equals that of a run never killed; other settings start over."""
    from lit_rlhf.rollout import pairs as pairs_module

    args = ["pairs", "--task", CODE_SUM, "--task.max_steps", "2", "--policy", str(run_folder), "--prompts", "5",
            "--samples", "2", "--max_new_tokens", "4", "--batch_size", "4"]  # 2 prompts per batch: 3 batches
    assert run([*args, "--output", str(tmp_path / "whole.jsonl")]) == 0
    sample, calls = pairs_module.sample_preference_pairs, []

    def killed_in_the_third(*a, **k):
        calls.append(len(a[3]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return sample(*a, **k)

    monkeypatch.setattr(pairs_module, "sample_preference_pairs", killed_in_the_third)
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run([*args, "--output", str(out)])
    assert not out.exists() and len(Path(f"{out}.partial").read_text().splitlines()) == 3  # settings + 2 batches
    monkeypatch.setattr(pairs_module, "sample_preference_pairs", lambda *a, **k: calls.append(len(a[3])) or
                        sample(*a, **k))
    del calls[:]
    assert run([*args, "--output", str(out)]) == 0
    assert calls == [1] and "resuming after 2 finished chunk(s)" in capsys.readouterr().out  # the last prompt only
    assert out.read_text() == (tmp_path / "whole.jsonl").read_text() and not Path(f"{out}.partial").exists()
    Path(f"{out}.partial").write_text(json.dumps({"seed": 9}) + "\n[]\n")  # another command's leftovers
    del calls[:]
    assert run([*args, "--output", str(out)]) == 0
    assert calls == [2, 2, 1] and out.read_text() == (tmp_path / "whole.jsonl").read_text()
    with pytest.raises(KeyboardInterrupt):  # killed again, then the policy is retrained in place: start over
        monkeypatch.setattr(pairs_module, "sample_preference_pairs", killed_in_the_third)
        del calls[:]
        run([*args, "--output", str(out)])
    ckpt = run_folder / "checkpoints" / "step1.ckpt"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 1))
    monkeypatch.setattr(pairs_module, "sample_preference_pairs", lambda *a, **k: calls.append(len(a[3])) or
                        sample(*a, **k))
    del calls[:]
    assert run([*args, "--output", str(out)]) == 0
    assert calls == [2, 2, 1]  # every batch again, not only the last
    assert "was written with other settings; sampling starts over" in capsys.readouterr().out


def test_pairs_with_no_pair_is_an_error_and_writes_nothing(run_folder, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"  # 2 new tokens cannot hold an arithmetic answer: every reward is 0
    code = run(["pairs", "--task", "Arithmetic", "--policy", str(run_folder), "--prompts", "2", "--samples", "2",
                "--max_new_tokens", "2", "--output", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("lit-rlhf pairs: error: no pairs: all 2 completions of each of the 2 prompts tied")
    assert "Traceback" not in err


def test_rs_temperature_from_a_config_picks_the_best_printed_temperature(run_folder, tmp_path, capsys):
    config = write_yaml(tmp_path / "rs.yaml", {
        "policy": str(run_folder / "checkpoints" / "step1.ckpt"), "task": {"class_path": CODE_SUM},
        "prompts": 2, "k": 2, "temperatures": [0.5, 2.0], "max_new_tokens": 3})
    assert run(["rs-temperature", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {float(line.split()[0][2:]): float(line.split()[-1]) for line in lines if line.startswith("T=")}
    assert set(table) == {0.5, 2.0}
    assert lines[-1] == f"best temperature: {max(table, key=table.get)}"


def test_best_of_n_from_a_config_samples_from_a_run_folder(run_folder, tmp_path):
    config = write_yaml(tmp_path / "bon.yaml", {
        "policy": str(run_folder), "task": "Arithmetic", "problems": 3, "n": [1, 2], "trials": 2,
        "max_new_tokens": 6, "output": str(tmp_path / "bon")})
    assert run(["best-of-n", "--config", config]) == 0
    rows = [json.loads(line) for line in (tmp_path / "bon" / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["completions"]) == 2 for r in rows)
    assert set(json.loads((tmp_path / "bon" / "accuracy.json").read_text())) == {"majority", "pass@N"}


def test_best_of_n_needs_exactly_one_source(tmp_path, capsys):
    assert run(["best-of-n", "--output", str(tmp_path)]) == 2
    assert "exactly one of --policy" in capsys.readouterr().err


def test_export_from_a_config_writes_the_policy_of_the_newest_checkpoint(run_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    from lit_rlhf.pipelines import load_policy_source

    config = write_yaml(tmp_path / "export.yaml", {"ckpt": str(run_folder), "out_dir": str(tmp_path / "hf")})
    assert run(["export", "--config", config]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    _, policy = load_policy_source(str(run_folder / "checkpoints" / "step1.ckpt"))
    ids = torch.tensor([[1, 40, 41, 42]])
    assert torch.allclose(exported(ids).logits, policy(ids).logits, atol=1e-5)


def test_old_spellings_give_the_same_pairs_with_a_deprecation_note(run_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(TASKS, "code_sum", CodeSumTask)
    common = ["--prompts", "2", "--samples", "3", "--temperature", "1.0"]
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    assert run(["pairs", "--task", CODE_SUM, "--task.max_steps", "2", "--policy", str(run_folder), *common,
                "--max_new_tokens", "4", "--output", str(new)]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert run(["pairs", "--task", "code_sum", "--task-args", '{"max_steps": 2}', "--model", "lit-rlhf:tiny-llama",
                "--init-from", str(run_folder), *common, "--max-new-tokens", "4", "--output", str(old)]) == 0
    err = capsys.readouterr().err
    for spelling in ("--task code_sum", "--task-args", "--model", "--init-from", "--max-new-tokens"):
        assert f"lit-rlhf pairs: {spelling} is deprecated" in err, spelling
    assert old.read_text() == new.read_text() and new.read_text()


def test_old_flags_of_export_and_assets_still_work(run_folder, tmp_path, capsys):
    from lit_rlhf.models.assets import fetch_commands

    assert run(["export", str(run_folder), str(tmp_path / "hf"), "--no-merge-lora"]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert "--no-merge-lora is deprecated" in capsys.readouterr().err
    assert run(["assets", "--dry-run", "--models-only"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["$ " + " ".join(c) for c in fetch_commands(models=True, data=False)]
    assert "--dry-run is deprecated" in captured.err and "--models-only is deprecated" in captured.err


def test_a_data_error_is_one_located_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIT_RLHF_DEBUG", "")
    bad = write_jsonl(tmp_path / "cands.jsonl", [{"prompt": "1+2=", "completions": ["3"]}, {"prompt": "2+2="}])
    argv = ["best-of-n", "--candidates", bad, "--output", str(tmp_path / "bon")]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err == f"lit-rlhf best-of-n: error: {bad}:2: field 'completions': must be a list of strings\n"
    with pytest.raises(DataError, match="field 'completions'"):  # the traceback on request
        main([*argv, "--debug"])
    assert os.environ["LIT_RLHF_DEBUG"] == "1"
    with pytest.raises(DataError):
        main(argv)


def test_fit_ends_a_data_error_with_the_located_line_only(tmp_path):
    bad = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "1+2=", "completion": "3"}, {"prompt": "2+2="}])
    argv = [sys.executable, "-m", "lit_rlhf", "fit", "--model=SFT", f"--model.model={json.dumps(TINY_MODEL)}",
            "--data=SFTDataModule", f"--data.train={bad}", "--trainer.max_steps=1", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.accelerator=cpu"]
    env = {**os.environ, "LIT_RLHF_DEBUG": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"lit-rlhf fit: error: {bad}:2: field 'completion': missing (fields present: prompt)")


def rm_config(tmp_path: Path, pairs: int, trainer: dict) -> str:
    """A RewardModel fit config on ``pairs`` word pairs (batches of 8, tiny model, CPU) with ``trainer`` settings."""
    word_pairs(tmp_path / "train.jsonl", pairs, 0)
    return write_yaml(tmp_path / "rm.yaml", {
        "model": {"class_path": "lit_rlhf.modules.RewardModel", "init_args": {"model": TINY_MODEL}},
        "data": {"class_path": "lit_rlhf.data.PreferenceDataModule",
                 "init_args": {"train": str(tmp_path / "train.jsonl"), "batch_size": 8, "max_length": 64}},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False, **trainer}})


def test_strength_and_w2s_run_from_their_configs_without_the_args_warning(tmp_path, capsys, monkeypatch):
    config = rm_config(tmp_path, 32, {"max_steps": 2, "logger": False, "enable_checkpointing": False,
                                      "default_root_dir": str(tmp_path)})
    monkeypatch.setattr(sys, "argv", ["lit-rlhf", "strength", "--config", config])  # LightningCLI warns if argv > 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(["strength", "--config", config, "--members", "2", "--output", str(tmp_path / "s.jsonl")]) == 0
        assert run(["w2s", "--config", str(ROOT / "configs" / "w2s_synthetic.yaml"), "--w2s.pool_size", "300",
                    "--w2s.test_size", "100", "--data.task_sizes", '{"train": 300, "val": 0, "test": 100}',
                    "--losses", "xent", "--seeds", "0", "--output", str(tmp_path / "w2s")]) == 0
    assert not [w for w in caught if "both args and command line" in str(w.message)]
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 32 and all({"strength_mean", "strength_std"} <= r.keys() for r in rows)
    summary = json.loads((tmp_path / "w2s" / "summary.json").read_text())
    assert [r["loss"] for r in summary["runs"]] == ["xent"]
    assert "pgr" in capsys.readouterr().out


@pytest.mark.slow  # two offline W&B runs, ~20 s
def test_strength_members_are_runs_of_their_own(tmp_path, monkeypatch):
    """Each ensemble member is its own W&B run with its own checkpoint folder (the second used to join the first's
    live W&B run and write last-v1.ckpt next to its last.ckpt)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = rm_config(tmp_path, 16, {"max_steps": 1, "default_root_dir": str(tmp_path / "runs"),
                                      "logger": {"class_path": "lit_rlhf.eval.AutoWandbLogger",
                                                 "init_args": {"project": "p"}}})
    assert run(["strength", "--config", config, "--members", "2", "--output", str(tmp_path / "s.jsonl")]) == 0
    checkpoints = sorted((tmp_path / "runs").rglob("*.ckpt"))
    assert [c.name for c in checkpoints] == ["last.ckpt", "last.ckpt"], checkpoints
    assert checkpoints[0].parent != checkpoints[1].parent


def test_w2s_on_one_labelled_file_holds_out_its_test_rows(tmp_path, capsys):
    """A user's one {text, label} file and no test source: ``test_size`` of its rows are the test set (the same
    rows whatever the pool size), the pool comes from the others, nothing is used twice; without test_size, one
    line says what to give."""
    from lit_rlhf.cli import w2s_splits
    from lit_rlhf.data import WeakLabelDataModule

    write_jsonl(tmp_path / "mine.jsonl", [{"text": f"review {i}", "label": i % 2} for i in range(30)])
    dm = WeakLabelDataModule(train=str(tmp_path / "mine.jsonl"))
    pool, test = w2s_splits(dm, 12, 8)
    assert (len(pool), len(test)) == (12, 8)
    assert not {r.text for r in pool} & {r.text for r in test}
    assert "8 of the 30 rows of" in capsys.readouterr().out
    assert [r.text for r in w2s_splits(dm, None, 8)[1]] == [r.text for r in test]  # the test set does not move
    assert len(w2s_splits(dm, None, 8)[0]) == 22
    for size in (None, 30):
        with pytest.raises(ValueError, match="has 30 rows and there is no test split: give data.test"):
            w2s_splits(dm, None, size)
    dm = WeakLabelDataModule(train=str(tmp_path / "mine.jsonl"), test=str(tmp_path / "mine.jsonl"))
    pool, test = w2s_splits(dm, 5, 4)  # a test source: used as given
    assert [r.text for r in pool] == [f"review {i}" for i in range(5)] and [r.text for r in test][:1] == ["review 0"]


def test_best_of_n_grades_a_candidates_file_of_gsm_prompts(tmp_path):
    """GSM grades only the problems it generated: a candidates file of its test prompts (e.g. a best-of-n
    run's own candidates.jsonl) is graded from the command line too."""
    from lit_rlhf.cli import main as cli_main
    from lit_rlhf.tasks import GSM

    task = GSM()
    rows = [r for _, r in task.records("sft", "test", 3)]
    wrong = [r["completion"].rsplit("####", 1)[0] + "#### 123456789" for r in rows]
    path = tmp_path / "cands.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "completions": [r["completion"], w]}) + "\n"
                            for r, w in zip(rows, wrong)))
    cli_main(["best-of-n", "--candidates", str(path), "--task", "GSM", "--problems", "3", "--n", "1", "2",
              "--trials", "4", "--output", str(tmp_path / "out")])
    graded = [json.loads(line)["correct"] for line in (tmp_path / "out" / "candidates.jsonl").open()]
    assert graded == [[True, False]] * 3
