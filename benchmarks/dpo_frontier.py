"""Gold reward vs KL frontier: DPO at several β against Preferred-FT (DPO paper Fig. 2, CPU miniature).

    OMP_NUM_THREADS=1 python benchmarks/dpo_frontier.py [--betas 0.05 0.1 0.5 1.0] [--steps 150] [--out runs/frontier]

A programmatic "sentiment" task (methods.md §5.3): prompts are four random letters from "xyzqw" and ':', replies are
strings over "abcdefgh"; gold reward r(y) = (#'a' − #'h') / |y| ∈ [−1, 1]. The pipeline is the DPO paper's:
1. SFT of a tiny Llama on uniformly random replies (the reference policy π_ref, gold reward ≈ 0);
2. 4 samples per training prompt from π_ref, all 6 pairs labelled by the gold reward (``sample_preference_pairs``);
3. DPO from π_ref at each β, and Preferred-FT (SFT on the chosen replies) from π_ref, same steps and batches;
4. every ``--eval-every`` steps, ``GoldEval`` samples one reply per held-out prompt at temperature 1 and logs the
   mean gold reward and the Monte-Carlo sequence KL(π‖π_ref) (mean log π(y|x) − log π_ref(y|x)).
Writes ``frontier.png`` and ``frontier.json`` to ``--out`` and prints the table of final points and the
DPO rewards at the KL of Preferred-FT's best point.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import lightning as L
import torch

from lit_rlhf.data import PreferenceDataModule, SFTDataModule
from lit_rlhf.eval import GoldEval
from lit_rlhf.models import ModelSpec
from lit_rlhf.modules import DPO, SFT
from lit_rlhf.rollout.generation import SamplingConfig
from lit_rlhf.rollout.pairs import sample_preference_pairs
from lit_rlhf.tasks import Task

LETTERS = "abcdefgh"
MODEL = ModelSpec(config={"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 4})
SAMPLING = SamplingConfig(max_new_tokens=16, temperature=1.0)


class LetterSentiment(Task):
    """Gold reward (#'a' − #'h') / |y| of a reply; the data come from files written by this script."""

    name = "letters"
    kinds = ()

    def records(self, kind, split, n, seed=0):
        raise NotImplementedError("LetterSentiment only scores; its data are written to files")

    def reward(self, prompts, completions):
        return torch.tensor([(c.count("a") - c.count("h")) / max(len(c), 1) for c in completions])


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def trainer(steps: int, root: Path, callbacks=()) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, default_root_dir=root, callbacks=list(callbacks))


def train_reference(out: Path, args) -> tuple[str, SFT, list[str]]:
    """SFT on uniformly random replies; returns its checkpoint, the module and the training prompts."""
    rng = random.Random(0)
    prompt = lambda: "".join(rng.choice("xyzqw") for _ in range(4)) + ":"  # noqa: E731
    rows = [{"prompt": prompt(), "completion": "".join(rng.choice(LETTERS) for _ in range(rng.randint(12, 16)))}
            for _ in range(4000)]
    dm = SFTDataModule(train=write(out / "sft.jsonl", rows), batch_size=32, max_length=32)
    torch.manual_seed(0)
    module = SFT(model=MODEL, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), gold_eval_batches=0)
    fit = trainer(args.sft_steps, out)
    fit.fit(module, datamodule=dm)
    fit.save_checkpoint(out / "reference.ckpt")
    return str(out / "reference.ckpt"), module, sorted({r["prompt"] for r in rows})


def label_pairs(module: SFT, prompts: list[str], out: Path, task: Task) -> dict[str, str]:
    """On-policy pairs (4 samples, 6 pairs per prompt); the first 64 prompts are held out for evaluation."""
    torch.manual_seed(1)
    ids = [module.tokenizer(p)["input_ids"] for p in prompts]
    pairs = sample_preference_pairs(module.model, module.tokenizer, task, prompts, ids, 4, SAMPLING)
    held_out = set(prompts[:64])
    files = {}
    for split, keep in (("train", lambda r: r["prompt"] not in held_out), ("val", lambda r: r["prompt"] in held_out)):
        rows = [r for r in pairs if keep(r)]
        files[f"{split}_pairs"] = write(out / f"{split}_pairs.jsonl", rows)
        files[f"{split}_chosen"] = write(out / f"{split}_chosen.jsonl",
                                         [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
    return files


def run(module, dm, steps: int, every: int, out: Path, reference: str) -> list[dict]:
    gold = GoldEval(num_prompts=64, sampling=SAMPLING, every_n_steps=every, batch_size=64, reference=reference,
                    distinct_prompts=True)
    torch.manual_seed(2)
    trainer(steps, out, [gold]).fit(module, datamodule=dm)
    return gold.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.1, 0.5, 1.0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="runs/frontier")
    parser.add_argument("--report-only", action="store_true", help="plot and tabulate OUT/frontier.json again")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        report(json.loads((out / "frontier.json").read_text()), out)
        return
    task = LetterSentiment()
    ckpt, reference, prompts = train_reference(out, args)
    files = label_pairs(reference, prompts, out, task)
    optimizer = lambda p: torch.optim.AdamW(p, lr=args.lr)  # noqa: E731
    curves: dict[str, list[dict]] = {}
    for beta in args.betas:
        dm = PreferenceDataModule(train=files["train_pairs"], val=files["val_pairs"], task=task, batch_size=16,
                                  max_length=32)
        module = DPO(model=MODEL, init_from=ckpt, beta=beta, optimizer=optimizer)
        curves[f"DPO β={beta:g}"] = run(module, dm, args.steps, args.eval_every, out, "auto")
    dm = SFTDataModule(train=files["train_chosen"], val=files["val_chosen"], task=task, batch_size=16, max_length=32)
    module = SFT(model=MODEL, init_from=ckpt, optimizer=optimizer, gold_eval_batches=0)
    curves["Preferred-FT"] = run(module, dm, args.steps, args.eval_every, out, "snapshot")
    report(curves, out)


def report(curves: dict[str, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "frontier.json").write_text(json.dumps(curves, indent=2))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, history in curves.items():
        ax.plot([h["gold/kl"] for h in history], [h["gold/reward"] for h in history], "o-", label=name, markersize=3)
    ax.set_xlabel("sequence KL(π‖π_ref) (Monte-Carlo)")
    ax.set_ylabel("mean gold reward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    print("| method | final gold reward | final KL | highest gold reward (its KL) |\n|---|---|---|---|")
    for name, history in curves.items():
        top = max(history, key=lambda h: h["gold/reward"])
        print(f"| {name} | {history[-1]['gold/reward']:.3f} | {history[-1]['gold/kl']:.2f} | "
              f"{top['gold/reward']:.3f} ({top['gold/kl']:.2f}) |")
    ft = max(curves["Preferred-FT"], key=lambda h: h["gold/reward"])
    matched = {name: at_kl(history, ft["gold/kl"]) for name, history in curves.items() if name.startswith("DPO")}
    shown = ", ".join(f"{name}: {r:.3f}" for name, r in matched.items() if r is not None)
    print(f"\nPreferred-FT's best point: reward {ft['gold/reward']:.3f} at KL {ft['gold/kl']:.2f}; DPO at the same KL "
          f"(linear interpolation along each curve): {shown}. Reference policy: gold reward "
          f"{curves['Preferred-FT'][0]['gold/reward']:.3f}. Plot: {out / 'frontier.png'}")


def at_kl(history: list[dict], kl: float) -> float | None:
    """Gold reward where a training curve first reaches ``kl`` (linear between evaluations; None if never)."""
    for a, b in zip(history, history[1:]):
        if a["gold/kl"] <= kl <= b["gold/kl"]:
            t = (kl - a["gold/kl"]) / max(b["gold/kl"] - a["gold/kl"], 1e-12)
            return a["gold/reward"] + t * (b["gold/reward"] - a["gold/reward"])
    return None

if __name__ == "__main__":
    main()
