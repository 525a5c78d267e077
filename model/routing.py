"""Modality routing: every token goes through the weights of its own modality, and only those.

EVEv2 gives each decoder layer a text copy and a vision copy of its norms, attention projections and MLP. The official
code runs both copies on every token and blends the results with a 0/1 mask; for a 0/1 mask that is the same as
sending each row through one copy. A router splits a [B, L, D] sequence into the rows of each modality and merges
per-modality results back into sequence order. The decoder keeps its residual stream split between layers and
merges only the attention inputs, so routing costs a few copies per layer, not a second set of weights.

- `ModalityRouter`: image tokens come in contiguous runs (one per image), so splitting and merging are slices and one
  concatenation; a prompt with one image splits into a zero-copy view.
- `TextOnlyRouter`: no image token in the chunk (e.g. every decode step): exactly a plain Qwen2 layer.
- `DenseBlendRouter`: the official computation (both weight sets on every token, blended by the mask), kept only as
  the reference that tests and benchmarks compare against.
"""

import itertools

import torch


class TextOnlyRouter:
    def split(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, None]:
        return hidden_states, None

    def merge(self, text_out: torch.Tensor, vision_out: None) -> torch.Tensor:
        return text_out


class ModalityRouter:
    def __init__(self, vision_mask: torch.Tensor):
        flat_mask = vision_mask.reshape(-1).bool()  # [B*L]
        self.lead_shape = vision_mask.shape
        changes = (flat_mask[1:] != flat_mask[:-1]).nonzero().squeeze(1) + 1
        bounds = [0, *changes.tolist(), flat_mask.numel()]
        first_is_vision = bool(flat_mask[0])
        self.text_runs: list[tuple[int, int]] = []
        self.vision_runs: list[tuple[int, int]] = []
        # For each run in sequence order: (is_vision, start, end) within the split rows of its modality.
        self.order: list[tuple[bool, int, int]] = []
        offsets = {False: 0, True: 0}
        for i, (start, end) in enumerate(itertools.pairwise(bounds)):
            is_vision = first_is_vision ^ (i % 2 == 1)
            (self.vision_runs if is_vision else self.text_runs).append((start, end))
            self.order.append((is_vision, offsets[is_vision], offsets[is_vision] + end - start))
            offsets[is_vision] += end - start

    def split(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L, D] -> (text rows [N_text, D], image rows [N_image, D])."""
        rows = hidden_states.reshape(-1, hidden_states.shape[-1])
        return _gather(rows, self.text_runs), _gather(rows, self.vision_runs)

    def merge(self, text_out: torch.Tensor, vision_out: torch.Tensor) -> torch.Tensor:
        """Inverse of `split`: rows of each modality back into one [B, L, D'] sequence."""
        sources = {False: text_out, True: vision_out.to(text_out.dtype)}
        merged = torch.cat([sources[is_vision][start:end] for is_vision, start, end in self.order])
        return merged.view(*self.lead_shape, merged.shape[-1])


class DenseBlendRouter:
    """Reference only: both modality streams hold every token; merging blends them by the mask."""

    def __init__(self, vision_mask: torch.Tensor):
        self.mask = vision_mask.unsqueeze(-1)  # [B, L, 1]

    def split(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden_states, hidden_states

    def merge(self, text_out: torch.Tensor, vision_out: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(text_out.dtype)
        return text_out * (1 - mask) + vision_out * mask


def _gather(rows: torch.Tensor, runs: list[tuple[int, int]]) -> torch.Tensor:
    if not runs:  # e.g. a prompt that is a lone image (the plain pre-training format): no text rows
        return rows[:0]
    pieces = [rows[start:end] for start, end in runs]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def route_by_modality(vision_mask: torch.Tensor | None, router_class: type = ModalityRouter):
    """The router for one forward pass; `vision_mask` is [B, L] with 1 at image-token positions."""
    if vision_mask is None or not bool(vision_mask.any()):
        return TextOnlyRouter()
    return router_class(vision_mask)
