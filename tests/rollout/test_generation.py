"""Batched generation: greedy determinism, EOS stopping, budgets, left padding and batch invariance."""

from __future__ import annotations

import torch

from lit_rlhf.models import ModelSpec, load_model
from lit_rlhf.rollout import SamplingConfig, generate

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}
PAD, BOS, EOS = 0, 1, 2
Z = 4 + ord("z") - ord("!")  # id of 'z' in the byte tokenizer (93)


def random_model(tok, layers=2):
    """A tiny Llama with large random weights (untied), so greedy outputs depend on the whole context."""
    torch.manual_seed(0)
    spec = ModelSpec(config={**TINY, "num_hidden_layers": layers, "initializer_range": 0.3,
                             "tie_word_embeddings": False})
    return load_model(spec, tokenizer=tok)


def scripted_model(tok, after_z: int | None = EOS):
    """A model whose next token depends only on the current token.

    The decoder layer is switched off (zero output projections), so the final hidden state is the RMS-normed
    embedding. Token 'z' embeds to e0, every other token to e1. The LM head maps e1 -> 'z' and e0 -> ``after_z``
    (EOS by default), so greedy decoding writes 'z' and then EOS. With ``after_z=None`` it writes 'z' forever.
    """
    net = load_model(ModelSpec(config={**TINY, "tie_word_embeddings": False}), tokenizer=tok)
    with torch.no_grad():
        for layer in net.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = net.model.embed_tokens.weight
        emb.zero_()
        emb[:, 1] = 1.0
        emb[Z] = 0.0
        emb[Z, 0] = 1.0 if after_z is not None else 0.0
        emb[Z, 1] = 0.0 if after_z is not None else 1.0
        head = net.lm_head.weight
        head.zero_()
        head[Z, 1] = 10.0
        if after_z is not None:
            head[after_z, 0] = 10.0
    return net


def ids(tok, text):
    return tok(text)["input_ids"]


def test_sampling_config_of():
    assert SamplingConfig.of(None) == SamplingConfig()
    assert SamplingConfig.of({"max_new_tokens": 3, "temperature": 0.7}).max_new_tokens == 3
    cfg = SamplingConfig(top_k=5)
    assert SamplingConfig.of(cfg) is cfg
    assert cfg.to_dict() == {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "top_k": 5, "stop_strings": None}


def test_scripted_model_stops_at_eos(tok):
    net = scripted_model(tok)
    texts, seqs, width = generate(net, tok, [ids(tok, "ab")], SamplingConfig(max_new_tokens=10))
    assert width == 3
    assert texts == ["z"]
    assert seqs.tolist() == [[BOS, 68, 69, Z, EOS]]  # stopped right after EOS, not at 10 new tokens


def test_scripted_batch_finished_rows_are_padded(tok):
    net = scripted_model(tok)
    texts, seqs, width = generate(net, tok, [ids(tok, "abc"), ids(tok, "z")], SamplingConfig(max_new_tokens=10))
    assert width == 4
    assert texts == ["z", ""]
    # row 1 ('z' prompt) ends at once; it is padded after its EOS while row 0 finishes
    assert seqs.tolist() == [[BOS, 68, 69, 70, Z, EOS], [PAD, PAD, BOS, Z, EOS, PAD]]


def test_respects_max_new_tokens(tok):
    net = scripted_model(tok, after_z=None)
    for n in (1, 4, 7):
        texts, seqs, width = generate(net, tok, [ids(tok, "hello"), ids(tok, "a")], SamplingConfig(max_new_tokens=n))
        assert texts == ["z" * n, "z" * n]
        assert seqs.shape == (2, width + n)
        assert width == 6


def test_stop_strings_end_and_are_cut(tok):
    net = scripted_model(tok, after_z=None)
    texts, seqs, width = generate(net, tok, [ids(tok, "a")], SamplingConfig(max_new_tokens=20, stop_strings=["zzz"]))
    assert seqs.shape[1] == width + 3  # stopped as soon as "zzz" appeared
    assert texts == [""]  # the stop string is removed


def test_greedy_is_deterministic_and_one_text_per_prompt(tok):
    net = random_model(tok)
    prompts = [ids(tok, "first prompt"), ids(tok, "2nd"), ids(tok, "and a third one")]
    cfg = SamplingConfig(max_new_tokens=6)
    a = generate(net, tok, prompts, cfg)
    b = generate(net, tok, prompts, cfg)
    assert len(a[0]) == 3 and all(isinstance(t, str) for t in a[0])
    assert a[0] == b[0]
    assert torch.equal(a[1], b[1])
    # texts are the decoded new tokens
    width = a[2]
    assert a[0] == tok.batch_decode(a[1][:, width:], skip_special_tokens=True)


def test_left_padding_and_batch_invariance(tok):
    net = random_model(tok)
    short, long_ = ids(tok, "hi"), ids(tok, "a much longer prompt here")
    cfg = SamplingConfig(max_new_tokens=10)
    _, alone, w1 = generate(net, tok, [short], cfg)
    _, both, w2 = generate(net, tok, [long_, short], cfg)
    assert w1 == len(short) and w2 == len(long_)
    # prompts are left padded with the pad id
    assert both[1, :w2].tolist() == [PAD] * (len(long_) - len(short)) + short
    assert both[0, :w2].tolist() == long_
    # same greedy completion alone and next to a longer prompt
    n = min(alone.shape[1] - w1, both.shape[1] - w2)
    assert n == 10
    assert both[1, w2:w2 + n].tolist() == alone[0, w1:w1 + n].tolist()
    # the long prompt's completion is not simply the short one's (the test would notice mixing rows up)
    assert both[0, w2:].tolist() != both[1, w2:].tolist()


def test_restores_training_mode(tok):
    net = scripted_model(tok)
    net.train()
    generate(net, tok, [ids(tok, "a")], SamplingConfig(max_new_tokens=2))
    assert net.training
    net.eval()
    generate(net, tok, [ids(tok, "a")], SamplingConfig(max_new_tokens=2))
    assert not net.training


def test_sampling_with_temperature_is_seeded(tok):
    net = random_model(tok, layers=1)
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=50)
    torch.manual_seed(123)
    a = generate(net, tok, [ids(tok, "x")] * 4, cfg)[1]
    torch.manual_seed(123)
    b = generate(net, tok, [ids(tok, "x")] * 4, cfg)[1]
    assert torch.equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 1  # four samples of the same prompt are not all equal


def test_generate_texts_batches_like_one_call(tok):
    from lit_rlhf.rollout.generation import generate_texts

    model = random_model(tok)
    prompts = [tok.encode(p) for p in ("ab", "abc", "b", "cab", "a")]
    greedy = SamplingConfig(max_new_tokens=6)
    whole = generate(model, tok, prompts, greedy)[0]
    assert generate_texts(model, tok, prompts, greedy, batch_size=2) == whole
    assert generate_texts(model, tok, [], greedy) == []
