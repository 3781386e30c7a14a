"""Model specs, loaders, heads and log-prob helpers."""

from lit_rlhf.models.dropout import DropoutPolicy, apply_dropout_policy, disable_dropout, dropout_probabilities
from lit_rlhf.models.heads import (
    HeadModel,
    export_head,
    pool,
    read_mask,
    scalar_head_model,
    sequence_classifier,
    token_classifier,
)
from lit_rlhf.models.loading import apply_lora, hidden_size, load_model, load_tokenizer, trainable_parameters
from lit_rlhf.models.logprobs import (
    ForwardLayout,
    PrefixCachePlan,
    PrefixPlan,
    SharedPrefixPlan,
    completion_logps,
    gather_last,
    last_token_index,
    pack_rows,
    packed_sequence_logps,
    packing_plan,
    packing_width,
    predicted_logps,
    prefix_cache_plan,
    prefix_cache_refusal,
    selected_logits,
    sequence_logps,
    shared_hidden_states,
    shared_prefix_plan,
    shared_prefix_refusal,
    shared_sequence_logps,
    token_logps,
)
from lit_rlhf.models.spec import LoraSpec, ModelLike, ModelSpec
from lit_rlhf.models.tokenizer import build_byte_tokenizer

__all__ = [
    "DropoutPolicy", "ForwardLayout", "HeadModel", "LoraSpec", "ModelLike", "ModelSpec", "PrefixCachePlan",
    "PrefixPlan", "apply_dropout_policy",
    "apply_lora", "build_byte_tokenizer", "completion_logps", "disable_dropout", "dropout_probabilities",
    "export_head",    "gather_last", "hidden_size", "last_token_index", "load_model", "load_tokenizer", "pack_rows",
    "packed_sequence_logps", "packing_plan", "packing_width", "pool", "predicted_logps", "prefix_cache_plan",
    "prefix_cache_refusal", "read_mask",
    "scalar_head_model", "selected_logits", "sequence_classifier", "sequence_logps", "shared_hidden_states",
    "shared_prefix_plan", "shared_prefix_refusal", "shared_sequence_logps", "SharedPrefixPlan", "token_classifier",
    "token_logps", "trainable_parameters",
]
