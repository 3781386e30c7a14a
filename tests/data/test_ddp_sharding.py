"""Under DDP every rank trains on its own share of the length-grouped batches, and together on all the data.

Regression: Lightning rebuilt the training ``DataLoader`` to inject a ``DistributedSampler`` and rebuilt the
batch sampler from that sampler's indices (taken for lengths, one replica), so both ranks trained on the
same first half of the data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import word_pairs

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import sys
    import torch, lightning as L
    torch.set_num_threads(1)
    from lit_rlhf.data import PreferenceDataModule
    from lit_rlhf.modules import RewardModel

    out = sys.argv[1]
    TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 2}

    class Seen(L.Callback):
        rows = []
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            chosen = len(batch["input_ids"]) // 2  # [chosen; rejected]
            for ids, mask in zip(batch["input_ids"][:chosen], batch["attention_mask"][:chosen]):
                self.rows.append(tuple(ids[mask.bool()].tolist()))

    L.seed_everything(0)
    dm = PreferenceDataModule(train=f"{out}/train.jsonl", batch_size=4, max_length=64)
    t = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_epochs=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=[Seen()])
    t.fit(RewardModel(model={"config": TINY}), datamodule=dm)
    every = [tuple(x["chosen_input_ids"]) for x in dm.dataset("train").items]
    torch.save({"seen": Seen.rows, "all": every}, f"{out}/rank{t.global_rank}.pt")
''')


@pytest.mark.slow
def test_ddp_ranks_train_on_disjoint_shares_of_all_pairs(tmp_path):
    word_pairs(tmp_path / "train.jsonl", 32, 0)
    (tmp_path / "ddp.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(tmp_path / "ddp.py"), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert len(r0["seen"]) == len(r1["seen"]) == 16  # 32 pairs, 4 per batch, 4 batches per rank
    assert not set(r0["seen"]) & set(r1["seen"])
    assert sorted(r0["seen"] + r1["seen"]) == sorted(r0["all"])
