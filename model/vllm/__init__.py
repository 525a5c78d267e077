"""EVEv2 on vLLM: an out-of-tree model registered through the `vllm.general_plugins` entry point.

`pip install -e .` (make vllm-setup) declares the entry point; vLLM calls `register()` in every process it starts
(API server, engine core, workers), so that

    python -m vllm.entrypoints.openai.api_server --model <EVEv2 checkpoint folder> --dtype float32

serves an official EVEv2 checkpoint (`EVEQwen2ForCausalLM`) or one of this project's (`EveForCausalLM`) with
continuous batching, prefix caching and tensor parallelism. Importing this package needs no vLLM: the model and its
multimodal processor live in `modeling.py` and `processing.py`, which vLLM imports lazily by name.
"""

from pathlib import Path

# config.json "architectures" names: the official release's and the one this project's checkpoints carry.
ARCHITECTURES = ("EVEQwen2ForCausalLM", "EveForCausalLM")
CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")


def register() -> None:
    """Makes vLLM know the `eve-qwen2` config, both architecture names and the EVEv2 chat template."""
    import model  # noqa: F401 -- registers EveConfig with transformers' AutoConfig (vLLM falls back to it)
    from vllm import ModelRegistry
    from vllm.transformers_utils.chat_templates.registry import (
        _MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK,
        register_chat_template_fallback_path,
    )

    for architecture in ARCHITECTURES:
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, "model.vllm.modeling:EveVllmForCausalLM")
    # Used when the tokenizer brings no chat template of its own (this project's checkpoints). The official
    # checkpoint's tokenizer carries Qwen's ChatML template, which is not EVEv2's format: serve it with
    # `--chat-template` pointing at this file (see README).
    if _MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK.get("eve-qwen2") != CHAT_TEMPLATE:
        register_chat_template_fallback_path("eve-qwen2", CHAT_TEMPLATE)


__all__ = ["ARCHITECTURES", "CHAT_TEMPLATE", "register"]
