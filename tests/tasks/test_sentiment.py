"""Sentiment task: VADER gold reward and the human-rated snippets of the vaderSentiment source archive."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from lit_rlhf.tasks import Sentiment, get_task, split_of
from lit_rlhf.tasks import sentiment as sentiment_mod
from lit_rlhf.tasks.sentiment import FETCH_COMMAND, _count_pairs, find_vader_sdist, load_rated_snippets

HAS_VADER = importlib.util.find_spec("vaderSentiment") is not None
needs_vader = pytest.mark.skipif(not HAS_VADER, reason="vaderSentiment not installed: pip install 'lit-rlhf[assets]'")

EXPECTED_COUNTS = {"movie_reviews": 10605, "tweets": 4200, "product_reviews": 3708, "editorials": 5190}
EXPECTED_ZERO_RATED = {"movie_reviews": 37, "tweets": 4, "product_reviews": 98, "editorials": 244}


@pytest.fixture(scope="module")
def sdist() -> Path:
    try:
        return find_vader_sdist()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def cache(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache dir holding all four corpora, parsed from the source archive."""
    path = tmp_path_factory.mktemp("lit_rlhf_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIT_RLHF_VADER_SDIST", str(sdist))
        for corpus in EXPECTED_COUNTS:
            load_rated_snippets(corpus, cache_dir=path)
    return path


@pytest.fixture(scope="module")
def task(cache: Path) -> Sentiment:
    return Sentiment(cache_dir=str(cache))


@needs_vader
def test_vader_reward_sign() -> None:
    rewards = get_task("sentiment").reward(
        ["", "", ""],
        ["This movie is wonderful, I love it!", "This movie is terrible and boring.", "It is two hours long."],
    )
    assert rewards.shape == (3,) and rewards.dtype == torch.float32
    assert rewards[0] > 0.5 and rewards[1] < -0.5 and rewards[2] == 0.0


def test_missing_vader_names_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    sentiment_mod._analyzer.cache_clear()
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'lit-rlhf\[assets\]'"):
            Sentiment().reward(["a"], ["good"])
    finally:
        sentiment_mod._analyzer.cache_clear()


def test_missing_sdist_gives_the_fetch_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIT_RLHF_VADER_SDIST", raising=False)
    monkeypatch.delenv("LIT_RLHF_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_rated_snippets("movie_reviews")
    assert FETCH_COMMAND in str(err.value)
    assert "pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d ~/.cache/lit_rlhf" in FETCH_COMMAND
    with pytest.raises(FileNotFoundError, match="vaderSentiment==3.3.2"):
        next(Sentiment(cache_dir=str(tmp_path / "elsewhere")).records("sft", "train", 1))


def test_loader_parses_every_corpus(cache: Path) -> None:
    for corpus, count in EXPECTED_COUNTS.items():
        rows = load_rated_snippets(corpus, cache_dir=cache)  # from the jsonl cache
        assert (cache / f"vader_{corpus}.jsonl").is_file()
        assert len(rows) == count
        assert sum(r["rating"] == 0 for r in rows) == EXPECTED_ZERO_RATED[corpus]
        assert all(-4 <= r["rating"] <= 4 and r["text"] and set(r["ratings"]) <= set(range(-4, 5)) for r in rows)
    first = load_rated_snippets("movie_reviews", cache_dir=cache)[0]
    assert first["id"] == "1" and first["rating"] == pytest.approx(2.26666666667)
    assert first["text"].startswith("The Rock is destined to be the 21st Century's new ''Conan''")
    assert first["ratings"] == [3, 2, 2, 2, 0, 4, 3, 1, 2, 2, 4, 3, 3, 1, 2]
    assert sum(first["ratings"]) / len(first["ratings"]) == pytest.approx(first["rating"])
    with pytest.raises(ValueError, match="unknown corpus"):
        load_rated_snippets("poems", cache_dir=cache)


def test_sft_and_prompt_records(task: Sentiment) -> None:
    texts = {s["text"] for s in task.snippets("val")}
    sft = list(task.records("sft", "val", 50, seed=1))
    assert sft == list(task.records("sft", "val", 50, seed=1))
    assert sft != list(task.records("sft", "val", 50, seed=2))
    assert sft[3][0] == "task:sentiment/val#3"
    for _, r in sft:
        assert len(r["prompt"].split()) == 4 and r["completion"].startswith(" ") and r["completion"].strip()
        assert r["prompt"] + r["completion"] in {" ".join(t.split()) for t in texts}
    prompts = [r["prompt"] for _, r in task.records("prompt", "val", 50, seed=1)]
    assert prompts == [r["prompt"] for _, r in sft]


@needs_vader
def test_weak_records_and_no_split_leakage(task: Sentiment) -> None:
    train = [r for _, r in task.records("weak", "train", 300)]
    test = [r for _, r in task.records("weak", "test", 300)]
    assert not {r["text"] for r in train} & {r["text"] for r in test}
    assert all(split_of(r["text"]) == "test" for r in test)
    for r in train:
        assert r["rating"] != 0 and r["label"] == int(r["rating"] > 0)
        assert r["soft_label"][1] == pytest.approx((r["vader"] + 1) / 2) and sum(r["soft_label"]) == pytest.approx(1)
    agreement = sum((r["vader"] > 0) == r["label"] for r in train) / len(train)
    assert 0.55 < agreement < 0.85  # the lexicon is a weak supervisor (paper: 65–67% sign agreement)


def test_preference_records(task: Sentiment) -> None:
    pairs = [r for _, r in Sentiment(cache_dir=task.cache_dir, min_rating_gap=2.0).records("preference", "train", 100)]
    assert len({(r["chosen"], r["rejected"]) for r in pairs}) == 100
    for r in pairs:
        assert r["prompt"] == "Write a movie review:\n" and r["chosen"] != r["rejected"]
        assert r["strength"] >= 2.0
        assert r["strength"] == pytest.approx(r["gold_rating_chosen"] - r["gold_rating_rejected"])
        assert r["soft_label"] == pytest.approx(1 / (1 + math.exp(-r["strength"])))
        assert split_of(r["chosen"]) == split_of(r["rejected"]) == "train"


def test_too_many_records_is_an_error(task: Sentiment) -> None:
    usable = sum(len(s["text"].split()) > 4 for s in task.snippets("test"))
    with pytest.raises(ValueError, match=f"has {usable} snippets usable for 'sft'"):
        next(task.records("sft", "test", usable + 1))


def test_count_pairs() -> None:
    assert _count_pairs([0.0, 0.5, 1.0, 2.0], 1.0) == 4  # (0,1) (0,2) (0.5,2) (1,2)
    assert _count_pairs([1.0, 1.0, 2.0], 0.0) == 2  # equal ratings never form a pair


def test_rating_level_buckets_the_human_rating_gap():
    from lit_rlhf.tasks.sentiment import rating_level

    assert [rating_level(g) for g in (1.0, 1.49, 1.5, 2.0, 2.99, 3.0, 7.5)] == [
        "negligibly better / unsure", "negligibly better / unsure", "slightly better", "better", "better",
        "significantly better", "significantly better",
    ]
