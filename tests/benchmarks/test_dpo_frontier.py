"""The frontier envelope of benchmarks/dpo_frontier.py, against hand-computed values."""

import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[2] / "benchmarks" / "dpo_frontier.py"
_spec = importlib.util.spec_from_file_location("dpo_frontier", _path)
frontier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frontier)


def _curve(*points):
    return [{"gold/kl": k, "gold/reward": r} for k, r in points]


CURVES = {
    "DPO β=0.1 lr=0.001": _curve((0.0, 0.0), (1.0, 0.2), (3.0, 0.6)),
    "DPO β=1 lr=0.001": _curve((0.0, 0.0), (2.0, 0.1)),  # below the chord (1, 0.2)–(3, 0.6): never the envelope
    "Preferred-FT lr=0.001": _curve((0.0, 0.0), (0.5, 0.3), (0.4, 0.1)),
}


@pytest.mark.parametrize(("method", "kl", "expected"), [
    ("DPO", 0.0, 0.0),
    ("DPO", 0.5, 0.1),  # chord (0, 0)–(1, 0.2)
    ("DPO", 2.0, 0.4),  # chord (1, 0.2)–(3, 0.6), above the point (2, 0.1)
    ("DPO", 5.0, 0.6),  # beyond the last point: the best reached
    ("Preferred-FT", 0.25, 0.15),  # chord (0, 0)–(0.5, 0.3) beats (0, 0)–(0.4, 0.1)
    ("Preferred-FT", 0.45, 0.27),
    ("Preferred-FT", 1.0, 0.3),
])
def test_envelope_is_the_non_decreasing_upper_concave_hull(method, kl, expected):
    assert frontier.envelope(CURVES, method, kl) == pytest.approx(expected)


def test_envelope_keeps_methods_apart_and_max_kl():
    assert frontier.max_kl(CURVES, "DPO") == 3.0
    assert frontier.max_kl(CURVES, "Preferred-FT") == 0.5
    assert frontier.family("Preferred-FT lr=0.001") == "Preferred-FT"
