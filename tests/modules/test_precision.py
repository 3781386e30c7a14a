"""bf16 runs (a GPU setting; exercised here on CPU, where it is slow but correct): weights in bf16 under
``bf16-true``, while log-probs, rewards and losses are computed in fp32."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import quiet_trainer, word_pairs

from lit_rlhf.data import PreferenceDataModule
from lit_rlhf.modules import DPO, RewardModel


class LossDtypes(L.Callback):
    def __init__(self) -> None:
        self.dtypes: list[torch.dtype] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.dtypes.append(outputs["loss"].dtype)


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
@pytest.mark.parametrize("method", [DPO, RewardModel])
def test_bf16_trains_with_fp32_loss_maths(method, precision, tiny_spec, tmp_path):
    torch.set_num_threads(1)
    module = method(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data = PreferenceDataModule(train=word_pairs(tmp_path / "p.jsonl", 16, seed=0), batch_size=8, max_length=48)
    before = {n: p.detach().float().clone() for n, p in module.model.named_parameters()}
    seen = LossDtypes()
    quiet_trainer(tmp_path, max_steps=2, precision=precision, callbacks=[seen]).fit(module, datamodule=data)
    weights = {p.dtype for p in module.model.parameters()}
    assert weights == ({torch.bfloat16} if precision == "bf16-true" else {torch.float32})
    assert seen.dtypes == [torch.float32, torch.float32]
    moved = [n for n, p in module.model.named_parameters() if not torch.equal(p.float(), before[n])]
    assert moved and all(torch.isfinite(p.float()).all() for p in module.model.parameters())
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        if method is DPO:
            logps, _ = module.policy_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        else:
            _, logps = module.features_and_rewards(batch)
    assert logps.dtype == torch.float32
