"""W&B logging: offline without an account (no network probe), and GoldEval's sample table in the run."""

import json
import socket

import lightning as L
import pytest
import torch

from lit_rlhf.data import SFTDataModule
from lit_rlhf.eval import AutoWandbLogger, GoldEval
from lit_rlhf.eval import wandb as wandb_mod
from lit_rlhf.eval.wandb import wandb_online_possible
from lit_rlhf.modules import SFT
from lit_rlhf.tasks import Arithmetic


class _Probe:
    """Stands in for ``socket.create_connection``: records calls, answers as told."""

    def __init__(self, reachable: bool) -> None:
        self.calls, self.reachable = [], reachable

    def __call__(self, address, timeout=None):
        self.calls.append(address)
        if not self.reachable:
            raise OSError("unreachable")
        return socket.socket()  # never connected; close() is all the caller does


@pytest.fixture
def no_account(monkeypatch, tmp_path):
    """No API key, no ~/.netrc, no WANDB_MODE; the network probe is recorded and would succeed."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    probe = _Probe(reachable=True)
    monkeypatch.setattr(wandb_mod.socket, "create_connection", probe)
    return probe


def test_no_key_no_netrc_is_offline_without_network(no_account):
    assert wandb_online_possible() is False
    assert no_account.calls == []  # decided from the missing key alone


def test_key_and_reachable_host_is_online(no_account, monkeypatch):
    # the counterpart: the same setup with a key does probe the host and says yes
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_online_possible() is True
    assert no_account.calls == [(wandb_mod.WANDB_HOST, 443)]


def test_key_but_unreachable_host_is_offline(no_account, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    no_account.reachable = False
    assert wandb_online_possible() is False
    assert len(no_account.calls) == 1


def test_netrc_entry_counts_as_a_key(no_account, monkeypatch, tmp_path):
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text(f"machine {wandb_mod.WANDB_HOST}\n  login user\n  password {'y' * 40}\n")
    netrc.chmod(0o600)
    assert wandb_online_possible() is True
    assert no_account.calls == [(wandb_mod.WANDB_HOST, 443)]


@pytest.mark.parametrize("mode", ["offline", "disabled", "OFFLINE"])
def test_wandb_mode_offline_wins_over_a_key(no_account, monkeypatch, mode):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", mode)
    assert wandb_online_possible() is False
    assert no_account.calls == []


def test_auto_logger_goes_offline_without_account(no_account, tmp_path):
    logger = AutoWandbLogger(save_dir=tmp_path / "runs", project="t")
    assert logger._offline is True
    assert (tmp_path / "runs").is_dir()
    # Lightning's WandbLogger switches wandb to offline mode when the experiment starts
    assert no_account.calls == []


def test_sft_fit_writes_offline_run_with_gold_table(tiny_spec, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    module = SFT(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3), gold_eval_batches=0)
    dm = SFTDataModule(task=Arithmetic(min_steps=1, max_steps=2), task_sizes={"train": 32, "val": 8, "test": 8},
                       batch_size=8, max_length=64)
    gold = GoldEval(num_prompts=8, sampling={"max_new_tokens": 6})
    logger = AutoWandbLogger(save_dir=tmp_path, project="t")
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=logger, callbacks=[gold], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path, log_every_n_steps=1)
    try:
        trainer.fit(module, datamodule=dm)
    finally:
        wandb.finish()

    runs = sorted(p for p in tmp_path.glob("wandb/offline-run-*") if p.is_dir())
    assert len(runs) == 1, sorted(tmp_path.rglob("*"))
    tables = sorted(runs[0].glob("files/media/table/**/*.table.json"))
    assert len(tables) == 2, tables  # one before training (step 0), one after (step 2)
    prompts = dm.eval_prompts("val", limit=8)
    for path in tables:
        table = json.loads(path.read_text())
        assert table["columns"] == ["prompt", "completion", "reward"]
        assert len(table["data"]) == 8
        assert [row[0] for row in table["data"]] == prompts
        assert all(isinstance(row[1], str) and row[2] in (0.0, 1.0) for row in table["data"])
    assert [h["step"] for h in gold.history] == [0, 2]
    result = json.loads((tmp_path / "gold_eval.json").read_text())  # trainer.log_dir = the logger's save_dir
    assert result["before"] == gold.history[0]["gold/reward"]
