"""LM head on the selected positions only: same log-probs and gradients as the full-logits path."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from lit_rlhf.data.collate import pad
from lit_rlhf.models import (
    LoraSpec,
    apply_lora,
    completion_logps,
    load_model,
    packed_sequence_logps,
    selected_logits,
    sequence_logps,
)


class FullLogits(torch.nn.Module):
    """The model without ``get_output_embeddings``: :func:`selected_logits` falls back to full logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, **kwargs):
        return self.net(**kwargs)


class SoftCapped(FullLogits):
    """Soft-caps the logits after the head (as Gemma 2 does) and exposes the head."""

    def get_output_embeddings(self):
        return self.net.get_output_embeddings()

    def forward(self, **kwargs):
        out = self.net(**kwargs)
        out.logits = 2.0 * torch.tanh(out.logits / 2.0)
        return out


class FlatHead(SoftCapped):
    """Calls its head on the flattened ``(B·T, H)`` hidden states."""

    def forward(self, input_ids, attention_mask, **kwargs):
        hidden = self.net.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        B, T, H = hidden.shape
        return SimpleNamespace(logits=self.net.lm_head(hidden.reshape(B * T, H)).view(B, T, -1))


def _model(tiny_spec, tok, lora):
    torch.manual_seed(0)
    model = load_model(tiny_spec, "causal_lm", tok)
    with torch.no_grad():  # a sharper random model (larger log-prob differences between positions)
        for p in model.parameters():
            p.mul_(3.0)
    if lora:
        spec = dataclasses.replace(tiny_spec, lora=LoraSpec(r=4, alpha=8, dropout=0.0,
                                                            target_modules=["q_proj", "v_proj", "lm_head"]))
        model = apply_lora(model, spec, "CAUSAL_LM")
        with torch.no_grad():  # LoRA B starts at zero: make the adapters change the outputs
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.5)
    return model


def _batch(tok):
    rng = torch.Generator().manual_seed(0)
    seqs, masks = [], []
    for n_prompt, n_completion in [(3, 14), (5, 2), (2, 1), (4, 9), (6, 5), (3, 3)]:
        seqs.append(torch.randint(3, len(tok), (n_prompt + n_completion,), generator=rng).tolist())
        masks.append([0] * n_prompt + [1] * n_completion)
    return pad(seqs, tok.pad_token_id), pad([[1] * len(s) for s in seqs], 0), pad(masks, 0)


def _values_and_grads(fn, model, args):
    model.zero_grad()
    logps, lengths = fn(model, *args)
    (logps * torch.arange(1.0, len(logps) + 1)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), lengths, grads


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("fn", [sequence_logps, packed_sequence_logps], ids=["padded", "packed"])
def test_head_on_completion_positions_equals_full_logits(tiny_spec, tok, lora, fn):
    model = _model(tiny_spec, tok, lora)
    args = _batch(tok)
    head = model.get_output_embeddings()
    seen = []
    handle = head.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    try:
        logps, lengths, grads = _values_and_grads(fn, model, args)
    finally:
        handle.remove()
    # the head saw only the 34 positions that predict a completion token (14 + 2 + 1 + 9 + 5 + 3)
    assert seen == [(1, 34, tiny_spec.config["hidden_size"])]
    full, full_lengths, full_grads = _values_and_grads(lambda m, *a: fn(FullLogits(m), *a), model, args)
    assert lengths.tolist() == full_lengths.tolist() == [14, 2, 1, 9, 5, 3]
    assert torch.allclose(logps, full, rtol=0, atol=1e-5)
    assert full_grads.keys() == grads.keys() and (not lora or any("lora_B" in n for n in grads))
    assert all(torch.allclose(grads[n], full_grads[n], rtol=0, atol=1e-5) for n in grads)
    # and the full-logits reference is the plain computation from the model's logits
    ids, attention, completion = args
    with torch.no_grad():
        plain = completion_logps(model(input_ids=ids, attention_mask=attention).logits, ids, completion)[0]
    assert torch.allclose(full, plain, rtol=1e-5, atol=1e-4 if fn is packed_sequence_logps else 1e-5)


def test_lora_disabled_adapter_is_respected(tiny_spec, tok):
    model = _model(tiny_spec, tok, lora=True)
    args = _batch(tok)
    with torch.no_grad(), model.disable_adapter():
        off = sequence_logps(model, *args)[0]
        base_full = sequence_logps(FullLogits(model), *args)[0]
    with torch.no_grad():
        on = sequence_logps(model, *args)[0]
    assert torch.allclose(off, base_full, rtol=0, atol=1e-5)
    assert not torch.allclose(on, off, atol=1e-2)


def test_what_the_model_does_after_its_head_still_applies(tiny_spec, tok):
    model = _model(tiny_spec, tok, lora=False)
    ids, attention, completion = _batch(tok)
    with torch.no_grad():
        capped = sequence_logps(SoftCapped(model), ids, attention, completion)[0]
        plain = sequence_logps(model, ids, attention, completion)[0]
        logits = 2.0 * torch.tanh(model(input_ids=ids, attention_mask=attention).logits / 2.0)
    assert torch.allclose(capped, completion_logps(logits, ids, completion)[0], rtol=0, atol=1e-5)
    assert not torch.allclose(capped, plain, atol=1e-2)


def test_selected_logits_rows_in_order_and_fallback_for_other_layouts(tiny_spec, tok):
    model = _model(tiny_spec, tok, lora=False)
    ids, attention, _ = _batch(tok)
    select = torch.zeros_like(ids, dtype=torch.bool)
    select[0, 2], select[3, 0], select[3, 5] = True, True, True
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attention).logits
        logits, out = selected_logits(model, select, input_ids=ids, attention_mask=attention)
        assert out.logits.shape == (1, 3, len(tok))
        assert torch.allclose(logits, full[[0, 3, 3], [2, 0, 5]], rtol=0, atol=1e-5)
        # a head given another layout than (B, T, H): it runs on everything, gathered at the selection
        flat, out = selected_logits(FlatHead(model), select, input_ids=ids, attention_mask=attention)
        assert out.logits.shape == full.shape and torch.allclose(flat, logits, rtol=0, atol=1e-5)
        # a model without an exposed head: full logits gathered at the selection
        fallback, out = selected_logits(FullLogits(model), select, input_ids=ids, attention_mask=attention)
        assert out.logits.shape == full.shape and torch.allclose(fallback, logits, rtol=0, atol=1e-5)
