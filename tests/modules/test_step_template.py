"""The step template (StepModule): one step(batch, split) gives Lightning's train/val/test steps, names and means."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from lit_rlhf.modules.base import StepModule, StepOutput


class Recorder(Logger):
    name, version = "recorder", 0

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append({k: float(v) for k, v in metrics.items()})


class Toy(StepModule):
    """Batches ``(x, flag)``; ``loss`` = mean of ``x``, ``high`` = share of ``x > 2`` over the flagged rows only."""

    progress_bar_metrics = ("loss", "high")

    def __init__(self, counts_in_training: bool = False) -> None:
        super().__init__(optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.counts_in_training = counts_in_training

    def step(self, batch, split):
        x, flag = batch
        loss = (self.weight * x).mean()
        out = StepOutput(loss, {"loss": loss.detach()}, len(x))
        if split != "train" or self.counts_in_training:
            out.add_subset_means({"high": ((x[flag] > 2).float().mean(), int(flag.sum()))})
        return out


# 2 batches of 3: x = 1..6; flagged rows: x = 1, 3 (batch 1) and x = 5 (batch 2)
X = torch.arange(1.0, 7.0)
FLAG = torch.tensor([True, False, True, False, True, False])


def _trainer(logger=False, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def _data() -> DataLoader:
    return DataLoader(TensorDataset(X, FLAG), batch_size=3)


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_metrics_are_epoch_means_weighted_by_batch_size_or_subset_count(split):
    trainer = _trainer()
    run = trainer.validate if split == "val" else trainer.test
    logged = run(Toy(), dataloaders=_data(), verbose=False)[0]
    assert set(logged) == {f"{split}/loss", f"{split}/high"}
    assert logged[f"{split}/loss"] == pytest.approx(3.5)  # (mean(1,2,3)·3 + mean(4,5,6)·3) / 6
    # batch 1: flagged x = 1, 3 → 1/2 high over 2 rows; batch 2: flagged x = 5 → 1/1 over 1 row; epoch: 2/3
    assert logged[f"{split}/high"] == pytest.approx(2 / 3)  # not the batch mean (1/2 + 1)/2 = 3/4
    assert set(trainer.progress_bar_metrics) == {f"{split}/loss", f"{split}/high"}


def test_training_logs_train_names_through_the_interval_means():
    recorder = Recorder()
    module = Toy()
    _trainer(recorder, max_steps=2, log_every_n_steps=2, limit_val_batches=0).fit(module, _data())
    rows = [r for r in recorder.rows if "train/loss" in r]
    assert len(rows) == 1 and rows[0]["train/loss"] == pytest.approx(3.5)  # the mean of the two steps' losses
    assert "train/high" not in rows[0]


def test_subset_counts_weigh_training_interval_means():
    recorder = Recorder()
    _trainer(recorder, max_steps=2, log_every_n_steps=2, limit_val_batches=0).fit(Toy(counts_in_training=True), _data())
    rows = [r for r in recorder.rows if "train/high" in r]
    assert len(rows) == 1 and rows[0]["train/high"] == pytest.approx(2 / 3)  # weighted 2 : 1, not (1/2 + 1) / 2


def test_a_module_without_step_names_itself():
    class NoStep(StepModule):
        pass

    with pytest.raises(NotImplementedError, match=r"NoStep must define step\(batch, split\)"):
        NoStep().step({}, "train")
