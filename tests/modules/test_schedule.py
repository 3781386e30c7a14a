"""LR schedule multipliers by hand."""

import math

import pytest

from lit_rlhf.modules.base import schedule_factor


@pytest.mark.parametrize(
    "step, schedule, expected",
    [
        (0, "cosine", 1 / 4),            # warm-up: (step + 1) / warmup
        (3, "linear", 4 / 4),
        (4, "constant", 1.0),
        (4, "linear", 1.0),              # decay starts at the end of warm-up
        (9, "linear", 0.1 + 0.9 * 0.5),  # halfway through the 10 decay steps: 1 - 5/10
        (14, "linear", 0.1),             # the end: min_ratio
        (9, "cosine", 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))),
        (99, "cosine", 0.1),             # past the end stays at min_ratio
    ],
)
def test_schedule_factor(step, schedule, expected):
    assert schedule_factor(step, total=14, warmup=4, schedule=schedule, min_ratio=0.1) == pytest.approx(expected)
