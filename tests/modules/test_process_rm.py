"""ProcessRewardModel: learns step labels, reads each step at its separator, scores candidates."""

import json
import random

import pytest
import torch
from conftest import quiet_trainer, write_jsonl

from lit_rlhf.cli import main as cli_main
from lit_rlhf.data import StepLabelDataModule
from lit_rlhf.eval.best_of_n import best_of_n
from lit_rlhf.eval.verify import score_steps
from lit_rlhf.modules import OutcomeRewardModel, ProcessRewardModel
from lit_rlhf.tasks import Arithmetic


def _step_rows(n, seed):
    """Steps of random letters; a step is wrong iff it contains 'bad'."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        steps, labels = [], []
        for _ in range(rng.randint(1, 4)):
            wrong = rng.random() < 0.4
            noise = "".join(rng.choice("xyzqw") for _ in range(6))
            cut = rng.randint(0, 6)
            steps.append(noise[:cut] + ("bad" if wrong else "fine") + noise[cut:])
            labels.append(not wrong)
        rows.append({"prompt": f"q{rng.randint(0, 99)}:", "completions": steps, "labels": labels})
    return rows


def test_prm_learns_step_labels(tiny_spec, tmp_path):
    prm = ProcessRewardModel(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    dm = StepLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _step_rows(384, 0)),
                             val=write_jsonl(tmp_path / "v.jsonl", _step_rows(96, 1)), batch_size=16, max_length=96)
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    before = {k: v.detach().clone() for k, v in prm.named_parameters()}
    start = trainer.validate(prm, datamodule=dm, verbose=False)[0]
    trainer.fit(prm, datamodule=dm)
    end = trainer.validate(prm, datamodule=dm, verbose=False)[0]
    assert all(not torch.equal(v, before[k]) for k, v in prm.named_parameters())
    assert end["val/loss"] < 0.5 * start["val/loss"]
    assert end["val/step_accuracy"] >= 0.95 > start["val/step_accuracy"]
    assert end["val/first_error_accuracy"] >= 0.9 > start["val/first_error_accuracy"]


def test_step_loss_and_metrics_of_a_batch(tiny_spec, tmp_path):
    prm = ProcessRewardModel(model=tiny_spec)
    dm = StepLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _step_rows(8, 2)), supervise="all")
    dm.tokenizer = prm.tokenizer
    batch = dm.collator()(dm.dataset("train").items)
    out = prm.step(batch, "train")
    loss, stats = out.loss, out.metrics
    logits, labels = prm(batch["input_ids"], batch["attention_mask"]), batch["labels"]
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # mean over every labelled step
    mask = labels != -100
    assert stats["step_accuracy"].item() == pytest.approx((logits.argmax(-1) == labels)[mask].float().mean().item())


def test_score_steps_reads_the_training_positions(tiny_spec, tmp_path):
    prm = ProcessRewardModel(model=tiny_spec, step_separator=" ;")
    rows = _step_rows(6, 3)
    dm = StepLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", rows), step_separator=" ;", supervise="all")
    dm.tokenizer = prm.tokenizer
    batch = dm.collator()(dm.dataset("train").items)
    token_probs = prm.step_probs(batch["input_ids"], batch["attention_mask"])
    probs, mask = score_steps(prm, [r["prompt"] for r in rows], [r["completions"] for r in rows], batch_size=4)
    assert mask.sum(1).tolist() == [len(r["completions"]) for r in rows]
    for i, labels in enumerate(batch["labels"]):
        assert torch.allclose(probs[i][mask[i]], token_probs[i][labels != -100], atol=1e-5)


def test_fit_refuses_a_separator_mismatch(tiny_spec, tmp_path):
    prm = ProcessRewardModel(model=tiny_spec, step_separator="\n")
    dm = StepLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _step_rows(8, 4)), step_separator=" ;")
    with pytest.raises(ValueError, match="step_separator"):
        quiet_trainer(tmp_path, max_steps=1).fit(prm, datamodule=dm)


def test_best_of_n_on_arithmetic_candidates_and_cli(tiny_spec, tmp_path):
    task = Arithmetic(min_steps=2, max_steps=3)
    rng = random.Random(0)
    problems = list(task.problems("test", 6))
    prompts = [p.prompt for p in problems]
    candidates = [[task.sample_solution(p, rng).completion for _ in range(4)] for p in problems]
    prm, orm = ProcessRewardModel(model=tiny_spec), OutcomeRewardModel(model=tiny_spec)
    result = best_of_n(task, prompts, candidates, [1, 4], prm=prm, orm=orm, trials=5)
    truth = torch.tensor([[task.parse_answer(c) == p.answer for c in row] for p, row in zip(problems, candidates)])
    assert torch.equal(result.correct, truth)
    assert set(result.accuracy) == {"PRM (product)", "PRM (min)", "ORM", "majority", "pass@N"}
    assert result.scores["ORM"].shape == (6, 4)
    assert ((result.scores["PRM (min)"] >= 0) & (result.scores["PRM (min)"] <= 1)).all()
    for name, by_n in result.accuracy.items():
        assert by_n[4][0] <= result.accuracy["pass@N"][4][0] + 1e-9, name
    folder = result.save(tmp_path / "report")
    assert (folder / "best_of_n.png").stat().st_size > 0
    assert len((folder / "candidates.jsonl").read_text().splitlines()) == 6

    # the CLI on the same candidates, with a saved PRM checkpoint
    trainer = quiet_trainer(tmp_path, max_steps=1)
    dm = StepLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", _step_rows(8, 5)))
    trainer.fit(prm, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "prm.ckpt")
    write_jsonl(tmp_path / "cands.jsonl", [{"prompt": p, "completions": c} for p, c in zip(prompts, candidates)])
    cli_main(["best-of-n", "--candidates", str(tmp_path / "cands.jsonl"), "--prm", str(tmp_path / "prm.ckpt"),
              "--n", "1", "2", "--trials", "3", "--output", str(tmp_path / "cli")])
    accuracy = json.loads((tmp_path / "cli" / "accuracy.json").read_text())
    assert set(accuracy) == {"PRM (product)", "PRM (min)", "majority", "pass@N"}
    assert set(accuracy["pass@N"]) == {"1", "2"}

    # a user shares the PRM as an exported folder: best-of-n scores the same candidates identically from it
    cli_main(["export", str(tmp_path / "prm.ckpt"), str(tmp_path / "prm_export")])
    cli_main(["best-of-n", "--candidates", str(tmp_path / "cands.jsonl"), "--prm", str(tmp_path / "prm_export"),
              "--n", "1", "2", "--trials", "3", "--output", str(tmp_path / "cli_export")])
    rows = [[json.loads(line)["scores"]["PRM (min)"] for line in (tmp_path / out / "candidates.jsonl").open()]
            for out in ("cli", "cli_export")]
    assert torch.allclose(torch.tensor(rows[0]), torch.tensor(rows[1]), atol=1e-5)


def test_best_of_n_feeds_the_orm_the_tasks_solution_text(monkeypatch):
    import importlib

    bon = importlib.import_module("lit_rlhf.eval.best_of_n")  # the package re-exports a function of that name

    class Spaced(Arithmetic):
        def solution_text(self, prompt, completion):
            return f"{prompt} | {completion}"

    task, seen = Spaced(), []
    monkeypatch.setattr(
        bon, "score_outcomes", lambda orm, texts, batch_size, **kw: seen.extend(texts) or torch.zeros(len(texts))
    )
    prompts = ["1+2=", "3*2="]
    candidates = [["1+2=3\n#### 3", "1+2=4\n#### 4"], ["3*2=6\n#### 6", "oops"]]
    bon.best_of_n(task, prompts, candidates, [1], orm=object(), trials=1)
    assert seen == ["1+2= | 1+2=3\n#### 3", "1+2= | 1+2=4\n#### 4", "3*2= | 3*2=6\n#### 6", "3*2= | oops"]
    weak = next(task.records("weak", "train", 1))[1]
    assert " | " in weak["text"]  # the task's own ORM data uses the same layout


def test_best_of_n_cli_samples_from_a_policy_checkpoint(tiny_spec, tmp_path):
    from lit_rlhf.data import SFTDataModule
    from lit_rlhf.models.checkpoint import load_policy
    from lit_rlhf.modules import SFT

    sft = SFT(model=tiny_spec)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(sft, datamodule=SFTDataModule(task=Arithmetic(), task_sizes={"train": 8, "val": 2, "test": 2},
                                              batch_size=4))
    trainer.save_checkpoint(tmp_path / "sft.ckpt")
    _, model = load_policy(str(tmp_path / "sft.ckpt"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), sft.model.state_dict().values()))
    cli_main(["best-of-n", "--policy", str(tmp_path / "sft.ckpt"), "--problems", "3", "--n", "1", "2", "--trials", "2",
              "--max-new-tokens", "6", "--output", str(tmp_path / "bon")])
    rows = [json.loads(line) for line in (tmp_path / "bon" / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["completions"]) == 2 for r in rows)
    assert set(json.loads((tmp_path / "bon" / "accuracy.json").read_text())) == {"majority", "pass@N"}
