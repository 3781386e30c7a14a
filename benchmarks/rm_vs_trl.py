"""RewardModel training step vs TRL's RewardTrainer vs a hand-written PyTorch loop, on identical work.

    pip install trl   # benchmark-only dependency
    python benchmarks/rm_vs_trl.py [--steps 30] [--repeats 3]

Same tiny Llama (`lit-rlhf:tiny-llama`: hidden 128, 4 layers) with the same initial weights, the same byte
tokenizer, the same preference pairs (BOS + prompt + reply + EOS), batches of 8 pairs, fp32, no gradient
checkpointing, fused AdamW (TRL's default optimizer) with the same settings, one CPU thread. Measured:
CPU-seconds (process time) per optimizer step from batch start to step end, after 5 warm-up steps; median over
all measured steps of all repeats; the
runners are interleaved within each repeat. lit_rlhf runs twice: as configured by default (each pair's prompt
encoded once where its layout rule finds that cheaper) and with ``shared_prefix=False`` (padded rows, the hand
loop's work).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

BATCH, WARMUP, LR = 8, 5, 1e-4


def pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    text = lambda k: "".join(rng.choice("xyzqwv ") for _ in range(k))  # noqa: E731
    return [{"prompt": f"{rng.randint(0, 99)}:", "chosen": text(rng.randint(10, 40)) + " good",
             "rejected": text(rng.randint(10, 40)) + " bad"} for _ in range(n)]


def reference_model(tok):
    from transformers import LlamaForSequenceClassification

    from lit_rlhf.models.assets import tiny_llama_config

    torch.manual_seed(0)
    config = tiny_llama_config(tok)
    config.num_labels = 1
    return LlamaForSequenceClassification(config)


def lit_module(tok, reference, shared_prefix: bool = True):
    from lit_rlhf.modules import RewardModel

    rm = RewardModel(optimizer=lambda p: torch.optim.AdamW(p, lr=LR, fused=True), shared_prefix=shared_prefix)
    rm.model.backbone.load_state_dict(reference.model.state_dict())
    rm.model.head.weight.data.copy_(reference.score.weight.data)
    return rm


def run_lit(tok, reference, path: Path, steps: int, shared_prefix: bool = True) -> list[float]:
    import lightning as L

    from lit_rlhf.data import PreferenceDataModule

    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args):
            self.t = time.process_time()

        def on_train_batch_end(self, *args):
            times.append(time.process_time() - self.t)

    dm = PreferenceDataModule(train=str(path), batch_size=BATCH, max_length=64, group_by_length=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=WARMUP + steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[Clock()])
    trainer.fit(lit_module(tok, reference, shared_prefix), datamodule=dm)
    return times[WARMUP:]


def run_trl(tok, reference, path: Path, steps: int, out: str) -> list[float]:
    import copy

    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            self.t = time.process_time()

        def on_step_end(self, *args, **kwargs):
            times.append(time.process_time() - self.t)

    args = RewardConfig(
        output_dir=out, per_device_train_batch_size=BATCH, max_steps=WARMUP + steps, learning_rate=LR,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to=[], save_strategy="no",
        logging_steps=10_000, max_length=64, dataloader_num_workers=0, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.01, disable_dropout=True,
    )
    data = load_dataset("json", data_files=str(path), split="train")
    trainer = RewardTrainer(model=copy.deepcopy(reference), args=args, train_dataset=data, processing_class=tok,
                            callbacks=[Clock()])
    trainer.train()
    return times[WARMUP:]


def run_loop(tok, reference, path: Path, steps: int) -> list[float]:
    import torch.nn.functional as F

    from lit_rlhf.data import PreferenceDataModule

    rm = lit_module(tok, reference).model
    opt = torch.optim.AdamW(rm.parameters(), lr=LR, fused=True)
    dm = PreferenceDataModule(train=str(path), batch_size=BATCH, max_length=64, group_by_length=False, tokenizer=None)
    dm.tokenizer = tok
    loader = torch.utils.data.DataLoader(dm.dataset("train"), batch_size=BATCH, shuffle=True, collate_fn=dm.collator())
    times = []
    for _, batch in zip(range(WARMUP + steps), loader):
        t = time.process_time()
        chosen, rejected = rm(batch["input_ids"], batch["attention_mask"]).chunk(2)
        loss = F.softplus(rejected - chosen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.process_time() - t)
    return times[WARMUP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from lit_rlhf.models import build_byte_tokenizer

    tok = build_byte_tokenizer()
    reference = reference_model(tok)
    results: dict[str, list[float]] = {"hand-written loop": [], "lit_rlhf RewardModel": [],
                                       "lit_rlhf RewardModel (no sharing)": [], "TRL RewardTrainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in pairs(BATCH * (WARMUP + args.steps) * 2)))
        for _ in range(args.repeats):
            results["hand-written loop"] += run_loop(tok, reference, path, args.steps)
            results["lit_rlhf RewardModel"] += run_lit(tok, reference, path, args.steps)
            results["lit_rlhf RewardModel (no sharing)"] += run_lit(tok, reference, path, args.steps, False)
            results["TRL RewardTrainer"] += run_trl(tok, reference, path, args.steps, tmp + "/trl")
    median = {k: statistics.median(v) for k, v in results.items()}
    base = median["lit_rlhf RewardModel"]
    print(f"| runner | CPU-s per step (median of {len(results['TRL RewardTrainer'])}) | vs lit_rlhf |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.4f} | {value / base:.2f}× |")


if __name__ == "__main__":
    main()
