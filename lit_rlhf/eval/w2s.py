"""Weak-to-strong generalization (Burns et al. 2023): PGR and the weak → strong pipeline."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Union

import torch

from lit_rlhf.data.schemas import DataError, WeakLabelRow
from lit_rlhf.losses.classification import W2S_LOSSES, weak_to_strong_loss


def performance_gap_recovered(weak_acc: float, weak_to_strong_acc: float, strong_acc: float) -> float:
    """Performance gap recovered: ``PGR = (acc_w2s − acc_weak) / (acc_ceiling − acc_weak)``.

    0 = the student is no better than its supervisor, 1 = it matches the strong model trained on ground
    truth. ``nan`` when the ceiling equals the weak accuracy (no gap to recover).

    Args:
        weak_acc: gold accuracy of the weak supervisor.
        weak_to_strong_acc: gold accuracy of the strong student trained on weak labels.
        strong_acc: gold accuracy of the strong ceiling (trained on ground truth).
    """
    gap = float(strong_acc) - float(weak_acc)
    if gap == 0:
        return math.nan
    return (float(weak_to_strong_acc) - float(weak_acc)) / gap


# ----------------------------------------------------------------------------------------------------
# the pipeline: weak on ground truth -> weak labels -> strong student(s) -> strong ceiling -> PGR
# ----------------------------------------------------------------------------------------------------


@dataclass
class W2SSettings:
    """Settings of ``lit-rlhf w2s`` (the ``w2s:`` section of a config; ignored by ``fit``).

    Args:
        weak: the weak supervisor: a model name (trained like the strong model, with ``weak_init_args``),
            a model spec dict, ``probe:<model>`` (linear probe on the model's frozen mean-pooled features),
            ``lexicon:vader`` (logistic regression on VADER scores) or ``synthetic:<view>`` (a linear probe
            on a :class:`~lit_rlhf.tasks.SalientSynthetic` feature view).
        strong: the strong student and ceiling (same forms).
        chain: intermediate models for bootstrapping: each trained student labels the next split.
        losses: student losses to sweep (``xent``, ``logconf``, ``product``); the weak model always uses xent.
        seeds: seeds to run (model init, data order and the split of the pool).
        pool_size: examples of the data module's ``train`` split to split into weak-training and transfer parts
            (``None``: all the data module reads).
        test_size: examples of its ``test`` split for every accuracy (``None``: all).
        weak_init_args: ``model.init_args`` overrides of the weak (and chain) models, e.g. ``{"pooling": "last"}``.
        probe: options of ``lexicon:``/``synthetic:`` learners (``lr``, ``epochs``, ``batch_size``) per role
            ``weak`` / ``strong``.
        output: folder of ``summary.json`` (written after every run; its finished runs are reused by a rerun of
            the same experiment, see :func:`run_w2s`) and the weak-label jsonl files.
        wandb: also log the summary to Weights & Biases (offline without an account).
    """

    weak: Union[str, dict[str, Any]] = "lexicon:vader"
    strong: Union[str, dict[str, Any]] = "lit-rlhf:minilm-l6"
    chain: list[Union[str, dict[str, Any]]] = field(default_factory=list)
    losses: list[str] = field(default_factory=lambda: ["xent"])
    seeds: list[int] = field(default_factory=lambda: [0])
    pool_size: Optional[int] = None
    test_size: Optional[int] = None
    weak_init_args: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, dict[str, float]] = field(default_factory=dict)
    output: str = "runs/w2s"
    wandb: bool = False


def parse_loss(spec: str) -> tuple[str, dict[str, str]]:
    """``"logconf:linear:median"`` -> ``("logconf", {"schedule": "linear", "threshold": "median"})``.

    A loss in ``w2s.losses`` is ``xent``, ``product`` or ``logconf[:repo|linear][:weak_prior|median]``.
    """
    name, *options = spec.split(":")
    known = {"repo": "schedule", "linear": "schedule", "weak_prior": "threshold", "median": "threshold"}
    if name not in W2S_LOSSES or (options and name != "logconf") or any(o not in known for o in options):
        raise ValueError(f"unknown loss {spec!r}; expected xent, product or logconf[:repo|linear][:weak_prior|median]")
    return name, {known[o]: o for o in options}


def split_rows(rows: Sequence[WeakLabelRow], parts: int, seed: int) -> list[list[WeakLabelRow]]:
    """Split ``rows`` into ``parts`` near-equal parts by a seeded hash of their text.

    Equal texts always fall into the same part, so no text is shared between parts.
    """
    if parts < 1:
        raise ValueError(f"need at least one part, got {parts}")
    texts = sorted({r.text for r in rows}, key=lambda t: hashlib.sha256(f"{seed}/{t}".encode()).digest())
    part_of = {t: i * parts // len(texts) for i, t in enumerate(texts)}
    out: list[list[WeakLabelRow]] = [[] for _ in range(parts)]
    for row in rows:
        out[part_of[row.text]].append(row)
    return out


def check_disjoint(splits: dict[str, Sequence[WeakLabelRow]]) -> None:
    """Raise ``ValueError`` naming two splits that share a text (and the text)."""
    owner: dict[str, str] = {}
    for name, rows in splits.items():
        for row in rows:
            other = owner.setdefault(row.text, name)
            if other != name:
                raise ValueError(f"splits '{other}' and '{name}' share a text ({row.where}): {row.text[:60]!r}")


def gold_of(row: WeakLabelRow) -> int:
    """The ground-truth label of a row: ``gt_label`` when it has one (weak-label files), else ``label``."""
    return int(row.meta.get("gt_label", row.label))


def with_targets(rows: Sequence[WeakLabelRow], probs: torch.Tensor | None) -> list[WeakLabelRow]:
    """Rows whose training target is ``probs`` ``(N, C)`` (``None``: one-hot gold); rows with NaN are left out."""
    out = []
    for i, row in enumerate(rows):
        gold = gold_of(row)
        if probs is None:
            soft = [float(k == gold) for k in range(2)]
        elif torch.isnan(probs[i]).any():
            continue
        else:
            soft = [float(p) for p in probs[i]]
        label = max(range(len(soft)), key=soft.__getitem__)
        out.append(WeakLabelRow(row.text, label, soft, row.where, {**row.meta, "gt_label": gold}))
    return out


def accuracy(probs: torch.Tensor, rows: Sequence[WeakLabelRow]) -> float:
    """Gold accuracy of ``probs`` ``(N, C)`` over the rows it has predictions for (NaN rows are skipped)."""
    gold = torch.tensor([gold_of(r) for r in rows])
    ok = ~torch.isnan(probs).any(-1)
    return float((probs[ok].argmax(-1) == gold[ok]).float().mean())


def write_weak_labels(rows: Sequence[WeakLabelRow], probs: torch.Tensor, path: str | Path) -> Path:
    """Weak labels in the OpenAI weak-to-strong format: ``{txt, hard_label, soft_label, gt_label, acc}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row, p in zip(rows, probs.tolist()):
            if any(math.isnan(v) for v in p):
                continue
            hard = max(range(len(p)), key=p.__getitem__)
            record = {"txt": row.text, "hard_label": hard, "soft_label": p, "gt_label": gold_of(row),
                      "acc": hard == gold_of(row), "source": row.where}
            f.write(json.dumps(record) + "\n")
    return path


class Learner(Protocol):
    """A model of the pipeline: trained on rows with soft targets, predicts class probabilities."""

    def fit(self, rows: list[WeakLabelRow], loss: str, seed: int) -> None: ...

    def predict(self, rows: Sequence[WeakLabelRow]) -> torch.Tensor: ...


class FeatureProbe:
    """Linear head on fixed features, trained like the reference (Adam, cosine, zero init, no standardisation).

    Args:
        features: rows -> ``(N, D)`` features.
        lr: Adam learning rate.
        epochs: passes over the training rows.
        batch_size: optimisation batch (the logconf quantile is over it).
        loss_options: keyword options of :func:`~lit_rlhf.losses.weak_to_strong_loss`.
    """

    def __init__(self, features: Callable[[Sequence[WeakLabelRow]], torch.Tensor], lr: float = 1e-3,
                 epochs: float = 2, batch_size: int = 32, **loss_options: Any) -> None:
        self.features, self.lr, self.epochs, self.batch_size = features, lr, epochs, int(batch_size)
        self.loss_options = loss_options
        self.head: torch.nn.Linear | None = None

    def fit(self, rows: list[WeakLabelRow], loss: str, seed: int) -> None:
        loss, options = parse_loss(loss)
        options = {**self.loss_options, **options}
        x = self.features(rows)
        targets = torch.tensor([r.soft_label for r in rows])
        g = torch.Generator().manual_seed(seed)
        self.head = torch.nn.Linear(x.shape[1], targets.shape[1])
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        per_epoch = len(x) // self.batch_size
        total = max(1, int(self.epochs * per_epoch))
        optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
        order = torch.cat([torch.randperm(len(x), generator=g) for _ in range(math.ceil(self.epochs))])
        for step in range(total):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            out = weak_to_strong_loss(loss, self.head(x[idx]), targets[idx], step / total, **options)
            optimizer.zero_grad()
            out.mean().backward()
            optimizer.step()
            schedule.step()

    @torch.no_grad()
    def predict(self, rows: Sequence[WeakLabelRow]) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("predict before fit")
        return self.head(self.features(rows)).softmax(-1)


def row_view(view: str) -> Callable[[Sequence[WeakLabelRow]], torch.Tensor]:
    """Features stored in each row's ``meta[view]`` (e.g. the views of :class:`~lit_rlhf.tasks.SalientSynthetic`)."""

    def features(rows: Sequence[WeakLabelRow]) -> torch.Tensor:
        missing = next((r for r in rows if view not in r.meta), None)
        if missing is not None:
            raise DataError(missing.where, view, f"missing: 'synthetic:{view}' reads this feature list from each row")
        return torch.tensor([r.meta[view] for r in rows], dtype=torch.float32)

    return features


def lexicon_features(name: str) -> Callable[[Sequence[WeakLabelRow]], torch.Tensor]:
    """Lexicon scores of each text as features; ``vader``: ``[neg, neu, pos, compound]``."""
    if name != "vader":
        raise ValueError(f"unknown lexicon {name!r}; available: 'vader'")
    from lit_rlhf.tasks.sentiment import vader_scores

    return lambda rows: torch.tensor(vader_scores([r.text for r in rows]), dtype=torch.float32)


def frozen_features(model: Any, pooling: str = "mean", max_length: int = 128,
                    batch_size: int = 64) -> Callable[[Sequence[WeakLabelRow]], torch.Tensor]:
    """Pooled features of a frozen backbone for each text (computed once per text and cached in memory).

    Used by ``probe:<model>`` learners: a linear probe on a pretrained model's features, the cheap variant
    of weak-to-strong training (the paper's and the vision reference's "linear probe"), not full fine-tuning.
    """
    from lit_rlhf.models import load_model, load_tokenizer
    from lit_rlhf.models.heads import pool

    tokenizer = load_tokenizer(model)
    backbone = load_model(model, kind="backbone", tokenizer=tokenizer).eval()
    cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def features(rows: Sequence[WeakLabelRow]) -> torch.Tensor:
        todo = sorted({r.text for r in rows if r.text not in cache})
        for start in range(0, len(todo), batch_size):
            texts = todo[start:start + batch_size]
            enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            cache.update(zip(texts, pool(hidden, enc["attention_mask"], pooling).float()))
        return torch.stack([cache[r.text] for r in rows])

    return features


_FROZEN: dict[str, Callable[[Sequence[WeakLabelRow]], torch.Tensor]] = {}


def probe_features(name: Any) -> Callable[[Sequence[WeakLabelRow]], torch.Tensor] | None:
    """Features of a probe learner named ``lexicon:<name>``, ``synthetic:<view>`` or ``probe:<model>``
    (``None`` for anything else: a model to fine-tune). Frozen-model features are shared across calls."""
    kind, _, rest = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind == "lexicon":
        return lexicon_features(rest)
    if kind == "synthetic":
        return row_view(rest)
    if kind == "probe":
        if rest not in _FROZEN:
            _FROZEN[rest] = frozen_features(rest)
        return _FROZEN[rest]
    return None


class ModuleLearner:
    """A :class:`~lit_rlhf.modules.WeakToStrong` model built from the config and trained by Lightning.

    Args:
        build: ``(loss, seed) -> (module, data module, trainer)`` (fresh each call; ``loss`` as in
            :func:`parse_loss`).
        eval_batch_size: batch of the prediction pass.
    """

    def __init__(self, build: Callable[[str, int], tuple[Any, Any, Any]], eval_batch_size: int = 64) -> None:
        self.build, self.eval_batch_size = build, eval_batch_size
        self.module: Any = None
        self.datamodule: Any = None

    def fit(self, rows: list[WeakLabelRow], loss: str, seed: int) -> None:
        self.module, self.datamodule, trainer = self.build(loss, seed)
        dm = self.datamodule
        dm.task, dm.sources, dm.rows, dm.datasets = None, {}, {"train": rows}, {}
        dm.tokenizer = self.module.tokenizer
        trainer.fit(self.module, datamodule=dm)

    @torch.no_grad()
    def predict(self, rows: Sequence[WeakLabelRow]) -> torch.Tensor:
        dm, module = self.datamodule, self.module
        dm.rows["predict"], _ = list(rows), dm.datasets.pop("predict", None)
        items, kept, collate = dm.dataset("predict").items, dm.kept_rows["predict"], dm.collator()
        out = torch.full((len(rows), 2), math.nan)
        module.eval()
        for start in range(0, len(items), self.eval_batch_size):
            batch = collate(items[start:start + self.eval_batch_size])
            logits = module(batch["input_ids"].to(module.device), batch["attention_mask"].to(module.device))
            out[kept[start:start + self.eval_batch_size]] = logits.float().softmax(-1).cpu()
        return out


def _mean_std(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(t) > 1 else 0.0, "n": len(t)}


def run_w2s(
    settings: W2SSettings,
    pool: Sequence[WeakLabelRow],
    test: Sequence[WeakLabelRow],
    learner: Callable[[str, str], Learner],
    log: Callable[[str], None] = print,
    setup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The weak-to-strong experiment for every seed and loss; returns (and writes) the summary.

    Per seed, ``pool`` is split into ``2 + len(chain)`` disjoint parts: part 0 trains the weak model on
    ground truth, which labels part 1 (written as jsonl); model ``k`` of ``[*chain, strong]`` trains on the
    labels of part ``k`` and, if not last, labels part ``k + 1``. The ceiling is the strong model trained on
    the gold labels of the last part. Accuracies are on ``test``; ``pgr`` from
    :func:`performance_gap_recovered`.

    ``summary.json`` is written after every (seed, loss) run. A run already in it with the same experiment (the
    settings other than ``seeds``, ``losses``, ``output`` and ``wandb``, the data and ``setup``) is not run again:
    a killed sweep resumes, and more seeds or losses extend a finished one. Runs of seeds or losses not asked for
    this time stay in the file, under ``other_runs``.

    Args:
        learner: ``(model name or spec, role) -> Learner`` with role ``weak`` / ``chain`` / ``strong``.
        setup: anything else the results depend on (e.g. the models' fit config), compared like the settings.
    """
    for spec in settings.losses:
        parse_loss(spec)
    test_texts = {r.text for r in test}
    pool = [r for r in pool if r.text not in test_texts]  # a text of the test split never trains anything
    students = [*settings.chain, settings.strong]
    output = Path(settings.output)
    experiment = experiment_identity(settings, pool, test, setup)
    done = finished_runs(output / "summary.json", experiment, log)
    wanted = [(seed, loss) for seed in settings.seeds for loss in settings.losses]

    def save() -> dict[str, Any]:
        runs = [done[key] for key in wanted if key in done]
        by_loss = {loss: {key: _mean_std([r[key] for r in runs if r["loss"] == loss])
                          for key in ("weak_acc", "w2s_acc", "strong_acc", "pgr")} for loss in settings.losses}
        summary = {"settings": asdict(settings), "experiment": experiment, "runs": runs, "by_loss": by_loss,
                   "other_runs": [run for key, run in done.items() if key not in wanted]}
        output.mkdir(parents=True, exist_ok=True)
        (output / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    for seed in settings.seeds:
        losses = [loss for loss in settings.losses if (seed, loss) not in done]
        if not losses:
            log(f"[w2s] seed {seed}: every loss is in {output / 'summary.json'} already")
            continue
        parts = split_rows(pool, 1 + len(students), seed)
        check_disjoint({"test": test, **{f"part{k}": p for k, p in enumerate(parts)}})
        log(f"[w2s] seed {seed}: parts {[len(p) for p in parts]}, test {len(test)}")
        clock = time.perf_counter()
        weak = learner(settings.weak, "weak")
        weak.fit(with_targets(parts[0], None), "xent", seed)
        weak_acc = accuracy(weak.predict(test), test)
        labels = weak.predict(parts[1])
        path = write_weak_labels(parts[1], labels, output / f"seed{seed}" / "weak_labels.jsonl")
        log(f"[w2s] weak {settings.weak}: test acc {weak_acc:.4f}, "
            f"label acc {accuracy(labels, parts[1]):.4f} -> {path}")
        ceiling = learner(settings.strong, "strong")
        ceiling.fit(with_targets(parts[-1], None), "xent", seed)
        strong_acc = accuracy(ceiling.predict(test), test)
        log(f"[w2s] ceiling {settings.strong}: test acc {strong_acc:.4f}")
        for loss in losses:
            probs, chain_accs = labels, []
            for k, name in enumerate(students, start=1):
                student = learner(name, "strong" if k == len(students) else "chain")
                student.fit(with_targets(parts[k], probs), loss, seed)
                chain_accs.append(accuracy(student.predict(test), test))
                if k < len(students):
                    probs = student.predict(parts[k + 1])
                    write_weak_labels(parts[k + 1], probs, output / f"seed{seed}" / f"{loss}_labels_{k}.jsonl")
            w2s_acc = chain_accs[-1]
            run = {"seed": seed, "loss": loss, "weak_acc": weak_acc, "w2s_acc": w2s_acc, "strong_acc": strong_acc,
                   "pgr": performance_gap_recovered(weak_acc, w2s_acc, strong_acc),
                   "label_acc": accuracy(labels, parts[1]), "chain_accs": chain_accs,
                   "seconds": time.perf_counter() - clock}
            done[(seed, loss)] = run
            save()
            log(f"[w2s] seed {seed} {loss}: w2s acc {w2s_acc:.4f}, pgr {run['pgr']:.3f}")
    summary = save()
    if settings.wandb:
        log_summary_to_wandb(summary, output)
    return summary


def experiment_identity(settings: W2SSettings, pool: Sequence[WeakLabelRow], test: Sequence[WeakLabelRow],
                        setup: dict[str, Any] | None) -> dict[str, Any]:
    """What a run's result depends on besides its seed and loss: the settings, a digest of the pool and test rows
    (text and gold label), and ``setup``."""
    digest = hashlib.sha256(json.dumps([[[r.text, r.label] for r in rows] for rows in (pool, test)]).encode())
    kept = {k: v for k, v in asdict(settings).items() if k not in ("seeds", "losses", "output", "wandb")}
    return json.loads(json.dumps({"settings": kept, "data": digest.hexdigest(), "setup": setup}, default=str))


def finished_runs(path: Path, experiment: dict[str, Any], log: Callable[[str], None]) -> dict[tuple[int, str], Any]:
    """``(seed, loss) -> run`` of an earlier summary of the same experiment; none if it differs (it is replaced)."""
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    if summary.get("experiment") != experiment:
        log(f"[w2s] {path} holds another experiment (other settings, data or models): its runs are not reused "
            "and the file is replaced")
        return {}
    runs = summary["runs"] + summary.get("other_runs", [])
    log(f"[w2s] {path}: {len(runs)} finished run(s) of this experiment are reused")
    return {(run["seed"], run["loss"]): run for run in runs}


def log_summary_to_wandb(summary: dict[str, Any], output: Path) -> None:
    """One W&B run with a table of every (seed, loss) run and ``pgr``/``weak_acc``/``strong_acc``/``w2s_acc``
    per loss (offline when there is no account or network)."""
    import wandb

    from lit_rlhf.eval.wandb import wandb_online_possible

    run = wandb.init(project="lit-rlhf", name="w2s", dir=str(output),
                     mode=None if wandb_online_possible() else "offline", config=summary["settings"])
    keys = ("seed", "loss", "weak_acc", "w2s_acc", "strong_acc", "pgr")
    run.log({"w2s/runs": wandb.Table(columns=list(keys), data=[[r[k] for k in keys] for r in summary["runs"]])})
    for loss, stats in summary["by_loss"].items():
        run.summary.update({f"{loss}/{k}": v["mean"] for k, v in stats.items()})
    run.finish()
