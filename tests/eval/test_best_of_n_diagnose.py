"""The best-of-N diagnostics of benchmarks/prm_vs_orm.py, by hand."""

import importlib.util
from pathlib import Path

import pytest
import torch

from lit_rlhf.eval.best_of_n import BestOfNResult
from lit_rlhf.tasks import Arithmetic

_spec = importlib.util.spec_from_file_location("prm_vs_orm", Path(__file__).parents[2] / "benchmarks" / "prm_vs_orm.py")
prm_vs_orm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prm_vs_orm)

RIGHT = "7+5=12\n12*2=24\n24-3=21\n#### 21"
SLIP = "7+5=12\n12*2=26\n26-3=23\n#### 23"
TRAP = "7+5=12\n12*2=27\n27-3=24\n#### 24"
TRAPPED = "7*2=17\n17*3=51\n#### 51"  # the only answer on an unsolvable problem


def _result() -> BestOfNResult:
    candidates = [[RIGHT, SLIP, RIGHT, TRAP], [TRAPPED] * 4]
    return BestOfNResult(
        ["7+5*2-3=", "7*2*3="], candidates, torch.tensor([[True, False, True, False], [False] * 4]),
        [[21, 23, 21, 24], [51] * 4], {"PRM": torch.tensor([[0.5, 0.8, 0.5, 0.1], [0.3] * 4])},
    )


def test_diagnose_by_hand():
    d = prm_vs_orm.diagnose(Arithmetic(trap_rule="first_multiply"), _result(), [1, 4], trials=50, seed=0)
    full = d["by_n"]["PRM"][4]  # N = pool: the same picks every draw — the slip on problem 0, a trap on 1
    assert full["accuracy"] == 0.0 and full["pass@N"] == pytest.approx(0.5) and full["solved_if_solvable"] == 0.0
    assert (full["wrong_pick_score"], full["best_right_score"]) == (pytest.approx(0.8), pytest.approx(0.5))
    assert full["pool_count_wrong_pick"] == pytest.approx(2.5)  # 1 copy of the slip, 4 of the trap
    assert full["weighted_vote"] == pytest.approx(0.5)  # 21 gets 0.5 + 0.5 > 0.8 for 23 on problem 0
    assert full["wrong_pick_kinds"]["slip"] == pytest.approx(0.5)
    assert full["wrong_pick_kinds"]["trap"] == pytest.approx(0.5)
    assert d["distinct"][4] == {"right": pytest.approx(0.5), "wrong": pytest.approx(1.5)}  # (1 + 0) / 2, (2 + 1) / 2
    one = d["by_n"]["PRM"][1]
    assert 0.15 < one["accuracy"] < 0.35 and one["accuracy"] == pytest.approx(one["pass@N"])  # N = 1: no choice
    kinds = d["by_kind"]["PRM"]
    assert set(kinds) == {"correct", "slip *", "trap *"}
    assert kinds["slip *"] == {"share": pytest.approx(1 / 8), "mean_score": pytest.approx(0.8), "beats_right": 1.0}
    assert kinds["trap *"]["beats_right"] == 0.0  # only the solvable problem's trap counts, and it scores below
    assert kinds["trap *"]["share"] == pytest.approx(5 / 8) and kinds["correct"]["mean_score"] == pytest.approx(0.5)
    table = prm_vs_orm.diagnose_tables(prm_vs_orm.mean_over([d, d]))
    assert ("| PRM | 4 | 0.000 | 0.500 | 0.000 | 0.800 / 0.500 | 2.5 / nan | "
            "0.50 / 0.50 / 0.00 / 0.00 | 0.500 |") in table


def test_weighted_vote_ties_and_missing_answers():
    answer_ids = torch.tensor([[0, 1, 1, -1], [-1, -1, 0, 0]])
    answer_correct = torch.tensor([[True, False], [False, False]])
    scores = torch.tensor([[0.9, 0.5, 0.5, 1.0], [0.7, 0.7, 0.0, 0.0]])
    draw = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    g = torch.Generator().manual_seed(0)
    # problem 0: answer 1 sums 1.0 > 0.9 (the unanswered 1.0 does not vote); problem 1: only a wrong answer, 0 score
    assert prm_vs_orm.weighted_vote(answer_ids, answer_correct, draw, scores, g).tolist() == [False, False]
    assert prm_vs_orm.weighted_vote(answer_ids, answer_correct, draw[:, :1], scores, g).tolist() == [True, False]
    tied = [prm_vs_orm.weighted_vote(answer_ids, answer_correct, draw[:, :2], torch.full((2, 4), 0.5), g)[0].item()
            for _ in range(200)]
    assert 60 < sum(tied) < 140  # 0.5 vs 0.5: a coin flip
