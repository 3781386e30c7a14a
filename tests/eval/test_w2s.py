"""PGR by hand."""

import math

import pytest

from lit_rlhf.eval import performance_gap_recovered


def test_pgr_is_exactly_the_formula():
    assert performance_gap_recovered(0.6, 0.7, 0.8) == (0.7 - 0.6) / (0.8 - 0.6)
    assert performance_gap_recovered(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert performance_gap_recovered(0.6, 0.6, 0.8) == 0.0
    assert performance_gap_recovered(0.6, 0.8, 0.8) == 1.0
    assert performance_gap_recovered(0.7, 0.65, 0.8) == pytest.approx(-0.5)  # worse than the supervisor
    assert math.isnan(performance_gap_recovered(0.7, 0.75, 0.7))  # no gap to recover
