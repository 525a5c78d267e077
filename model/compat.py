"""What this library needs from transformers that changed between 5.19 and 5.24, in one place.

vLLM's environments pin transformers 5.19-5.20 while this project's app pins the newest, so the model code runs on
both ends. Two things moved in that range:

- the KV cache argument and output field were renamed from `past_key_values` to `cache` (5.24 keeps the old name
  as a deprecated alias of the argument only);
- `slice_logits_to_keep`, the helper that keeps the positions `generate` asks logits for, is new;
- `gradient_checkpointing_enable` became `activation_checkpointing_enable` (the old name warns);
- `generate` passes `mm_token_type_ids` cut to each step's tokens (before, `EveForCausalLM` cuts them itself).
"""

from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

# The name transformers uses for the KV cache in `forward` arguments and model outputs.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

try:
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # transformers < 5.24

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        """Positions of [B, L, D] `hidden_states` to compute logits for: the last `logits_to_keep` (0: all), or the
        given indices, as Qwen2's head did before the helper existed."""
        if isinstance(logits_to_keep, int):
            return hidden_states[:, -logits_to_keep:, :] if logits_to_keep else hidden_states
        return hidden_states[:, logits_to_keep, :]


def enable_activation_checkpointing(model: Any) -> None:
    """Non-reentrant activation (gradient) checkpointing on a transformers model, under either method name."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """`{name: cache}` under the installed transformers' name, for masks and model outputs."""
    return {CACHE_NAME: cache}


__all__ = ["CACHE_NAME", "cache_kwargs", "enable_activation_checkpointing", "slice_logits_to_keep"]
