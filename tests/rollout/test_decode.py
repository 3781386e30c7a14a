"""The decode loop (``generate``'s default): ``model.generate``'s greedy tokens, the same sampling distribution,
one prefill per run of identical prompts, finished rows out of the batch, and the fallback to ``model.generate``."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lit_rlhf.models import ModelSpec, load_model
from lit_rlhf.models.kv_cache import new_cache, repeat_rows, select_rows
from lit_rlhf.rollout.generation import SamplingConfig, _sample_next, generate, loop_refusal

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "initializer_range": 0.3, "tie_word_embeddings": False}
EOS = 2


def eos_prone_model(tok, eos_logit: float = 4.0):
    """A random tiny Llama whose EOS logit is raised, so that some greedy completions end early and others not."""
    torch.manual_seed(0)
    net = load_model(ModelSpec(config=TINY), tokenizer=tok).eval()
    with torch.no_grad():
        net.lm_head.weight[EOS] = 0.0
        net.lm_head.weight[EOS, :] += eos_logit / net.config.hidden_size ** 0.5
    return net


def prompts(tok, texts, repeats=1):
    return [tok(t)["input_ids"] for t in texts for _ in range(repeats)]


TEXTS = ["a", "hello there", "1+2=", "zz", "the longest prompt of them all", "q"]


def test_greedy_tokens_equal_generate_with_left_padding_eos_and_groups(tok):
    net = eos_prone_model(tok)
    ids = prompts(tok, TEXTS, repeats=3)  # varied lengths (left padding), groups of 3 identical prompts
    cfg = SamplingConfig(max_new_tokens=24)
    assert loop_refusal(net, tok, cfg) is None
    hf = generate(net, tok, ids, cfg, decoder="hf")
    ours = generate(net, tok, ids, cfg, decoder="loop")
    assert torch.equal(ours[1], hf[1]) and ours[0] == hf[0] and ours[2] == hf[2]
    responses = hf[1][:, hf[2]:]
    ended = (responses == EOS).any(-1)
    assert ended.any() and not ended.all()  # some rows end early (then pad), others run to the budget
    first = (responses == EOS).long().argmax(-1)
    assert all((responses[i, first[i] + 1:] == tok.pad_token_id).all() for i in ended.nonzero().squeeze(-1).tolist())
    assert generate(net, tok, ids, cfg)[1].equal(hf[1])  # "auto" takes the loop here


def test_all_rows_ending_stops_early_like_generate(tok):
    net = eos_prone_model(tok, eos_logit=40.0)  # EOS wins at once almost everywhere
    ids = prompts(tok, TEXTS)
    cfg = SamplingConfig(max_new_tokens=16)
    _, hf, width = generate(net, tok, ids, cfg, decoder="hf")
    ours = generate(net, tok, ids, cfg, decoder="loop")[1]
    assert torch.equal(ours, hf)
    assert hf.shape[1] < width + 16  # every row ended before the budget


def test_min_new_tokens_of_the_generation_config_holds_eos_back(tok):
    net = eos_prone_model(tok, eos_logit=40.0)
    net.generation_config.min_new_tokens = 5
    ids = prompts(tok, TEXTS[:3], repeats=2)
    cfg = SamplingConfig(max_new_tokens=8)
    hf, ours = generate(net, tok, ids, cfg, decoder="hf"), generate(net, tok, ids, cfg, decoder="loop")
    assert torch.equal(ours[1], hf[1])
    assert not (hf[1][:, hf[2]:hf[2] + 5] == EOS).any() and (hf[1][:, hf[2] + 5:] == EOS).any()


def test_one_prefill_per_run_of_identical_prompts_and_finished_rows_leave_the_batch(tok):
    net = eos_prone_model(tok)
    seen: list[tuple[int, int]] = []  # (rows, positions) of each forward
    hook = net.model.register_forward_hook(lambda m, args, kwargs, out: seen.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    ids = prompts(tok, TEXTS, repeats=4)
    try:
        _, seqs, width = generate(net, tok, ids, SamplingConfig(max_new_tokens=24), decoder="loop")
    finally:
        hook.remove()
    assert seen[0] == (len(TEXTS), width)  # the prefill: each distinct prompt once
    responses = seqs[:, width:]
    live = [(responses[:, :t] != EOS).all(-1).sum().item() for t in range(1, len(seen))]
    assert [rows for rows, _ in seen[1:]] == live  # step t decodes only the rows without an EOS yet
    assert live[-1] < len(ids)


def test_sampling_draws_from_the_warped_softmax():
    """Frequencies of 40 000 draws match softmax(top-p(top-k(logits / T))) (chi-square), never a removed token."""
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]])
    for warpers in ([], [TemperatureLogitsWarper(0.7)], [TopKLogitsWarper(4)], [TopPLogitsWarper(0.8)],
                    [TemperatureLogitsWarper(1.3), TopKLogitsWarper(5), TopPLogitsWarper(0.9)]):
        expected = logits.clone()
        for w in warpers:
            expected = w(None, expected)
        p = expected.softmax(-1)[0]
        n = 40_000
        counts = torch.bincount(_sample_next(logits.expand(n, -1).clone(), warpers), minlength=len(p)).double()
        assert counts[p == 0].sum() == 0
        support = p > 0
        chi2 = (((counts - n * p) ** 2) / (n * p))[support].sum().item()
        df = int(support.sum()) - 1
        assert chi2 < df + 5 * math.sqrt(2 * max(df, 1)), (warpers, chi2, df)
    top = TopKLogitsWarper(2)(None, logits.clone())
    assert torch.isinf(top).sum() == 6  # the test's warpers do remove tokens


def test_sampled_first_tokens_follow_the_models_distribution(tok):
    """All samples of one prompt share one prefill: their first tokens are draws from the model's next-token
    softmax at T = 1 (chi-square over the likely tokens), and a seed gives the same samples."""
    net = eos_prone_model(tok)
    ids = prompts(tok, ["1+2="], repeats=4000)
    cfg = SamplingConfig(max_new_tokens=1, temperature=1.0)
    torch.manual_seed(1)
    _, seqs, width = generate(net, tok, ids, cfg, decoder="loop")
    torch.manual_seed(1)
    assert torch.equal(generate(net, tok, ids, cfg, decoder="loop")[1], seqs)
    with torch.no_grad():
        p = net(input_ids=torch.tensor(ids[:1])).logits[0, -1].float().softmax(-1)
    counts = torch.bincount(seqs[:, width], minlength=len(p)).double()
    n, likely = len(ids), p * len(ids) >= 20
    assert likely.sum() >= 3
    observed = torch.cat([counts[likely], counts[~likely].sum().view(1)])
    wanted = torch.cat([n * p[likely], n * p[~likely].sum().view(1)]).double()
    chi2 = ((observed - wanted) ** 2 / wanted).sum().item()
    df = len(observed) - 1
    assert chi2 < df + 5 * math.sqrt(2 * df)


def test_sampled_sequences_are_left_padded_ended_and_padded_after_eos(tok):
    net = eos_prone_model(tok)
    ids = prompts(tok, TEXTS, repeats=8)
    cfg = SamplingConfig(max_new_tokens=16, temperature=1.0, top_k=50, top_p=0.95)
    torch.manual_seed(3)
    texts, seqs, width = generate(net, tok, ids, cfg, decoder="loop")
    assert seqs[:, :width].tolist() == [[tok.pad_token_id] * (width - len(p)) + p for p in ids]
    responses = seqs[:, width:]
    is_eos = (responses == EOS).long()
    after = (is_eos.cumsum(-1) - is_eos) > 0
    assert (responses[after] == tok.pad_token_id).all() and after.any()
    assert len({tuple(r) for r in responses[:8].tolist()}) > 1  # a group's samples differ
    assert texts == tok.batch_decode(responses, skip_special_tokens=True)


def test_refusals_fall_back_to_generate_with_the_reason_logged_once(tok, caplog):
    net = eos_prone_model(tok)
    ids = prompts(tok, TEXTS[:2])
    stop = SamplingConfig(max_new_tokens=6, stop_strings=["zz"])
    assert loop_refusal(net, tok, stop) == "stop strings"
    net.generation_config.repetition_penalty = 1.37
    greedy = SamplingConfig(max_new_tokens=6)
    assert "repetition_penalty" in loop_refusal(net, tok, greedy)
    with caplog.at_level(logging.INFO, logger="lit_rlhf.rollout.generation"):
        fallback = generate(net, tok, ids, greedy)[1]
        generate(net, tok, ids, greedy)
    assert [r.getMessage() for r in caplog.records].count(
        "generate: using model.generate (generation config sets repetition_penalty=1.37)") == 1
    assert torch.equal(fallback, generate(net, tok, ids, greedy, decoder="hf")[1])
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate(net, tok, ids, greedy, decoder="loop")
    with pytest.raises(ValueError, match="decoder"):
        generate(net, tok, ids, greedy, decoder="fast")


def test_cache_rows_are_repeated_and_selected_exactly(tok):
    net = eos_prone_model(tok)
    ids = torch.tensor([tok("abc")["input_ids"], tok("xyz")["input_ids"]])
    with torch.no_grad():
        cache = new_cache(net)
        net(input_ids=ids, cache=cache, use_cache=True)
        repeat_rows(cache, [3, 1])
        select_rows(cache, torch.tensor([3, 0]))
        direct = new_cache(net)
        net(input_ids=ids[[1, 0]], cache=direct, use_cache=True)
    for ours, theirs in zip(cache.layers, direct.layers):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


def test_a_lora_wrapper_is_decoded_through_its_base_model_with_the_adapter_on_or_off(tok):
    """LoRA policies (the SmolLM2 configs, ``lora_disabled`` references) take the loop, not ``model.generate``."""
    pytest.importorskip("peft")
    from lit_rlhf.models.loading import apply_lora

    net = apply_lora(eos_prone_model(tok), ModelSpec(config=TINY, lora={"r": 4, "alpha": 8}), "CAUSAL_LM").eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter (a fresh one is the identity: B = 0)
    ids = prompts(tok, TEXTS, repeats=2)
    cfg = SamplingConfig(max_new_tokens=16)
    assert loop_refusal(net, tok, cfg) is None
    on = generate(net, tok, ids, cfg, decoder="loop")[1]
    assert torch.equal(on, generate(net, tok, ids, cfg, decoder="hf")[1])
    with net.disable_adapter():
        off = generate(net, tok, ids, cfg, decoder="loop")[1]
        assert torch.equal(off, generate(net, tok, ids, cfg, decoder="hf")[1])
    assert not torch.equal(on, off)  # the adapter changes the tokens, so the equalities above test it
