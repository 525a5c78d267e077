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
    from vllm import ModelRegistry
    from vllm.transformers_utils.chat_templates.registry import (
        _MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK,
        register_chat_template_fallback_path,
    )

    import model.auto  # noqa: F401 -- registers EveConfig with transformers' AutoConfig (vLLM falls back to it)

    for architecture in ARCHITECTURES:
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, "model.vllm.modeling:EveVllmForCausalLM")
    if _MODEL_TYPE_TO_CHAT_TEMPLATE_FALLBACK.get("eve-qwen2") != CHAT_TEMPLATE:
        register_chat_template_fallback_path("eve-qwen2", CHAT_TEMPLATE)
    _prefer_eve_chat_template()
    _cpu_lora_ops_skip_base_rows()


def _prefer_eve_chat_template() -> None:
    """EVEv2 checkpoints get the EVEv2 template unless the server is given one (`--chat-template`).

    The official checkpoint's tokenizer carries Qwen2.5's ChatML template, which vLLM would otherwise pick before any
    fallback; EVEv2 was trained on Vicuna-style text (model/chat_template.py). vLLM's renderer looks the resolver up
    by name at each call, so wrapping that name is enough; if a vLLM version moves it, `--chat-template
    model/vllm/chat_template.jinja` does the same.
    """
    try:
        from vllm.renderers import hf
    except ImportError:
        return
    resolve = hf.resolve_chat_template
    if getattr(resolve, "eve_wrapped", False):
        return

    def resolve_chat_template(tokenizer, chat_template, tools, *, model_config):
        if chat_template is None and getattr(model_config.hf_config, "model_type", None) == "eve-qwen2":
            return CHAT_TEMPLATE.read_text()
        return resolve(tokenizer, chat_template, tools, model_config=model_config)

    setattr(resolve_chat_template, "eve_wrapped", True)  # noqa: B010 -- a marker on a function object
    hf.resolve_chat_template = resolve_chat_template


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


__all__ = ["ARCHITECTURES", "CHAT_TEMPLATE", "register"]
