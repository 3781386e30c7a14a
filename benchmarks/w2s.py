"""Weak-to-strong PGR per loss on the two settings, mean ± std over seeds, with a bar chart.

    python benchmarks/w2s.py [--seeds 0 1 2] [--out benchmarks/w2s]

* synthetic: ``configs/w2s_synthetic.yaml`` (a concept salient to the strong model, Burns et al. 2023 §5.2;
  weak = logistic regression on a noisy partial view, strong = linear probe on salient features; 10,000 + 10,000
  training examples, 5,000 test);
* sentiment, linear probe: human-rated movie-review snippets (gold = sign of the human rating), weak = logistic
  regression on VADER scores, strong = linear probe on frozen all-MiniLM-L6-v2 mean-pooled features
  (2,000 + 2,000 training snippets, 1,000 test; reference recipe Adam 1e-3, cosine, batch 32, 2 epochs,
  zero-init head). Full fine-tuning of MiniLM is ``lit-rlhf w2s --config configs/w2s_sentiment.yaml``.

Losses: xent, logconf (repo schedule), logconf (linear schedule), product. Needs ``lit-rlhf assets`` for
the sentiment setting.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lit_rlhf.data.sources import task_rows
from lit_rlhf.eval.w2s import FeatureProbe, W2SSettings, probe_features, run_w2s
from lit_rlhf.tasks import SalientSynthetic, Sentiment

LOSSES = ["xent", "logconf:repo", "logconf:linear", "product"]
SETTINGS = {
    "synthetic (salient features)": dict(
        task=SalientSynthetic(), sizes=(20000, 5000), weak="synthetic:weak_view", strong="synthetic:strong_view",
        probe={"weak": {"lr": 1e-3, "epochs": 5}, "strong": {"lr": 1e-3, "epochs": 1}}),
    "sentiment (MiniLM linear probe)": dict(
        task=Sentiment(), sizes=(4000, 1000), weak="lexicon:vader", strong="probe:lit-rlhf:minilm-l6",
        probe={"weak": {"lr": 1e-2, "epochs": 20}, "strong": {"lr": 1e-3, "epochs": 2}}),
}


def run_setting(name: str, spec: dict, seeds: list[int], out: Path) -> dict:
    pool = task_rows(spec["task"], "weak", "train", spec["sizes"][0], seed=0)
    test = task_rows(spec["task"], "weak", "test", spec["sizes"][1], seed=2)
    settings = W2SSettings(weak=spec["weak"], strong=spec["strong"], losses=LOSSES, seeds=seeds,
                           output=str(out / name.split()[0]))
    clock = time.perf_counter()
    summary = run_w2s(settings, pool, test,
                      lambda model, role: FeatureProbe(probe_features(model), **spec["probe"][role]),
                      log=lambda line: print(line, flush=True))
    summary["seconds"] = time.perf_counter() - clock
    return summary


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(LOSSES)
    for k, loss in enumerate(LOSSES):
        means = [r["by_loss"][loss]["pgr"]["mean"] for r in results.values()]
        stds = [r["by_loss"][loss]["pgr"]["std"] for r in results.values()]
        ax.bar([i + (k - 1.5) * width for i in range(len(results))], means, width, yerr=stds, capsize=3, label=loss)
    ax.set_xticks(range(len(results)), list(results))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("PGR (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default="benchmarks/w2s")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    results = {name: run_setting(name, SETTINGS[name], args.seeds, out) for name in args.settings}
    print(f"\n| setting | loss | weak acc | w2s acc | ceiling acc | PGR (mean ± std, {len(args.seeds)} seeds) |")
    print("|---|---|---|---|---|---|")
    for name, summary in results.items():
        for loss, s in summary["by_loss"].items():
            print(f"| {name} | {loss} | {s['weak_acc']['mean']:.3f} | "
                  f"{s['w2s_acc']['mean']:.3f} ± {s['w2s_acc']['std']:.3f} | "
                  f"{s['strong_acc']['mean']:.3f} | {s['pgr']['mean']:.3f} ± {s['pgr']['std']:.3f} |")
        print(f"({name}: {summary['seconds']:.0f} s)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({k: v["by_loss"] for k, v in results.items()}, indent=2))
    plot(results, out / "pgr.png")
    print(f"wrote {out / 'results.json'} and {out / 'pgr.png'}")


if __name__ == "__main__":
    main()
