"""A real reward model on real human preferences, against the lexicon it should beat.

    python benchmarks/reward_minilm_sentiment.py [--seeds 0 1 2]

Trains `configs/reward_minilm_sentiment.yaml` (all-MiniLM-L6-v2 on 3,000 pairs of human-rated movie-review
snippets) and reports held-out accuracy against the human preference (500 validation pairs), overall and per
rating-gap level, next to the VADER lexicon scoring the same pairs (compound(chosen) > compound(rejected);
ties count 1/2). Needs `lit-rlhf assets`.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import torch

from lit_rlhf.cli import make_cli
from lit_rlhf.tasks.sentiment import vader_compound

CONFIG = "configs/reward_minilm_sentiment.yaml"
LEVELS = ("significantly better", "better", "slightly better", "negligibly better / unsure")


def vader_accuracy(rows) -> dict[str, float]:
    chosen = vader_compound([r.chosen for r in rows])
    rejected = vader_compound([r.rejected for r in rows])
    hits = defaultdict(list)
    for row, c, r in zip(rows, chosen, rejected):
        score = 1.0 if c > r else 0.5 if c == r else 0.0
        hits["all"].append(score)
        hits[row.rating].append(score)
    return {k: sum(v) / len(v) for k, v in hits.items()}


def rm_accuracy(seed: int) -> tuple[dict[str, float], list]:
    cli = make_cli(["--config", CONFIG, f"--seed_everything={seed}", "--trainer.logger=false",
                    "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false"],
                   run=False, save_config=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    out = {"all": metrics["val/accuracy"]}
    out.update({level: metrics[f"val/accuracy/{level}"] for level in LEVELS if f"val/accuracy/{level}" in metrics})
    return out, cli.datamodule.rows["val"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs, rows = [], None
    for seed in args.seeds:
        result, rows = rm_accuracy(seed)
        runs.append(result)
        print(f"seed {seed}: {result}", flush=True)
    vader = vader_accuracy(rows)
    counts = defaultdict(int)
    for r in rows:
        counts[r.rating] += 1
    print("| pairs | n | VADER lexicon | MiniLM RM (mean ± std over seeds) |\n|---|---|---|---|")
    for key in ("all", *LEVELS):
        vals = [r[key] for r in runs if key in r]
        spread = f"{statistics.mean(vals):.3f} ± {statistics.pstdev(vals):.3f}" if vals else "-"
        n = len(rows) if key == "all" else counts[key]
        print(f"| {key} | {n} | {vader.get(key, float('nan')):.3f} | {spread} |")


if __name__ == "__main__":
    main()
