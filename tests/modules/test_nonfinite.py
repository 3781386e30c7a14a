"""Non-finite losses: stop with a message naming the step, or skip the update (parameters and optimizer state
untouched)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_rlhf.modules.base import StepModule, StepOutput

NAN_AT = 1  # the batch whose loss is NaN


class Toy(StepModule):
    """Automatic optimisation through the step template; ``manual=True``: its own loop with ``manual_step``."""

    def __init__(self, manual: bool = False, **kwargs) -> None:
        super().__init__(optimizer=lambda p: torch.optim.AdamW(p, lr=0.1), **kwargs)
        self.automatic_optimization = not manual
        self.layer = torch.nn.Linear(3, 1)

    def step(self, batch, split):
        x, index = batch
        loss = (self.layer(x) - 1).pow(2).mean()
        if int(index[0]) == NAN_AT:
            loss = loss * float("nan")
        return StepOutput(loss, {"loss": loss.detach()}, len(x))

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)
        self.manual_step(self.step(batch, "train").loss, self.optimizers())
        return None


class Snapshots(L.Callback):
    def __init__(self) -> None:
        self.params, self.moments = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params.append(pl_module.layer.weight.detach().clone())
        state = trainer.optimizers[0].state.get(pl_module.layer.weight, {})
        self.moments.append(state["exp_avg"].clone() if "exp_avg" in state else None)


def _fit(module: Toy, steps: int = 4) -> Snapshots:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 3), torch.arange(16) // 4), batch_size=4)  # x, batch index
    snaps = Snapshots()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[snaps])
    trainer.fit(module, data)
    return snaps


@pytest.mark.parametrize("manual", [False, True])
def test_nonfinite_loss_stops_naming_the_step(manual):
    torch.set_num_threads(1)
    with pytest.raises(FloatingPointError, match=r"Toy: non-finite loss \(\[nan\]\) at step 1.*nonfinite: skip"):
        _fit(Toy(manual=manual))


@pytest.mark.parametrize("manual", [False, True])
def test_nonfinite_loss_skips_the_update(manual):
    torch.set_num_threads(1)
    module = Toy(manual=manual, nonfinite="skip")
    with pytest.warns(UserWarning, match="update skipped"):
        snaps = _fit(module)
    assert module.skipped_updates == 1
    p, m = snaps.params, snaps.moments
    assert torch.equal(p[NAN_AT], p[NAN_AT - 1]) and torch.equal(m[NAN_AT], m[NAN_AT - 1])  # nothing moved
    assert all(torch.isfinite(x).all() for x in p)
    assert not torch.equal(p[NAN_AT + 1], p[NAN_AT])  # training goes on


def test_nonfinite_option_is_checked():
    with pytest.raises(ValueError, match="nonfinite must be"):
        Toy(nonfinite="ignore")
