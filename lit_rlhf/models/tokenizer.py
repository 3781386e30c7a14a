"""A byte-level tokenizer built in code (no files): every UTF-8 string round-trips exactly.

Vocabulary = 4 special tokens + the 256 byte symbols of GPT-2's byte-to-unicode map. It is a
``PreTrainedTokenizerFast``, so ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` work.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

# A minimal chat template for tokenizers that have none (also used by the tiny tokenizer).
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges: ids 0-3 are specials, 4-259 the 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel

    specials = list(SPECIAL_TOKENS.values())
    alphabet = ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials)}
    for sym in sorted(alphabet):
        vocab[sym] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    return tok
