"""Iterated alignment: K rounds of sample → label → reward-model update → policy update (``lit-rlhf rounds``).

Llama 2 (Touvron et al. 2023, §3.2.2–3.2.3) aligned its models in rounds: each round samples from the newest
policy, collects new comparisons, retrains the reward model on all comparisons so far and improves the policy
(rejection sampling, then PPO). Secrets of RLHF II (Wang et al. 2024, §3.2) instead adapts the reward model to
the new policy's samples without new labels (MetaRM). This module is the loop only: every step is an existing
module (``RewardModel``, ``MetaRM``, ``RejectionSampling``, ``PPO``, ``GRPO``, ``DPO``, ``OnlineDPO``) trained by
an ordinary Lightning ``Trainer``.

Layout of ``output``::

    rounds.json                     # the settings and, per round, what each stage did (written after each stage)
    round_<k>/samples.jsonl         # {prompt, responses, gold}: K samples per prompt of the newest policy
    round_<k>/comparisons.jsonl     # their labelled pairs ({prompt, chosen, rejected, gold_label, ...})
    round_<k>/reward_model/         # a run folder: checkpoints/last.ckpt (+ the W&B run of the stage)
    round_<k>/policy/               # likewise

A killed loop resumes where it stopped: finished stages are read from ``rounds.json``; an unfinished training
stage resumes from its ``checkpoints/last.ckpt`` (exact resume: optimizer, data position, RNG streams). The folder
may be moved between runs: ``rounds.json`` names its checkpoints relative to it, and the settings it is resumed
with are compared by what they mean (the prompt file by its content, a local model by its resolved path; the
output folder not at all).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lit_rlhf.rollout.generation import SamplingConfig

RMUpdate = Literal["retrain", "finetune", "meta_rm", "frozen"]
PolicyMethod = Literal["rejection_sampling", "ppo", "grpo", "dpo", "online_dpo"]
STAGES = ("sample", "reward_model", "policy", "evaluate")


class RoundsError(ValueError):
    """Settings or data that the loop cannot work with (bad settings, a round without comparisons, an output
    folder written with other settings)."""


@dataclass
class LabelSettings:
    """Who labels the comparisons of a round.

    Args:
        reward_model: a ``RewardModel`` checkpoint, run folder or export as the annotator (a judge).
        noise: fraction of the labelled pairs whose label is flipped at random (a noisy annotator).
    """

    reward_model: str | None = None
    noise: float = 0.0


@dataclass
class RewardModelSettings:
    """The reward model and how it is updated each round.

    Args:
        update: after round 0 (where it is trained on the round's comparisons): ``retrain`` a fresh reward model on
            all comparisons so far (Llama 2); ``finetune`` the previous one on the new comparisons; ``meta_rm``:
            adapt the previous one with MetaRM's meta step on the new policy samples, on the comparisons labelled
            so far (no new labels); ``frozen``: keep round 0's.
        model: backbone name or spec.
        steps: optimizer steps per round.
        batch_size: pairs per step.
        lr: AdamW learning rate.
        meta_lr: MetaRM's η.
        shifted_batch_size: MetaRM: prompts (each with its K samples) per meta step.
        max_length: longest sequence.
        init_args: other ``RewardModel`` / ``MetaRM`` arguments.
    """

    update: RMUpdate = "retrain"
    model: str | dict[str, Any] = "lit-rlhf:tiny-llama"
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    meta_lr: float = 0.01
    shifted_batch_size: int = 4
    max_length: int = 128
    init_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class PolicySettings:
    """The policy update of a round.

    Args:
        method: ``rejection_sampling`` | ``ppo`` | ``grpo`` | ``online_dpo`` (scored by the round's reward model, or
            by the gold reward with ``reward: gold``) or ``dpo`` (on the round's labelled comparisons).
        reward: what the reward-driven methods optimise: the round's ``reward_model`` or the task's ``gold`` reward.
        steps: ``trainer.max_steps`` of the stage (as the method counts steps).
        batch_size: prompts per training batch (pairs for ``dpo``).
        lr: AdamW learning rate.
        reference: ``online_dpo``'s reference: the policy the loop started from (``fixed``) or the round's starting
            policy (``round``); ``dpo`` always refers to the round's starting policy (iterative DPO).
        max_length: longest prompt (longest pair for ``dpo``).
        init_args: other arguments of the method's module (e.g. ``{k: 4, sft_steps: 2}`` for rejection sampling).
    """

    method: PolicyMethod = "rejection_sampling"
    reward: Literal["reward_model", "gold"] = "reward_model"
    steps: int = 20
    batch_size: int = 8
    lr: float = 1e-4
    reference: Literal["fixed", "round"] = "round"
    max_length: int = 128
    init_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class RoundsSettings:
    """One loop of rounds (the arguments of ``lit-rlhf rounds``; see :func:`lit_rlhf.pipelines.rounds`)."""

    output: str
    policy: str
    task: Any
    rounds: int = 3
    prompts: int = 64
    prompt_file: str | None = None
    samples_per_prompt: int = 4
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=48, temperature=1.0))
    label: LabelSettings = field(default_factory=LabelSettings)
    reward_model: RewardModelSettings = field(default_factory=RewardModelSettings)
    policy_update: PolicySettings = field(default_factory=PolicySettings)
    eval_prompts: int = 64
    eval_samples: int = 4
    checkpoint_every: int = 10
    wandb: bool = True
    project: str = "lit-rlhf"
    seed: int = 0
    accelerator: str = "auto"
    precision: str = "32-true"

    def __post_init__(self) -> None:
        problems = []
        if self.rounds < 1:
            problems.append(f"rounds must be >= 1, got {self.rounds}")
        if self.samples_per_prompt < 2:
            problems.append(f"samples_per_prompt must be >= 2 (pairs are formed within a prompt), "
                            f"got {self.samples_per_prompt}")
        if not 0.0 <= self.label.noise < 0.5:
            problems.append(f"label.noise must be in [0, 0.5), got {self.label.noise}")
        if self.sampling.temperature <= 0:
            problems.append(f"sampling.temperature must be > 0 (pairs need different samples), "
                            f"got {self.sampling.temperature}")
        if self.eval_samples < 2:
            problems.append(f"eval_samples must be >= 2 (RM accuracy is measured on pairs), got {self.eval_samples}")
        if problems:
            raise RoundsError("lit-rlhf rounds: " + "; ".join(problems))

    def check_inputs(self) -> None:
        """Raise :class:`RoundsError` when ``policy``, ``label.reward_model`` or ``prompt_file`` names a local path
        that does not exist (before the loop writes anything; a model name such as ``owner/name`` is not checked)."""
        missing = [f"{name} '{value}'" for name, value in (("policy", self.policy), ("label.reward_model",
                   self.label.reward_model), ("prompt_file", self.prompt_file))
                   if value is not None and looks_like_path(value) and not Path(value).expanduser().exists()]
        if missing:
            raise RoundsError(f"lit-rlhf rounds: no such file or folder: {', '.join(missing)} (relative paths are "
                              f"read from the working directory {Path.cwd()}); a policy is a lit-rlhf checkpoint or "
                              "run folder or an exported folder, e.g. lit-rlhf export runs/quickstart "
                              "runs/quickstart/policy")


LOCAL_INPUTS = ("policy", "label.reward_model")
"""Settings that may name a local model: recorded as resolved paths (``gpt2`` and ``../x/gpt2`` compare equal)."""


def local_path(value: Any) -> str | None:
    """The resolved path of a setting that names an existing local file or folder, else ``None``."""
    if isinstance(value, str) and looks_like_path(value) and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return None


def file_digest(path: str) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def settings_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the settings a folder was written with and those it is resumed with, one
    ``name: was X, now Y`` each (a section's fields by dotted name; a setting added since compares as ``None``). Not
    compared: ``output`` (the folder may move) and ``rounds`` (more rounds extend it); the prompt file by its
    content (``prompt_file_digest``); a local model by its resolved path, and a model whose recorded path no longer
    exists but that is found at the new one counts as moved, not changed."""
    def flat(record: dict[str, Any]) -> dict[str, Any]:
        return {f"{k}.{field}" if isinstance(v, dict) else k: value for k, v in record.items()
                for field, value in (v.items() if isinstance(v, dict) else [(None, v)])}

    def same_model(old: Any, new: Any) -> bool:
        was, now_ = local_path(old), local_path(new)
        return now_ is not None and (was == now_ or (was is None and looks_like_path(old)))

    before, now = flat(before), flat(now)
    # a folder written before the prompt file's content was recorded compares the file's name
    skip = {"output", "rounds", "prompt_file" if "prompt_file_digest" in before else "prompt_file_digest"}
    changes = []
    for name in sorted((set(before) | set(now)) - skip):
        old, new = before.get(name), now.get(name)
        if old != new and not (name in LOCAL_INPUTS and same_model(old, new)):
            changes.append(f"{name}: was {old!r}, now {new!r}")
    return changes


def looks_like_path(name: str) -> bool:
    """Whether a policy or reward-model name is a local path rather than a model name (``owner/name``)."""
    return name.endswith(".ckpt") or name.startswith(("/", ".", "~")) or name.count("/") > 1 or \
        Path(name).expanduser().exists()


# --------------------------------------------------------------------------------------------
# labelling and bookkeeping (no models)
# --------------------------------------------------------------------------------------------


def flip_labels(rows: list[dict[str, Any]], rate: float, rng: random.Random) -> list[dict[str, Any]]:
    """Each row, with probability ``rate``, with chosen and rejected swapped (their per-side fields too) and
    ``label_flipped`` set; every row gets ``gold_label``: 1 if chosen has the higher gold reward, 0 if lower, None
    on a gold tie."""
    out = []
    for row in rows:
        row = dict(row)
        flipped = rng.random() < rate
        if flipped:
            for a, b in (("chosen", "rejected"), ("gold_reward_chosen", "gold_reward_rejected"),
                         ("score_chosen", "score_rejected")):
                if a in row:
                    row[a], row[b] = row[b], row[a]
        gc, gr = row["gold_reward_chosen"], row["gold_reward_rejected"]
        row["gold_label"] = None if gc == gr else int(gc > gr)
        row["label_flipped"] = flipped
        out.append(row)
    return out


def pairwise_accuracy(gold: list[float], scores: list[float], group_size: int) -> tuple[float | None, int]:
    """Share of the pairs within each group of ``group_size`` consecutive entries whose gold rewards differ and
    that ``scores`` order as gold does (a score tie counts as wrong); ``(None, 0)`` without such pairs."""
    right = total = 0
    for start in range(0, len(gold), group_size):
        for i in range(start, start + group_size):
            for j in range(i + 1, start + group_size):
                if gold[i] == gold[j]:
                    continue
                total += 1
                right += (scores[i] - scores[j]) * (gold[i] - gold[j]) > 0
    return (right / total if total else None), total


def shifted_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MetaRM's shifted set from a round's ``{prompt, responses, ...}`` groups: ``{prompt, responses}`` of every group
    whose responses are all non-empty (an empty completion is no text to score, and every group keeps the same
    number of responses)."""
    return [{"prompt": g["prompt"], "responses": g["responses"]} for g in groups
            if all(isinstance(r, str) and r.strip() for r in g["responses"])]


def labels_used(settings: RoundsSettings, round_: int, comparisons: int, online_labels: int = 0) -> int:
    """Labels a round consumes: its comparisons when the reward model or the policy trains on them (round 0
    always; later rounds with ``retrain``/``finetune`` or ``dpo``), plus ``online_dpo``'s per-step labels when
    they come from the gold annotator."""
    trains_on_new = round_ == 0 or settings.reward_model.update in ("retrain", "finetune")
    uses = trains_on_new or settings.policy_update.method == "dpo"
    online = online_labels if settings.policy_update.reward == "gold" else 0
    return (comparisons if uses else 0) + online


def seed_everything(seed: int) -> None:
    """Seed ``torch`` and ``random`` (a stage's modules and training then do not depend on what ran before it)."""
    torch.manual_seed(seed)
    random.seed(seed)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a killed loop never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def no_comparisons(k: int, files: list[Path]) -> str:
    """The message of a round without comparisons to train on."""
    return (f"round {k}: no comparisons to train on in {', '.join(map(str, files))}: every pair of samples tied on "
            "the annotator (or was identical or empty); sample more (prompts, samples_per_prompt), more diversely "
            "(sampling.temperature), or start from a policy whose samples differ in reward")


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


class RoundsLoop:
    """Runs (or resumes) the rounds of ``settings``; :meth:`run` returns the summary written to ``rounds.json``."""

    def __init__(self, settings: RoundsSettings) -> None:
        self.settings = settings
        self.root = Path(settings.output).expanduser().resolve()
        self.summary_path = self.root / "rounds.json"
        self.summary: dict[str, Any] = {}

    # -- bookkeeping ------------------------------------------------------------------------------
    def settings_record(self) -> dict[str, Any]:
        """The settings as ``rounds.json`` keeps them: local models as resolved paths, the prompt file's digest."""
        s = self.settings
        record = {k: v for k, v in asdict(s).items() if k != "task"}
        plain = {k: v for k, v in vars(s.task).items() if isinstance(v, (int, float, str, bool))}
        record["task"] = {"class_path": f"{type(s.task).__module__}.{type(s.task).__qualname__}", "init_args": plain}
        record["policy"] = local_path(s.policy) or s.policy
        record["label"]["reward_model"] = local_path(s.label.reward_model) or s.label.reward_model
        if s.prompt_file is not None and local_path(s.prompt_file):
            record["prompt_file_digest"] = file_digest(s.prompt_file)
        return json.loads(json.dumps(record, default=str))

    def load(self) -> None:
        """Read ``rounds.json`` of an earlier (interrupted) run of the same settings, else start a new one."""
        record = self.settings_record()
        if self.summary_path.is_file():
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
            changed = settings_changes(summary.get("settings", {}), record)
            if changed:
                raise RoundsError(f"{self.summary_path} was written with other settings ({'; '.join(changed)}); "
                                  "use another output folder, or the same settings to resume it")
            summary["settings"] = record  # more rounds extend a finished loop
            self.summary = summary
        else:
            self.summary = {"settings": record, "start": None, "rounds": []}
        self.root.mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        write_json(self.summary_path, self.summary)

    def record(self, k: int) -> dict[str, Any]:
        while len(self.summary["rounds"]) <= k:
            self.summary["rounds"].append({"round": len(self.summary["rounds"]), "stages": {}})
        return self.summary["rounds"][k]

    def folder(self, k: int) -> Path:
        path = self.root / f"round_{k}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint(self, k: int, stage: str) -> str:
        """The final checkpoint of round ``k``'s ``reward_model`` or ``policy`` stage (``rounds.json`` names it
        relative to the output folder; an absolute name, as older folders have, is kept)."""
        return str(self.root / self.record(k)["checkpoints"][stage])

    def policy_source(self, k: int) -> str:
        """The policy round ``k`` samples from and starts training from."""
        return self.settings.policy if k == 0 else self.checkpoint(k - 1, "policy")

    def seed(self, k: int, stage: str) -> int:
        return self.settings.seed * 100_003 + k * 101 + STAGES.index(stage) if stage in STAGES else 0

    # -- shared pieces --------------------------------------------------------------------------
    def sample(self, source: str, prompts: list[str], n: int, seed: int) -> list[str]:
        """``n`` completions per prompt (prompt-major) from a policy, seeded."""
        from lit_rlhf.data.tokenize import Encoder
        from lit_rlhf.models.checkpoint import load_policy
        from lit_rlhf.rollout.generation import generate_texts

        tokenizer, model = load_policy(source)
        encoder = Encoder(tokenizer)
        ids = [encoder.prompt_ids(p) for p in prompts for _ in range(n)]
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return generate_texts(model, tokenizer, ids, self.settings.sampling)

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        return [r["prompt"] for _, r in self.settings.task.records("prompt", split, n, seed=seed)]

    def file_prompts(self) -> list[str]:
        """The plain-text prompts of ``prompt_file`` (any prompt format ``lit-rlhf`` reads)."""
        from lit_rlhf.data.sources import text_prompts

        return text_prompts(str(Path(self.settings.prompt_file).expanduser()), "lit-rlhf rounds (the task's grader "
                            "reads them)", self.settings.task)

    def training_prompts(self, k: int) -> list[str]:
        """Round ``k``'s prompts: ``prompts`` fresh ones from the task, or from ``prompt_file`` (a seeded shuffle per
        round; all of its rows when it has fewer)."""
        s = self.settings
        if s.prompt_file is None:
            return self.prompts("train", s.prompts, seed=s.seed * 1000 + k)
        rows = self.file_prompts()
        random.Random(s.seed * 1000 + k).shuffle(rows)
        return rows[:s.prompts]

    def score(self, reward_model: str | None, prompts: list[str], completions: list[str]) -> list[float]:
        """Scores of a reward model (``None``: the task's gold reward)."""
        from lit_rlhf.rollout.rewards import reward_source, score_completions

        return score_completions(reward_source(reward_model, None), self.settings.task, prompts, completions).tolist()

    def trainer(self, k: int, stage: str, max_steps: int, callbacks: list[Any] | None = None):
        """The trainer of a training stage: checkpoints in ``round_<k>/<stage>/checkpoints`` (``last.ckpt`` every
        ``checkpoint_every`` steps and at the end), a W&B run named after the round and stage in the loop's group."""
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint

        from lit_rlhf.eval.runs import FinalCheckpoint

        s = self.settings
        folder = self.folder(k) / stage
        logger: Any = False
        if s.wandb:
            from lit_rlhf.eval.wandb import AutoWandbLogger

            logger = AutoWandbLogger(project=s.project, name=f"{self.root.name}/round_{k}/{stage}",
                                     group=self.root.name, save_dir=str(folder), job_type=stage)
        checkpoint = ModelCheckpoint(dirpath=folder / "checkpoints", every_n_train_steps=s.checkpoint_every,
                                     save_last=True)
        return L.Trainer(accelerator=s.accelerator, devices=1, precision=s.precision, max_steps=max_steps,
                         max_epochs=-1, logger=logger, default_root_dir=folder, limit_val_batches=0,
                         num_sanity_val_steps=0, log_every_n_steps=1, enable_progress_bar=False,
                         enable_model_summary=False,
                         callbacks=[checkpoint, FinalCheckpoint(), *(callbacks or []), *self.callbacks(k, stage)])

    def callbacks(self, k: int, stage: str) -> list[Any]:
        """Extra callbacks of a training stage (none; a hook for subclasses and tests)."""
        return []

    def fit(self, k: int, stage: str, module: Any, datamodule: Any, max_steps: int) -> tuple[str, int]:
        """Fit (or resume from ``last.ckpt``); returns the final checkpoint (relative to the output folder) and the
        step it resumed from."""
        from lit_rlhf.eval.runs import checkpoint_run, continue_from_checkpoint
        from lit_rlhf.eval.wandb import finish_wandb_runs

        trainer = self.trainer(k, stage, max_steps)
        last = self.folder(k) / stage / "checkpoints" / "last.ckpt"
        resumed_from = 0
        ckpt_path = None
        if last.is_file():
            ckpt_path = str(last)
            resumed_from = checkpoint_run(last)["global_step"]
            continue_from_checkpoint(trainer, ckpt_path)
            print(f"[lit_rlhf] rounds: round {k} {stage}: resuming from {last} (step {resumed_from})")
        try:
            trainer.fit(module, datamodule, ckpt_path=ckpt_path)
        finally:  # one W&B run per stage
            finish_wandb_runs(trainer)
        if not last.is_file():
            raise RuntimeError(f"round {k} {stage}: the fit wrote no {last}")
        return str(last.relative_to(self.root)), resumed_from

    # -- stages ---------------------------------------------------------------------------------
    def evaluate_policy(self, source: str, reward_model: str | None, seed: int) -> dict[str, Any]:
        """Gold reward, proxy (reward-model) reward and the reward model's accuracy on pairs of the policy's own
        samples judged by gold, on ``eval_prompts`` validation prompts × ``eval_samples``."""
        s = self.settings
        prompts = self.prompts("val", s.eval_prompts, s.seed)
        flat = [p for p in prompts for _ in range(s.eval_samples)]
        completions = self.sample(source, prompts, s.eval_samples, seed)
        gold = self.score(None, flat, completions)
        out: dict[str, Any] = {"gold_reward": sum(gold) / len(gold)}
        if reward_model is not None:
            proxy = self.score(reward_model, flat, completions)
            accuracy, pairs = pairwise_accuracy(gold, proxy, s.eval_samples)
            out.update(proxy_reward=sum(proxy) / len(proxy), rm_accuracy=accuracy, rm_accuracy_pairs=pairs)
        return out

    def stage_sample(self, k: int) -> dict[str, Any]:
        """K samples per fresh training prompt from the newest policy, gold rewards, annotator labels (with noise),
        and the previous reward model's accuracy on them (judged by gold)."""
        s = self.settings
        folder = self.folder(k)
        prompts = self.training_prompts(k)
        completions = self.sample(self.policy_source(k), prompts, s.samples_per_prompt, self.seed(k, "sample"))
        flat = [p for p in prompts for _ in range(s.samples_per_prompt)]
        gold = self.score(None, flat, completions)
        scores = self.score(s.label.reward_model, flat, completions) if s.label.reward_model else None
        from lit_rlhf.rollout.pairs import label_pairs

        rows = label_pairs(prompts, completions, gold, s.samples_per_prompt, scores)
        rows = flip_labels(rows, s.label.noise, random.Random(self.seed(k, "sample")))
        K = s.samples_per_prompt
        groups = [{"prompt": p, "responses": completions[i * K:(i + 1) * K], "gold": gold[i * K:(i + 1) * K]}
                  for i, p in enumerate(prompts)]
        write_jsonl(folder / "samples.jsonl", groups)
        write_jsonl(folder / "comparisons.jsonl", rows)
        out: dict[str, Any] = {"comparisons": len(rows), "flipped": sum(r["label_flipped"] for r in rows),
                               "sample_gold_reward": sum(gold) / len(gold)}
        if k > 0:
            previous = self.checkpoint(k - 1, "reward_model")
            accuracy, pairs = pairwise_accuracy(gold, self.score(previous, flat, completions), K)
            out.update(rm_accuracy_before=accuracy, rm_accuracy_before_pairs=pairs)
        return out

    def labelled_files(self, k: int) -> list[Path]:
        """The comparison files of the rounds whose labels the reward model may train on up to round ``k``."""
        update = self.settings.reward_model.update
        rounds = range(k + 1) if update in ("retrain", "finetune") else range(1)
        return [self.folder(j) / "comparisons.jsonl" for j in rounds]

    def stage_reward_model(self, k: int) -> dict[str, Any]:
        from lit_rlhf.data import PreferenceDataModule
        from lit_rlhf.data.shifted import MetaRMDataModule
        from lit_rlhf.modules import MetaRM, RewardModel

        r = self.settings.reward_model
        folder = self.folder(k)
        update = "retrain" if k == 0 else r.update
        seed_everything(self.seed(k, "reward_model"))  # before the modules are built: their fresh heads too
        if update == "frozen":
            return {"update": "frozen", "checkpoint": self.record(k - 1)["checkpoints"]["reward_model"]}
        if update == "finetune":
            files = [folder / "comparisons.jsonl"]
        else:
            files = self.labelled_files(k)
        rows = [row for f in files for row in read_jsonl(f)]
        if not rows:
            raise RoundsError(no_comparisons(k, files))
        train = write_jsonl(folder / "reward_model_train.jsonl", rows)
        args = dict(model=r.model, optimizer=lambda p: torch.optim.AdamW(p, lr=r.lr), **r.init_args)
        data = dict(train=str(train), val_from="none", max_length=r.max_length, batch_size=r.batch_size,
                    seed=self.seed(k, "reward_model"), rating_levels=None)
        if update == "meta_rm":
            module = MetaRM(meta_lr=r.meta_lr, **args)
            groups = shifted_groups(read_jsonl(folder / "samples.jsonl"))
            if not groups:
                raise RoundsError(f"round {k}: every prompt of {folder / 'samples.jsonl'} has an empty sample: no "
                                  "shifted set for MetaRM (sample longer or more prompts)")
            shifted = write_jsonl(folder / "shifted.jsonl", groups)
            datamodule = MetaRMDataModule(shifted=str(shifted), shifted_batch_size=r.shifted_batch_size, **data)
        else:
            module = RewardModel(**args)
            datamodule = PreferenceDataModule(**data)
        if update in ("finetune", "meta_rm"):  # start from the previous round's reward model
            state = torch.load(self.checkpoint(k - 1, "reward_model"), map_location="cpu",
                               weights_only=True)["state_dict"]
            module.load_state_dict(state)
        checkpoint, resumed = self.fit(k, "reward_model", module, datamodule, r.steps)
        return {"update": update, "pairs": len(rows), "checkpoint": checkpoint, "resumed_from_step": resumed}

    def stage_policy(self, k: int) -> dict[str, Any]:
        from lit_rlhf.data import PreferenceDataModule, PromptDataModule
        from lit_rlhf.models.checkpoint import _is_checkpoint
        from lit_rlhf.modules import DPO, GRPO, PPO, OnlineDPO, RejectionSampling

        s, p = self.settings, self.settings.policy_update
        folder = self.folder(k)
        source = self.policy_source(k)
        start = {"init_from": source} if _is_checkpoint(source) else {"model": source}
        args: dict[str, Any] = {**start, "optimizer": lambda q: torch.optim.AdamW(q, lr=p.lr, weight_decay=0.0)}
        seed = self.seed(k, "policy")
        seed_everything(seed)
        if p.method == "dpo":
            if self.record(k)["stages"]["sample"]["comparisons"] == 0:
                raise RoundsError(no_comparisons(k, [folder / "comparisons.jsonl"]))
            module = DPO(**args, sampling=s.sampling, **p.init_args)
            datamodule = PreferenceDataModule(train=str(folder / "comparisons.jsonl"), val_from="none",
                                              max_length=p.max_length, batch_size=p.batch_size, seed=seed,
                                              rating_levels=None)
        else:
            rm = self.checkpoint(k, "reward_model") if p.reward == "reward_model" else None
            args.update(sampling=s.sampling, reward_model=rm)
            if p.method == "online_dpo" and p.reference == "fixed" and k > 0:
                args["reference_from"] = s.policy
            cls = {"rejection_sampling": RejectionSampling, "ppo": PPO, "grpo": GRPO, "online_dpo": OnlineDPO}[p.method]
            module = cls(**args, **p.init_args)
            train = None if s.prompt_file is None else str(Path(s.prompt_file).expanduser().absolute())
            datamodule = PromptDataModule(train=train, task=s.task, task_sizes={
                "train": max(p.steps, 1) * p.batch_size, "val": 0, "test": 0}, val_from="none",
                max_length=p.max_length, batch_size=p.batch_size, seed=seed)
        checkpoint, resumed = self.fit(k, "policy", module, datamodule, p.steps)
        out = {"method": p.method, "checkpoint": checkpoint, "resumed_from_step": resumed}
        if isinstance(module, OnlineDPO):
            out["online_labels"] = module.labelled
        return out

    def stage_evaluate(self, k: int) -> dict[str, Any]:
        return self.evaluate_policy(self.checkpoint(k, "policy"), self.checkpoint(k, "reward_model"),
                                    self.seed(k, "evaluate"))

    # -- driver ---------------------------------------------------------------------------------
    def run_stage(self, k: int, stage: str) -> None:
        record = self.record(k)
        if stage in record["stages"]:
            return
        print(f"[lit_rlhf] rounds: round {k}: {stage}")
        out = getattr(self, f"stage_{stage}")(k)
        record["stages"][stage] = out
        if stage in ("reward_model", "policy"):
            record.setdefault("checkpoints", {})[stage] = out["checkpoint"]
        if stage == "evaluate":
            sample, policy = record["stages"]["sample"], record["stages"]["policy"]
            record["labels"] = labels_used(self.settings, k, sample["comparisons"], policy.get("online_labels", 0))
            before = self.summary["rounds"][k - 1]["labels_total"] if k > 0 else 0
            record["labels_total"] = before + record["labels"]
            record.update({key: out.get(key) for key in ("gold_reward", "proxy_reward", "rm_accuracy")})
            record["rm_accuracy_before"] = sample.get("rm_accuracy_before")
        self.save()

    def run(self) -> dict[str, Any]:
        self.settings.check_inputs()
        if self.settings.prompt_file is not None:
            self.file_prompts()  # a prompt file the task cannot grade (or of chat rows) fails before any work
        self.load()
        if self.summary["start"] is None:
            print("[lit_rlhf] rounds: evaluating the starting policy")
            self.summary["start"] = self.evaluate_policy(self.settings.policy, None, self.seed(0, "evaluate") - 1)
            self.save()
        for k in range(self.settings.rounds):
            for stage in STAGES:
                self.run_stage(k, stage)
            r = self.record(k)
            acc = "n/a" if r["rm_accuracy"] is None else f"{r['rm_accuracy']:.3f}"
            print(f"[lit_rlhf] rounds: round {k}: gold reward {r['gold_reward']:.4f}, proxy reward "
                  f"{r['proxy_reward']:.4f}, RM accuracy on the policy's samples {acc}, labels {r['labels_total']}")
        return self.summary


def run_rounds(settings: RoundsSettings) -> dict[str, Any]:
    """Run or resume the loop; returns the summary (also in ``<output>/rounds.json``)."""
    return RoundsLoop(settings).run()
