"""Model-family matrix: every method trains, exports, and gives ``transformers`` the same numbers.

Five tiny random models built from configs, saved as Hugging Face folders, with byte-level BPE tokenizers
trained here that reproduce each family's special-token layout:

* ``gpt2``: no pad token, BOS = EOS = UNK, no BOS added, dropout 0.1 in the config;
* ``llama3``: no pad token, distinct BOS / EOS, BOS added;
* ``mistral``: no pad token, UNK present, BOS added;
* ``qwen2``: a pad token distinct from EOS, no BOS;
* ``gemma2``: a pad token, BOS added, attention and final-logit soft-capping.

For each family SFT, RewardModel, DPO, ProcessRewardModel, WeakToStrong and PPO train 2 steps from the folder,
export, and the export reloaded with ``transformers`` alone gives lit_rlhf's log-probs / rewards / logits
(fp32). Reward models follow the usage contract: ``tok(prompt + completion)`` ->
``AutoModelForSequenceClassification`` -> logit, one text or a left/right-padded batch (with or without an
EOS of the user's), equals the reward lit_rlhf assigns in training and in PPO scoring (``ModelReward``).
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import quiet_trainer, write_jsonl

from lit_rlhf.data import (
    PreferenceDataModule,
    PromptDataModule,
    SFTDataModule,
    StepLabelDataModule,
    WeakLabelDataModule,
)
from lit_rlhf.data.collate import pad
from lit_rlhf.data.tokenize import Encoder
from lit_rlhf.models import dropout_probabilities
from lit_rlhf.models.checkpoint import load_head_model
from lit_rlhf.modules import DPO, PPO, SFT, ProcessRewardModel, RewardModel, WeakToStrong
from lit_rlhf.rollout.rewards import ModelReward

transformers = pytest.importorskip("transformers")

# special tokens (in id order), and the tokenizer's named ones; "bos_added": the post-processor prepends BOS
LAYOUTS = {
    "gpt2": dict(specials=["<|endoftext|>"], bos="<|endoftext|>", eos="<|endoftext|>", unk="<|endoftext|>",
                 pad=None, bos_added=False),
    "llama3": dict(specials=["<|begin_of_text|>", "<|end_of_text|>"], bos="<|begin_of_text|>",
                   eos="<|end_of_text|>", unk=None, pad=None, bos_added=True),
    "mistral": dict(specials=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", unk="<unk>", pad=None, bos_added=True),
    "qwen2": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>",
                  unk="<|endoftext|>", pad="<|endoftext|>", bos_added=False),
    "gemma2": dict(specials=["<pad>", "<eos>", "<bos>", "<unk>"], bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>",
                   bos_added=True),
}
WORDS = ["good", "bad", "fine", "right", "wrong", "step", "answer", "the", "is", "q", "x", "y"]
SIZE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=128)


def train_tokenizer(layout: dict):
    """Byte-level BPE (vocab 300) trained on a few hundred strings, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) + str(rng.randint(0, 99)) * rng.randint(0, 1) for _ in range(8))
              for _ in range(300)]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=layout["specials"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if layout["bos_added"]:
        bos = layout["bos"]
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, core.token_to_id(bos))])
    named = {f"{k}_token": layout[k] for k in ("bos", "eos", "unk", "pad") if layout[k] is not None}
    return PreTrainedTokenizerFast(tokenizer_object=core, **named)


def family_config(family: str, tok):
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, **ids)  # dropout 0.1
    if family == "gemma2":
        return transformers.Gemma2Config(**SIZE, **ids, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
                                         final_logit_softcapping=3.0, attn_logit_softcapping=5.0)
    cls = {"llama3": transformers.LlamaConfig, "mistral": transformers.MistralConfig, "qwen2": transformers.Qwen2Config}
    return cls[family](**SIZE, **ids, tie_word_embeddings=family == "qwen2")


def save_family(name: str, folder) -> str:
    """Save a random tiny model of the family with its tokenizer in ``folder``; return the folder."""
    tok = train_tokenizer(LAYOUTS[name])
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(family_config(name, tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def family(request, tmp_path_factory):
    """``(name, folder)`` of a family's random tiny model."""
    return request.param, save_family(request.param, tmp_path_factory.mktemp(request.param))


def test_tokenizers_reproduce_the_family_layouts(family):
    name, folder = family
    layout, tok = LAYOUTS[name], transformers.AutoTokenizer.from_pretrained(folder)
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (
        layout["pad"], layout["bos"], layout["eos"], layout["unk"])
    ids = tok("good q12: fine")["input_ids"]
    assert (ids[0] == tok.bos_token_id) == layout["bos_added"] and ids[-1] != tok.eos_token_id
    assert 256 < len(tok) <= 300


# -- data ----------------------------------------------------------------------------------------------------------

def _text(rng, k):
    return " ".join(rng.choice(WORDS) for _ in range(k))


def sft_rows(n=8, seed=0):
    rng = random.Random(seed)
    return [{"prompt": f"q{rng.randint(0, 99)}:", "completion": " " + _text(rng, rng.randint(1, 5))} for _ in range(n)]


def pair_rows(n=8, seed=0):
    rng = random.Random(seed)
    return [{"prompt": f"q{rng.randint(0, 99)}:", "chosen": f" good {_text(rng, rng.randint(0, 4))}",
             "rejected": f" bad {_text(rng, rng.randint(0, 3))}"} for _ in range(n)]


def step_rows(n=8, seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        wrong = [rng.random() < 0.4 for _ in range(rng.randint(1, 3))]
        rows.append({"prompt": f"q{rng.randint(0, 99)}:", "labels": [not w for w in wrong],
                     "completions": [f" {'wrong' if w else 'right'} {_text(rng, 2)}" for w in wrong]})
    return rows


def weak_rows(n=8, seed=0):
    rng = random.Random(seed)
    return [{"text": f"{_text(rng, rng.randint(1, 4))} {'right' if y else 'wrong'}", "label": int(y)}
            for y in (rng.random() < 0.5 for _ in range(n))]


def fit(module, datamodule, tmp_path, steps=2):
    quiet_trainer(tmp_path, max_steps=steps, limit_val_batches=0).fit(module, datamodule=datamodule)
    assert module.global_step == steps or type(module).__name__ == "PPO"  # PPO: optimizer steps, manual
    module.eval()
    return module


def lr(p):
    return torch.optim.AdamW(p, lr=1e-2)


def padded(seqs, pad_id, side="right"):
    return pad(seqs, pad_id, side), pad([[1] * len(s) for s in seqs], 0, side)


# -- policies: the exported causal LM gives lit_rlhf's completion log-probs ------------------------------------

def hf_completion_logps(folder, ids, mask, completion_mask):
    """Summed completion log-probs under ``AutoModelForCausalLM`` of ``folder`` (computed here, from logits)."""
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask).logits.float()
    logps = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (logps * completion_mask[:, 1:]).sum(-1)


def check_policy_export(module, folder, tmp_path, base_folder):
    out = module.export(tmp_path / "export")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = Encoder(module.tokenizer, 64)
    rows = sft_rows(6, seed=7)
    encoded = [enc.pair(r["prompt"], r["completion"], "test") for r in rows]
    for r, (_, _, prompt_ids) in zip(rows, encoded):  # the exported tokenizer encodes the prompt as lit_rlhf does
        assert tok(r["prompt"])["input_ids"] == prompt_ids
    ids, mask = padded([e[0] for e in encoded], module.tokenizer.pad_token_id)
    completion_mask = pad([e[1] for e in encoded], 0, "right")
    with torch.no_grad():
        ours = module.policy_logps(ids, mask, completion_mask)[0]
    theirs = hf_completion_logps(out, ids, mask, completion_mask)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-5)
    before = hf_completion_logps(base_folder, ids, mask, completion_mask)
    assert (before - ours).abs().max() > 1e-3  # the export holds the trained weights


def test_decode_loop_gives_generates_greedy_tokens(family):
    """``generate``'s decode loop gives ``model.generate``'s greedy tokens (left padding, varied prompt lengths,
    groups of identical prompts); the families it does not cover fall back to ``model.generate``: Mistral (a
    sliding-window cache) and Gemma-2 (hybrid sliding-window cache, soft-capping)."""
    from lit_rlhf.models import load_model, load_tokenizer
    from lit_rlhf.models.kv_cache import cache_refusal, new_cache
    from lit_rlhf.rollout.generation import LOOP_MODEL_TYPES, SamplingConfig, generate, loop_refusal

    name, folder = family
    tok = load_tokenizer(folder)
    model = load_model(folder, tokenizer=tok).eval()
    rows = [tok(r["prompt"] + r["completion"])["input_ids"] for r in sft_rows(5, seed=3) for _ in range(3)]
    assert len({len(r) for r in rows}) > 1
    cfg = SamplingConfig(max_new_tokens=10)
    refusal = loop_refusal(model, tok, cfg)
    hf = generate(model, tok, rows, cfg, decoder="hf")[1]
    assert torch.equal(generate(model, tok, rows, cfg)[1], hf)
    if name in ("mistral", "gemma2"):
        assert refusal is not None and "sliding" in str(cache_refusal(new_cache(model)))
    else:
        assert model.config.model_type in LOOP_MODEL_TYPES and refusal is None
        assert torch.equal(generate(model, tok, rows, cfg, decoder="loop")[1], hf)

def test_sft_exports_its_log_probs(family, tmp_path):
    _, folder = family
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", sft_rows()), batch_size=4, max_length=64)
    check_policy_export(fit(SFT(model=folder, optimizer=lr), dm, tmp_path), folder, tmp_path, folder)


def test_dpo_exports_its_log_probs(family, tmp_path):
    _, folder = family
    dm = PreferenceDataModule(train=write_jsonl(tmp_path / "t.jsonl", pair_rows()), batch_size=4, max_length=64)
    check_policy_export(fit(DPO(model=folder, optimizer=lr), dm, tmp_path), folder, tmp_path, folder)


def test_ppo_exports_its_log_probs(family, tmp_path):
    _, folder = family
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": r["prompt"]} for r in sft_rows(8)])
    dm = PromptDataModule(train=prompts, batch_size=4, max_length=32)
    module = PPO(model=folder, sampling={"temperature": 1.0, "max_new_tokens": 4}, ppo_epochs=1, num_mini_batches=1,
                 reward_fn=lambda p, c: torch.tensor([float(len(x)) for x in c]), optimizer=lr)
    check_policy_export(fit(module, dm, tmp_path), folder, tmp_path, folder)


# -- reward model: the usage contract -----------------------------------------------------------------------------

def hf_logits(hf, tok, texts, side=None, positions=False):
    """Logits the way any HF classifier is used: ``tok(texts)`` -> the model; one text at a time (``side=None``)
    or a batch padded on ``side`` (``positions``: with position ids counted from each row's first real token)."""
    with torch.no_grad():
        if side is None:
            return torch.cat([hf(**tok(t, return_tensors="pt")).logits for t in texts])
        tok.padding_side = side
        inputs = tok(texts, return_tensors="pt", padding=True)
        if positions:
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return hf(**inputs).logits


def check_padding_sides(name, hf, tok, texts, expected):
    """One text at a time, right- and left-padded batches all give ``expected`` ``(N, C)``.

    Plain left padding shifts absolute positions: GPT-2 then gives other logits (in ``transformers`` alone
    too), rotary models do not; with position ids from the attention mask every family matches.
    """
    close = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf_logits(hf, tok, texts), expected, **close)
    torch.testing.assert_close(hf_logits(hf, tok, texts, "right"), expected, **close)
    torch.testing.assert_close(hf_logits(hf, tok, texts, "left", positions=True), expected, **close)
    left = hf_logits(hf, tok, texts, "left")
    if name == "gpt2":
        assert (left - expected).abs().max() > 1e-3
    else:
        torch.testing.assert_close(left, expected, **close)


def test_reward_model_export_follows_the_usage_contract(family, tmp_path):
    name, folder = family
    dm = PreferenceDataModule(train=write_jsonl(tmp_path / "t.jsonl", pair_rows()), batch_size=4, max_length=64)
    module = fit(RewardModel(model=folder, optimizer=lr), dm, tmp_path)
    out = module.export(tmp_path / "export")
    rows = pair_rows(6, seed=3)
    prompts, completions = [r["prompt"] for r in rows] * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows]

    # what training computes: Encoder ids (prompt + completion + EOS), right-padded, through the module
    enc = Encoder(module.tokenizer, 64)
    seqs = [enc.pair(p, c, "test")[0] for p, c in zip(prompts, completions)]
    assert all(s[-1] == module.tokenizer.eos_token_id for s in seqs)
    with torch.no_grad():
        trained = module(*padded(seqs, module.tokenizer.pad_token_id))
    texts = [p + c for p, c in zip(prompts, completions)]
    tok = transformers.AutoTokenizer.from_pretrained(out)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    assert hf.config.num_labels == 1
    assert [tok(t)["input_ids"] for t in texts] == [s[:-1] for s in seqs]  # same ids but the appended EOS

    check_padding_sides(name, hf, tok, texts, trained.unsqueeze(-1))
    with_eos = [t + tok.eos_token for t in texts]  # TRL's RewardTrainer convention gives the same rewards
    torch.testing.assert_close(hf_logits(hf, tok, with_eos, "right")[:, 0], trained, atol=1e-5, rtol=1e-5)
    # PPO scoring: the module's head and the export loaded as a reward source
    torch.testing.assert_close(ModelReward(module.model, module.tokenizer)(prompts, completions), trained,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ModelReward.load(out)(prompts, completions), trained, atol=1e-5, rtol=1e-5)
    assert trained.std() > 0


# -- classifiers ---------------------------------------------------------------------------------------------------

def test_process_reward_model_exports_token_classification(family, tmp_path):
    _, folder = family
    dm = StepLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", step_rows()), batch_size=4, max_length=64)
    module = fit(ProcessRewardModel(model=folder, optimizer=lr), dm, tmp_path)
    out = module.export(tmp_path / "export")
    hf = transformers.AutoModelForTokenClassification.from_pretrained(out, dtype=torch.float32).eval()
    batch = next(iter(dm.train_dataloader()))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        ours, theirs = module(ids, mask), hf(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(theirs[real], ours[real], atol=1e-5, rtol=1e-5)
    steps = batch["labels"] != -100
    assert torch.equal(theirs.argmax(-1)[steps], ours.argmax(-1)[steps])
    reloaded, _ = load_head_model(out)  # the export as a reward source reads it (`source: prm, path: <export>`)
    assert reloaded.pooling == "none" and reloaded.head.out_features == module.model.head.out_features
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(ids, mask)[real], ours[real], atol=1e-5, rtol=1e-5)


def test_weak_to_strong_exports_sequence_classification(family, tmp_path):
    name, folder = family
    dm = WeakLabelDataModule(train=write_jsonl(tmp_path / "t.jsonl", weak_rows()), batch_size=4, max_length=64)
    module = fit(WeakToStrong(model=folder, optimizer=lr), dm, tmp_path)
    out = module.export(tmp_path / "export")
    texts = [r["text"] for r in weak_rows(6, seed=5)]
    with torch.no_grad():  # training encodes a text as tok(text) (Encoder.weak)
        ours = module(*padded([module.tokenizer(t)["input_ids"] for t in texts], module.tokenizer.pad_token_id))
    tok = transformers.AutoTokenizer.from_pretrained(out)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    check_padding_sides(name, hf, tok, texts, ours)
    assert torch.equal(hf_logits(hf, tok, texts, "right").argmax(-1), ours.argmax(-1))
    assert ours.abs().max() > 0  # the zero-initialised head has moved
    reloaded, _ = load_head_model(out)  # a two-class classifier export (as an ORM's) reads back whole
    assert reloaded.head.out_features == 2 and not reloaded.squeeze
    with torch.no_grad():
        ids, mask = padded([module.tokenizer(t)["input_ids"] for t in texts], module.tokenizer.pad_token_id)
        torch.testing.assert_close(reloaded.eval()(ids, mask), ours, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not a sequence or token classifier"):
        load_head_model(folder)  # a causal LM folder is no reward model: no silently random head


# -- dropout: one policy per method, whatever the loading path ----------------------------------------------------

def test_dropout_is_the_methods_policy_for_every_loading_path(tmp_path):
    folder = save_family("gpt2", tmp_path / "gpt2")  # its config has dropout 0.1
    tiny = {"config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "num_key_value_heads": 2, "attention_dropout": 0.1}}
    sft = SFT(model=folder)
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", sft_rows()), batch_size=4, max_length=64)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(sft, datamodule=dm)
    ckpt = str(tmp_path / "sft.ckpt")
    trainer.save_checkpoint(ckpt)
    for model in (folder, tiny):
        assert 0.1 in dropout_probabilities(SFT(model=model).model)  # the model's own setting, in train mode
        assert SFT(model=model).model.training and RewardModel(model=model).model.training
        assert 0.1 in dropout_probabilities(RewardModel(model=model).model)
        dpo = DPO(model=model)
        assert dpo.model.training and set(dropout_probabilities(dpo.model)) == {0.0}
    rebuilt = DPO(model=folder, init_from=ckpt)  # the .ckpt rebuild path
    assert rebuilt.model.training and set(dropout_probabilities(rebuilt.model)) == {0.0}
    # in train mode, DPO's policy log-probs are deterministic and equal the reference's at step 0
    rows = sft_rows(4, seed=9)
    enc = Encoder(rebuilt.tokenizer, 64)
    encoded = [enc.pair(r["prompt"], r["completion"], "test") for r in rows]
    ids, mask = padded([e[0] for e in encoded], rebuilt.tokenizer.pad_token_id)
    cm = pad([e[1] for e in encoded], 0, "right")
    dpo = DPO(model=folder).train()
    with torch.no_grad():
        torch.testing.assert_close(dpo.policy_logps(ids, mask, cm)[0], dpo.reference_logps(ids, mask, cm))


def test_heads_without_an_exact_hf_class_export_backbone_and_head(tiny_spec, tmp_path):
    """Mean pooling has no ``transformers`` class: the export says so and ``load_reward_head`` reads it back."""
    module = RewardModel(model=tiny_spec, pooling="mean")
    torch.nn.init.normal_(module.model.head.weight)
    with pytest.warns(UserWarning, match="no exactly matching transformers head class"):
        out = module.export(tmp_path / "rm")
    assert (out / "head.pt").is_file() and (out / "head.json").is_file()
    prompts, completions = ["1+2=", "20*3="], ["3", "60 and more"]
    module.eval()
    torch.testing.assert_close(ModelReward.load(out)(prompts, completions),
                               ModelReward(module.model, module.tokenizer)(prompts, completions))
