"""Model specs, loading the code-built tiny Llama, heads on a backbone, and LoRA via peft."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM, LlamaModel

from lit_rlhf.models import (
    HeadModel,
    LoraSpec,
    ModelSpec,
    hidden_size,
    load_model,
    load_tokenizer,
    pool,
    scalar_head_model,
    sequence_classifier,
    token_classifier,
    trainable_parameters,
)

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}


def spec(**kwargs) -> ModelSpec:
    return ModelSpec(config=dict(TINY), **kwargs)


def batch(tok, texts):
    enc = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, enc))
    ids = torch.tensor([e + [tok.pad_token_id] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
    return ids, mask


# -- ModelSpec ---------------------------------------------------------------------------------

def test_spec_of_str_dict_spec_and_type_error():
    s = ModelSpec.of("org/model")
    assert s == ModelSpec(name="org/model")
    assert s.dtype == "float32" and s.lora is None and s.config == {} and not s.is_asset

    d = ModelSpec.of({"name": "lit-rlhf:tiny-llama", "dtype": "bfloat16", "config": {"hidden_size": 8},
                      "lora": {"r": 4, "alpha": 8}})
    assert d.is_asset
    assert d.torch_dtype is torch.bfloat16
    assert d.config == {"hidden_size": 8}
    assert isinstance(d.lora, LoraSpec)
    assert (d.lora.r, d.lora.alpha, d.lora.dropout, d.lora.target_modules) == (4, 8, 0.05, "all-linear")

    original = spec()
    assert ModelSpec.of(original) is original

    with pytest.raises(TypeError, match="a model is a name, a dict or a ModelSpec, got int"):
        ModelSpec.of(3)
    with pytest.raises(TypeError, match="got list"):
        ModelSpec.of(["lit-rlhf:tiny-llama"])


def test_spec_of_dict_does_not_mutate_input_and_to_dict_round_trips():
    raw = {"name": "x", "lora": {"r": 2}}
    s = ModelSpec.of(raw)
    assert raw == {"name": "x", "lora": {"r": 2}}
    assert s.to_dict()["lora"] == {"r": 2, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
    assert ModelSpec.of(s.to_dict()) == s


def test_unknown_asset_lists_known_ones(tok):
    with pytest.raises(ValueError) as info:
        load_model("lit-rlhf:nope", tokenizer=tok)
    msg = str(info.value)
    assert "unknown packaged model 'lit-rlhf:nope'" in msg
    for known in ("lit-rlhf:tiny-llama", "lit-rlhf:smollm2-135m", "lit-rlhf:minilm-l6"):
        assert known in msg
    with pytest.raises(ValueError, match="lit-rlhf:tiny-llama"):
        load_tokenizer("lit-rlhf:nope")


# -- loading -------------------------------------------------------------------------------------

def test_load_causal_lm_with_overrides(tok):
    torch.manual_seed(0)
    net = load_model(spec(), tokenizer=tok)
    assert isinstance(net, LlamaForCausalLM)
    cfg = net.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (32, 64, 1, 2)
    assert cfg.vocab_size == len(tok) == 260
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 1, 2)
    assert len(net.model.layers) == 1
    assert net.model.embed_tokens.weight.shape == (260, 32)
    assert hidden_size(net) == 32
    ids, mask = batch(tok, ["hi", "hello"])
    out = net(input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (2, ids.shape[1], 260)
    assert out.logits.dtype == torch.float32
    # untouched defaults of the tiny config stay
    assert cfg.max_position_embeddings == 1024


def test_load_backbone(tok):
    net = load_model(spec(), kind="backbone", tokenizer=tok)
    assert isinstance(net, LlamaModel)
    ids, mask = batch(tok, ["abc"])
    assert net(input_ids=ids, attention_mask=mask).last_hidden_state.shape == (1, 4, 32)


def test_load_without_tokenizer_and_with_dtype():
    net = load_model(ModelSpec(config={**TINY, "num_hidden_layers": 2}, dtype="bfloat16"))
    assert net.config.vocab_size == 260
    assert len(net.model.layers) == 2
    assert next(net.parameters()).dtype == torch.bfloat16


def test_gradient_checkpointing_flag(tok):
    net = load_model(spec(gradient_checkpointing=True), tokenizer=tok)
    assert getattr(net, "is_activation_checkpointing", None) or net.is_gradient_checkpointing
    assert net.config.use_cache is False


# -- heads ---------------------------------------------------------------------------------------

def test_pool_modes():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "last").tolist() == [[2.0, 3.0], [10.0, 11.0]]
    assert pool(hidden, mask, "mean").tolist() == [[1.0, 2.0], [8.0, 9.0]]
    assert pool(hidden, mask, "none") is hidden
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(hidden, mask, "max")


def test_scalar_head_reads_the_last_real_token(tok):
    torch.manual_seed(0)
    rm = scalar_head_model(spec(), tokenizer=tok).eval()
    ids, mask = batch(tok, ["short", "a longer text"])
    assert mask[0].tolist() == [1] * 6 + [0] * 8  # "short" = BOS + 5 bytes, right padded to 14
    with torch.no_grad():
        r = rm(ids, mask)
        assert r.shape == (2,)
        assert r.dtype == torch.float32
        # padding ids (after the last real token) do not matter
        ids_pad = ids.clone()
        ids_pad[0, 6:] = torch.arange(50, 58)
        torch.testing.assert_close(rm(ids_pad, mask), r)
        # the last real token does
        ids_last = ids.clone()
        ids_last[0, 5] = tok("z", add_special_tokens=False)["input_ids"][0]
        changed = rm(ids_last, mask)
        assert abs(changed[0].item() - r[0].item()) > 1e-6
        assert changed[1].item() == pytest.approx(r[1].item(), abs=1e-6)
        # equals the head applied to the backbone's hidden state at that position
        h = rm.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = rm.head(h[torch.arange(2), torch.tensor([5, 13])]).squeeze(-1)
        torch.testing.assert_close(r, expected)


def test_scalar_head_mean_pooling_ignores_padding(tok):
    rm = scalar_head_model(spec(), tokenizer=tok, pooling="mean").eval()
    ids, mask = batch(tok, ["ab", "abcdef"])
    with torch.no_grad():
        alone = rm(*batch(tok, ["ab"]))
        together = rm(ids, mask)
    assert together.shape == (2,)
    assert together[0].item() == pytest.approx(alone[0].item(), abs=1e-5)


def test_sequence_classifier_shape_and_zero_init(tok):
    ids, mask = batch(tok, ["one", "two two", "three"])
    clf = sequence_classifier(spec(), num_classes=3, tokenizer=tok)
    out = clf(ids, mask)
    assert out.shape == (3, 3)
    assert out.abs().sum() > 0
    zero = sequence_classifier(spec(), num_classes=5, tokenizer=tok, zero_init=True)
    out = zero(ids, mask)
    assert out.shape == (3, 5)
    assert torch.equal(out, torch.zeros(3, 5))
    assert zero.head.bias is None  # last-token classifiers are bias-free like HF's `score` layers
    assert sequence_classifier(spec(), num_classes=2, tokenizer=tok, pooling="mean").head.bias is not None


def test_token_classifier_shape(tok):
    ids, mask = batch(tok, ["x", "yyyy"])
    clf = token_classifier(spec(), num_classes=2, tokenizer=tok)
    assert clf.pooling == "none"
    assert clf(ids, mask).shape == (2, 5, 2)


def test_head_model_save_pretrained(tok, tmp_path):
    clf = sequence_classifier(spec(), num_classes=4, tokenizer=tok, pooling="mean")
    clf.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists()
    assert json.loads((tmp_path / "head.json").read_text()) == {
        "num_outputs": 4, "pooling": "mean", "squeeze": False, "bias": True, "pad_token_id": tok.pad_token_id,
    }
    state = torch.load(tmp_path / "head.pt", weights_only=True)
    assert set(state) == {"weight", "bias"}
    torch.testing.assert_close(state["weight"], clf.head.weight.detach())
    rm = scalar_head_model(spec(), tokenizer=tok)
    rm.save_pretrained(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "head.json").read_text()) == {
        "num_outputs": 1, "pooling": "last", "squeeze": True, "bias": False, "pad_token_id": tok.pad_token_id,
    }
    assert isinstance(rm, HeadModel) and rm.config is rm.backbone.config


# -- LoRA ----------------------------------------------------------------------------------------

def test_lora_only_adapters_train_and_disable_adapter_gives_base(tok):
    torch.manual_seed(0)
    net = load_model(spec(lora=LoraSpec(r=4, alpha=8, dropout=0.0)), tokenizer=tok).eval()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    # 7 linear modules; r=4: attention 4 x (4*32 + 32*4) + gate/up 2 x (4*32 + 64*4) + down (4*64 + 32*4)
    assert sum(p.numel() for p in trainable_parameters(net)) == 4 * 256 + 2 * 384 + 384 == 2176
    assert not any(p.requires_grad for n, p in net.named_parameters() if "lora_" not in n)

    ids, mask = batch(tok, ["hello", "hi"])
    with torch.no_grad():
        base = net(input_ids=ids, attention_mask=mask).logits  # lora_B = 0 at init
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
        adapted = net(input_ids=ids, attention_mask=mask).logits
        with net.disable_adapter():
            disabled = net(input_ids=ids, attention_mask=mask).logits
        again = net(input_ids=ids, attention_mask=mask).logits
    assert (adapted - base).abs().max() > 1e-3
    torch.testing.assert_close(disabled, base)
    torch.testing.assert_close(again, adapted)


def test_lora_on_backbone_head(tok):
    rm = scalar_head_model(spec(lora=LoraSpec(r=2, alpha=4, dropout=0.0)), tokenizer=tok)
    ids, mask = batch(tok, ["ab", "abc"])
    assert rm(ids, mask).shape == (2,)
    trainable = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable and rm.head.bias is None  # scalar heads have no bias (HF `score`)
    assert all(n.startswith("head.") or "lora_" in n for n in trainable)


# -- reading position and dropout ----------------------------------------------------------------

def test_read_mask_skips_trailing_pad_ids_like_hf_sequence_classifiers():
    from lit_rlhf.models import read_mask

    pad_id = 2  # also the EOS: lit_rlhf's appended EOS is skipped, as HF skips config.pad_token_id
    ids = torch.tensor([[5, 6, 2, 2], [2, 5, 6, 2], [2, 2, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0]])
    assert read_mask(ids, mask, pad_id).tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]]
    assert read_mask(ids, mask, None) is mask
    hidden = torch.arange(3 * 4, dtype=torch.float32).reshape(3, 4, 1)
    # rows read at 1, 2 and (only pad ids: the last attended) 1 — HF reads the rightmost non-pad token
    assert pool(hidden, read_mask(ids, mask, pad_id), "last").flatten().tolist() == [1.0, 6.0, 9.0]


def test_disable_dropout_covers_modules_functional_attention_dropout_and_config(tok):
    from lit_rlhf.models import disable_dropout, dropout_probabilities

    net = load_model(ModelSpec(config={**TINY, "attention_dropout": 0.5}), tokenizer=tok)
    assert net.training and 0.5 in dropout_probabilities(net)  # Llama passes a float to its attention function
    ids, mask = batch(tok, ["hello there", "hi"])
    with torch.no_grad():
        noisy = [net(input_ids=ids, attention_mask=mask).logits for _ in range(2)]
    assert (noisy[0] - noisy[1]).abs().max() > 1e-4
    assert disable_dropout(net) is net and set(dropout_probabilities(net)) == {0.0}
    assert net.config.attention_dropout == 0.0 and net.training
    with torch.no_grad():
        torch.testing.assert_close(net(input_ids=ids, attention_mask=mask).logits,
                                   net.eval()(input_ids=ids, attention_mask=mask).logits)


def test_a_model_folder_that_does_not_exist_is_a_clear_error(tmp_path, monkeypatch):
    """A typo in a local model folder: the error names it and its absolute path, not only the hub's failure."""
    from lit_rlhf.models import load_tokenizer

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"model 'my_modle': no such local folder \({tmp_path}/my_modle\)"):
        load_tokenizer("my_modle")
