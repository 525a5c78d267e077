"""Train a small byte-level BPE tokenizer with the special tokens EVEv2's chat format relies on.

Official checkpoints bring the Qwen2.5 tokenizer; a model trained from scratch (the project's small default model,
tests' tiny checkpoints) gets one of these instead.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..shared import IMAGE_TOKEN  # written at image positions: a placeholder of its own, not the pad token

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with `<|endoftext|>` as padding, `<|im_end|>` as end and
    `<|image_pad|>` as the image placeholder (its id goes into the model config's `image_token_id`)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[IMAGE_TOKEN],
        model_max_length=32768,
    )
