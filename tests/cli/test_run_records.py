"""Every `lit-rlhf fit` records itself, ends with a checkpoint, and `--ckpt_path last` extends a finished run.

Runs the CLI in-process on the shipped configs with a tiny model and W&B offline in ``tmp_path``; the W&B run
config is read back from the records of the offline run's ``.wandb`` file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lit_rlhf.cli import make_cli

REPO = Path(__file__).resolve().parents[2]
TINY = {"name": "lit-rlhf:tiny-llama", "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "num_key_value_heads": 2}}


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def fit(root: Path, *overrides: str, config: str = "quickstart.yaml", command: str = "fit"):
    """`lit-rlhf fit` (or another ``command``) in-process on a shipped config: tiny model, W&B offline under
    ``root`` (the logger's ``save_dir`` follows ``--trainer.default_root_dir``, as for a user), no progress bar.

    The quickstart's own ``val_check_interval: 500`` stays: validation never runs within these few steps."""
    import wandb

    args = [command, "--config", str(REPO / "configs" / config), f"--model.init_args.model={json.dumps(TINY)}",
            f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]
    if config == "quickstart.yaml":
        args += ["--model.init_args.schedule=constant", "--model.init_args.warmup=0",
                 "--model.init_args.gold_eval_batches=0", "--trainer.callbacks=[]",
                 '--data.init_args.task_sizes={"train": 4096, "val": 8, "test": 8}', "--data.init_args.batch_size=8"]
    try:
        return make_cli([*args, *overrides])
    finally:
        wandb.finish()  # a live wandb.run would be reused by the next logger of this process


def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file (W&B's leveldb-style log: 32 KiB blocks of chunks with a 7-byte
    header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4; the file starts with a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:8]
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            pending = b""
            yield record
        elif kind in (2, 3):
            pending = chunk if kind == 2 else pending + chunk


def offline_runs(root: Path) -> dict[str, list[Path]]:
    """W&B run id -> its offline run folders (one per process that logged into it)."""
    runs: dict[str, list[Path]] = {}
    for folder in sorted(root.glob("wandb/offline-run-*")):
        runs.setdefault(folder.name.rsplit("-", 1)[1], []).append(folder)
    return runs


def wandb_config(folder: Path) -> dict:
    """The run config as the offline run recorded it (run record, then config updates)."""
    config = {}
    (path,) = folder.glob("*.wandb")
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        config.update({item.key: json.loads(item.value_json) for item in items})
    return config


def test_every_fit_records_its_config_in_its_own_folder_and_its_wandb_run(tmp_path):
    import lightning
    import transformers

    import lit_rlhf

    first = fit(tmp_path, "--trainer.max_steps=2", "--seed_everything=1")
    second = fit(tmp_path, "--trainer.max_steps=3", "--seed_everything=2")
    ids = [cli.trainer.logger.version for cli in (first, second)]
    assert ids[0] != ids[1]
    runs = offline_runs(tmp_path)
    assert sorted(runs) == sorted(ids) and all(len(folders) == 1 for folders in runs.values())

    for run_id, steps, seed in zip(ids, (2, 3), (1, 2)):
        # the CLI config file: in the run's own folder, next to its checkpoints, nothing overwritten
        folder = tmp_path / "lit-rlhf" / run_id
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["trainer"]["max_steps"] == steps and saved["seed_everything"] == seed
        assert saved["model"]["init_args"]["model"]["config"]["hidden_size"] == 32
        assert (folder / "checkpoints" / "last.ckpt").is_file()

        # the W&B run config: the same config plus package versions
        config = wandb_config(runs[run_id][0])
        assert config["model"]["class_path"] == "lit_rlhf.modules.SFT"
        assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.002
        assert config["model"]["init_args"]["schedule"] == "constant"
        assert config["data"]["class_path"] == "lit_rlhf.data.SFTDataModule"
        assert config["data"]["init_args"]["task_sizes"]["train"] == 4096
        assert config["trainer"]["max_steps"] == steps and config["trainer"]["val_check_interval"] == 500
        assert config["seed_everything"] == seed
        assert config["versions"]["torch"] == torch.__version__
        assert config["versions"]["lightning"] == lightning.__version__
        assert config["versions"]["transformers"] == transformers.__version__
        assert config["versions"]["lit_rlhf"] == lit_rlhf.__version__
        assert config["versions"]["peft"]  # a version or "not installed"
    assert not (tmp_path / "config.yaml").exists()  # no shared file that every run overwrites


@pytest.mark.slow
def test_other_loggers_and_no_logger_get_a_config_file_per_run(tmp_path):
    csv = json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}})
    for _ in range(2):
        fit(tmp_path, "--trainer.max_steps=1", f"--trainer.logger={csv}")
    for version in ("version_0", "version_1"):  # the CSV logger's run folders, where its checkpoints/ go
        folder = tmp_path / "quickstart" / version  # name: quickstart, kept from the config's logger
        assert yaml.safe_load((folder / "config.yaml").read_text())["trainer"]["max_steps"] == 1
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
        assert hparams["versions"]["torch"] == torch.__version__ and hparams["seed_everything"] == 0

    bare = tmp_path / "bare"  # no logger, no run id: the root folder, one file per fit
    for steps in (1, 2):
        fit(bare, f"--trainer.max_steps={steps}", "--trainer.logger=false")
    assert [yaml.safe_load((bare / name).read_text())["trainer"]["max_steps"]
            for name in ("config.yaml", "config-2.yaml")] == [1, 2]


@pytest.mark.parametrize("config", ["quickstart.yaml", "reward.yaml"])
def test_a_fit_shorter_than_any_checkpoint_interval_ends_with_last_ckpt(tmp_path, config):
    # quickstart: Lightning's default ModelCheckpoint saves at validation (every 500 steps); reward: every 50 steps
    overrides = ["--trainer.max_steps=3"]
    if config == "reward.yaml":
        overrides += ['--data.init_args.task_sizes={"train": 256, "val": 8, "test": 8}',
                      "--data.init_args.batch_size=8", "--trainer.val_check_interval=20"]
    cli = fit(tmp_path, *overrides, config=config)
    assert cli.trainer.global_step == 3
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["last.ckpt"], checkpoints
    assert checkpoints[0].parent == tmp_path / "lit-rlhf" / cli.trainer.logger.version / "checkpoints"
    ckpt = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    saved = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(v, cli.model.model.state_dict()[k]) for k, v in saved.items())


def test_no_checkpoint_without_checkpointing(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps=2", "--trainer.enable_checkpointing=false")
    assert cli.trainer.global_step == 2 and not list(tmp_path.rglob("*.ckpt"))


def trained(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("steps", [4, 8], ids=["mid-epoch", "epoch-end"])
def test_ckpt_path_last_extends_a_finished_run_in_the_same_wandb_run(tmp_path, steps):
    # 64 rows / 8 = 8 batches per epoch. mid-epoch: 4 steps then 8; epoch-end: a max_epochs=1 run of 8 steps,
    # then 16 (the epoch bound the checkpoint reached is lifted for the larger max_steps)
    data = ['--data.init_args.task_sizes={"train": 64, "val": 8, "test": 8}', "--trainer.max_epochs=1",
            "--trainer.val_check_interval=null"]
    root = tmp_path / "run"
    first = fit(root, *data, f"--trainer.max_steps={steps}")
    assert first.trainer.global_step == steps
    run_id = first.trainer.logger.version
    folder = root / "lit-rlhf" / run_id
    before = trained(first)

    extended = fit(root, *data, f"--trainer.max_steps={2 * steps}", "--ckpt_path=last")
    assert extended.trainer.global_step == 2 * steps
    after = trained(extended)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the same W&B run and run folder: config of each part, one last.ckpt, now at the new step
    assert extended.trainer.logger.version == run_id
    assert list(offline_runs(root)) == [run_id] and len(offline_runs(root)[run_id]) == 2
    assert sorted(p.name for p in folder.glob("config*.yaml")) == ["config-2.yaml", "config.yaml"]
    assert yaml.safe_load((folder / "config-2.yaml").read_text())["trainer"]["max_steps"] == 2 * steps
    assert sorted(p.relative_to(root) for p in root.rglob("*.ckpt")) == [Path("lit-rlhf", run_id, "checkpoints",
                                                                              "last.ckpt")]
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 * steps and ckpt["lit_rlhf_run"] == {"wandb_id": run_id}

    # the extension trains exactly the batches an uninterrupted run trains after step `steps`
    straight = fit(tmp_path / "straight", *data, f"--trainer.max_steps={2 * steps}", "--trainer.max_epochs=-1")
    assert all(torch.equal(v, after[k]) for k, v in trained(straight).items())

    if steps == 8:  # asking for no more steps trains nothing, says so, and leaves last.ckpt as it was
        written = (folder / "checkpoints" / "last.ckpt").stat().st_mtime_ns
        with pytest.warns(UserWarning, match="nothing to train"):
            again = fit(root, *data, f"--trainer.max_steps={2 * steps}", "--ckpt_path=last")
        assert again.trainer.global_step == 2 * steps
        assert (folder / "checkpoints" / "last.ckpt").stat().st_mtime_ns == written
        assert all(torch.equal(v, after[k]) for k, v in trained(again).items())


def test_default_root_dir_alone_moves_the_run_and_ckpt_path_last_looks_in_a_logger_folder_elsewhere(tmp_path, capsys):
    """The shipped configs leave the logger's save_dir unset: `--trainer.default_root_dir` alone moves the W&B files
    and checkpoints (before, they stayed in the config's folder and `--ckpt_path last` then started over)."""
    root = tmp_path / "run"
    first = fit(root, "--trainer.max_steps=1")
    assert Path(first.trainer.logger.save_dir) == root
    assert [p.relative_to(root).parts[0] for p in root.rglob("*.ckpt")] == ["lit-rlhf"]
    other = tmp_path / "logs"  # a config of the user's whose logger writes elsewhere
    fit(tmp_path / "run2", "--trainer.max_steps=1", f"--trainer.logger.init_args.save_dir={other}")
    capsys.readouterr()
    resumed = fit(tmp_path / "run2", "--trainer.max_steps=2", f"--trainer.logger.init_args.save_dir={other}",
                  "--ckpt_path=last")
    assert "resuming from" in capsys.readouterr().out and resumed.trainer.global_step == 2
    assert Path(resumed.trainer.ckpt_path).is_relative_to(other)


def test_a_run_folder_moved_then_extended_keeps_one_last_checkpoint(tmp_path):
    fit(tmp_path / "run", "--trainer.max_steps=1")
    (tmp_path / "run").rename(tmp_path / "moved")
    extended = fit(tmp_path / "moved", "--trainer.max_steps=2", "--ckpt_path=last")
    assert extended.trainer.global_step == 2
    ckpts = list((tmp_path / "moved").rglob("*.ckpt"))  # not last.ckpt (step 1) and last-v1.ckpt (step 2)
    assert [p.name for p in ckpts] == ["last.ckpt"], ckpts
    assert torch.load(ckpts[0], map_location="cpu", weights_only=True)["global_step"] == 2


@pytest.mark.slow  # ~25 s: a fit, then a test and a validate
def test_test_and_validate_with_ckpt_path_last_evaluate_the_runs_newest_checkpoint(tmp_path, capsys):
    """Lightning looks for `last` only in the new run's own folder: it used to warn and test the untrained model."""
    trained = fit(tmp_path / "run", "--trainer.max_steps=2")
    weights = {k: v.clone() for k, v in trained.model.model.state_dict().items()}
    (tmp_path / "run").rename(tmp_path / "moved")
    for command in ("test", "validate"):
        evaluated = fit(tmp_path / "moved", "--ckpt_path=last", command=command)
        (last,) = (tmp_path / "moved").rglob("last.ckpt")
        assert Path(evaluated.trainer.ckpt_path) == last and f"{command} of {last}" in capsys.readouterr().out
        state = evaluated.model.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in weights.items())
    with pytest.raises(ValueError, match="--ckpt_path last: no checkpoint under"):
        fit(tmp_path / "empty", "--ckpt_path=last", command="test")


def test_continue_wandb_run_sets_the_id_before_the_run_starts(tmp_path):
    from lit_rlhf.eval import AutoWandbLogger
    from lit_rlhf.eval.wandb import continue_wandb_run

    logger = AutoWandbLogger(save_dir=tmp_path, project="t", offline=True)
    assert logger.version is None
    assert continue_wandb_run(logger, "abc123") is True
    assert logger.version == "abc123"
    explicit = AutoWandbLogger(save_dir=tmp_path, project="t", offline=True, id="mine")
    assert continue_wandb_run(explicit, "abc123") is False and explicit.version == "mine"


def test_shipped_configs_checkpoint_and_bound_runs_by_steps_or_epochs_not_both():
    # FinalCheckpoint needs checkpointing on; a run bounded by both would stop an extension at the epoch bound
    for path in sorted((REPO / "configs").glob("*.yaml")):
        trainer = yaml.safe_load(path.read_text()).get("trainer", {})
        assert trainer.get("enable_checkpointing", True) is not False, path.name
        assert "max_steps" not in trainer or "max_epochs" not in trainer, path.name


@pytest.mark.slow
def test_ckpt_path_last_resumes_a_killed_run_from_its_validation_checkpoint(tmp_path, capsys):
    """A run killed after a validation checkpoint but before its end has no last.ckpt: `--ckpt_path last` resumes
    from the newest checkpoint instead of silently starting over, and ends where an uninterrupted run ends."""
    data = ['--data.init_args.task_sizes={"train": 64, "val": 8, "test": 8}', "--trainer.max_epochs=1",
            "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]
    root = tmp_path / "run"
    fit(root, *data, "--trainer.max_steps=3")  # validation checkpoint at step 2, last.ckpt at 3
    for path in root.rglob("last*.ckpt"):  # as if killed during step 3: only the validation checkpoint stays
        path.unlink()
    assert [p.name for p in root.rglob("*.ckpt")] == ["epoch=0-step=2.ckpt"]
    capsys.readouterr()
    resumed = fit(root, *data, "--trainer.max_steps=4", "--ckpt_path=last")
    assert "resuming from" in capsys.readouterr().out and resumed.trainer.global_step == 4
    assert Path(resumed.trainer.ckpt_path).name == "epoch=0-step=2.ckpt"  # not a fresh start
    straight = fit(tmp_path / "straight", *data, "--trainer.max_steps=4")
    after = trained(resumed)
    assert all(torch.equal(v, after[k]) for k, v in trained(straight).items())
