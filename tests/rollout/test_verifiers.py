"""Verifier scoring with each prompt encoded once (best-of-N, the ``prm``/``orm`` reward sources): PRM step
probabilities and ORM outcome probabilities equal the padded forward's (fp32) for Llama, Qwen2 and GPT-2, with groups of
several candidates per prompt mixed with single-candidate prompts, groups split across batches, both prompt-once layouts
(4-D mask and key/value cache); the layout chosen is a shared one where sharing pays, and its check runs once per
scorer."""

from __future__ import annotations

import warnings

import pytest
import torch

from lit_rlhf.models import ForwardLayout, HeadModel, shared_prefix_plan
from lit_rlhf.models.logprobs import SHARED_LAYOUTS
from lit_rlhf.rollout.rewards import OutcomeReward, ProcessReward
from lit_rlhf.rollout.verifiers import group_ids, score_outcomes, score_steps

transformers = pytest.importorskip("transformers")

FAMILIES = ("llama", "qwen2", "gpt2")
SYSTEM = "You are a careful calculator. Work one operation per line, then give the answer after ####. "
# three problems with 4, 1 and 3 candidates, and a candidate that repeats another's first steps
PROMPTS = [SYSTEM + "2+3*4-1 ="] * 4 + [SYSTEM + "9-4 ="] + [SYSTEM + "7*2+5 ="] * 3
STEPS = [["2+3=5", "5*4=20", "20-1=19", "#### 19"], ["2+3=5", "5*4=21"], ["2+3=6", "6*4=24", "24-1=23"], ["so"],
         ["9-4=5", "#### 5"], ["7*2=14", "14+5=19"], ["7*2=15"], ["7*2=14", "14+5=20", "#### 20"]]


def backbone(family: str, vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, vocab_size=vocab)
    else:
        config = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[family](
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=256, vocab_size=vocab)
    model = transformers.AutoModel.from_config(config)
    with torch.no_grad():  # a sharper random model, whose outputs depend on the context
        for p in model.parameters():
            p.mul_(3.0)
    return model


def layout_of(kind: str) -> ForwardLayout:
    """A layout chooser that may pick only the prompt-once layout ``kind``."""
    layout = ForwardLayout(padding_free=False)
    layout.enabled.update({k: k == kind for k in SHARED_LAYOUTS})
    return layout


@pytest.mark.parametrize("kind", sorted(SHARED_LAYOUTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_prm_step_probs_equal_the_padded_forward(tok, family, kind):
    prm = ProcessReward(HeadModel(backbone(family, len(tok)), 2, pooling="none"), tok)
    expected, expected_mask = score_steps(prm, PROMPTS, STEPS, shared_prefix=False)
    for batch_size in (64, 5):  # one batch; groups split across batches (the last batch: one group of 3)
        layout = layout_of(kind)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a failed check would switch the layout off with a warning
            probs, mask = score_steps(prm, PROMPTS, STEPS, batch_size=batch_size, layout=layout)
        # the cache layout pads every row's own tokens to the longest: a lone candidate in the batch costs it its gain
        assert layout.last == (kind if kind == "shared" or batch_size == 5 else "padded")
        assert torch.equal(mask, expected_mask) and mask.sum(-1).tolist() == [len(s) for s in STEPS]
        assert torch.allclose(probs, expected, rtol=0, atol=1e-5), (probs - expected).abs().max()
    # a step's probability depends on its prompt and the steps up to it only: equal there, equal scores
    prefixes = [(p, tuple(s[:i + 1])) for p, s in zip(PROMPTS, STEPS) for i in range(len(s))]
    assert len({round(x, 5) for x in expected[mask].tolist()}) == len(set(prefixes)) < len(prefixes)


@pytest.mark.parametrize("kind", sorted(SHARED_LAYOUTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_orm_outcome_probs_equal_the_padded_forward(tok, family, kind):
    orm = OutcomeReward(HeadModel(backbone(family, len(tok)), 2, pad_token_id=tok.pad_token_id), tok)
    texts = [p + " | " + "\n".join(s) for p, s in zip(PROMPTS, STEPS)]
    expected = score_outcomes(orm, texts, groups=PROMPTS, shared_prefix=False)
    for batch_size in (64, 5):
        layout = layout_of(kind)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = score_outcomes(orm, texts, batch_size=batch_size, groups=PROMPTS, layout=layout)
        assert layout.last == (kind if kind == "shared" or batch_size == 5 else "padded")
        assert torch.allclose(got, expected, rtol=0, atol=1e-5), (got - expected).abs().max()
    assert len(set(expected.tolist())) == len(texts)
    assert torch.equal(score_outcomes(orm, texts, layout=layout_of(kind)), expected)  # no groups: the padded forward


def test_per_token_head_reads_the_same_positions_under_a_plan(tok):
    model = HeadModel(backbone("llama", len(tok)), 3, pooling="none").eval()
    rows = [tok(p + "\n" + "\n".join(s) + "\n")["input_ids"] for p, s in zip(PROMPTS, STEPS)]
    T = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    with torch.no_grad():
        plain, shared = model(ids, mask), model(ids, mask, shared_prefix_plan(ids, mask, group_ids(PROMPTS)))
    assert shared.shape == plain.shape == (len(rows), T, 3)
    attended = mask.bool()
    assert torch.allclose(shared[attended], plain[attended], rtol=0, atol=1e-5)


def test_reward_sources_share_the_prompt_and_check_once(tok):
    """The ``prm``/``orm`` sources keep one layout: sharing is chosen on a best-of-N-like batch, and the check against
    the padded forward (one extra backbone forward) runs on the first call only."""
    prm = ProcessReward(HeadModel(backbone("llama", len(tok)), 2, pooling="none"), tok, aggregate="product")
    orm = OutcomeReward(HeadModel(backbone("llama", len(tok)), 2, pad_token_id=tok.pad_token_id), tok)
    plain_prm = ProcessReward(prm.model, tok, aggregate="product", shared_prefix=False)
    plain_orm = OutcomeReward(orm.model, tok, shared_prefix=False)
    completions = ["\n".join(s) for s in STEPS]
    for shared, plain in ((prm, plain_prm), (orm, plain_orm)):
        calls = []
        handle = shared.model.backbone.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        first = shared.reward(PROMPTS, completions, None)
        after_first = len(calls)
        second = shared.reward(PROMPTS, completions, None)
        handle.remove()
        expected = plain.reward(PROMPTS, completions, None)
        assert shared.layout.last in SHARED_LAYOUTS and plain.layout.last == "padded"
        # first call: the check (a padded and a prompt-once forward), then the prompt-once forward; then the latter only
        assert after_first == 2 * (len(calls) - after_first) + 1
        assert torch.equal(first, second) and torch.allclose(first, expected, rtol=0, atol=1e-5)


def test_group_ids_number_equal_keys_alike_chat_prompts_included():
    chat = [{"role": "user", "content": "2+2="}]
    assert group_ids(["a", "b", "a", chat, list(chat), "b"]) == [0, 1, 0, 2, 2, 1]
