"""DPO vs Preferred-FT on a real model at matched KL: SmolLM2-135M-Instruct, movie-review sentiment, CPU.

    OMP_NUM_THREADS=1 python benchmarks/dpo_smollm2.py --seeds 0 1 2 --betas 0.1 0.5 --ft-lrs 1e-4 5e-4 \
        --out runs/dpo_smollm2
    python benchmarks/dpo_smollm2.py --report-only --out runs/dpo_smollm2

The DPO paper's IMDb setup (Rafailov et al. 2023, §6.1 and Fig. 2) on the packaged model (``lit-rlhf assets``), once
per seed (every random draw depends on it):

1. on-policy pairs from the instruct model itself (no SFT step): ``--samples`` continuations (T = 1, 24 new tokens)
   of each of ``--prompts`` 4-word movie-review prefixes of the training split, every pair whose VADER scores
   differ (``lit-rlhf pairs``); ``--held-out`` prefixes of the validation split, each repeated ``--eval-repeats``
   times;
2. from the same model with LoRA (r 16 on all linear layers): DPO at each ``--betas`` (reference = the adapter
   disabled) and Preferred-FT (SFT on the chosen continuations) at each ``--ft-lrs``, batches of 8;
3. every ``--eval-every`` steps, ``GoldEval`` samples one continuation per held-out row (T = 1) and logs the mean
   VADER score and the Monte-Carlo sequence KL to the starting model.

Cost on one CPU thread (measured 2026-12-06 under a load of ~3 on 2 cores): sampling a seed's pairs ~25 min; a
run of 50 steps with evaluations at 0, 25 and 50 ~40 min (each evaluation samples 192 continuations, ~5 min), so
``--steps 50 --eval-every 25 --ft-lrs 5e-4`` (three runs) is ~2.5 h per seed and the defaults about twice that.

Each seed's runs are written to ``OUT/seedN/frontier.json`` after every run; runs already there are skipped, so
a killed or extended benchmark resumes. The report is ``dpo_frontier.py``'s: each method's best gold reward at
estimated KL ≤ k (upper concave envelope of all its runs and evaluations), DPO − Preferred-FT paired by seed,
and ``OUT/frontier.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from dpo_frontier import adamw, report, seed_results, trainer, write

from lit_rlhf.data import PreferenceDataModule, SFTDataModule
from lit_rlhf.eval import GoldEval
from lit_rlhf.modules import DPO, SFT
from lit_rlhf.pipelines import pairs
from lit_rlhf.tasks import Sentiment

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def prepare(args: argparse.Namespace, seed: int, out: Path) -> dict[str, str]:
    """The seed's training pairs and held-out rows (pairs and chosen replies), reused when already written."""
    files = {name: str(out / f"{name}.jsonl") for name in ("train_pairs", "val_pairs", "train_chosen", "val_chosen")}
    marker = out / "prepared.json"
    settings = {"seed": seed, "model": args.model, "prompts": args.prompts, "held_out": args.held_out,
                "samples": args.samples, "eval_repeats": args.eval_repeats, "max_new_tokens": args.max_new_tokens}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return files
    out.mkdir(parents=True, exist_ok=True)
    task = Sentiment(source="movie_reviews", prefix_words=4)
    rows = {}
    for split, n in (("train", args.prompts), ("val", args.held_out)):
        path = pairs(str(out / f"{split}_all.jsonl"), task, args.model, split, n, args.samples, args.max_new_tokens,
                     batch_size=48, seed=seed)
        rows[split] = [json.loads(line) for line in path.read_text().splitlines()]
    first: dict[str, dict] = {}
    for r in rows["val"]:
        first.setdefault(r["prompt"], r)
    rows["val"] = [r for r in first.values() for _ in range(args.eval_repeats)]
    for split, chosen in rows.items():
        write(Path(files[f"{split}_pairs"]), chosen)
        write(Path(files[f"{split}_chosen"]), [{"prompt": r["prompt"], "completion": r["chosen"]} for r in chosen])
    marker.write_text(json.dumps(settings))
    return files


def run_seed(args: argparse.Namespace, seed: int, out: Path) -> dict[str, list[dict]]:
    files = prepare(args, seed, out)
    task = Sentiment(source="movie_reviews", prefix_words=4)
    spec = {"name": args.model, "lora": LORA}
    sampling = {"max_new_tokens": args.max_new_tokens, "temperature": 1.0}
    rows = len(Path(files["val_pairs"]).read_text().splitlines())
    path = out / "frontier.json"
    curves: dict[str, list[dict]] = json.loads(path.read_text()) if path.is_file() else {}
    runs = [(f"DPO β={b:g} lr={args.dpo_lr:g}", b) for b in args.betas] + [(f"Preferred-FT lr={lr:g}", lr)
                                                                            for lr in args.ft_lrs]
    for name, value in runs:
        if name in curves:
            continue
        if name.startswith("DPO"):
            module = DPO(model=spec, beta=value, reference="lora_disabled", optimizer=adamw(args.dpo_lr),
                         warmup=0.1, schedule="cosine")
            dm = PreferenceDataModule(train=files["train_pairs"], val=files["val_pairs"], task=task, batch_size=8,
                                      max_length=64)
        else:
            module = SFT(model=spec, optimizer=adamw(value), warmup=0.1, schedule="cosine", gold_eval_batches=0)
            dm = SFTDataModule(train=files["train_chosen"], val=files["val_chosen"], task=task, batch_size=8,
                               max_length=64)
        gold = GoldEval(num_prompts=rows, sampling=sampling, every_n_steps=args.eval_every, batch_size=32,
                        reference="auto" if name.startswith("DPO") else "snapshot")
        torch.manual_seed(2000 + seed)
        start = time.perf_counter()
        trainer(args.steps, out, [gold]).fit(module, datamodule=dm)
        curves[name] = gold.history
        first, last = gold.history[0], gold.history[-1]
        print(f"seed {seed}: {name}: {time.perf_counter() - start:.0f} s, gold reward {first['gold/reward']:.3f} -> "
              f"{last['gold/reward']:.3f} at KL {last['gold/kl']:.2f}", flush=True)
        path.write_text(json.dumps(curves, indent=1))
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="lit-rlhf:smollm2-135m", help="the starting policy (and pair sampler)")
    parser.add_argument("--prompts", type=int, default=300, help="training prefixes (4 samples each)")
    parser.add_argument("--held-out", type=int, default=48, help="validation prefixes for the gold evaluation")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--ft-lrs", type=float, nargs="+", default=[1e-4, 5e-4])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--eval-repeats", type=int, default=4, help="samples per held-out prefix per evaluation")
    parser.add_argument("--kl-grid", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--out", default="runs/dpo_smollm2")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    if not args.report_only:
        for seed in args.seeds:
            run_seed(args, seed, out / f"seed{seed}")
    report(seed_results(out, "frontier.json"), out, args.kl_grid)


if __name__ == "__main__":
    main()
