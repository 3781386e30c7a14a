"""Hard-kill resume: `lit-rlhf fit` SIGKILLed mid-run, then `fit --ckpt_path last`, equals the uninterrupted run.

Each test runs the shipped config (tiny model, a few steps) three ways: uninterrupted (in-process), killed by
SIGKILL in a subprocess after its checkpoint at step ``k`` (``tests.e2e.resume_callbacks.KillAtStep``), and
resumed in-process from that run folder with ``--ckpt_path last``. CPU, one thread, fixed seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_rlhf.cli import make_cli

REPO = Path(__file__).resolve().parents[2]
TINY = {"name": "lit-rlhf:tiny-llama", "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "num_key_value_heads": 2}}
CALLBACKS = "tests.e2e.resume_callbacks"


@pytest.fixture(autouse=True)
def _importable_callbacks(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # class paths tests.e2e.resume_callbacks.* in in-process runs


def fit_args(config: str, root: Path, every: int, callbacks: list[dict], *overrides: str) -> list[str]:
    """`fit` arguments: the shipped config, the tiny model, no logger, ``last.ckpt`` every ``every`` steps;
    ``{root}`` in an override stands for the run folder."""
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"every_n_train_steps": every, "save_last": True, "save_top_k": -1}}
    return ["fit", "--config", str(REPO / "configs" / config), f"--model.init_args.model={json.dumps(TINY)}",
            "--trainer.logger=false", f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
            f"--trainer.callbacks={json.dumps([checkpoint, *callbacks])}",
            *(o.replace("{root}", str(root)) for o in overrides)]


def start_killed(args: list[str], kill_step: int) -> subprocess.Popen:
    """`python -m lit_rlhf` in a subprocess that SIGKILLs itself before training step ``kill_step``."""
    args = list(args)
    i = next(i for i, a in enumerate(args) if a.startswith("--trainer.callbacks="))
    callbacks = json.loads(args[i].split("=", 1)[1])
    callbacks.append({"class_path": f"{CALLBACKS}.KillAtStep", "init_args": {"step": kill_step}})
    args[i] = f"--trainer.callbacks={json.dumps(callbacks)}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "lit_rlhf", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_killed(proc: subprocess.Popen, root: Path) -> dict:
    """Wait for the killed run; return its ``last.ckpt`` (loaded)."""
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, output[-4000:]
    lasts = sorted(root.rglob("last*.ckpt"))
    assert len(lasts) == 1, (lasts, output[-2000:])
    return torch.load(lasts[0], map_location="cpu", weights_only=True)


def run(args: list[str]):
    """The CLI in-process; returns the trained module and the run's :class:`Recorder`."""
    cli = make_cli(args)
    recorder = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "Recorder")
    return cli.model, recorder


def recorder(*attrs: str) -> dict:
    return {"class_path": f"{CALLBACKS}.Recorder", "init_args": {"attrs": list(attrs)}}


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), (name, (pa[name] - pb[name]).abs().max().item())


def kill_and_resume(tmp_path: Path, config: str, every: int, kill_step: int, attrs: tuple[str, ...], *overrides: str):
    """Uninterrupted, killed and resumed runs; returns (full module, full recorder, resumed module, resumed
    recorder, the killed run's checkpoint)."""
    killed_root = tmp_path / "killed"
    killed = start_killed(fit_args(config, killed_root, every, [], *overrides), kill_step)
    full, full_rec = run(fit_args(config, tmp_path / "full", every, [recorder(*attrs)], *overrides))
    ckpt = wait_killed(killed, killed_root)
    resumed, resumed_rec = run(fit_args(config, killed_root, every, [recorder(*attrs)], *overrides, "--ckpt_path=last"))
    return full, full_rec, resumed, resumed_rec, ckpt


RM = ('--data.init_args.task_sizes={"train": 48, "val": 8, "test": 8}', "--data.init_args.batch_size=8",
      "--trainer.max_epochs=2")


@pytest.mark.slow
def test_reward_model_resume_after_kill_equals_uninterrupted_run(tmp_path):
    # 48 pairs / 8 = 6 batches per epoch, 12 steps; last.ckpt at step 8 (epoch 1, batch 2 of 6); killed at 10
    full, full_rec, resumed, resumed_rec, ckpt = kill_and_resume(tmp_path, "reward.yaml", 4, 10, (), *RM)
    assert ckpt["global_step"] == 8 and ckpt["epoch"] == 1
    assert ckpt["PreferenceDataModule"] == {"train_loader": {"epoch": 1, "batches": 2}}
    assert len(full_rec.batches) == 12
    epochs = [[fp for e, _, fp in full_rec.batches if e == epoch] for epoch in (0, 1)]
    assert epochs[0] != epochs[1]  # every epoch is reshuffled
    # the resumed run trains exactly the batches the killed run had left, in the same order
    assert resumed_rec.batches == full_rec.batches[8:]
    assert_same_parameters(full, resumed)
    start = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert any(not torch.equal(v, full.model.state_dict()[k]) for k, v in start.items())  # it did train after step 8

    # negative control: without the loader position the resumed run restarts epoch 1 and ends elsewhere
    del ckpt["PreferenceDataModule"], ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    (tmp_path / "stateless").mkdir()
    torch.save(ckpt, tmp_path / "stateless" / "last.ckpt")
    stateless, stateless_rec = run(fit_args("reward.yaml", tmp_path / "stateless", 4, [recorder()], *RM,
                                            "--ckpt_path=last"))
    assert stateless_rec.batches != full_rec.batches[8:]
    assert any(not torch.equal(a, b) for a, b in zip(full.parameters(), stateless.parameters()))


@pytest.mark.slow
def test_dpo_resume_after_kill_equals_uninterrupted_run(tmp_path):
    # task-generated pairs; precomputed reference, cached by the killed run and found again by the resumed one
    overrides = ("--model.init_args.init_from=null", "--model.init_args.reference_cache={root}/reference",
                 "--data.init_args.train=null", "--data.init_args.val=null",
                 '--data.init_args.task_sizes={"train": 40, "val": 8, "test": 8}', "--data.init_args.batch_size=8",
                 "--trainer.max_steps=8")
    # 5 batches per epoch: last.ckpt at step 6 = epoch 1 after its first batch; killed before step 7
    full, full_rec, resumed, resumed_rec, ckpt = kill_and_resume(tmp_path, "dpo.yaml", 3, 7, (), *overrides)
    assert ckpt["global_step"] == 6 and ckpt["PreferenceDataModule"] == {"train_loader": {"epoch": 1, "batches": 1}}
    # the starting policy's log-probs from the killed run's cache, not recomputed from the trained policy
    assert resumed.reference_status == {"train": "loaded", "val": "loaded"}
    assert resumed_rec.batches == full_rec.batches[6:]
    assert_same_parameters(full, resumed)


PPO = ('--model.init_args.sampling={"max_new_tokens": 6, "temperature": 0.7}', "--model.init_args.ppo_epochs=2",
       "--model.init_args.num_mini_batches=2", "--model.init_args.kl_coef=0.2", "--model.init_args.kl_target=0.5",
       "--model.init_args.kl_horizon=20", "--model.init_args.reward_norm=true", "--model.init_args.reward_clip=3.0",
       '--data.init_args.task_sizes={"train": 16, "val": 4, "test": 4}', "--data.init_args.batch_size=4",
       "--trainer.max_steps=12")


@pytest.mark.slow
def test_ppo_resume_after_kill_restores_its_state_and_run(tmp_path):
    # 4 optimizer steps per PPO iteration: last.ckpt after iteration 2 (step 8), killed before iteration 3
    attrs = ("kl_ctl", "reward_stats", "buffer", "training_rng")
    full, full_rec, resumed, resumed_rec, ckpt = kill_and_resume(tmp_path, "ppo.yaml", 4, 8, attrs, *PPO)
    assert ckpt["global_step"] == 8
    state, restored = ckpt["ppo_state"], resumed_rec.at_start
    assert restored["kl_ctl"].value == state["kl_ctl"]["value"] != 0.2
    assert restored["reward_stats"].state_dict() == state["reward_stats"] and state["reward_stats"]["count"] == 8
    assert restored["buffer"].texts == state["buffer"]["texts"] and len(state["buffer"]["texts"]["completions"]) == 4
    assert all(torch.equal(restored["buffer"].data[k], v) for k, v in state["buffer"]["data"].items())
    assert torch.equal(restored["training_rng"].saved["torch"], ckpt["training_rng"]["torch"])
    # and the run goes on exactly as the uninterrupted one
    assert resumed_rec.batches == full_rec.batches[2:]
    assert resumed.kl_ctl.value == full.kl_ctl.value
    assert resumed.reward_stats.state_dict() == full.reward_stats.state_dict()
    assert resumed.buffer.texts == full.buffer.texts
    assert_same_parameters(full, resumed)


RS = ('--model.init_args.sampling={"max_new_tokens": 6, "temperature": 1.0}', "--model.init_args.k=2",
      "--model.init_args.sft_steps=2", "--model.init_args.sft_batch_size=4",
      "--model.init_args.min_score=null",  # an untrained policy never answers right: keep every winner
      '--data.init_args.task_sizes={"train": 16, "val": 4, "test": 4}', "--data.init_args.batch_size=4",
      "--trainer.max_steps=6")


@pytest.mark.slow
def test_rejection_sampling_resume_after_kill_restores_pool_rng_and_run(tmp_path):
    # 2 SFT steps per sampling round: last.ckpt after round 2 (step 4), killed before round 3
    full, full_rec, resumed, resumed_rec, ckpt = kill_and_resume(tmp_path, "rejection_sampling.yaml", 2, 4,
                                                                 ("pool", "training_rng"), *RS)
    assert ckpt["global_step"] == 4
    restored = resumed_rec.at_start
    assert restored["pool"] == ckpt["rs_pool"] and len(ckpt["rs_pool"]) == 8
    saved = restored["training_rng"].saved  # torch generator (sampling) and Python random (pool draws)
    assert torch.equal(saved["torch"], ckpt["training_rng"]["torch"])
    assert saved["python"] == ckpt["training_rng"]["python"]
    assert resumed_rec.batches == full_rec.batches[2:]
    assert resumed.pool == full.pool
    assert_same_parameters(full, resumed)
