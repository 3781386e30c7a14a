"""Gold reward vs KL frontier: DPO at several β against Preferred-FT (DPO paper Fig. 2, CPU miniature).

    OMP_NUM_THREADS=1 python benchmarks/dpo_frontier.py [--seeds 0 1 2] [--betas 0.1 0.5 2 8] [--ft-lrs ...]
        [--steps 300] [--ft-steps 600] [--out runs/frontier]
    python benchmarks/dpo_frontier.py --report-only --out runs/frontier   # re-aggregate OUT/seed*/frontier.json

A programmatic stand-in for the DPO paper's controlled-sentiment task (Rafailov et al. 2023, "Direct Preference
Optimization", §6.1 and App. C.1): prompts are four random letters from "xyzqw" and ':', replies are
strings over "abcdefgh"; gold reward r(y) = (#'a' − #'h') / |y| ∈ [−1, 1]. The pipeline is the DPO paper's, once
per seed (every random draw depends on the seed):
1. SFT of a tiny Llama on uniformly random replies (the reference policy π_ref, gold reward ≈ 0);
2. 4 samples per training prompt from π_ref, all 6 pairs labelled by the gold reward (``sample_preference_pairs``);
3. DPO from π_ref at each β (and ``--dpo-lrs``), and Preferred-FT (SFT on the chosen replies) from π_ref at each
   ``--ft-lrs``, batches of 16;
4. every ``--eval-every`` steps, ``GoldEval`` samples ``--eval-repeats`` replies for each of 64 held-out prompts at
   temperature 1 and logs the mean gold reward and the Monte-Carlo sequence KL(π‖π_ref).
Each method's frontier is the upper concave envelope of all its evaluations (every run, every step): the best
gold reward it reaches at estimated KL ≤ k. The report compares the two frontiers at ``--kl-grid`` (mean ± std
over seeds, difference taken per seed). Writes ``OUT/seed*/frontier.json`` and ``OUT/frontier.png``.

Loss families (``--losses all`` or names of :data:`FAMILIES`): step 3 becomes two runs of each family — every DPO
``loss_type`` of ``lit_rlhf.losses.dpo`` grouped into families, the reference-free SimPO, ORPO and CPO modules, and
KTO on an unpaired file (TRL's ``prompt, completion, label``) made by splitting each of the same pairs into a
desirable and an undesirable reply — from the same π_ref and pairs (reused from ``OUT/seedN`` when present), AdamW
at ``--loss-lr``; the report gives each family's envelope at ``--kl-grid`` (default 0.5 1 2) and its per-seed
difference to sigmoid DPO. Writes ``OUT/seed*/losses.json`` (resumes: runs already there are skipped) and
``OUT/losses.png`` (or ``--plot``)::

    OMP_NUM_THREADS=1 python benchmarks/dpo_frontier.py --losses all --seeds 0 1 2 --steps 60 --eval-every 10 \
        --eval-repeats 2 --loss-lr 1e-3 --out runs/losses
    python benchmarks/dpo_frontier.py --losses all --report-only --out runs/losses
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch

from lit_rlhf.data import PreferenceDataModule, SFTDataModule, UnpairedPreferenceDataModule
from lit_rlhf.eval import GoldEval
from lit_rlhf.models import ModelSpec
from lit_rlhf.modules import CPO, DPO, KTO, ORPO, SFT, SimPO
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


def train_reference(out: Path, args, seed: int) -> tuple[str, SFT, list[str]]:
    """SFT on uniformly random replies; returns its checkpoint, the module and the training prompts."""
    rng = random.Random(seed)
    prompt = lambda: "".join(rng.choice("xyzqw") for _ in range(4)) + ":"
    rows = [{"prompt": prompt(), "completion": "".join(rng.choice(LETTERS) for _ in range(rng.randint(12, 16)))}
            for _ in range(4000)]
    dm = SFTDataModule(train=write(out / "sft.jsonl", rows), batch_size=32, max_length=32)
    torch.manual_seed(seed)
    module = SFT(model=MODEL, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), gold_eval_batches=0)
    fit = trainer(args.sft_steps, out)
    fit.fit(module, datamodule=dm)
    fit.save_checkpoint(out / "reference.ckpt")
    return str(out / "reference.ckpt"), module, sorted({r["prompt"] for r in rows})


def label_pairs(module: SFT, prompts: list[str], out: Path, task: Task, seed: int, repeats: int) -> dict[str, str]:
    """On-policy pairs (4 samples, all 6 pairs per prompt, ties skipped); the first 64 prompts are held out.

    The validation files hold each held-out prompt ``repeats`` times, so ``GoldEval`` draws ``repeats``
    independent replies per prompt (less Monte-Carlo noise in reward and KL).
    """
    torch.manual_seed(1000 + seed)
    ids = [module.tokenizer(p)["input_ids"] for p in prompts]
    pairs = sample_preference_pairs(module.model, module.tokenizer, task, prompts, ids, 4, SAMPLING)
    held_out = prompts[:64]
    train = [r for r in pairs if r["prompt"] not in set(held_out)]
    first = {}
    for r in pairs:
        first.setdefault(r["prompt"], r)
    val = [first[p] for p in held_out if p in first for _ in range(repeats)]
    files = {}
    for split, rows in (("train", train), ("val", val)):
        files[f"{split}_pairs"] = write(out / f"{split}_pairs.jsonl", rows)
        files[f"{split}_chosen"] = write(out / f"{split}_chosen.jsonl",
                                         [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
    return files


def run(module, dm, steps: int, every: int, out: Path, reference: str, seed: int, samples: int) -> list[dict]:
    gold = GoldEval(num_prompts=samples, sampling=SAMPLING, every_n_steps=every, batch_size=128,
                    reference=reference)
    torch.manual_seed(2000 + seed)
    trainer(steps, out, [gold]).fit(module, datamodule=dm)
    return gold.history


def prepare_seed(args, seed: int, out: Path) -> tuple[str, dict[str, str]]:
    """π_ref and the labelled pairs of one seed (steps 1–2), reused when ``out`` holds them from the same settings."""
    out.mkdir(parents=True, exist_ok=True)
    marker, settings = out / "prepared.json", {"seed": seed, "sft_steps": args.sft_steps,
                                               "eval_repeats": args.eval_repeats}
    names = ("train_pairs", "val_pairs", "train_chosen", "val_chosen")
    files = {n: str(out / f"{n}.jsonl") for n in names}
    ckpt = out / "reference.ckpt"
    if marker.is_file() and json.loads(marker.read_text()) == settings and ckpt.is_file():
        print(f"seed {seed}: reusing {ckpt} and its pairs")
        return str(ckpt), files
    _, reference, prompts = train_reference(out, args, seed)
    files = label_pairs(reference, prompts, out, LetterSentiment(), seed, args.eval_repeats)
    marker.write_text(json.dumps(settings))
    return str(ckpt), files


def run_seed(args, seed: int, out: Path) -> dict[str, list[dict]]:
    """The whole pipeline for one seed (reference, pairs, every DPO and Preferred-FT run); its curves."""
    task = LetterSentiment()
    ckpt, files = prepare_seed(args, seed, out)
    samples = 64 * args.eval_repeats
    curves: dict[str, list[dict]] = {}
    for lr in args.dpo_lrs:
        for beta in args.betas:
            dm = PreferenceDataModule(train=files["train_pairs"], val=files["val_pairs"], task=task, batch_size=16,
                                      max_length=32)
            module = DPO(model=MODEL, init_from=ckpt, beta=beta, optimizer=adamw(lr))
            curves[f"DPO β={beta:g} lr={lr:g}"] = run(module, dm, args.steps, args.eval_every, out, "auto", seed,
                                                     samples)
    for lr in args.ft_lrs:
        dm = SFTDataModule(train=files["train_chosen"], val=files["val_chosen"], task=task, batch_size=16,
                           max_length=32)
        module = SFT(model=MODEL, init_from=ckpt, optimizer=adamw(lr), gold_eval_batches=0)
        curves[f"Preferred-FT lr={lr:g}"] = run(module, dm, args.ft_steps or args.steps, args.eval_every, out,
                                                "snapshot", seed, samples)
    (out / "frontier.json").write_text(json.dumps(curves, indent=2))
    return curves


class Family(NamedTuple):
    """One loss family of ``--losses``: the module class, its runs (constructor arguments; ``lr`` is the AdamW
    learning rate, default ``--loss-lr``) and its data (``pairs``, or ``unpaired``: each pair split in two)."""

    cls: type
    runs: tuple[dict, ...]
    data: str = "pairs"


def grid(key: str, values: tuple[float, ...], **fixed) -> tuple[dict, ...]:
    return tuple({**fixed, key: v} for v in values)


#: every DPO ``loss_type`` grouped into families, the reference-free modules and KTO, each with a 2-value grid
#: (β in the unit its loss reads: sequence log-ratios for most, per-token ones for ipo / sigmoid_norm / simpo)
FAMILIES: dict[str, Family] = {
    "sigmoid": Family(DPO, grid("beta", (2.0, 8.0), loss_type="sigmoid")),
    "ipo": Family(DPO, grid("beta", (0.5, 2.0), loss_type="ipo")),
    "hinge": Family(DPO, grid("beta", (0.5, 2.0), loss_type="hinge")),
    "robust/cdpo": Family(DPO, ({"loss_type": "robust", "beta": 2.0, "label_smoothing": 0.1},
                                {"loss_type": "sigmoid", "beta": 2.0, "label_smoothing": 0.1})),
    "exo_pair": Family(DPO, grid("beta", (2.0, 8.0), loss_type="exo_pair", label_smoothing=1e-3)),
    "nca_pair": Family(DPO, grid("beta", (0.5, 2.0), loss_type="nca_pair")),
    "bco_pair": Family(DPO, grid("beta", (0.5, 2.0), loss_type="bco_pair")),
    "sppo_hard": Family(DPO, grid("beta", (0.1, 0.5), loss_type="sppo_hard")),
    "aot/aot_unpaired": Family(DPO, ({"loss_type": "aot", "beta": 2.0}, {"loss_type": "aot_unpaired", "beta": 2.0})),
    "apo_zero/apo_down": Family(DPO, ({"loss_type": "apo_zero", "beta": 2.0}, {"loss_type": "apo_down", "beta": 2.0})),
    "discopop": Family(DPO, grid("beta", (2.0, 8.0), loss_type="discopop")),
    "sigmoid_norm": Family(DPO, grid("beta", (28.0, 112.0), loss_type="sigmoid_norm")),
    "sft": Family(DPO, grid("lr", (3e-4, 1e-3), loss_type="sft", reference="none")),
    "SimPO": Family(SimPO, ({"beta": 2.0, "simpo_gamma": 1.0}, {"beta": 8.0, "simpo_gamma": 4.0})),
    "ORPO": Family(ORPO, grid("beta", (0.1, 1.0))),
    "CPO": Family(CPO, grid("beta", (0.1, 1.0))),
    "KTO": Family(KTO, grid("beta", (0.5, 2.0)), data="unpaired"),
}


def write_unpaired(files: dict[str, str], out: Path) -> dict[str, str]:
    """KTO's data from the same pairs, in TRL's unpaired format (``prompt, completion, label``).

    Training: each pair split into its chosen reply (desirable) and its rejected reply (undesirable), the KTO
    paper's recipe for paired data (Ethayarajh et al. 2024, §4); a reply that sits in several pairs appears once
    per pair. Validation: one row per held-out prompt repeat (its chosen reply), since ``GoldEval`` reads only
    the prompts.
    """
    read = lambda name: [json.loads(line) for line in Path(files[name]).read_text().splitlines()]
    train = [{"prompt": r["prompt"], "completion": r[key], "label": key == "chosen"}
             for r in read("train_pairs") for key in ("chosen", "rejected")]
    val = [{"prompt": r["prompt"], "completion": r["chosen"], "label": True} for r in read("val_pairs")]
    return {"train_unpaired": write(out / "train_unpaired.jsonl", train),
            "val_unpaired": write(out / "val_unpaired.jsonl", val)}


def run_name(family: str, kwargs: dict) -> str:
    shown = {"beta": "β", "label_smoothing": "ε", "simpo_gamma": "γ", "loss_type": "", "lr": "lr", "reference": None}
    parts = [f"{shown.get(k, k)}={v:g}" if shown.get(k, k) else str(v) for k, v in kwargs.items()
             if shown.get(k, k) is not None and v != family]
    return f"{family} {' '.join(parts)}"


def run_losses(args, seed: int, out: Path) -> dict[str, list[dict]]:
    """Every run of ``--losses`` on one seed's π_ref and pairs; ``losses.json`` is rewritten after each run, and
    runs it already holds are skipped (so an interrupted seed resumes)."""
    task = LetterSentiment()
    ckpt, files = prepare_seed(args, seed, out)
    files.update(write_unpaired(files, out))
    samples = 64 * args.eval_repeats
    path = out / "losses.json"
    curves: dict[str, list[dict]] = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.losses:
        family = FAMILIES[name]
        for kwargs in family.runs:
            label = run_name(name, kwargs)
            if label in curves:
                continue
            kwargs = dict(kwargs)
            lr = kwargs.pop("lr", args.loss_lr)
            if family.data == "unpaired":
                dm = UnpairedPreferenceDataModule(train=files["train_unpaired"], val=files["val_unpaired"], task=task,
                                                  batch_size=32, max_length=32)
            else:
                dm = PreferenceDataModule(train=files["train_pairs"], val=files["val_pairs"], task=task,
                                          batch_size=16, max_length=32)
            # the padded forward: at this model size packing costs more than it saves
            module = family.cls(model=MODEL, init_from=ckpt, optimizer=adamw(lr), padding_free=False, **kwargs)
            gold_reference = "snapshot" if module.reference == "none" else "auto"
            start = time.perf_counter()
            curves[label] = run(module, dm, args.steps, args.eval_every, out, gold_reference, seed, samples)
            last = curves[label][-1]
            print(f"seed {seed}: {label}: {time.perf_counter() - start:.0f} s, final gold reward "
                  f"{last['gold/reward']:.3f} at KL {last['gold/kl']:.2f}", flush=True)
            path.write_text(json.dumps(curves, indent=1))
    return curves


def adamw(lr: float):
    return lambda p: torch.optim.AdamW(p, lr=lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one full pipeline per seed")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5, 2.0, 8.0])
    parser.add_argument("--dpo-lrs", type=float, nargs="+", default=[3e-4])
    parser.add_argument("--ft-lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3],
                        help="Preferred-FT learning rates (its sweep)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ft-steps", type=int, default=0, help="Preferred-FT steps (default: --steps)")
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--eval-repeats", type=int, default=6, help="replies per held-out prompt (64 prompts)")
    parser.add_argument("--kl-grid", type=float, nargs="+",
                        help="KL budgets of the tables (default 0.25 0.5 1 2 4; with --losses 0.5 1 2)")
    parser.add_argument("--losses", nargs="+", choices=["all", *FAMILIES], default=None,
                        help="compare loss families (FAMILIES) instead of DPO vs Preferred-FT; 'all' = every one")
    parser.add_argument("--loss-lr", type=float, default=3e-4, help="AdamW learning rate of the --losses runs")
    parser.add_argument("--out", default="runs/frontier")
    parser.add_argument("--plot", default=None, help="where --losses writes its plot (default OUT/losses.png)")
    parser.add_argument("--report-only", action="store_true",
                        help="aggregate OUT/seed*/frontier.json (with --losses: OUT/seed*/losses.json) again")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.losses is not None:
        args.losses = list(FAMILIES) if "all" in args.losses else args.losses
        if not args.report_only:
            for seed in args.seeds:
                run_losses(args, seed, out / f"seed{seed}")
        seeds = seed_results(out, "losses.json")
        report_losses(seeds, Path(args.plot or out / "losses.png"), args.kl_grid or [0.5, 1.0, 2.0], args.losses)
        return
    args.kl_grid = args.kl_grid or [0.25, 0.5, 1.0, 2.0, 4.0]
    if not args.report_only:
        for seed in args.seeds:
            run_seed(args, seed, out / f"seed{seed}")
    report(seed_results(out, "frontier.json"), out, args.kl_grid)


def seed_results(out: Path, name: str) -> dict[int, dict[str, list[dict]]]:
    """Each seed's runs, read from ``OUT/seed<N>/<name>``; an error when there is none to report."""
    seeds = {int(p.parent.name[4:]): json.loads(p.read_text()) for p in sorted(out.glob(f"seed*/{name}"))}
    if not seeds:
        raise SystemExit(f"no {out}/seed*/{name} to report")
    return seeds


def family(name: str) -> str:
    return name.split()[0]


def envelope(curves: dict[str, list[dict]], method: str, kl: float) -> float:
    """Best gold reward a method reaches at estimated KL ≤ ``kl``: its upper concave envelope, non-decreasing.

    Points are every evaluation of every run of the method (the reference at KL 0 included). Between two
    points the envelope is their chord: a mixture of the two policies has exactly the interpolated reward and,
    KL being convex, at most the interpolated KL, so the chord is attainable.
    """
    points = [(h["gold/kl"], h["gold/reward"]) for name, history in curves.items() if family(name) == method
              for h in history]
    best = max(r for k, r in points if k <= kl)
    for ka, ra in points:
        for kb, rb in points:
            if ka <= kl < kb:
                best = max(best, ra + (kl - ka) / (kb - ka) * (rb - ra))
    return best


def max_kl(curves: dict[str, list[dict]], method: str) -> float:
    return max(h["gold/kl"] for name, history in curves.items() if family(name) == method for h in history)


def report(seeds: dict[int, dict[str, list[dict]]], out: Path, grid: list[float]) -> None:
    """Per-seed run table, the matched-KL table (mean ± std over seeds) and ``frontier.png``."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["DPO", "Preferred-FT"]
    print("| seed | run | evaluations | final gold reward | final KL | highest gold reward (its KL) |\n"
          "|---|---|---|---|---|---|")
    for seed, curves in seeds.items():
        for name, history in curves.items():
            top = max(history, key=lambda h: h["gold/reward"])
            print(f"| {seed} | {name} | {len(history)} | {history[-1]['gold/reward']:.3f} | "
                  f"{history[-1]['gold/kl']:.2f} | {top['gold/reward']:.3f} ({top['gold/kl']:.2f}) |")
    reach = {m: [max_kl(c, m) for c in seeds.values()] for m in methods}
    print("\nHighest KL reached (per seed): " + "; ".join(
        f"{m}: {', '.join(f'{k:.2f}' for k in ks)}" for m, ks in reach.items()))
    print("\nBest gold reward at estimated KL ≤ k (upper concave envelope of every run and evaluation), "
          f"mean ± std over {len(seeds)} seeds; the difference is taken per seed:\n")
    print("| KL ≤ | DPO | Preferred-FT | DPO − Preferred-FT | seeds DPO ahead |\n|---|---|---|---|---|")
    table = {m: [[envelope(c, m, k) for c in seeds.values()] for k in grid] for m in methods}
    fmt = lambda xs: f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"
    for i, k in enumerate(grid):
        dpo, ft = table["DPO"][i], table["Preferred-FT"][i]
        diff = [a - b for a, b in zip(dpo, ft)]
        beyond = " (beyond Preferred-FT's reach)" if k > max(reach["Preferred-FT"]) else ""
        print(f"| {k:g}{beyond} | {fmt(dpo)} | {fmt(ft)} | {fmt(diff)} | {sum(d > 0 for d in diff)}/{len(diff)} |")
    ref = [c[next(iter(c))][0]["gold/reward"] for c in seeds.values()]
    print(f"\nReference policy gold reward (step 0): {fmt(ref)}.")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"DPO": "tab:blue", "Preferred-FT": "tab:orange"}
    first = seeds[min(seeds)]
    shades = {m: iter(plt.get_cmap(c)([0.45, 0.6, 0.75, 0.9, 1.0] * 4)) for m, c in
              (("DPO", "Blues"), ("Preferred-FT", "Oranges"))}
    for name, history in first.items():
        left.plot([h["gold/kl"] for h in history], [h["gold/reward"] for h in history], "o-", markersize=2,
                  lw=0.6, color=next(shades[family(name)]), label=name)
    left.set_title(f"every run, seed {min(seeds)}")
    left.set_xscale("symlog", linthresh=0.5)
    left.legend(fontsize=6)
    fine = sorted({0.05 * i for i in range(1, 20)} | {1.0 + 0.25 * i for i in range(13)} | set(grid))
    for m in methods:
        rows = [[envelope(c, m, k) for c in seeds.values()] for k in fine]
        mean = [statistics.mean(r) for r in rows]
        low, high = [min(r) for r in rows], [max(r) for r in rows]
        right.plot(fine, mean, "-", color=colours[m], label=f"{m} (mean of {len(seeds)} seeds)")
        right.fill_between(fine, low, high, color=colours[m], alpha=0.2)
        right.axvline(max(reach[m]), color=colours[m], ls=":", lw=0.8)
    right.set_title("best reward at KL ≤ k (band: range over seeds)")
    right.set_xlim(0, max(fine))
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("sequence KL(π‖π_ref) (Monte-Carlo)")
        ax.set_ylabel("mean gold reward")
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    print(f"Plot: {out / 'frontier.png'}")


def report_losses(seeds: dict[int, dict[str, list[dict]]], plot: Path, grid: list[float], families: list[str]) -> None:
    """Every family's envelope at each KL budget (mean ± std over seeds) and its per-seed difference to sigmoid
    DPO; the plot at ``plot``. A budget beyond the highest KL a family reached on some seed is "not reached"."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = {s: c for s, c in seeds.items() if all(family(n) in families for n in c)
                and {family(n) for n in c} >= set(families)}
    if complete != seeds:
        print(f"seeds without every family (left out): {sorted(set(seeds) - set(complete))}")
    seeds = complete
    if not seeds:
        raise SystemExit("no seed has every family of --losses")
    fmt = lambda xs: f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"
    reach = {m: [max_kl(c, m) for c in seeds.values()] for m in families}
    table = {m: [[envelope(c, m, k) for c in seeds.values()] for k in grid] for m in families}
    print("| seed | run | final gold reward | final KL | highest gold reward (its KL) |\n|---|---|---|---|---|")
    for seed, curves in seeds.items():
        for name, history in curves.items():
            top = max(history, key=lambda h: h["gold/reward"])
            print(f"| {seed} | {name} | {history[-1]['gold/reward']:.3f} | {history[-1]['gold/kl']:.2f} | "
                  f"{top['gold/reward']:.3f} ({top['gold/kl']:.2f}) |")
    print(f"\nBest gold reward at estimated KL ≤ k (upper concave envelope of the family's runs and evaluations), "
          f"mean ± std over {len(seeds)} seeds; Δ = family − sigmoid DPO per seed (seeds ahead):\n")
    head = " | ".join(f"KL ≤ {k:g} | Δ sigmoid" for k in grid)
    print(f"| family | {head} | highest KL reached |\n|---|" + "---|" * (2 * len(grid) + 1))
    for m in families:
        cells = []
        for i, k in enumerate(grid):
            missed = sum(r < k for r in reach[m])
            if missed:
                cells += [f"not reached ({missed}/{len(seeds)} seeds)", "–"]
                continue
            diff = [a - b for a, b in zip(table[m][i], table["sigmoid"][i])] if "sigmoid" in table else None
            cells += [fmt(table[m][i]), "–" if m == "sigmoid" or diff is None else
                      f"{fmt(diff)} ({sum(d > 0 for d in diff)}/{len(diff)})"]
        print(f"| {m} | {' | '.join(cells)} | {min(reach[m]):.2f}–{max(reach[m]):.2f} |")
    ref = [c[next(iter(c))][0]["gold/reward"] for c in seeds.values()]
    print(f"\nReference policy gold reward (step 0): {fmt(ref)}.")

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.2, 1]})
    colours = dict(zip(families, plt.get_cmap("tab20")(range(20))))
    fine = sorted({0.05 * i for i in range(0, 41)} | set(grid))
    for m in families:
        ks = [k for k in fine if k <= min(reach[m])]
        mean = [statistics.mean(envelope(c, m, k) for c in seeds.values()) for k in ks]
        style = {"color": "black", "lw": 2.2} if m == "sigmoid" else {"color": colours[m], "lw": 1.1}
        left.plot(ks, mean, "-", label=m, **style)
    left.set(xlabel="sequence KL(π‖π_ref) (Monte-Carlo)", ylabel="best mean gold reward at KL ≤ k",
             title=f"frontier of each family (mean of {len(seeds)} seeds; ends at its lowest max KL)")
    left.set_xlim(0, max(fine))
    left.legend(fontsize=7, ncol=2)
    others = [m for m in families if m != "sigmoid"] if "sigmoid" in families else []
    height = 0.8 / len(grid)
    for i, k in enumerate(grid):
        diffs = [[a - b for a, b in zip(table[m][i], table["sigmoid"][i])] for m in others]
        ok = [min(reach[m]) >= k for m in others]
        ys = [j + i * height for j in range(len(others))]
        right.barh([y for y, good in zip(ys, ok) if good], [statistics.mean(d) for d, good in zip(diffs, ok) if good],
                   height, xerr=[statistics.stdev(d) if len(d) > 1 else 0 for d, good in zip(diffs, ok) if good],
                   label=f"KL ≤ {k:g}", error_kw={"lw": 0.8})
    right.set_yticks([j + 0.4 - height / 2 for j in range(len(others))], others, fontsize=8)
    right.invert_yaxis()
    right.axvline(0, color="black", lw=0.8)
    right.set(xlabel="Δ gold reward to sigmoid DPO at the same KL budget (mean ± std)",
              title="difference to sigmoid DPO (no bar: KL not reached)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    print(f"Plot: {plot}")


if __name__ == "__main__":
    main()
