"""`lit-rlhf rounds`: labelling with noise and the bookkeeping by hand; the loop from one YAML; resume after a kill."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

from lit_rlhf.rounds import (
    LabelSettings,
    PolicySettings,
    RewardModelSettings,
    RoundsLoop,
    RoundsSettings,
    flip_labels,
    labels_used,
    pairwise_accuracy,
    settings_changes,
    shifted_groups,
)
from lit_rlhf.tasks import Arithmetic, Task

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}


class DigitTask(Task):
    """Arithmetic prompts; gold reward = the share of digits in the completion (an untrained policy's samples
    differ on it, so every round has comparisons)."""

    def __init__(self) -> None:
        self.arithmetic = Arithmetic(max_steps=2)

    def records(self, kind: str, split: str, n: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        return self.arithmetic.records(kind, split, n, seed)

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions])


# ------------------------------------------------------------------ by hand
def test_flip_labels_swaps_every_side_and_sets_gold_label():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "gold_reward_chosen": 1.0, "gold_reward_rejected": 0.0,
             "score_chosen": 0.7, "score_rejected": 0.2},
            {"prompt": "q", "chosen": "c", "rejected": "d", "gold_reward_chosen": 0.5, "gold_reward_rejected": 0.5}]
    kept = flip_labels(rows, 0.0, random.Random(0))
    assert [r["gold_label"] for r in kept] == [1, None] and not any(r["label_flipped"] for r in kept)
    flipped = flip_labels(rows, 1.0, random.Random(0))
    assert flipped[0] == {"prompt": "p", "chosen": "b", "rejected": "a", "gold_reward_chosen": 0.0,
                          "gold_reward_rejected": 1.0, "score_chosen": 0.2, "score_rejected": 0.7, "gold_label": 0,
                          "label_flipped": True}
    assert rows[0]["chosen"] == "a"  # the input rows are not changed


def test_label_pairs_by_an_annotator_keep_the_gold_rewards():
    from lit_rlhf.rollout.pairs import label_pairs

    # one prompt, 3 samples: gold 1, 0, 0; the annotator scores 0.2, 0.9, 0.9 (prefers b and c over a; b = c tie)
    rows = label_pairs(["p"], ["a", "b", "c"], [1.0, 0.0, 0.0], 3, scores=[0.2, 0.9, 0.9])
    assert rows == [
        {"prompt": "p", "chosen": "b", "rejected": "a", "gold_reward_chosen": 0.0, "gold_reward_rejected": 1.0,
         "score_chosen": 0.9, "score_rejected": 0.2},
        {"prompt": "p", "chosen": "c", "rejected": "a", "gold_reward_chosen": 0.0, "gold_reward_rejected": 1.0,
         "score_chosen": 0.9, "score_rejected": 0.2},
    ]
    gold = label_pairs(["p"], ["a", "b", "c"], [1.0, 0.0, 0.0], 3)  # the gold grader as annotator
    assert [(r["chosen"], r["rejected"]) for r in gold] == [("a", "b"), ("a", "c")] and "score_chosen" not in gold[0]


def test_label_noise_rate_is_the_share_flipped():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "gold_reward_chosen": 1.0, "gold_reward_rejected": 0.0}
            for _ in range(4000)]
    out = flip_labels(rows, 0.2, random.Random(1))
    share = sum(r["label_flipped"] for r in out) / len(out)
    assert share == pytest.approx(0.2, abs=0.02)
    assert all(r["gold_label"] == (0 if r["label_flipped"] else 1) for r in out)


def test_shifted_groups_drop_a_prompt_with_an_empty_sample():
    groups = [{"prompt": "p", "responses": ["a", "b"], "gold": [1, 0]}, {"prompt": "q", "responses": ["c", ""]},
              {"prompt": "r", "responses": [" ", "d"]}]
    assert shifted_groups(groups) == [{"prompt": "p", "responses": ["a", "b"]}]


def test_pairwise_accuracy_by_hand():
    # group 1 (3 samples): gold 0, 1, 1 -> pairs (0,1), (0,2) (1,2 tie skipped); scores order (0,1) right, (0,2) wrong
    # group 2: gold 2, 0 -> one pair, scores tie -> wrong
    gold = [0.0, 1.0, 1.0, 2.0, 0.0, 5.0]
    scores = [0.1, 0.9, -1.0, 0.3, 0.3, 0.0]
    accuracy, pairs = pairwise_accuracy(gold[:3], scores[:3], 3)
    assert (accuracy, pairs) == (0.5, 2)
    assert pairwise_accuracy([2.0, 0.0], [0.3, 0.3], 2) == (0.0, 1)
    assert pairwise_accuracy([1.0, 1.0], [0.0, 2.0], 2) == (None, 0)


@pytest.mark.parametrize(("update", "method", "round_", "expected"), [
    ("retrain", "rejection_sampling", 0, 10), ("retrain", "rejection_sampling", 2, 10),
    ("finetune", "ppo", 1, 10), ("frozen", "grpo", 0, 10), ("frozen", "grpo", 1, 0), ("meta_rm", "grpo", 3, 0),
    ("meta_rm", "dpo", 1, 10),
])
def test_labels_used_per_round(update, method, round_, expected, tmp_path):
    settings = RoundsSettings(output=str(tmp_path), policy="x", task=DigitTask(), reward_model=RewardModelSettings(
        update=update), policy_update=PolicySettings(method=method))
    assert labels_used(settings, round_, 10) == expected


def test_online_labels_count_only_from_the_gold_annotator(tmp_path):
    gold = RoundsSettings(output=str(tmp_path), policy="x", task=DigitTask(), reward_model=RewardModelSettings(
        update="frozen"), policy_update=PolicySettings(method="online_dpo", reward="gold"))
    assert labels_used(gold, 1, 10, online_labels=32) == 32
    proxy = RoundsSettings(output=str(tmp_path), policy="x", task=DigitTask(), reward_model=RewardModelSettings(
        update="frozen"), policy_update=PolicySettings(method="online_dpo"))
    assert labels_used(proxy, 1, 10, online_labels=32) == 0


def test_settings_changes_compare_what_the_settings_mean(tmp_path, monkeypatch):
    model = tmp_path / "models" / "start"
    model.mkdir(parents=True)
    before = {"output": "runs/a", "rounds": 2, "prompts": 8, "policy": str(model), "prompt_file": "p.jsonl",
              "prompt_file_digest": "sha256:1", "label": {"reward_model": None, "noise": 0.1}}
    monkeypatch.chdir(tmp_path / "models")
    same = {**before, "output": "/elsewhere", "rounds": 3, "policy": "start", "prompt_file": "../p.jsonl"}
    assert settings_changes(before, same) == []  # folder moved, extended, the same inputs spelled from elsewhere
    assert settings_changes(before, {**same, "prompts": 9, "prompt_file_digest": "sha256:2"}) == [
        "prompt_file_digest: was 'sha256:1', now 'sha256:2'", "prompts: was 8, now 9"]
    assert settings_changes(before, {**same, "label": {"reward_model": None, "noise": 0.2}}) == [
        "label.noise: was 0.1, now 0.2"]
    other = tmp_path / "other"
    other.mkdir()
    assert settings_changes(before, {**same, "policy": str(other)}) == [f"policy: was '{model}', now '{other}'"]
    gone = {**before, "policy": str(tmp_path / "old_place" / "start")}  # the model was moved here
    assert settings_changes(gone, same) == []
    assert settings_changes(gone, {**same, "policy": "owner/hub-model"}) != []  # a hub name is not a moved folder
    old_style = {k: v for k, v in before.items() if k != "prompt_file_digest"}  # written before digests
    assert settings_changes(old_style, {**before, "prompt_file": "q.jsonl"}) == [
        "prompt_file: was 'p.jsonl', now 'q.jsonl'"]


def test_bad_settings_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="samples_per_prompt.*label.noise"):
        RoundsSettings(output=str(tmp_path), policy="x", task=DigitTask(), samples_per_prompt=1,
                       label=LabelSettings(noise=0.6))


# ------------------------------------------------------------------ end to end
def write_config(tmp_path: Path, rounds: int = 2) -> Path:
    from lit_rlhf.modules import SFT

    policy = tmp_path / "start"
    if not policy.exists():
        torch.manual_seed(0)
        SFT(model={"config": TINY}).export(policy)
    config = {
        "output": str(tmp_path / "loop"), "policy": str(policy),
        "task": {"class_path": f"{__name__}.DigitTask"},
        "rounds": rounds, "prompts": 4, "samples_per_prompt": 3,
        "sampling": {"max_new_tokens": 6, "temperature": 1.0},
        "label": {"noise": 0.1},
        "reward_model": {"update": "retrain", "model": {"config": TINY}, "steps": 4, "batch_size": 4,
                         "max_length": 64},
        "policy_update": {"method": "rejection_sampling", "steps": 4, "batch_size": 2, "lr": 1e-3,
                          "init_args": {"k": 2, "sft_steps": 1, "sft_batch_size": 2}},
        "eval_prompts": 4, "eval_samples": 2, "checkpoint_every": 2, "wandb": False, "seed": 0, "accelerator": "cpu",
    }
    path = tmp_path / "rounds_test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Kill(L.Callback):
    """Raises once the policy stage of round 1 has taken 3 steps (a checkpoint was written at step 2)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= 3:
            raise RuntimeError("killed")


def test_loop_runs_from_one_yaml_and_resumes_after_a_kill(tmp_path, monkeypatch):
    from lit_rlhf.cli import main

    config = write_config(tmp_path)
    starts: list[tuple[int, str, int]] = []

    class Starts(L.Callback):
        def __init__(self, k, stage):
            self.k, self.stage = k, stage

        def on_train_start(self, trainer, pl_module):
            starts.append((self.k, self.stage, trainer.global_step))

    def killing(self, k, stage):
        return [Starts(k, stage)] + ([Kill()] if (k, stage) == (1, "policy") else [])

    monkeypatch.setattr(RoundsLoop, "callbacks", killing)
    with pytest.raises(RuntimeError, match="killed"):
        main(["rounds", "--config", str(config)])
    loop = tmp_path / "loop"
    summary = json.loads((loop / "rounds.json").read_text())
    assert list(summary["rounds"][1]["stages"]) == ["sample", "reward_model"]  # died in round 1's policy stage
    round0 = summary["rounds"][0]
    assert (loop / "round_1" / "policy" / "checkpoints" / "last.ckpt").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in (loop / "round_0").rglob("*") if p.is_file()}

    monkeypatch.setattr(RoundsLoop, "callbacks", lambda self, k, stage: [Starts(k, stage)])
    del starts[:]
    main(["rounds", "--config", str(config)])
    summary = json.loads((loop / "rounds.json").read_text())
    assert starts == [(1, "policy", 2)]  # only the unfinished stage ran, from its step-2 checkpoint
    assert summary["rounds"][0] == round0
    assert mtimes == {p: p.stat().st_mtime_ns for p in (loop / "round_0").rglob("*") if p.is_file()}
    assert summary["rounds"][1]["stages"]["policy"]["resumed_from_step"] == 2
    for r in summary["rounds"]:
        assert list(r["stages"]) == ["sample", "reward_model", "policy", "evaluate"]
        assert r["labels"] == r["stages"]["sample"]["comparisons"] > 0  # retrain: every round's labels are used
        assert 0.0 <= r["gold_reward"] <= 1.0 and r["proxy_reward"] is not None
        assert r["rm_accuracy"] is None or 0.0 <= r["rm_accuracy"] <= 1.0
        for stage in ("policy", "reward_model"):  # named relative to the folder, which may move
            assert not Path(r["checkpoints"][stage]).is_absolute() and (loop / r["checkpoints"][stage]).is_file()
    assert summary["rounds"][1]["labels_total"] == summary["rounds"][0]["labels"] + summary["rounds"][1]["labels"]
    assert summary["rounds"][1]["rm_accuracy_before"] is not None
    assert summary["rounds"][1]["stages"]["reward_model"]["pairs"] == summary["rounds"][1]["labels_total"]
    comparisons = [json.loads(x) for x in (loop / "round_1" / "comparisons.jsonl").read_text().splitlines()]
    assert {"prompt", "chosen", "rejected", "gold_label", "label_flipped"} <= set(comparisons[0])
    assert summary["start"]["gold_reward"] >= 0.0


def test_own_prompt_file_from_another_directory(tmp_path, monkeypatch, capsys):
    """A user's prompt file and output folder given relative to their working directory: every round samples and
    trains on the file's prompts (all 3 of them: fewer than ``prompts``), none of the task's."""
    from lit_rlhf.cli import main

    config = yaml.safe_load(write_config(tmp_path, 1).read_text())
    user = tmp_path / "userdir"
    user.mkdir()
    mine = ["1+2=", "7-3=", "4+4="]
    (user / "my_prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in mine))
    config.update(output="runs/loop", prompt_file="my_prompts.jsonl")
    (user / "mine.yaml").write_text(yaml.safe_dump(config))
    trained: list[str] = []

    class Prompts(L.Callback):
        def on_train_start(self, trainer, pl_module):
            trained.extend(trainer.datamodule.eval_prompts("train"))

    monkeypatch.setattr(RoundsLoop, "callbacks", lambda self, k, stage: [Prompts()] if stage == "policy" else [])
    monkeypatch.chdir(user)
    main(["rounds", "--config", "mine.yaml"])
    loop = user / "runs" / "loop"
    sampled = [json.loads(x)["prompt"] for x in (loop / "round_0" / "samples.jsonl").read_text().splitlines()]
    assert sorted(sampled) == sorted(mine)
    assert trained and {t.removeprefix("<s>") for t in trained} == set(mine), trained
    summary = json.loads((loop / "rounds.json").read_text())
    assert summary["settings"]["prompt_file"] == "my_prompts.jsonl" and summary["rounds"][0]["gold_reward"] is not None

    # the user moves the folder, then extends it to 2 rounds from another directory, every path spelled from there
    moved = tmp_path / "archive"
    moved.mkdir()
    loop = loop.rename(moved / "loop")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = ["rounds", "--config", "../userdir/mine.yaml", "--output", "../archive/loop", "--prompt_file",
             "../userdir/my_prompts.jsonl", "--policy", "../start", "--rounds", "2"]
    main(again)
    summary = json.loads((loop / "rounds.json").read_text())
    assert [list(r["stages"]) for r in summary["rounds"]] == [["sample", "reward_model", "policy", "evaluate"]] * 2
    assert (loop / summary["rounds"][1]["checkpoints"]["policy"]).is_file()
    sampled = [json.loads(x)["prompt"] for x in (loop / "round_1" / "samples.jsonl").read_text().splitlines()]
    assert sorted(sampled) == sorted(mine)  # round 1 started from round 0's policy, found in the moved folder
    (user / "my_prompts.jsonl").write_text(json.dumps({"prompt": "9-9="}) + "\n")  # same name, other prompts
    with pytest.raises(SystemExit):
        main([*again[:-1], "3"])
    assert "other settings (prompt_file_digest: was 'sha256:" in capsys.readouterr().err
    assert not (loop / "round_2").exists()


def test_missing_or_ungradable_inputs_are_one_clear_error_before_anything_is_written(tmp_path, capsys):
    from lit_rlhf.cli import main

    config = write_config(tmp_path, 1)
    for flag, value in (("--policy", "runs/quickstart/policy"), ("--prompt_file", str(tmp_path / "none.jsonl"))):
        with pytest.raises(SystemExit) as exit_info:
            main(["rounds", "--config", str(config), flag, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "no such file or folder" in err and value in err
    reviews = tmp_path / "reviews.jsonl"  # prompts the task cannot grade
    reviews.write_text(json.dumps({"prompt": "A fine film, and"}) + "\n")
    with pytest.raises(SystemExit):
        main(["rounds", "--config", str(config), "--task", "Arithmetic", "--prompt_file", str(reviews)])
    assert f"{reviews}:1: field 'prompt': the task Arithmetic cannot grade this prompt" in capsys.readouterr().err
    assert not (tmp_path / "loop").exists()


def test_shipped_rounds_configs_parse(capsys):
    from lit_rlhf.cli import main

    root = Path(__file__).resolve().parents[2] / "configs"
    configs = sorted(root.glob("rounds_*.yaml"))
    assert configs
    for path in configs:
        with pytest.raises(SystemExit) as exit_info:
            main(["rounds", "--config", str(path), "--print_config"])
        assert exit_info.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)
        expected = yaml.safe_load(path.read_text())
        assert printed["reward_model"]["update"] == expected["reward_model"]["update"]
        assert printed["policy_update"]["method"] == expected["policy_update"]["method"]


def run_variant(tmp_path: Path, rounds: int, **changes: dict[str, Any]) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(write_config(tmp_path, rounds).read_text())
    for key, values in changes.items():
        config[key] = {**config.get(key, {}), **values} if isinstance(values, dict) else values
    from lit_rlhf.cli import main

    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["rounds", "--config", str(path)])
    return json.loads((tmp_path / "loop" / "rounds.json").read_text())


def test_meta_rm_adapts_without_new_labels_and_online_dpo_counts_its_labels(tmp_path):
    summary = run_variant(
        tmp_path, 2, reward_model={"update": "meta_rm", "shifted_batch_size": 2, "meta_lr": 0.01},
        policy_update={"method": "online_dpo", "reward": "gold", "reference": "fixed", "steps": 2, "batch_size": 2,
                       "init_args": {"group_size": 2}})
    first, second = summary["rounds"]
    assert first["stages"]["reward_model"]["update"] == "retrain"  # round 0 trains on its labels
    assert second["stages"]["reward_model"]["update"] == "meta_rm"
    assert second["stages"]["reward_model"]["pairs"] == first["stages"]["sample"]["comparisons"]  # round 0's only
    assert (tmp_path / "loop" / "round_1" / "shifted.jsonl").is_file()
    online = second["stages"]["policy"]["online_labels"]
    assert online >= 2 * 2  # at least steps x prompts per batch
    assert second["labels"] == online  # no new comparisons: only online DPO's gold labels


@pytest.mark.slow  # two loops, about 35 s
def test_a_reward_model_as_the_annotator_labels_what_the_next_reward_model_trains_on(tmp_path):
    """``label.reward_model``: the judge's scores decide the labels (score_chosen > score_rejected on every row), and
    the round's reward model trains on those rows (plain-text pairs with score columns: read as TRL pairs, where they
    were once taken for UltraFeedback and refused)."""
    first = run_variant(tmp_path / "judge", 1)
    judge = str(tmp_path / "judge" / "loop" / first["rounds"][0]["checkpoints"]["reward_model"])
    summary = run_variant(tmp_path / "labelled", 1, label={"reward_model": judge, "noise": 0.0})
    rows = [json.loads(x) for x in (tmp_path / "labelled" / "loop" / "round_0" / "comparisons.jsonl").read_text()
            .splitlines()]
    assert rows and all(r["score_chosen"] > r["score_rejected"] for r in rows)
    assert summary["rounds"][0]["stages"]["reward_model"]["pairs"] == len(rows)


def test_meta_rm_round_with_an_empty_sample_adapts_on_the_other_prompts(tmp_path, monkeypatch):
    """A policy that writes an empty completion for one prompt: MetaRM's shifted set leaves that prompt out (it used to
    stop the loop with a DataError on the empty response)."""
    sample = RoundsLoop.sample

    def one_empty(self, source, prompts, n, seed):
        out = sample(self, source, prompts, n, seed)
        return [""] + out[1:]

    monkeypatch.setattr(RoundsLoop, "sample", one_empty)
    summary = run_variant(tmp_path, 2, reward_model={"update": "meta_rm", "shifted_batch_size": 2, "meta_lr": 0.01})
    assert summary["rounds"][1]["stages"]["reward_model"]["update"] == "meta_rm"
    shifted = [json.loads(x) for x in (tmp_path / "loop" / "round_1" / "shifted.jsonl").read_text().splitlines()]
    samples = [json.loads(x) for x in (tmp_path / "loop" / "round_1" / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["responses"][0] == "" and [g["prompt"] for g in shifted] == [g["prompt"] for g in samples[1:]]


@pytest.mark.slow  # about 15 s each
@pytest.mark.parametrize(("update", "method", "init_args"), [
    ("frozen", "grpo", {"group_size": 2}), ("finetune", "dpo", {}), ("retrain", "ppo", {"num_mini_batches": 1}),
])
def test_other_updates_and_methods_run(tmp_path, update, method, init_args):
    summary = run_variant(tmp_path, 2, reward_model={"update": update},
                          policy_update={"method": method, "steps": 2, "init_args": init_args})
    second = summary["rounds"][1]
    assert second["stages"]["reward_model"]["update"] == update and second["stages"]["policy"]["method"] == method
    if update == "frozen":
        assert second["checkpoints"]["reward_model"] == summary["rounds"][0]["checkpoints"]["reward_model"]
        assert second["labels"] == 0


class ConstantTask(DigitTask):
    """Every completion gets the same gold reward: no pair has a label."""

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.zeros(len(completions))


def test_a_round_without_comparisons_and_a_folder_of_other_settings_are_clear_errors(tmp_path, capsys):
    from lit_rlhf.cli import main

    config = yaml.safe_load(write_config(tmp_path, 1).read_text())
    config["task"] = {"class_path": f"{__name__}.ConstantTask"}
    path = tmp_path / "constant.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["rounds", "--config", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "round 0: no comparisons to train on" in err and "comparisons.jsonl" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["rounds", "--config", str(path), "--prompts", "5"])
    assert exit_info.value.code == 2
    assert "was written with other settings (prompts: was 4, now 5)" in capsys.readouterr().err


def test_round_zero_does_not_depend_on_what_ran_before(tmp_path):
    first = run_variant(tmp_path / "a", 1, reward_model={"update": "frozen"})
    (tmp_path / "b").mkdir()
    write_config(tmp_path / "b", 1)  # the start policy (built under a fixed seed) before the RNG moves on
    torch.rand(1000)  # the global RNG moves on, as after another arm in the same process
    random.random()
    second = run_variant(tmp_path / "b", 1, reward_model={"update": "retrain"})
    keys = ("gold_reward", "proxy_reward", "rm_accuracy", "labels")
    assert {k: first["rounds"][0][k] for k in keys} == {k: second["rounds"][0][k] for k in keys}
