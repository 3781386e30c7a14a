"""Reward sources and their weighted combination: each source against hand-computed values on tiny inputs, PRM
step rewards placed on the separator tokens, the ensemble's penalty, clear errors for bad specs."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, tiny_prm_checkpoint
from torch import nn

from lit_rlhf.models import build_byte_tokenizer
from lit_rlhf.models.checkpoint import EXPORT_SETTINGS
from lit_rlhf.modules import OutcomeRewardModel, ProcessRewardModel, RewardModel
from lit_rlhf.rollout.rewards import (
    EnsembleReward,
    ModelReward,
    OutcomeReward,
    ProcessReward,
    Rewards,
    absolute_paths,
    dense_step_rewards,
    evaluate_rewards,
    reward_source,
    score_completions,
    step_ends,
    token_index_of_char,
)
from lit_rlhf.rollout.verifiers import score_outcomes, score_steps, solution_scores
from lit_rlhf.tasks import Arithmetic

PROMPTS = ["2+3*4=", "1+1*5="]
COMPLETIONS = ["2+3=5\n5*4=20\n#### 20", "1+1=2\n#### 3"]


def count_digits(prompts, completions):
    """Digits in each completion."""
    return torch.tensor([float(sum(ch.isdigit() for ch in c)) for c in completions])


@pytest.fixture(scope="module")
def prm_ckpt(tmp_path_factory):
    return tiny_prm_checkpoint(tmp_path_factory.mktemp("prm"))


def test_gold_format_length_and_callable_sources_with_weights():
    task = Arithmetic(max_steps=2)
    rewards = Rewards([
        {"source": "gold"},
        {"source": "format", "pattern": r"#### -?[0-9]+$", "weight": 0.5},
        {"source": "length", "target": 12, "weight": 0.1},
        {"source": "callable", "function": "test_rewards.count_digits", "weight": -0.01,
         "name": "digits"},
    ])
    result = rewards.evaluate(PROMPTS, COMPLETIONS, task)
    gold = task.reward(PROMPTS, COMPLETIONS)
    assert gold.tolist() == [1.0, 0.0]  # 2+3*4 as a chain: (2+3)*4 = 20; (1+1)*5 = 10, not 3
    lengths = [len(c) for c in COMPLETIONS]  # 20, 11
    digits = [9.0, 4.0]
    assert result.components["gold"].tolist() == [1.0, 0.0]
    assert result.components["format"].tolist() == [1.0, 1.0]
    assert result.components["length"].tolist() == [-abs(n - 12) for n in lengths]
    assert result.components["digits"].tolist() == digits
    expected = [g + 0.5 * 1.0 + 0.1 * -abs(n - 12) - 0.01 * d for g, n, d in zip([1.0, 0.0], lengths, digits)]
    assert torch.allclose(result.total, torch.tensor(expected))
    assert torch.equal(result.outcome, result.total) and result.steps is None
    assert torch.allclose(score_completions(rewards, task, PROMPTS, COMPLETIONS), result.total)
    assert Rewards([{"source": "length", "unit": "words"}])(PROMPTS, ["a b  c", ""]).tolist() == [-3.0, 0.0]


def test_bad_specs_are_clear_errors():
    with pytest.raises(ValueError, match=r"rewards\[1\]: unknown source 'gld'"):
        Rewards([{"source": "gold"}, {"source": "gld"}])
    with pytest.raises(ValueError, match=r"rewards\[0\] \(source: format\): unknown field\(s\) \['patern'\]"):
        Rewards([{"source": "format", "patern": "x"}])
    with pytest.raises(ValueError, match=r"rewards\[0\] \(source: format\): weight must be a number"):
        Rewards([{"source": "format", "pattern": "x", "weight": "high"}])
    with pytest.raises(ValueError, match="'gold' needs a data module with a task"):
        Rewards([{"source": "gold"}])(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="not several"):
        reward_source(None, count_digits, [{"source": "gold"}])
    with pytest.raises(ValueError, match="rewards\\[0\\] \\(source: callable\\): .*import path"):
        Rewards([{"source": "callable", "function": "count_digits"}])


def test_reward_model_source_is_the_reward_model(tmp_path):
    rm = RewardModel(model={"name": "lit-rlhf:tiny-llama", "config": TINY})
    folder = rm.export(tmp_path / "rm")
    result = Rewards([{"source": "reward_model", "path": str(folder), "weight": 2.0}]).evaluate(PROMPTS, COMPLETIONS)
    direct = ModelReward.load(folder)(PROMPTS, COMPLETIONS)
    assert torch.allclose(result.components["reward_model"], direct)
    assert torch.allclose(result.total, 2 * direct)


class Fixed(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, prompts, completions):
        return self.values


def test_ensemble_penalises_disagreement(tmp_path):
    members = [Fixed([1.0, 2.0]), Fixed([3.0, 2.0]), Fixed([2.0, 2.0])]
    # means 2, 2; population stds sqrt(2/3), 0
    got = EnsembleReward(members, penalty=0.5).reward(PROMPTS, COMPLETIONS, None)
    assert torch.allclose(got, torch.tensor([2.0 - 0.5 * (2 / 3) ** 0.5, 2.0]))
    rm = RewardModel(model={"name": "lit-rlhf:tiny-llama", "config": TINY})
    paths = [str(rm.export(tmp_path / "a")), str(rm.export(tmp_path / "b"))]  # equal members: no penalty
    both = Rewards([{"source": "ensemble", "paths": paths, "penalty": 10.0}]).evaluate(PROMPTS, COMPLETIONS)
    assert torch.allclose(both.total, ModelReward.load(paths[0])(PROMPTS, COMPLETIONS), atol=1e-6)


def test_orm_source_reads_the_orm_on_the_task_solution_text():
    task = Arithmetic(max_steps=2)
    orm = OutcomeRewardModel(model={"name": "lit-rlhf:tiny-llama", "config": TINY})
    source = OutcomeReward(orm.model, orm.tokenizer)
    got = source.reward(PROMPTS, COMPLETIONS, task)
    expected = score_outcomes(orm, [task.solution_text(p, c) for p, c in zip(PROMPTS, COMPLETIONS)])
    assert torch.allclose(got, expected) and ((got > 0) & (got < 1)).all()
    with pytest.raises(ValueError, match="two-class sequence classifier"):
        OutcomeReward(ProcessRewardModel(model={"name": "lit-rlhf:tiny-llama", "config": TINY}).model, orm.tokenizer)


def test_step_ends_and_separator_tokens():
    completion = COMPLETIONS[0]  # "2+3=5\n5*4=20\n#### 20"
    steps = Arithmetic.split_steps(completion)
    assert steps == ["2+3=5", "5*4=20\n#### 20"]
    assert step_ends(completion, steps) == [5, 20]
    assert step_ends("a\n  b c \nd", ["a", "b c", "zz", "d"]) == [1, 7]  # 'zz' is not there: the list ends
    tok = build_byte_tokenizer()
    ids = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # one token per character
    assert token_index_of_char(tok, ids, 5) == 5  # the "\n" after step 1
    assert tok.decode(ids[5:6]) == "\n"
    assert token_index_of_char(tok, ids, 20) == 20  # the last step ends the text: the EOS token closes it


def test_prm_source_outcome_and_dense_step_rewards(prm_ckpt):
    task = Arithmetic(max_steps=2)
    source = ProcessReward(prm_ckpt, aggregate="min")
    assert source.step_separator == "\n" and source.neutral_is_correct is True  # from the checkpoint
    prm = ProcessRewardModel.load_from_checkpoint(prm_ckpt, weights_only=True)
    probs, mask = score_steps(prm, PROMPTS, [task.split_steps(c) for c in COMPLETIONS])
    assert mask.sum(-1).tolist() == [2, 1]
    assert torch.allclose(source.reward(PROMPTS, COMPLETIONS, task), solution_scores(probs, mask, "min"))
    assert source.layout.sharing  # each prompt once where it pays (tests/rollout/test_verifiers.py); off by spec:
    assert not Rewards([{"source": "prm", "path": prm_ckpt, "shared_prefix": False}]).sources[0].layout.sharing
    rewards = Rewards([{"source": "prm", "path": prm_ckpt, "aggregate": "product", "weight": 2.0},
                       {"source": "format", "pattern": "#### 20$", "weight": 0.5}])
    group = rewards.evaluate(PROMPTS, COMPLETIONS, task)  # group methods: the outcome is the aggregate
    product = solution_scores(probs, mask, "product")
    assert torch.allclose(group.total, 2 * product + 0.5 * torch.tensor([1.0, 0.0])) and group.steps is None
    dense = rewards.evaluate(PROMPTS, COMPLETIONS, task, dense=True)
    approx = [pytest.approx(2 * p) for p in (probs[0, 0].item(), probs[0, 1].item(), probs[1, 0].item())]
    assert dense.steps == [[[5.0, approx[0]], [20.0, approx[1]]], [[12.0, approx[2]]]]
    assert dense.outcome.tolist() == [0.5, 0.0]
    assert torch.allclose(dense.total, dense.outcome + 2 * (probs * mask).sum(-1))
    assert torch.allclose(dense.components["prm"], (probs * mask).sum(-1))
    tok = build_byte_tokenizer()
    responses = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in COMPLETIONS]
    width = max(len(r) for r in responses)
    rmask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in responses])
    placed = dense_step_rewards(tok, responses, dense.steps, rmask)
    expected = torch.zeros(2, width)
    expected[0, 5], expected[0, 20], expected[1, 12] = 2 * probs[0, 0], 2 * probs[0, 1], 2 * probs[1, 0]
    assert torch.allclose(placed, expected)  # on the "\n" closing step 1, and on the EOS after the answer line
    shifted = Rewards([{"source": "prm", "path": prm_ckpt, "offset": 0.5}]).evaluate(PROMPTS, COMPLETIONS, task, True)
    assert shifted.steps[0][1] == [20.0, pytest.approx(probs[0, 1].item() - 0.5)]
    assert evaluate_rewards(None, task, PROMPTS, COMPLETIONS).total.tolist() == [1.0, 0.0]


def test_prm_export_keeps_its_step_layout(tmp_path):
    """A PRM trained with another separator and 3 classes, exported: the source scores it as the module does."""
    prm = ProcessRewardModel(model={"name": "lit-rlhf:tiny-llama", "config": TINY}, num_classes=3,
                             step_separator=" ;; ", neutral_is_correct=False)
    folder = prm.export(tmp_path / "prm")
    source = ProcessReward(str(folder), aggregate="min")
    assert (source.step_separator, source.neutral_is_correct) == (" ;; ", False)
    steps = [Arithmetic.split_steps(c) for c in COMPLETIONS]
    expected = solution_scores(*score_steps(prm, PROMPTS, steps), "min")
    assert torch.allclose(source.reward(PROMPTS, COMPLETIONS, Arithmetic(max_steps=2)), expected, atol=1e-5)
    (folder / EXPORT_SETTINGS).unlink()  # a token classifier from elsewhere: the defaults
    assert ProcessReward(str(folder)).step_separator == "\n"


def test_checkpoints_record_absolute_model_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    specs = [{"source": "prm", "path": "runs/prm"}, {"source": "ensemble", "paths": ["a", "/b"]}, {"source": "gold"}]
    assert absolute_paths(specs) == [{"source": "prm", "path": str(tmp_path / "runs/prm")},
                                     {"source": "ensemble", "paths": [str(tmp_path / "a"), "/b"]}, {"source": "gold"}]
    assert specs[0]["path"] == "runs/prm"  # the module's own hyperparameters are left as given
