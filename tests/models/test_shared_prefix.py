"""Shared-prefix (prompt-once) forwards equal the separate rows: log-probs, rewards and gradients (fp32), for the
Llama, Qwen2, GPT-2 and Gemma-2 layouts, with and without LoRA, left and right padding, multi-turn prompts; both
layouts: one row per group with a block-causal 4-D mask (``shared``), and the prompts first, then the rows' own tokens
on their keys and values (``cached``)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from lit_rlhf.models import (
    ForwardLayout,
    HeadModel,
    prefix_cache_plan,
    prefix_cache_refusal,
    sequence_logps,
    shared_prefix_plan,
    shared_prefix_refusal,
    shared_sequence_logps,
)

transformers = pytest.importorskip("transformers")

V = 60
SIZE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=128, vocab_size=V)
FAMILIES = ("llama", "qwen2", "gpt2", "gemma2")
PLANS = {"shared": shared_prefix_plan, "cached": prefix_cache_plan}


def family_config(name: str):
    if name == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, vocab_size=V, bos_token_id=1,
                                       eos_token_id=2)
    if name == "gemma2":  # a sliding window shorter than the sequences, attention and final-logit soft-capping
        return transformers.Gemma2Config(**SIZE, head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
                                         final_logit_softcapping=3.0, attn_logit_softcapping=5.0)
    return {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[name](**SIZE)


def build(name: str, lora: bool = False, base: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    auto = transformers.AutoModel if base else transformers.AutoModelForCausalLM
    model = auto.from_config(family_config(name))
    with torch.no_grad():  # a sharper random model, whose outputs depend on the context
        for p in model.parameters():
            p.mul_(3.0)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return model.eval()


def groups_of_rows(seed: int = 0) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Rows (token ids), completion masks and group ids: pairs and a group of three sharing their prompts, one
    multi-turn prompt whose earlier assistant turn is also a completion (so a completion token lies in the shared
    prefix), and a row of its own."""
    g = torch.Generator().manual_seed(seed)

    def toks(n: int) -> list[int]:
        return torch.randint(3, V, (n,), generator=g).tolist()

    rows, masks, groups = [], [], []
    for gid, (prompt, replies) in enumerate([(5, [3, 4]), (2, [6, 1]), (9, [2, 2, 5]), (1, [4, 3])]):
        p = toks(prompt)
        for n in replies:
            rows.append(p + toks(n))
            masks.append([0] * prompt + [1] * n)
            groups.append(gid)
    user1, assistant1, user2 = toks(3), toks(4), toks(2)  # multi-turn: user, assistant, user, then the replies
    for n in (3, 5):
        rows.append(user1 + assistant1 + user2 + toks(n))
        masks.append([0] * 3 + [1] * 4 + [0] * 2 + [1] * n)
        groups.append(10)
    rows.append(toks(7))
    masks.append([0] * 2 + [1] * 5)
    groups.append(11)
    return rows, masks, groups


def padded(rows: list[list[int]], side: str, value: int = 0) -> torch.Tensor:
    T = max(map(len, rows))
    return torch.tensor([r + [value] * (T - len(r)) if side == "right" else [value] * (T - len(r)) + r for r in rows])


def batch(side: str):
    rows, masks, groups = groups_of_rows()
    ids, attention = padded(rows, side), padded([[1] * len(r) for r in rows], side)
    return ids, attention, padded(masks, side), torch.tensor(groups), rows, masks


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Gradients equal up to fp32 rounding: 1e-5 absolute plus 1e-5 relative (gradients here are of order 1, and the
    padded batch itself differs from the separate rows by ~1e-5 at the largest entries).

    The cached layout's gradients are compared with ``rtol=5e-5`` of each tensor's largest entry: SDPA's fp32 backward
    over a cache (queries against ``K + S`` keys with a mask) rounds differently from the causal kernel of a row alone,
    by up to 3.7e-5 of the largest entry of the first layer's LoRA gradients of Qwen2; under eager attention the same
    case agrees within the 1e-5 tolerance, and in float64 both layouts agree with the separate rows alike."""
    if rtol == 1e-5:
        return torch.allclose(a, b, rtol=rtol, atol=1e-5)
    return bool((a - b).abs().max() <= 1e-5 + rtol * b.abs().max())


RTOL = {"shared": 1e-5, "cached": 5e-5}


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    return out


@pytest.mark.parametrize("kind", PLANS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_shared_logps_and_gradients_equal_separate_rows(family, lora, side, kind):
    model = build(family, lora)
    ids, attention, completion, groups, rows, masks = batch(side)
    weights = torch.linspace(0.5, 2.0, len(rows)) / 100  # a mean over ~100 tokens: gradients of order 1
    # the separate rows, each alone (no padding): the truth
    truth = torch.stack([sequence_logps(model, torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long),
                                        torch.tensor([m]))[0][0] for r, m in zip(rows, masks)])
    (truth * weights).sum().backward()
    expected = grads(model)
    plan = PLANS[kind](ids, attention, groups)
    shared, lengths = shared_sequence_logps(model, ids, attention, completion, groups, plan)
    (shared * weights).sum().backward()
    got = grads(model)
    assert lengths.tolist() == [sum(m) - m[0] for m in masks]
    assert torch.allclose(shared, truth, rtol=0, atol=1e-5), (shared - truth).abs().max()
    assert len(got) == len(expected) > 0
    assert all(close(a, b, RTOL[kind]) for a, b in zip(got, expected))
    if side == "right" and family != "gemma2":  # the padded forward gives the same (Gemma-2: its window in slots)
        assert torch.allclose(shared, sequence_logps(model, ids, attention, completion)[0], atol=1e-5)


def test_the_plan_holds_each_prompt_once():
    ids, attention, _, groups, rows, _ = batch("right")
    plan = shared_prefix_plan(ids, attention, groups)
    saved = 5 + 2 + 2 * 9 + 1 + (3 + 4 + 2)  # prompt tokens of the second, third members (and the multi-turn prefix)
    assert int((plan.segment >= 0).sum()) == sum(map(len, rows)) - saved
    # the second pair's rejected reply continues the positions of the prompt
    b = 3
    assert plan.position_ids.reshape(-1)[plan.slot[b, :len(rows[b])]].tolist() == list(range(len(rows[b])))
    assert torch.equal(plan.input_ids.reshape(-1)[plan.slot[b, :len(rows[b])]], ids[b, :len(rows[b])])
    assert plan.slot[b, 0] == plan.slot[2, 0]  # one copy of the shared prompt


def test_the_cache_plan_holds_each_prompt_once():
    ids, attention, _, groups, rows, _ = batch("left")
    plan = prefix_cache_plan(ids, attention, groups)
    # the prefixes: the two pairs' prompts, the group's, the last pair's, the multi-turn history; the row alone has none
    assert sorted(plan.prefix_mask.sum(-1).tolist()) == [1, 2, 5, 9, 9]
    tokens = torch.cat([plan.prefix_ids.reshape(-1), plan.suffix_ids.reshape(-1)])
    positions = torch.cat([plan.prefix_positions.reshape(-1), plan.suffix_positions.reshape(-1)])
    for b, row in enumerate(rows):  # every token of every row, at its own position
        slots = plan.slot[b][attention[b].bool()]
        assert tokens[slots].tolist() == row and positions[slots].tolist() == list(range(len(row)))
    assert torch.equal(plan.slot[3, -len(rows[3]):][:2], plan.slot[2, -len(rows[2]):][:2])  # one copy of the prompt
    G, K = plan.prefix_ids.shape
    assert bool((plan.slot[:, -1] >= G * K).all())  # each row's last token in its own pass
    # the second pass of each row sees its prefix's tokens and its own: the whole row
    own = (plan.slot[:, -1] - G * K) // plan.suffix_ids.shape[1]  # the second-pass row of each row
    assert sorted(own.tolist()) == list(range(len(rows)))
    assert torch.equal(plan.suffix_mask[own].sum(-1), attention.sum(-1))


@pytest.mark.parametrize("kind", PLANS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_shared_rewards_and_gradients_equal_separate_rows(family, lora, side, kind):
    backbone = build(family, lora, base=True)
    torch.manual_seed(1)
    model = HeadModel(backbone, squeeze=True).eval()
    ids, attention, _, groups, rows, _ = batch(side)
    weights = torch.linspace(0.5, 2.0, len(rows)) / 100  # a mean over ~100 tokens: gradients of order 1
    truth = torch.cat([model(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)) for r in rows])
    (truth * weights).sum().backward()
    expected = grads(model)
    plan = PLANS[kind](ids, attention, groups)
    shared = model(ids, attention, plan)
    (shared * weights).sum().backward()
    got = grads(model)
    assert torch.allclose(shared, truth, rtol=0, atol=1e-5), (shared - truth).abs().max()
    assert all(close(a, b, RTOL[kind]) for a, b in zip(got, expected))


def test_unsafe_families_are_refused_with_a_reason():
    # Mistral applies one mask to all layers: a window shorter than a sequence cannot be kept
    mistral = transformers.MistralForCausalLM(transformers.MistralConfig(**SIZE, sliding_window=4))
    assert shared_prefix_refusal(mistral, longest=4) is None
    assert "sliding window of 4 tokens" in shared_prefix_refusal(mistral, longest=12)
    ids, attention, completion, groups, _, _ = batch("right")
    with pytest.raises(ValueError, match="shared-prefix forward refused: mistral: sliding window"):
        shared_sequence_logps(mistral, ids, attention, completion, groups)
    bloom = transformers.BloomForCausalLM(transformers.BloomConfig(hidden_size=32, n_layer=1, n_head=2, vocab_size=V))
    assert "ALiBi" in shared_prefix_refusal(bloom)
    bert = transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=64, vocab_size=V))
    assert "not causal" in shared_prefix_refusal(bert)
    # Gemma-2 takes one mask per layer type: its window is kept
    assert shared_prefix_refusal(build("gemma2"), longest=100) is None
    # through a cache Mistral masks its window itself: exact
    assert prefix_cache_refusal(mistral) is None
    rows, masks = groups_of_rows()[:2]
    truth = torch.stack([sequence_logps(mistral, torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long),
                                        torch.tensor([m]))[0][0] for r, m in zip(rows, masks)])
    plan = prefix_cache_plan(ids, attention, groups)
    assert torch.allclose(shared_sequence_logps(mistral, ids, attention, completion, groups, plan)[0], truth, atol=1e-5)
    assert "not causal" in prefix_cache_refusal(bert)
    checkpointed = build("llama")
    (getattr(checkpointed, "activation_checkpointing_enable", None) or checkpointed.gradient_checkpointing_enable)()
    assert "gradient checkpointing" in prefix_cache_refusal(checkpointed)
    assert "takes no key/value cache" in prefix_cache_refusal(NoMask(build("llama"), cache_argument=False))


def test_layout_rule_keeps_plain_rows_where_nothing_is_saved():
    model = build("llama")
    layout = ForwardLayout()
    g = torch.Generator().manual_seed(0)
    same = torch.randint(3, V, (8, 20), generator=g)  # equal lengths, no common prompt: padded
    ones = torch.ones_like(same)
    assert layout.choose(model, same, ones, torch.arange(8) % 4)[0] == "padded"
    prompt = torch.randint(3, V, (1, 16), generator=g).expand(8, -1)  # 16 shared tokens of 20: the prompt once
    long_prompt = torch.cat([prompt, same[:, :4]], 1)
    assert layout.choose(model, long_prompt, ones, torch.arange(8) % 4)[0] == "cached"
    assert layout.choose(model, long_prompt, ones, None)[0] == "padded"  # no groups: nothing shared
    with layout.unshared():
        assert layout.choose(model, long_prompt, ones, torch.arange(8) % 4)[0] == "padded"
    layout.enabled["cached"] = False  # a model that refuses the cache: the 4-D mask
    assert layout.choose(model, long_prompt, ones, torch.arange(8) % 4)[0] == "shared"
    layout.enabled["cached"] = True
    # pairs of equal length whose prompt is 2 of 66 tokens: sharing saves ~3%, so the rows stay padded
    short_prompt = torch.cat([prompt[:, :2], torch.randint(3, V, (8, 64), generator=g)], 1)
    assert layout.choose(model, short_prompt, torch.ones_like(short_prompt), torch.arange(8) % 4)[0] == "padded"
    varied = ones.clone()
    varied[::2, 8:] = 0  # half the rows 8 tokens of 20, no common prompt: packed
    assert layout.choose(model, same, varied, torch.arange(8) % 4)[0] == "packed"
    assert ForwardLayout(padding_free=False).choose(model, same, varied, torch.arange(8) % 4)[0] == "padded"


class NoMask(torch.nn.Module):
    """Drops a 4-D mask (completions would see each other) and a key/value cache (a row's own tokens would not see its
    prompt); ``cache_argument=False``: takes no cache at all."""

    def __init__(self, net, cache_argument: bool = True):
        super().__init__()
        self.net = net
        self.config = net.config
        if not cache_argument:
            self.forward = self.forward_without_cache

    def get_output_embeddings(self):
        return self.net.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return self.net(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)

    def forward_without_cache(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        return self.forward(input_ids, attention_mask, position_ids, **kwargs)


def test_layout_falls_back_when_the_model_ignores_the_mask():
    net = build("llama")
    ids, attention, completion, groups, _, _ = batch("right")
    layout = ForwardLayout(padding_free=False, margin=0.0)
    with pytest.warns(UserWarning) as warned:
        logps, _ = layout.sequence_logps(NoMask(net), ids, attention, completion, groups)
    messages = " ".join(str(w.message) for w in warned)
    assert "cached layout" in messages or "through a key/value cache" in messages
    assert "shared prompts exact" in messages
    assert not layout.enabled["shared"] and not layout.enabled["cached"] and layout.last == "padded"
    assert torch.allclose(logps, sequence_logps(net, ids, attention, completion)[0])


def pair_batch(tok, prompt_len: int = 24) -> dict[str, torch.Tensor]:
    """A right-padded ``[chosen; rejected]`` batch of 4 pairs with long prompts."""
    g = torch.Generator().manual_seed(3)
    chosen, rejected, c_masks, r_masks = [], [], [], []
    for i in range(4):
        prompt = torch.randint(3, 200, (prompt_len - i,), generator=g).tolist()
        for out, masks, n in ((chosen, c_masks, 3 + i), (rejected, r_masks, 6 - i)):
            out.append(prompt + torch.randint(3, 200, (n,), generator=g).tolist())
            masks.append([0] * len(prompt) + [1] * n)
    rows = chosen + rejected
    return {"input_ids": padded(rows, "right", tok.pad_token_id),
            "attention_mask": padded([[1] * len(r) for r in rows], "right"),
            "completion_mask": padded(c_masks + r_masks, "right")}


def module_grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


@pytest.mark.parametrize("kind", PLANS)
@pytest.mark.parametrize("method", ["DPO", "RewardModel"])
def test_modules_use_the_shared_prompt_and_match_their_unshared_step(tiny_spec, tok, method, kind):
    import lit_rlhf.modules as modules

    cls = getattr(modules, method)
    kwargs = {"padding_free": False} if method == "DPO" else {}
    shared, plain = cls(model=tiny_spec), cls(model=tiny_spec, shared_prefix=False, **kwargs)
    shared.layout.enabled["shared" if kind == "cached" else "cached"] = False  # the one under test
    plain.load_state_dict(shared.state_dict())
    batch = pair_batch(tok)
    losses = []
    for module in (shared, plain):
        module.train()
        loss = module.step(batch, "train").loss
        loss.backward()
        losses.append(loss.detach())
    assert shared.layout.last == kind and plain.layout.last == "padded"
    assert torch.allclose(losses[0], losses[1], rtol=0, atol=1e-5)
    got, expected = module_grads(shared), module_grads(plain)
    assert len(got) == len(expected) > 0
    assert all(close(a, b, RTOL[kind]) for a, b in zip(got, expected))


def test_reward_scoring_encodes_each_prompt_once(tok):
    from lit_rlhf.models.assets import tiny_llama_config
    from lit_rlhf.rollout.rewards import ModelReward

    torch.manual_seed(0)
    head = HeadModel(transformers.LlamaModel(tiny_llama_config(tok)), squeeze=True, pad_token_id=tok.pad_token_id)
    prompts = ["a long question about x and y, " * 3] * 4 + ["another long prompt: " * 4] * 3
    completions = ["yes", "no, never", "z", "x y z w", "ok", "fine then", "q"]
    shared, plain = ModelReward(head, tok), ModelReward(head, tok, shared_prefix=False)
    got, expected = shared(prompts, completions), plain(prompts, completions)
    assert shared.layout.last in ("shared", "cached") and plain.layout.last == "padded"
    assert torch.allclose(got, expected, rtol=0, atol=1e-5)
    assert len(set(expected.tolist())) == len(completions)  # the completions are told apart


def rollout_batch(tok, G: int = 4, R: int = 6):
    """``[left-padded prompt | right-padded response]`` rows: 2 prompts (20 and 14 tokens) × G responses."""
    g = torch.Generator().manual_seed(5)
    rows = []
    for n_prompt in (20, 14):
        prompt = torch.randint(3, 200, (n_prompt,), generator=g).tolist()
        for j in range(G):
            n = R - j % 3  # responses that end early (EOS, then padding)
            rows.append((prompt, torch.randint(3, 200, (n,), generator=g).tolist()))
    P = max(len(p) for p, _ in rows)
    ids = torch.tensor([[tok.pad_token_id] * (P - len(p)) + p + r + [tok.pad_token_id] * (R - len(r)) for p, r in rows])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * (len(p) + len(r)) + [0] * (R - len(r)) for p, r in rows])
    return ids, mask


@pytest.mark.parametrize("kind", PLANS)
def test_group_rl_forward_shares_prompts_and_matches_padded(tiny_spec, tok, kind):
    from lit_rlhf.modules import GRPO

    R = 6
    module = GRPO(model=tiny_spec, group_size=4, num_mini_batches=1, reward_fn=lambda p, c: torch.zeros(len(p)))
    module.layout.enabled["shared" if kind == "cached" else "cached"] = False
    ids, mask = rollout_batch(tok, R=R)
    response = mask[:, -R:].bool()
    weights = torch.linspace(0.5, 2.0, response.numel()).view(response.shape) / 50
    out = {}
    for shared in (True, False):
        with contextlib.nullcontext() if shared else module.layout.unshared():
            result = module.forward_pass(module.model, ids, mask, R, with_entropy=True)
            assert module.layout.last == (kind if shared else "padded")
        (result["logprobs"] * weights * response).sum().backward()
        out[shared] = result, [p.grad.clone() for p in module.model.parameters()]
        module.model.zero_grad()
    (shared, shared_grads), (plain, plain_grads) = out[True], out[False]
    for key in ("logprobs", "entropy"):
        assert torch.allclose(shared[key][response], plain[key][response], rtol=0, atol=1e-5)
    assert all(close(a, b, RTOL[kind]) for a, b in zip(shared_grads, plain_grads))
    # the same rows in another order: the same canonical layout, bit-identical log-probs (exact first ratio)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    again = module.forward_pass(module.model, ids[order], mask[order], R)["logprobs"]
    assert torch.equal(again, shared["logprobs"][order].detach())


@pytest.mark.parametrize("kind", PLANS)
def test_group_rl_passes_over_the_same_rows_lay_them_out_once(tiny_spec, tok, monkeypatch, kind):
    """The rollout (reference) and update passes of an iteration see the same rows: the layout rule and the 4-D
    mask (none for the cached layout) run once for them, with the same log-probs; other rows get their own layout."""
    from lit_rlhf.modules import GRPO
    from lit_rlhf.modules import rl as rl_module

    R = 6
    module = GRPO(model=tiny_spec, group_size=4, num_mini_batches=1, reward_fn=lambda p, c: torch.zeros(len(p)))
    module.layout.enabled["shared" if kind == "cached" else "cached"] = False
    masks = int(kind == "shared")
    ids, mask = rollout_batch(tok, R=R)
    first = module.forward_pass(module.model, ids, mask, R)["logprobs"]  # includes the one-time exactness check
    calls = {"choose": 0, "inputs": 0}
    choose, inputs = module.layout.choose, rl_module.shared_prefix_inputs

    def counted_choose(*args, **kwargs):
        calls["choose"] += 1
        return choose(*args, **kwargs)

    def counted_inputs(*args, **kwargs):
        calls["inputs"] += 1
        return inputs(*args, **kwargs)

    monkeypatch.setattr(module.layout, "choose", counted_choose)
    monkeypatch.setattr(rl_module, "shared_prefix_inputs", counted_inputs)
    again = module.forward_pass(module.model, ids.clone(), mask.clone(), R)["logprobs"]
    assert calls == {"choose": 0, "inputs": 0} and module.layout.last == kind
    assert torch.equal(again, first)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))
    other = module.forward_pass(module.model, ids[order], mask[order], R)["logprobs"]
    assert calls == {"choose": 1, "inputs": masks} and module.layout.last == kind
    assert torch.equal(other, first[order])


def test_rows_with_holes_in_their_mask_are_not_shared():
    model = build("llama")
    ids, attention, completion, groups, _, _ = batch("right")
    attention[0, 2] = 0  # a hole: not one run of attended tokens
    with pytest.raises(ValueError, match="one non-empty run of ones"):
        shared_sequence_logps(model, ids, attention, completion, groups)
    assert ForwardLayout(padding_free=False, margin=0.0).choose(model, ids, attention, groups)[0] == "padded"
