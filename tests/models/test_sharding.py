"""Which modules FSDP sharding wraps: transformer blocks, self-contained HF sub-models, never tied halves."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_rlhf.models import ModelSpec, load_model, load_tokenizer, scalar_head_model
from lit_rlhf.models.sharding import _self_contained, block_classes, shard_children


def test_blocks_of_causal_lm_head_model_and_lora(tiny_spec):
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    tok = load_tokenizer(tiny_spec)
    assert block_classes(load_model(tiny_spec, "causal_lm", tok)) == {LlamaDecoderLayer}
    assert block_classes(scalar_head_model(tiny_spec, tok)) == {LlamaDecoderLayer}
    pytest.importorskip("peft")
    lora = ModelSpec.of({"config": tiny_spec.config, "lora": {"r": 2, "alpha": 4}})
    assert block_classes(load_model(lora, "causal_lm", tok)) == {LlamaDecoderLayer}


def test_tied_embeddings_keep_the_decoder_in_the_outer_unit(tiny_spec):
    tok = load_tokenizer(tiny_spec)
    lm = load_model(tiny_spec, "causal_lm", tok)
    assert lm.lm_head.weight is lm.model.embed_tokens.weight  # tied: must stay in one FSDP unit
    assert not _self_contained(lm, "model")
    untied = load_model(ModelSpec(config={**tiny_spec.config, "tie_word_embeddings": False}), "causal_lm", tok)
    assert _self_contained(untied, "model")
    assert _self_contained(scalar_head_model(tiny_spec, tok), "backbone")  # the head's backbone is its own unit


def test_trainable_weights_outside_sub_models_are_refused():
    class Owner(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 2)
            self.prototypes = torch.nn.Parameter(torch.zeros(3, 2))

    match = r"Owner keeps trainable parameters outside its sub-models \(\['prototypes'\]\)"
    with pytest.raises(ValueError, match=match):
        shard_children(Owner(), mesh=None)
