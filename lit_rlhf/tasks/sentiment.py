"""Sentiment: continue movie-review prefixes; gold reward = VADER compound score.

Two optional assets (``pip install 'lit-rlhf[assets]'``):

* the ``vaderSentiment`` package — the gold reward, ``SentimentIntensityAnalyzer().polarity_scores(t)
  ["compound"]`` ∈ [−1, 1];
* the human-rated snippets of Hutto & Gilbert (ICWSM 2014), shipped only in the vaderSentiment 3.3.2
  *source archive*, inside ``additional_resources/hutto_ICWSM_2014.tar.gz``::

      hutto_ICWSM_2014/<stem>_GroundTruth.txt      id <TAB> mean rating <TAB> text
      hutto_ICWSM_2014/<stem>_anonDataRatings.txt  id <TAB> mean <TAB> std <TAB> [raw ratings, -4..4]

  with ``<stem>`` ∈ movieReviewSnippets (10,605 rows), tweets (4,200), amazonReviewSnippets (3,708),
  nytEditorialSnippets (5,190). Fetch the archive once with :data:`FETCH_COMMAND`.

The human ratings give real preference pairs with a graded strength and gold labels for weak-to-strong
learning, where the VADER lexicon plays the weak supervisor.
"""

from __future__ import annotations

import bisect
import functools
import io
import json
import math
import os
import random
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lit_rlhf.models.assets import cache_dir
from lit_rlhf.tasks.base import Kind, Split, Task, seeded_rng, split_of

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
DEFAULT_CACHE = "~/.cache/lit_rlhf"
FETCH_COMMAND = (
    "lit-rlhf assets --data-only   "
    f"(or: pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d {DEFAULT_CACHE})"
)
INSTALL_HINT = "pip install 'lit-rlhf[assets]'"
_INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"

#: corpus name -> file stem inside ``hutto_ICWSM_2014.tar.gz``
CORPORA = {
    "movie_reviews": "movieReviewSnippets",
    "tweets": "tweets",
    "product_reviews": "amazonReviewSnippets",
    "editorials": "nytEditorialSnippets",
}
#: shared prompt of preference pairs, per corpus
INSTRUCTIONS = {
    "movie_reviews": "Write a movie review:\n",
    "tweets": "Write a tweet:\n",
    "product_reviews": "Write a product review:\n",
    "editorials": "Write a sentence of a newspaper editorial:\n",
}


resolve_cache_dir = cache_dir


def find_vader_sdist(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``vaderSentiment-3.3.2.tar.gz``: ``$LIT_RLHF_VADER_SDIST``, else the cache dir.

    Raises:
        FileNotFoundError: with the command that fetches the archive.
    """
    env = os.environ.get("LIT_RLHF_VADER_SDIST")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"LIT_RLHF_VADER_SDIST={env} is not a file")
        return path
    path = resolve_cache_dir(cache_dir) / VADER_SDIST
    if path.is_file():
        return path
    command = FETCH_COMMAND if path.parent == resolve_cache_dir(DEFAULT_CACHE) else FETCH_COMMAND.replace(
        DEFAULT_CACHE, str(path.parent)
    )
    raise FileNotFoundError(
        f"the human-rated VADER snippets need the vaderSentiment 3.3.2 source archive, not found at {path}; "
        f"fetch it with:\n  {command}\n(or set LIT_RLHF_VADER_SDIST to the file)"
    )


def load_rated_snippets(
    corpus: str = "movie_reviews", cache_dir: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """The human-rated snippets of one corpus, in file order.

    Each row is ``{"id", "text", "rating", "ratings"}``: ``rating`` is the mean human rating in
    [−4, 4] from the ``GroundTruth`` file and ``ratings`` the raw ratings from ``anonDataRatings``. (For
    199 tweets the ``anonDataRatings`` file states a different mean over ~95 raters; ``rating`` keeps the
    ``GroundTruth`` value.) Parsed rows are cached as ``vader_<corpus>.jsonl`` in the cache dir.

    Args:
        corpus: one of :data:`CORPORA`.
        cache_dir: cache folder (default ``$LIT_RLHF_CACHE`` or ``~/.cache/lit_rlhf``).
    """
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {list(CORPORA)}")
    cached = resolve_cache_dir(cache_dir) / f"vader_{corpus}.jsonl"
    if cached.is_file():
        with cached.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    rows = _parse_corpus(find_vader_sdist(cache_dir), CORPORA[corpus])
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        tmp.replace(cached)
    except OSError as err:
        warnings.warn(f"could not cache the parsed snippets at {cached}: {err}", stacklevel=2)
    return rows


@functools.lru_cache(maxsize=1)
def _inner_archive(sdist: Path) -> bytes:
    """The bytes of ``hutto_ICWSM_2014.tar.gz`` inside the sdist (kept for the next corpus)."""
    with tarfile.open(sdist) as outer:
        member = next((m for m in outer.getmembers() if m.name.endswith(_INNER_ARCHIVE)), None)
        if member is None:
            raise FileNotFoundError(f"{sdist} has no {_INNER_ARCHIVE}; is it the vaderSentiment 3.3.2 sdist?")
        return outer.extractfile(member).read()  # type: ignore[union-attr]


def _parse_corpus(sdist: Path, stem: str) -> list[dict[str, Any]]:
    with tarfile.open(fileobj=io.BytesIO(_inner_archive(sdist))) as inner:
        truth = _read_table(inner, f"{stem}_GroundTruth.txt", columns=3)
        raw = {cols[0]: cols for cols in _read_table(inner, f"{stem}_anonDataRatings.txt", columns=4)}
    rows = []
    for ident, mean, text in truth:
        if ident not in raw:
            raise ValueError(f"{stem}_anonDataRatings.txt has no ratings for id {ident!r}")
        rows.append({"id": ident, "text": text.strip(), "rating": float(mean), "ratings": json.loads(raw[ident][3])})
    return rows


def _read_table(archive: tarfile.TarFile, name: str, columns: int) -> list[list[str]]:
    """Tab-separated rows of ``name`` (UTF-8 with optional BOM, CRLF line ends)."""
    member = next((m for m in archive.getmembers() if m.name.endswith("/" + name)), None)
    if member is None:
        raise FileNotFoundError(f"hutto_ICWSM_2014.tar.gz has no {name}")
    text = archive.extractfile(member).read().decode("utf-8-sig")  # type: ignore[union-attr]
    rows = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != columns:
            raise ValueError(f"{name}:{line_no}: expected {columns} tab-separated columns, got {len(cols)}")
        rows.append(cols)
    return rows


@functools.lru_cache(maxsize=1)
def _analyzer() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:
        raise ImportError(f"the sentiment gold reward needs vaderSentiment: {INSTALL_HINT}") from err
    return SentimentIntensityAnalyzer()


def vader_compound(texts: list[str]) -> list[float]:
    """VADER compound score of each text, in [−1, 1]."""
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]


def vader_scores(texts: list[str]) -> list[list[float]]:
    """VADER ``[neg, neu, pos, compound]`` of each text (features of a lexicon weak supervisor)."""
    analyzer = _analyzer()
    return [[float(s[k]) for k in ("neg", "neu", "pos", "compound")] for s in map(analyzer.polarity_scores, texts)]


class Sentiment(Task):
    """Sentiment continuation with a VADER gold reward and human-rated snippets as data.

    Kinds (each snippet belongs to one split by :func:`split_of` of its text; a short prefix shared by
    snippets of different splits can therefore appear as a prompt in more than one split):

    * ``sft``: ``{"prompt": first prefix_words words, "completion": " " + the rest}``; snippets of at most
      ``prefix_words`` words are left out (357 of the 10,605 movie snippets at 4 words).
    * ``prompt``: ``{"prompt": prefix}`` of the same snippets.
    * ``preference``: two snippets of the split whose mean human ratings differ by at least
      ``min_rating_gap``, under the shared instruction prompt; chosen = higher rated,
      ``strength`` = rating gap, ``soft_label`` = σ(gap / soft_label_temperature) (a Bradley–Terry reading
      of the gap), meta ``gold_rating_chosen`` / ``gold_rating_rejected``.
    * ``weak``: ``{"text", "label": 1 if the mean human rating > 0 else 0, "vader": compound,
      "soft_label": [1 − p, p]}`` with p = (compound + 1) / 2, the lexicon as weak supervisor. Snippets
      rated exactly 0 have no label and are dropped (37 movie snippets, 4 tweets, 98 product, 244
      editorial).

    Every record carries meta ``rating`` (or the two gold ratings) and ``snippet_id``.

    Args:
        source: corpus of snippets, one of :data:`CORPORA`.
        prefix_words: words of a snippet that form the prompt.
        min_rating_gap: smallest rating gap of a preference pair.
        soft_label_temperature: temperature of the gap → P(chosen preferred) sigmoid.
        instruction: prompt of preference pairs (default per corpus, see :data:`INSTRUCTIONS`).
        cache_dir: where the source archive and parsed snippets live (see :func:`resolve_cache_dir`).
    """

    name = "sentiment"
    kinds: tuple[Kind, ...] = ("sft", "prompt", "preference", "weak")

    def __init__(
        self,
        source: str = "movie_reviews",
        prefix_words: int = 4,
        min_rating_gap: float = 1.0,
        soft_label_temperature: float = 1.0,
        instruction: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if source not in CORPORA:
            raise ValueError(f"unknown source {source!r}; expected one of {list(CORPORA)}")
        if prefix_words < 1 or min_rating_gap < 0 or soft_label_temperature <= 0:
            raise ValueError("need prefix_words >= 1, min_rating_gap >= 0 and soft_label_temperature > 0")
        self.source, self.prefix_words, self.min_rating_gap = source, prefix_words, min_rating_gap
        self.soft_label_temperature = soft_label_temperature
        self.instruction = instruction or INSTRUCTIONS[source]
        self.cache_dir = cache_dir
        self._snippets: list[dict[str, Any]] | None = None

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """VADER compound score of each completion (the prompt is ignored), shape ``(B,)`` in [−1, 1]."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return torch.tensor(vader_compound(list(completions)), dtype=torch.float32)

    def snippets(self, split: Split) -> list[dict[str, Any]]:
        """The rated snippets of ``split`` (raises ``FileNotFoundError`` if the source archive is missing)."""
        if self._snippets is None:
            self._snippets = load_rated_snippets(self.source, self.cache_dir)
        return [s for s in self._snippets if split_of(s["text"]) == split]

    def records(self, kind: Kind, split: Split, n: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``n`` records of ``kind`` from ``split``, drawn without replacement; deterministic in ``seed``.

        ``sft`` and ``prompt`` records of the same ``(split, seed)`` come from the same snippets.

        Raises:
            ValueError: if the split holds fewer than ``n`` snippets (or pairs) of that kind.
        """
        self.check_kind(kind)
        rng = seeded_rng(self.name, self.source, split, seed)  # sft and prompt share snippets
        pool = self.snippets(split)
        if kind == "preference":
            rows: Iterator[dict[str, Any]] = self._pairs(pool, n, rng)
        else:
            if kind == "weak":
                pool = [s for s in pool if s["rating"] != 0]
            else:
                pool = [s for s in pool if len(s["text"].split()) > self.prefix_words]
            if n > len(pool):
                raise ValueError(f"{self.source}/{split} has {len(pool)} snippets usable for '{kind}', asked for {n}")
            rows = (self._record(kind, s) for s in rng.sample(pool, n))
        for i, row in enumerate(rows):
            yield f"task:{self.name}/{split}#{i}", row

    def _record(self, kind: Kind, snippet: dict[str, Any]) -> dict[str, Any]:
        meta = {"rating": snippet["rating"], "snippet_id": snippet["id"]}
        if kind == "weak":
            compound = vader_compound([snippet["text"]])[0]
            p = (compound + 1.0) / 2.0
            label = int(snippet["rating"] > 0)
            return {"text": snippet["text"], "label": label, "soft_label": [1.0 - p, p], "vader": compound, **meta}
        words = snippet["text"].split()
        prefix = " ".join(words[: self.prefix_words])
        if kind == "prompt":
            return {"prompt": prefix, **meta}
        return {"prompt": prefix, "completion": " " + " ".join(words[self.prefix_words :]), **meta}

    def _pairs(self, pool: list[dict[str, Any]], n: int, rng: random.Random) -> Iterator[dict[str, Any]]:
        available = _count_pairs(sorted(s["rating"] for s in pool), self.min_rating_gap)
        if n > available:
            raise ValueError(
                f"{self.source} has {available} pairs with rating gap >= {self.min_rating_gap}, asked for {n}"
            )
        seen: set[tuple[int, int]] = set()
        while len(seen) < n:
            i, j = rng.sample(range(len(pool)), 2)
            a, b = pool[i], pool[j]
            gap = abs(a["rating"] - b["rating"])
            if gap < self.min_rating_gap or gap == 0 or a["text"] == b["text"] or (min(i, j), max(i, j)) in seen:
                continue
            seen.add((min(i, j), max(i, j)))
            chosen, rejected = (a, b) if a["rating"] > b["rating"] else (b, a)
            yield {
                "prompt": self.instruction, "chosen": chosen["text"], "rejected": rejected["text"],
                "strength": gap, "soft_label": 1.0 / (1.0 + math.exp(-gap / self.soft_label_temperature)),
                "rating": rating_level(gap),
                "gold_rating_chosen": chosen["rating"], "gold_rating_rejected": rejected["rating"],
                "snippet_id_chosen": chosen["id"], "snippet_id_rejected": rejected["id"],
            }


# Human-rating gap (on the -4..+4 scale) -> Llama 2 rating level, for per-level accuracy and margins.
RATING_LEVELS = ((3.0, "significantly better"), (2.0, "better"), (1.5, "slightly better"),
                 (0.0, "negligibly better / unsure"))


def rating_level(gap: float) -> str:
    """The Llama 2 rating level of a pair whose human ratings differ by ``gap``."""
    return next(level for edge, level in RATING_LEVELS if gap >= edge)


def _count_pairs(sorted_ratings: list[float], min_gap: float) -> int:
    """Number of unordered pairs whose ratings differ by at least ``min_gap`` (and by more than 0)."""
    gap = max(min_gap, 0.0)
    total = 0
    for i, r in enumerate(sorted_ratings):
        lo = bisect.bisect_left(sorted_ratings, r + gap) if gap > 0 else bisect.bisect_right(sorted_ratings, r)
        total += len(sorted_ratings) - max(lo, i + 1)
    return total
