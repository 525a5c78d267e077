"""EVEv2 on vLLM: an out-of-tree model registered through the `vllm.general_plugins` entry point.

`pip install -e .` (make vllm-setup) declares the entry point; vLLM calls `register()` in every process it starts
(API server, engine core, workers), so that

    python -m vllm.entrypoints.openai.api_server --model <EVEv2 checkpoint folder> --dtype float32

serves an official EVEv2 checkpoint (`EVEQwen2ForCausalLM`) or one of this project's (`EveForCausalLM`) with
continuous batching, prefix caching and tensor parallelism. Importing this package needs no vLLM: the model and its
multimodal processor live in `modeling.py` and `processing.py`, which vLLM imports lazily by name.
"""

from typing import Any

# config.json "architectures" names: the official release's and the one this project's checkpoints carry.
ARCHITECTURES = ("EVEQwen2ForCausalLM", "EveForCausalLM")
# Qwen2.5's tokenizer, the one the official release (BAAI/EVE-7B-HD-v2.0) carries: its embedding has 152,064 rows, the
# tokenizer 151,665 ids, and `<|image_pad|>` is id 151,655 (Qwen2-VL's config default too).
QWEN2_5_VOCAB_SIZE, QWEN2_5_TOKENS, QWEN2_5_IMAGE_PAD_ID = 152064, 151665, 151655


def placeholder_token_id(config: Any) -> int:
    """The vocabulary id of `<|image_pad|>`, which marks image positions on vLLM, from the config alone.

    vLLM builds the model before any tokenizer, and the model's constructor reads no files. This library's checkpoints
    record the id as `image_token_id` (`model.train.build`); the official release writes 0 there (its code marks
    images with 0) and tokenises with Qwen2.5, whose id is known. The multimodal processor checks it against the
    tokenizer (`EveProcessingInfo.image_token_id`).
    """
    if config.image_token_id:
        return int(config.image_token_id)
    if config.vocab_size == QWEN2_5_VOCAB_SIZE:
        return QWEN2_5_IMAGE_PAD_ID
    raise ValueError(
        "config.json has no image_token_id and the vocabulary is not Qwen2.5's: vLLM needs the id of the tokenizer's "
        "<|image_pad|> token there to tell image positions from text"
    )


def tokens_in_use(config: Any) -> int:
    """How many ids the tokenizer produces: the embedding's rows past it are padding, masked so none is sampled (the
    official loader shrinks them away, the library suppresses them). From the config alone, as above."""
    if config.text_vocab_size:
        return min(int(config.text_vocab_size), config.vocab_size)
    return QWEN2_5_TOKENS if config.vocab_size == QWEN2_5_VOCAB_SIZE else config.vocab_size


def register() -> None:
    """Makes vLLM know the `eve-qwen2` config and both architecture names.

    The chat template needs nothing here: vLLM reads the processor's template (`AutoProcessor`, which `model.auto`
    registers) before the tokenizer's, so EVEv2's Vicuna-style format wins over the ChatML template of the official
    checkpoint's Qwen2.5 tokenizer, and writes `<|image_pad|>` for each image, the token `processing.py` expands.
    """
    from vllm import ModelRegistry

    import model.auto  # noqa: F401 -- registers EveConfig and EveProcessor with transformers' Auto classes

    for architecture in ARCHITECTURES:
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, "model.vllm.modeling:EveVllmForCausalLM")
    _cpu_lora_ops_skip_base_rows()


def _cpu_lora_ops_skip_base_rows() -> None:
    """Rows without an adapter get no LoRA delta on the CPU too, so base and adapter requests can share a batch.

    vLLM's PyTorch LoRA ops (its CPU platform) gather each row's adapter weights by slot, and the slot of a row without
    an adapter is -1, which Python indexing reads as the last slot: a base-model request batched beside adapter
    requests got the last adapter's delta (vllm-project/vllm#48421; the GPU kernels skip such rows). The wrappers zero
    those rows' inputs and point them at slot 0, so their delta is zero. Applied only where vLLM's ops show the fault.
    """
    import torch

    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return
    if getattr(lora_ops.bgmv_shrink, "eve_wrapped", False):
        return
    probe = torch.zeros(1, 1)
    lora_ops.bgmv_shrink(torch.ones(1, 2), torch.ones(1, 1, 1, 2), probe, torch.tensor([-1]))
    if not probe.any():  # this vLLM already skips rows without an adapter
        return

    def skip_base_rows(op):
        def wrapped(inputs, weights, output, indices, *args, **kwargs):
            base = (indices < 0).unsqueeze(1)
            if bool(base.any()):
                inputs, indices = inputs.masked_fill(base, 0), indices.clamp_min(0)
            return op(inputs, weights, output, indices, *args, **kwargs)

        setattr(wrapped, "eve_wrapped", True)  # noqa: B010 -- a marker on a function object
        return wrapped

    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"):
        fixed = skip_base_rows(getattr(lora_ops, name))
        setattr(lora_ops, name, fixed)  # the sgmv_* ops (prefill) call these by module name
        setattr(punica_cpu, name, fixed)


__all__ = ["ARCHITECTURES", "placeholder_token_id", "register", "tokens_in_use"]
