"""Modality routing: every token goes through the weights of its own modality, and only those.

EVEv2 gives each decoder layer a text copy and a vision copy of its norms, attention projections and MLP. The official
code runs both copies on every token and blends the results with a 0/1 mask; for a 0/1 mask that is the same as
sending each row through one copy. `ModalityRouter` does the latter: it gathers the rows of each modality once, runs
each weight set on its own rows, and puts the results back in sequence order. `DenseBlendRouter` is the official
computation, kept only as the reference that tests and benchmarks compare against.
"""

from collections.abc import Callable

import torch

RoutedFn = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]


class TextOnlyRouter:
    """No image token in the chunk (e.g. every decode step): text weights only, exactly a plain Qwen2 layer."""

    def __call__(self, hidden_states: torch.Tensor, text_fn: RoutedFn, vision_fn: RoutedFn):
        return text_fn(hidden_states)


class ModalityRouter:
    """Sends text rows through `text_fn` and image rows through `vision_fn`, each function seeing only its rows."""

    def __init__(self, vision_mask: torch.Tensor):
        flat_mask = vision_mask.reshape(-1).bool()  # [B*L]
        text_index = (~flat_mask).nonzero().squeeze(1)
        vision_index = flat_mask.nonzero().squeeze(1)
        self.num_text = text_index.numel()
        # `order` lists text rows then image rows; `inverse` puts a tensor in that order back in sequence order.
        self.order = torch.cat([text_index, vision_index])
        self.inverse = torch.empty_like(self.order)
        self.inverse[self.order] = torch.arange(self.order.numel(), device=self.order.device)

    def __call__(self, hidden_states: torch.Tensor, text_fn: RoutedFn, vision_fn: RoutedFn):
        if text_fn is vision_fn:  # this part has no vision twin: one weight set for every token
            return text_fn(hidden_states)
        lead_shape = hidden_states.shape[:-1]
        grouped = hidden_states.reshape(-1, hidden_states.shape[-1]).index_select(0, self.order)
        text_out = text_fn(grouped[: self.num_text])
        vision_out = vision_fn(grouped[self.num_text :])
        if isinstance(text_out, tuple):
            return tuple(self._merge(t, v, lead_shape) for t, v in zip(text_out, vision_out))
        return self._merge(text_out, vision_out, lead_shape)

    def _merge(self, text_out: torch.Tensor, vision_out: torch.Tensor, lead_shape: torch.Size) -> torch.Tensor:
        merged = torch.cat([text_out, vision_out.to(text_out.dtype)]).index_select(0, self.inverse)
        return merged.view(*lead_shape, merged.shape[-1])


class DenseBlendRouter:
    """Reference only: the official computation, both weight sets on every token, blended by the mask."""

    def __init__(self, vision_mask: torch.Tensor):
        self.mask = vision_mask.unsqueeze(-1)  # [B, L, 1]

    def __call__(self, hidden_states: torch.Tensor, text_fn: RoutedFn, vision_fn: RoutedFn):
        text_out, vision_out = text_fn(hidden_states), vision_fn(hidden_states)
        if isinstance(text_out, tuple):
            return tuple(self._blend(t, v) for t, v in zip(text_out, vision_out))
        return self._blend(text_out, vision_out)

    def _blend(self, text_out: torch.Tensor, vision_out: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(text_out.dtype)
        return text_out * (1 - mask) + vision_out * mask


def route_by_modality(vision_mask: torch.Tensor | None, router_class: type = ModalityRouter):
    """The router for one forward pass; `vision_mask` is [B, L] with 1 at image-token positions."""
    if vision_mask is None or not bool(vision_mask.any()):
        return TextOnlyRouter()
    return router_class(vision_mask)
