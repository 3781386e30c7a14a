"""Ghost Attention vs naive multi-turn SFT on the ``dialogue`` task: instruction-following rate per turn.

    python benchmarks/gatt.py [--seeds 0 1 2] [--arms naive gatt] [--steps 600] [--plot gatt.png]

Arms (same tiny model, steps, batch size, learning-rate schedule and task; only the data differ):

* ``naive``: dialogues sampled by the task's reference replier as they are — the instruction is in the system
  message, and the replier forgets it after turn 1 (it keeps it at turn ``t`` with probability
  ``0.5 ** (t - 1)``); loss on every assistant turn (``train_on=all_assistant``).
* ``gatt``: :class:`lit_rlhf.data.GAttData` — the same replier samples with the instruction attached to every
  user turn; samples keep it only in the system message and train the final turn only (``last_assistant``).
* ``gatt_all_turns`` (ablation): GAtt replies, but every assistant turn trained (no loss zeroing).
* ``naive_recall`` (ablation): ``naive``, but sampled by a replier that never forgets the system instruction
  (``recall=1``): the data then show the instruction followed at every turn, which separates GAtt's effect
  from the forgetful-sampler premise.

Each trained model then continues 200 test dialogues of 8 turns on its own greedy replies; the table gives
the fraction of replies that follow the system instruction at each turn (mean ± std over seeds) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lit_rlhf.data import GAttData, SFTDataModule  # noqa: E402
from lit_rlhf.models import ModelSpec  # noqa: E402
from lit_rlhf.modules import SFT  # noqa: E402
from lit_rlhf.rollout import ChatReplier  # noqa: E402
from lit_rlhf.tasks import Dialogue  # noqa: E402

MODEL = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4}
ARMS = {  # arm: (data, turns trained, the reference replier's recall of the system instruction)
    "naive": ("naive", "all_assistant", 0.5), "gatt": ("gatt", "last_assistant", 0.5),
    "gatt_all_turns": ("gatt", "all_assistant", 0.5), "naive_recall": ("naive", "all_assistant", 1.0),
}


def arm_data(arm: str, seed: int, size: int, batch_size: int, turns: int) -> tuple[Dialogue, SFTDataModule]:
    """The arm's task (also used for evaluation) and its training data of ``size`` records."""
    source, train_on, recall = ARMS[arm]
    task = Dialogue(min_turns=1, max_turns=turns, recall=recall)
    data_task = GAttData(task) if source == "gatt" else task
    return task, SFTDataModule(task=data_task, task_sizes={"train": size}, train_on=train_on, batch_size=batch_size,
                               max_length=512, seed=seed)


def run(arm: str, seed: int, steps: int, batch_size: int, lr: float, eval_dialogues: int, turns: int) -> dict:
    torch.manual_seed(seed)
    L.seed_everything(seed, verbose=False)
    task, dm = arm_data(arm, seed, steps * batch_size, batch_size, turns)
    module = SFT(model=ModelSpec(config=MODEL), gold_eval_batches=0, warmup=0.05, schedule="cosine", min_lr_ratio=0.1,
                 optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98)))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_s = time.perf_counter() - start
    tokens = sum(len(x["input_ids"]) for x in dm.dataset("train").items)
    trained = sum(sum(x["completion_mask"]) for x in dm.dataset("train").items)
    replier = ChatReplier(module.model, module.tokenizer, {"max_new_tokens": 12}, batch_size=100)
    rates = task.follow_rates(replier, n=eval_dialogues, turns=turns, split="test", seed=seed)
    return {"arm": arm, "seed": seed, "train_s": train_s, "tokens": tokens, "trained_tokens": trained, **rates}


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["naive", "gatt"], choices=sorted(ARMS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--eval-dialogues", type=int, default=200)
    parser.add_argument("--plot", default="benchmarks/gatt.png")
    parser.add_argument("--json", default=None, help="also write every run's figures here")
    parser.add_argument("--merge", nargs="*", default=[], help="add the runs saved by earlier --json files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [r for path in args.merge for r in json.loads(Path(path).read_text())]
    for arm in args.arms:
        for seed in args.seeds:
            if any(r["arm"] == arm and r["seed"] == seed for r in results):
                continue
            r = run(arm, seed, args.steps, args.batch_size, args.lr, args.eval_dialogues, args.turns)
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    seeds = sorted({r["seed"] for r in results})
    turns = range(1, args.turns + 1)
    print("| arm | " + " | ".join(f"turn {t}" for t in turns) + " | train s/run | tokens/run (trained) |")
    print("|---|" + "---|" * (args.turns + 2))
    for arm in args.arms:
        runs = [r for r in results if r["arm"] == arm]
        cells = [mean_std([r["follow"][t - 1] for r in runs]) for t in turns]
        cost = f"{statistics.mean(r['train_s'] for r in runs):.0f}"
        tokens = statistics.mean(r["tokens"] for r in runs) / 1e6
        trained = statistics.mean(r["trained_tokens"] for r in runs) / 1e6
        toks = f"{tokens:.2f}M ({trained:.2f}M)"
        print(f"| {arm} | " + " | ".join(cells) + f" | {cost} | {toks} |")
    print("\nexact replies (right word and instructions), mean over seeds:")
    for arm in args.arms:
        runs = [r for r in results if r["arm"] == arm]
        cells = [f"{statistics.mean(r['correct'][t - 1] for r in runs):.2f}" for t in turns]
        print(f"| {arm} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for arm in args.arms:
            runs = [r for r in results if r["arm"] == arm]
            means = [statistics.mean(r["follow"][t - 1] for r in runs) for t in turns]
            stds = [statistics.stdev(r["follow"][t - 1] for r in runs) if len(runs) > 1 else 0.0 for t in turns]
            ax.errorbar(list(turns), means, yerr=stds, marker="o", capsize=3, label=arm)
        ax.set(xlabel="turn", ylabel="instruction-following rate", ylim=(-0.02, 1.02),
               title=f"dialogue task, tiny Llama, {args.steps} steps × {args.batch_size}, {len(seeds)} seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
