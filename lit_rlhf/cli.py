"""The ``lit-rlhf`` command (``lit-rlhf --help`` lists every command).

* ``lit-rlhf fit|validate|test --config configs/<x>.yaml`` — LightningCLI over every method
  module and data module (``--model=SFT`` works as a shorthand);
* pipelines over a ``fit`` config, parsed by the same LightningCLI parser plus their own arguments:
  ``strength`` and ``w2s`` (:data:`FIT_PIPELINES`);
* pipelines that are typed functions (:data:`lit_rlhf.pipelines.PIPELINES`): ``export``, ``assets``, ``pairs``,
  ``best-of-n``, ``rs-temperature``.

Every command takes ``--help``, ``--config`` and ``--print_config`` with the argument names of ``fit``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI

import lit_rlhf.data  # noqa: F401  (registers the data modules for class_path shorthands)
import lit_rlhf.eval  # noqa: F401
import lit_rlhf.modules  # noqa: F401
import lit_rlhf.tasks  # noqa: F401
from lit_rlhf.data import DataError, RowDataModule
from lit_rlhf.eval.runs import FinalCheckpoint, RunRecord, continue_from_checkpoint
from lit_rlhf.models.checkpoint import load_module, load_policy  # noqa: F401  (also imported from here)
from lit_rlhf.modules import LitRLHFModule
from lit_rlhf.pipelines import PIPELINES, CommandError


class LitRLHFCLI(LightningCLI):
    """LightningCLI with the optimizer injected into the module (never built by the CLI itself).

    Every fit records itself (:class:`lit_rlhf.eval.runs.RunRecord`: config file in the run folder, config and
    package versions in the W&B run), ends with a ``last.ckpt`` (:class:`lit_rlhf.eval.runs.FinalCheckpoint`), and
    ``--ckpt_path`` continues the checkpoint's run (:meth:`before_fit`).
    """

    def add_arguments_to_parser(self, parser) -> None:
        """A config's ``w2s:`` section is read by ``lit-rlhf w2s`` only: accepted here and ignored (it is in
        neither ``--help`` nor the printed or saved config)."""
        parser.add_argument("--w2s", type=dict | None, default=None, help=argparse.SUPPRESS)

    def parse_arguments(self, parser, args) -> None:
        """A config built in code (a dict or Namespace, e.g. by ``lit-rlhf strength``) parses without
        LightningCLI's warning about also having command-line arguments."""
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """A logger configured without ``save_dir`` (``AutoWandbLogger``'s ``None``) writes under
        ``trainer.default_root_dir``, as do its checkpoints: ``--trainer.default_root_dir`` moves the whole run,
        and ``--ckpt_path last`` finds what the run wrote."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.get("trainer.default_root_dir")
        loggers = config.get("trainer.logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
            if root and init_args is not None and "save_dir" in init_args and init_args.save_dir is None:
                init_args.save_dir = str(root)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, plus :class:`FinalCheckpoint` when checkpointing is enabled."""
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.checkpoint_callback is not None:
            trainer.callbacks.append(FinalCheckpoint())  # after the ModelCheckpoints: Lightning keeps their order
        return trainer

    def before_fit(self) -> None:
        """``--ckpt_path last``: resume from the newest checkpoint of this run folder (see
        :func:`find_last_checkpoint`); any checkpoint file: go on in its W&B run, and up to a larger ``max_steps``
        (see :func:`continue_from_checkpoint`)."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            found = find_last_checkpoint(self.trainer)
            if found is not None:
                config["ckpt_path"] = found
                print(f"[lit_rlhf] --ckpt_path last: resuming from {found}")
            else:
                print(f"[lit_rlhf] --ckpt_path last: no checkpoint under {self.checkpoint_places()}; "
                      "training starts from the beginning")
                config["ckpt_path"] = None
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is not None and Path(ckpt_path).is_file():
            continue_from_checkpoint(self.trainer, ckpt_path)

    def checkpoint_places(self) -> str:
        return ", ".join(sorted({str(f) for f in checkpoint_folders(self.trainer)}))

    def evaluate_last(self) -> None:
        """``validate``/``test --ckpt_path last``: the newest checkpoint of this run folder, found as
        ``fit`` finds it (Lightning looks only in the new run's own folder, and would evaluate the untrained model
        with a warning); none is an error."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        found = find_last_checkpoint(self.trainer)
        if found is None:
            raise ValueError(f"--ckpt_path last: no checkpoint under {self.checkpoint_places()}; give the run's "
                             "--trainer.default_root_dir or a checkpoint file")
        config["ckpt_path"] = found
        print(f"[lit_rlhf] --ckpt_path last: {self.subcommand} of {found}")

    before_validate = before_test = evaluate_last

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit``, ``validate`` and ``test``: no lit_rlhf module has a predict step (per-row outputs come from the
        pipelines: ``best-of-n``, ``pairs``, ``export`` for inference elsewhere), so there is no ``predict``."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}


def find_last_checkpoint(trainer) -> str | None:
    """The newest checkpoint (``*.ckpt``) under ``trainer.default_root_dir``, a logger's ``save_dir`` or a
    ``ModelCheckpoint(dirpath=...)``.

    Usually the ``last.ckpt`` a finished or periodically saved run wrote; but a run killed before it wrote one
    (or an extension of a finished run killed after a validation checkpoint) has a newer checkpoint elsewhere,
    and resuming from an older ``last.ckpt`` would throw that progress away.

    Lightning looks for ``last`` only in the checkpoint folder of the *new* run, which under a logger is a
    fresh version folder (``<save_dir>/<project>/<run id>/checkpoints``), so an interrupted run's
    checkpoints would not be found and training would silently start over. ``None``: no checkpoint at all.
    """
    found = {f for folder in checkpoint_folders(trainer) if folder.is_dir() for f in folder.rglob("*.ckpt")
             if f.is_file()}
    return str(max(found, key=lambda f: f.stat().st_mtime)) if found else None


def checkpoint_folders(trainer) -> list[Path]:
    """Where a run of this trainer writes checkpoints: ``default_root_dir``, each logger's own folder
    ``<save_dir>/<name>`` (Lightning writes under the first logger's ``<save_dir>/<name>/<version>/checkpoints``;
    not all of ``save_dir``, which may be the working folder and hold other runs) and each
    ``ModelCheckpoint(dirpath=...)``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    folders = [Path(trainer.default_root_dir)]
    folders += [Path(lg.save_dir, str(lg.name)) for lg in trainer.loggers
                if getattr(lg, "save_dir", None) and getattr(lg, "name", None)]
    folders += [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks
                if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    return folders


# --------------------------------------------------------------------------------------------
# pipelines over a `fit` config: strength, w2s
# --------------------------------------------------------------------------------------------


class FitConfigCLI(LitRLHFCLI):
    """The parser of a pipeline that reads a ``fit`` config plus its own arguments (``--help``, ``--config``,
    ``--print_config`` as for ``fit``); it builds nothing: the pipeline builds its runs with :func:`make_cli`
    from :meth:`fit_config`."""

    own: tuple[str, ...] = ()

    def parse_arguments(self, parser, args) -> None:
        """``args`` is the command's own part of the command line, handed over by :func:`main`."""
        self.config = parser.parse_args(args)

    def instantiate_classes(self) -> None:
        """Nothing to build yet."""

    def fit_config(self) -> dict[str, Any]:
        """The parsed config without the pipeline's own keys: a ``fit`` config for :func:`make_cli`."""
        config = yaml.safe_load(self.parser.dump(self.config, format="yaml"))
        for key in (*self.own, "config"):
            config.pop(key, None)
        return config

    @classmethod
    def parse(cls, name: str, description: str, argv: list[str]) -> FitConfigCLI:
        """Parse ``lit-rlhf <name> <argv>`` (the same LightningCLI arguments as :func:`make_cli`'s)."""
        return cls(LitRLHFModule, RowDataModule, subclass_mode_model=True, subclass_mode_data=True,
                   auto_configure_optimizers=False, save_config_callback=None, args=argv, run=False,
                   parser_kwargs={"prog": f"lit-rlhf {name}", "description": description})


def with_overrides(config: dict[str, Any], seed: int, **sections: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``fit`` config with ``seed_everything`` and ``<section>.init_args`` (``trainer``: its values)
    replaced: ``with_overrides(c, 1, data={"seed": 1}, trainer={"logger": False})``."""
    out = copy.deepcopy(config)
    out["seed_everything"] = seed
    for key, values in sections.items():
        target = out.setdefault(key, {})
        if key != "trainer":
            target = target.setdefault("init_args", {})
        target.update(values)
    return out


class StrengthCLI(FitConfigCLI):
    own = ("members", "output", "plot")

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--members", type=int, default=5, help="ensemble size M (paper: 10)")
        parser.add_argument("--output", type=str, required=True,
                            help="jsonl to write (the training pairs + strength_mean / strength_std columns)")
        parser.add_argument("--plot", type=str | None, default=None, help="PNG of the strength distribution")


def strength_main(argv: list[str]) -> None:
    """``lit-rlhf strength``: see :data:`FIT_PIPELINES`."""
    from lit_rlhf.eval.strength import plot_strength, preference_strength, strength_statistics, write_with_strength

    cli = StrengthCLI.parse("strength", FIT_PIPELINES["strength"].description, argv)
    config, datamodules = cli.fit_config(), []

    def build(member: int):
        run = make_cli(with_overrides(config, member, data={"seed": member}), run=False, save_config=False)
        datamodules.append(run.datamodule)
        return run.model, run.datamodule, run.trainer

    differences = preference_strength(build, cli.config.members)
    mean, std = strength_statistics(differences)
    out = write_with_strength(datamodules[-1].rows["train"], mean, std, cli.config.output)
    print(f"wrote {out}: {len(mean)} pairs, {float((mean < 0).float().nanmean()):.1%} with strength < 0, "
          f"mean std {float(std.nanmean()):.3f}")
    if cli.config.plot:
        print(f"plot: {plot_strength(mean, std, cli.config.plot)}")


class W2SCLI(FitConfigCLI):
    own = ("w2s", "chain", "losses", "seeds", "output")

    def add_arguments_to_parser(self, parser) -> None:  # not super(): here the w2s section is read
        from lit_rlhf.eval.w2s import W2SSettings

        parser.add_argument("--w2s", type=W2SSettings, default=W2SSettings(), help="settings of the pipeline")
        parser.add_argument("--chain", type=str | dict, nargs="+", default=None,
                            help="intermediate models for bootstrapping (overrides w2s.chain)")
        parser.add_argument("--losses", type=str, nargs="+", default=None,
                            help="xent, product, logconf[:repo|linear][:weak_prior|median] (overrides w2s.losses)")
        parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (overrides w2s.seeds)")
        parser.add_argument("--output", type=str | None, default=None, help="output folder (overrides w2s.output)")


def w2s_learner(name: str | dict, role: str, settings, config: dict[str, Any]):
    """A pipeline learner: a lexicon / synthetic-view probe, or the config's WeakToStrong module with ``name``."""
    from lit_rlhf.eval.w2s import FeatureProbe, ModuleLearner, parse_loss, probe_features

    features = probe_features(name)
    if features is not None:
        return FeatureProbe(features, **settings.probe.get(role, {}))
    extra = dict(settings.weak_init_args) if role != "strong" else {}

    def build(loss: str, seed: int):
        base, options = parse_loss(loss)
        model = {"model": name, "loss": base, **extra,
                 **{"confidence_schedule" if k == "schedule" else k: v for k, v in options.items()}}
        run = make_cli(with_overrides(config, seed, model=model, data={"seed": seed},
                                      trainer={"logger": False, "enable_checkpointing": False, "limit_val_batches": 0}),
                       run=False, save_config=False)
        return run.model, run.datamodule, run.trainer

    return ModuleLearner(build)


def w2s_splits(dm: RowDataModule, pool_size: int | None, test_size: int | None) -> tuple[list, list]:
    """The pipeline's pool and test rows: ``pool_size`` training rows and ``test_size`` test rows; with your own
    training file and no test source, ``test_size`` of its rows (a fixed seeded choice, the same for every seed) are
    held out as the test set and the pool is drawn from the rest."""
    import random

    from lit_rlhf.data.sources import source_name

    rows = dm.read("train")
    if dm.has_split("test"):
        return rows[:pool_size], dm.read("test")[:test_size]
    where = source_name(dm.sources["train"])
    if test_size is None or not 0 < test_size < len(rows):
        raise ValueError(f"lit-rlhf w2s: {where} has {len(rows)} rows and there is no test split: give data.test, "
                         f"or w2s.test_size (fewer than {len(rows)}) to hold out that many of its rows")
    held = set(random.Random(0).sample(range(len(rows)), test_size))
    pool = [r for i, r in enumerate(rows) if i not in held][:pool_size]
    print(f"[lit_rlhf] w2s: no test split; {test_size} of the {len(rows)} rows of {where} are held out as the test "
          f"set (the same for every seed), the pool is {len(pool)} of the others (give data.test to test on your own)")
    return pool, [r for i, r in enumerate(rows) if i in held]


def w2s_main(argv: list[str]) -> None:
    """``lit-rlhf w2s``: see :data:`FIT_PIPELINES`."""
    from jsonargparse import ArgumentParser

    from lit_rlhf.eval.w2s import W2SSettings, run_w2s

    cli = W2SCLI.parse("w2s", FIT_PIPELINES["w2s"].description, argv)
    settings = W2SSettings(**cli.config.w2s.as_dict())
    for key in ("chain", "losses", "seeds", "output"):
        if cli.config[key] is not None:
            setattr(settings, key, cli.config[key])
    config = cli.fit_config()
    data_parser = ArgumentParser()  # the data module alone (the models are built per run)
    data_parser.add_subclass_arguments(RowDataModule, "data")
    dm = data_parser.instantiate_classes(data_parser.parse_object({"data": config["data"]})).data
    if settings.pool_size is not None:
        dm.task_sizes["train"] = settings.pool_size
    if settings.test_size is not None:
        dm.task_sizes["test"] = settings.test_size
    pool, test = w2s_splits(dm, settings.pool_size, settings.test_size)
    clock = time.perf_counter()
    summary = run_w2s(settings, pool, test, lambda name, role: w2s_learner(name, role, settings, config),
                      setup={"fit_config": config})
    print(f"{'loss':<22}{'weak_acc':>10}{'w2s_acc':>10}{'strong_acc':>12}{'pgr':>16}")
    for loss, stats in summary["by_loss"].items():
        pgr = stats["pgr"]
        print(f"{loss:<22}{stats['weak_acc']['mean']:>10.4f}{stats['w2s_acc']['mean']:>10.4f}"
              f"{stats['strong_acc']['mean']:>12.4f}{pgr['mean']:>9.3f} ± {pgr['std']:.3f}")
    print(f"wrote {Path(settings.output) / 'summary.json'} ({time.perf_counter() - clock:.0f} s)")


@dataclass(frozen=True)
class FitPipeline:
    """A pipeline over a ``fit`` config.

    Args:
        run: runs it on the command line after its name.
        description: its ``--help`` text.
        help: its line in ``lit-rlhf --help``.
    """

    run: Callable[[list[str]], None]
    description: str
    help: str


FIT_PIPELINES: dict[str, FitPipeline] = {
    "strength": FitPipeline(
        strength_main,
        "Preference strength (Secrets of RLHF II): train an ensemble of reward models on a preference config, "
        "write every training pair with strength_mean/strength_std columns, and plot the distribution. The other "
        "arguments (--config, --model.*, --data.*, --trainer.*) are those of `lit-rlhf fit`.",
        "preference strength of every pair from an ensemble of reward models",
    ),
    "w2s": FitPipeline(
        w2s_main,
        "Weak-to-strong generalization (Burns et al. 2023): train the weak model on ground truth, write its soft "
        "labels on a held-out split (jsonl), train the strong student on them with each loss, train the strong "
        "ceiling on ground truth, and report weak / weak-to-strong / ceiling accuracy and PGR in "
        "<output>/summary.json. The config is a `fit` config of WeakToStrong + WeakLabelDataModule with a `w2s:` "
        "section (see configs/w2s_*.yaml; `fit` ignores that section); the other arguments (--model.*, --data.*, "
        "--trainer.*) are those of `lit-rlhf fit`.",
        "weak-to-strong pipeline: weak, weak-to-strong and ceiling accuracy, PGR",
    ),
}

TRAINER_COMMANDS = {
    "fit": "train a method from a config (LightningCLI; `lit-rlhf fit --help`)",
    "validate": "one evaluation epoch over the validation set",
    "test": "one evaluation epoch over the test set",
}

DESCRIPTION = (
    "lit_rlhf: PyTorch Lightning alignment trainers.\n"
    "Every command takes --help, --config <yaml> and --print_config; `lit-rlhf <command> --help` lists its "
    "arguments.\nData errors print the located message only; --debug (or LIT_RLHF_DEBUG=1) shows the traceback."
)


def command_parser() -> ArgumentParser:
    """The top-level parser: every command with its one-line help (each command parses its own arguments)."""
    parser = ArgumentParser(prog="lit-rlhf", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subcommands(required=True, dest="command")
    lines = {**TRAINER_COMMANDS, **{name: p.help for name, p in PIPELINES.items()},
             **{name: p.help for name, p in FIT_PIPELINES.items()}}
    for name, line in lines.items():
        commands.add_subcommand(name, ArgumentParser(prog=f"lit-rlhf {name}", description=line), help=line)
    return parser


def make_cli(args: list[str] | None, run: bool = True, save_config: bool = True) -> LitRLHFCLI:
    """The LightningCLI over every lit_rlhf module and data module."""
    return LitRLHFCLI(
        LitRLHFModule,
        RowDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=RunRecord if save_config else None,
        parser_kwargs={"description": DESCRIPTION, "formatter_class": argparse.RawDescriptionHelpFormatter},
        args=args,
        run=run,
    )


def located_error(err: BaseException) -> BaseException | None:
    """The located data error (:class:`~lit_rlhf.data.DataError`), :class:`~lit_rlhf.pipelines.CommandError`,
    missing file (``FileNotFoundError``: a model folder, checkpoint or data file named in the config) or bad
    argument (a ``ValueError`` raised by lit_rlhf's own checks, e.g. while a module is built from the config,
    where LightningCLI would bury it under every class it tried) behind ``err`` (itself or one it was raised from),
    or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, (DataError, CommandError, FileNotFoundError)) or _raised_by_lit_rlhf(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _raised_by_lit_rlhf(err: BaseException) -> bool:
    """A ``ValueError`` whose ``raise`` is in lit_rlhf's own code (an argument check, not a library's failure)."""
    if type(err) is not ValueError or err.__traceback__ is None:
        return False
    *_, last = traceback.walk_tb(err.__traceback__)
    return Path(last[0].f_code.co_filename).resolve().is_relative_to(Path(__file__).resolve().parent)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lit-rlhf`` and ``python -m lit_rlhf``.

    A data error, a missing file (model folder, checkpoint, data file), a bad argument caught by lit_rlhf's own
    checks or a pipeline's :class:`~lit_rlhf.pipelines.CommandError` ends the command with its one message on
    stderr and exit status 2 (:func:`located_error`); ``--debug`` (anywhere) or ``LIT_RLHF_DEBUG=1`` re-raises it
    with the traceback. The working folder is on the import path (a reward function in ``./my_rewards.py`` is
    ``my_rewards.fn``).
    """
    argv = list(sys.argv[1:] if args is None else args)
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ["LIT_RLHF_DEBUG"] = "1"  # also for processes a strategy launches
        if args is None:
            sys.argv = [sys.argv[0], *argv]
    command = argv[0] if argv else None
    if os.getcwd() not in sys.path:  # a reward function or task in the working folder, by import path (as `python -m`)
        sys.path.append(os.getcwd())
    try:
        if command in PIPELINES:
            PIPELINES[command].run(command, argv[1:])
        elif command in FIT_PIPELINES:
            FIT_PIPELINES[command].run(argv[1:])
        elif command in TRAINER_COMMANDS or (command or "").startswith("-") and command not in ("-h", "--help"):
            make_cli(None if args is None else argv)
        else:
            command_parser().parse_args(argv)  # the help, or the error naming the commands (exit 2)
    except Exception as err:
        located = located_error(err)
        if located is None or os.environ.get("LIT_RLHF_DEBUG", "") not in ("", "0"):
            raise
        hint = "" if isinstance(located, (DataError, CommandError, FileNotFoundError)) else " (--debug: traceback)"
        print(f"lit-rlhf {command}: error: {located}{hint}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
