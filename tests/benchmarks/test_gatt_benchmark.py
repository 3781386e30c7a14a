"""benchmarks/gatt.py: each arm's training data differ only as its description says."""

import importlib.util
import sys
from pathlib import Path

import pytest

_dir = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_dir))
_spec = importlib.util.spec_from_file_location("gatt_bench", _dir / "gatt.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def follow_by_turn(arm: str, n: int = 150) -> list[float]:
    """Fraction of the arm's naive training replies that follow the system instruction, per assistant turn."""
    task, dm = bench.arm_data(arm, seed=0, size=n, batch_size=8, turns=4)
    hits, counts = [0] * 4, [0] * 4
    for _, record in dm.task.records("sft", "train", n):
        messages = record["messages"]
        instruction = task.found(messages[0]["content"])
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        for t, reply in enumerate(replies):
            hits[t] += task.follows(instruction, reply)
            counts[t] += 1
    return [h / c for h, c in zip(hits, counts)]


def test_naive_recall_data_follow_the_instruction_at_every_turn_and_naive_data_forget():
    recall, naive = follow_by_turn("naive_recall"), follow_by_turn("naive")
    assert recall == [1.0] * 4
    assert naive[0] == 1.0 and naive[3] < 0.3  # kept at turn t with probability 0.5 ** (t - 1)


@pytest.mark.parametrize("arm", sorted(bench.ARMS))
def test_every_arm_builds_its_data(arm):
    source, train_on, recall = bench.ARMS[arm]
    task, dm = bench.arm_data(arm, seed=0, size=4, batch_size=2, turns=3)
    assert task.recall == recall and dm.train_on == train_on
    assert (type(dm.task).__name__ == "GAttData") == (source == "gatt")
