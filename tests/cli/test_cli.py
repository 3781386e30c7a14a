"""The lit-rlhf command: help, config parsing of every shipped YAML, a tiny fit, export."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_rlhf.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.stem.startswith("rounds_"))  # fit configs
SCALE_CONFIGS = sorted((ROOT / "configs" / "scale").glob("*.yaml"))  # trainer-only: combine with a method config
TINY_MODEL = ('{"name": "lit-rlhf:tiny-llama", "config": {"hidden_size": 32, "intermediate_size": 64, '
              '"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}}')


def test_there_are_configs():
    assert any(c.name == "quickstart.yaml" for c in CONFIGS)


@pytest.mark.parametrize("config", SCALE_CONFIGS, ids=lambda p: p.stem)
def test_scale_configs_combine_with_a_method_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs" / "reward.yaml"), "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    parsed = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load(config.read_text())["trainer"]
    assert parsed["model"]["class_path"] == "lit_rlhf.modules.RewardModel"
    assert parsed["trainer"]["strategy"] == expected["strategy"] or (
        parsed["trainer"]["strategy"]["class_path"] == expected["strategy"]["class_path"])
    assert parsed["trainer"]["devices"] == expected["devices"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses_and_round_trips(config, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    parsed = yaml.safe_load(printed)
    assert parsed["model"]["class_path"].startswith("lit_rlhf.modules.")
    assert parsed["data"]["class_path"].startswith("lit_rlhf.data.")
    # the printed config is itself a valid config that prints identically
    again = tmp_path / f"roundtrip_{config.stem}.yaml"
    again.write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(again), "--print_config"])
    assert capsys.readouterr().out == printed


def test_model_shorthand_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model=SFT", "--help"])
    assert exit_info.value.code == 0
    assert "--trainer.max_steps" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.help", "SFT"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model.gold_eval_batches" in out and "--model.optimizer" in out


COMMANDS = ["fit", "validate", "test", "export", "assets", "pairs", "best-of-n", "rs-temperature",
            "rounds", "strength", "w2s"]


def test_top_level_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "lit_rlhf", "--help"], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if re.match(r"    \S", line)}  # one per command
    assert listed == set(COMMANDS)
    assert "--debug" in out.stdout


@pytest.mark.parametrize("command", ["pears", "predict"])  # no module has a predict step: no `predict` command
def test_unknown_command_is_a_usage_error_that_names_the_commands(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", "configs/reward.yaml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid choice: '{command}'" in err and all(f"'{c}'" in err for c in COMMANDS)


def test_fit_ignores_the_w2s_section_and_does_not_list_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs" / "w2s_synthetic.yaml"), "--help"])
    assert exit_info.value.code == 0
    assert "--w2s" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs" / "w2s_synthetic.yaml"), "--print_config"])
    assert "w2s:" not in capsys.readouterr().out.replace("w2s_synthetic", "")


def test_fit_then_export_loads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    main([
        "fit", "--model=SFT", f"--model.model={TINY_MODEL}",
        "--data=SFTDataModule", "--data.task=Arithmetic",
        '--data.task_sizes={"train": 64, "val": 16, "test": 16}', "--data.batch_size=8",
        "--trainer.max_steps=3", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu",
    ])
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert len(ckpts) == 1
    out = tmp_path / "hf"
    main(["export", str(ckpts[0]), str(out)])
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.hidden_size == 32
    assert tok.decode(tok("12+3=15", add_special_tokens=False)["input_ids"]) == "12+3=15"

    import torch

    from lit_rlhf.cli import load_module

    module = load_module(ckpts[0])
    ids = torch.tensor([tok("1+2=")["input_ids"]])
    assert torch.allclose(module.model(ids).logits, model(ids).logits, atol=1e-5)


def test_export_rejects_foreign_checkpoint(tmp_path, capsys, monkeypatch):
    import torch

    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(SystemExit) as exit_:  # lit_rlhf's own check: one line, the traceback behind --debug
        main(["export", str(path), str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"lit-rlhf export: error: {path}: not a lit_rlhf checkpoint")
    monkeypatch.setenv("LIT_RLHF_DEBUG", "1")
    with pytest.raises(ValueError, match="not a lit_rlhf checkpoint"):
        main(["export", str(path), str(tmp_path / "out")])


def test_a_bad_argument_of_a_module_built_from_the_config_is_one_line(tmp_path, capsys):
    """LightningCLI wraps a constructor's ValueError in the errors of every class it tried; the CLI shows it alone."""
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(ROOT / "configs" / "grpo.yaml"), f"--model.init_args.model={TINY_MODEL}",
              "--model.init_args.group_size=1", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lit-rlhf fit: error: group_size must be >= 2") and "Does not validate" not in err, err


def test_ckpt_path_last_finds_the_newest_last_checkpoint_under_the_run_folder(tmp_path):
    import os
    from types import SimpleNamespace

    from lit_rlhf.cli import find_last_checkpoint

    trainer = SimpleNamespace(default_root_dir=str(tmp_path / "run"), checkpoint_callbacks=[], loggers=[])
    assert find_last_checkpoint(trainer) is None
    old, new = tmp_path / "run/lit-rlhf/a1/checkpoints/last.ckpt", tmp_path / "run/lit-rlhf/b2/checkpoints/last.ckpt"
    validation = tmp_path / "run/lit-rlhf/b2/checkpoints/epoch=0-step=9.ckpt"
    for i, path in enumerate([validation, old, new]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    assert find_last_checkpoint(trainer) == str(new)  # a logger's versioned folders: the newest last.ckpt
    os.utime(old, (2000, 2000))
    assert find_last_checkpoint(trainer) == str(old)
    os.utime(validation, (3000, 3000))  # an extension killed after its validation checkpoint: that one is newest
    assert find_last_checkpoint(trainer) == str(validation)
    for path in (old, new):  # killed before its end: only the checkpoint written at validation is there
        path.unlink()
    assert find_last_checkpoint(trainer) == str(validation)
    # a logger writing elsewhere (save_dir = a working folder holding other runs): only its own <save_dir>/<name>
    logger = SimpleNamespace(save_dir=str(tmp_path / "cwd"), name="proj")
    mine, other = tmp_path / "cwd/proj/v1/checkpoints/last.ckpt", tmp_path / "cwd/elsewhere/last.ckpt"
    for i, path in enumerate([mine, other]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (5000 + i, 5000 + i))
    trainer.loggers = [logger]
    assert find_last_checkpoint(trainer) == str(mine)


@pytest.mark.parametrize("config", ["grpo.yaml", "ppo.yaml", "rejection_sampling.yaml"])
def test_an_unannotated_reward_function_is_accepted_by_import_path(config, tmp_path, monkeypatch):
    """`--model.reward_fn=mymodule.fn` with a plain `def fn(prompts, completions)` (no return annotation)."""
    from lit_rlhf.cli import make_cli

    (tmp_path / "my_rewards_for_cli.py").write_text(
        "def happy(prompts, completions):\n    return [c.count('happy') for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = make_cli(["--config", str(ROOT / "configs" / config), f"--model.init_args.model={TINY_MODEL}",
                    "--model.init_args.reward_fn=my_rewards_for_cli.happy", "--trainer.logger=false",
                    f"--trainer.default_root_dir={tmp_path}"], run=False)
    from lit_rlhf.rollout.rewards import score_completions

    assert score_completions(cli.model.reward_source, None, ["p", "q"], ["happy happy", "sad"]).tolist() == [2.0, 0.0]


def test_a_missing_model_folder_or_init_from_ends_the_command_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for override, expected in (("--model.init_args.model=my_modle", "model 'my_modle': no such local folder"),
                               ("--model.init_args.init_from=runs/sft", "init_from: runs/sft: no such checkpoint")):
        with pytest.raises(SystemExit) as exit_:
            main(["fit", "--config", str(ROOT / "configs" / "dpo.yaml"), "--model.init_args.init_from=null", override,
                  "--trainer.logger=false"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"lit-rlhf fit: error: {expected}") and "Traceback" not in err, err
