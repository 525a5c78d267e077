"""EVEv2 modeling: a Qwen2 decoder with no vision encoder, whose layers have vision twins for image tokens.

Images enter through `EvePatchEmbedding` (two convolutions, a class token, a split token after every row of patches)
and replace the image placeholder rows of the text embeddings. Every decoder layer keeps the Qwen2 weights for text
tokens and a second copy (`moe_*` in the official checkpoint names) for image tokens; attention itself is one joint
causal attention over the whole sequence with 1D RoPE. Attribute names follow the official state-dict keys exactly.

Differs from the official code: each weight set runs only on the tokens of its modality (see `routing.py`), only the
logits that are asked for are computed, and the attention backend comes from transformers' registry.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2Attention,
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from .compat import CACHE_NAME, cache_kwargs, slice_logits_to_keep
from .configuration_eve import EveConfig
from .routing import ModalityRouter, route_by_modality


class EvePatchEmbedding(nn.Module):
    """The official `VisionTokenizer` (stored as `model.vision_tower`): pixels -> one token per 32x32 patch.

    Output per image [3, H, W]: `1 + h * (w + 1)` tokens (h = H / 32, w = W / 32): the class token, then each row of
    patches followed by a split token. There is no positional embedding: the split tokens and 1D RoPE carry layout.
    """

    def __init__(self, config: EveConfig):
        super().__init__()
        # nn.Sequential so that the checkpoint keys are `patch_embedding.0.*` and `patch_embedding.2.*`.
        self.patch_embedding = nn.Sequential(
            nn.Conv2d(3, config.mm_hidden_size, kernel_size=config.patch_stride, stride=config.patch_stride),
            nn.GELU(),
            nn.Conv2d(
                config.mm_hidden_size, config.hidden_size, kernel_size=config.dense_stride, stride=config.dense_stride
            ),
        )
        self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.split_embedding = nn.Parameter(torch.empty(config.hidden_size))

    def forward(self, pixel_values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Embeds images of any sizes (each a multiple of the patch size); same-sized images run as one batch."""
        features: dict[int, torch.Tensor] = {}  # image index -> its tokens
        dtype = self.class_embedding.dtype
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, pixels in enumerate(pixel_values):
            by_shape.setdefault(tuple(pixels.shape), []).append(i)
        for indices in by_shape.values():
            batch = torch.stack([pixel_values[i] for i in indices]).to(self.class_embedding.device, dtype)
            patches = self.patch_embedding(batch)  # [n, C, h, w]
            n, channels, height, _width = patches.shape
            split = self.split_embedding.view(1, channels, 1, 1).expand(n, channels, height, 1)
            rows = torch.cat([patches, split], dim=3)  # [n, C, h, w + 1]: a split token ends every row
            tokens = rows.flatten(2).transpose(1, 2)  # [n, h * (w + 1), C], row-major
            cls = self.class_embedding.view(1, 1, channels).expand(n, 1, channels)
            tokens = torch.cat([cls, tokens], dim=1)
            for j, i in enumerate(indices):
                features[i] = tokens[j]
        return [features[i] for i in range(len(pixel_values))]


class EveAttention(Qwen2Attention):
    """Differs from Qwen2: q/k/v/o have vision twins (`moe_{q,k,v,o}_proj`) that serve image tokens.

    It takes and returns the residual stream split by modality (see `routing.py`); only queries, keys and values
    are merged into sequence order, for the one joint causal attention over all tokens.
    """

    def __init__(self, config: EveConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        if config.has_vision_twin("self_attn"):
            q_size, kv_size = self.q_proj.out_features, self.k_proj.out_features  # as the text projections
            self.moe_q_proj = nn.Linear(config.hidden_size, q_size, bias=True)
            self.moe_k_proj = nn.Linear(config.hidden_size, kv_size, bias=True)
            self.moe_v_proj = nn.Linear(config.hidden_size, kv_size, bias=True)
            self.moe_o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def project_qkv(self, hidden_states: torch.Tensor, vision: bool) -> tuple[torch.Tensor, ...]:
        if vision and hasattr(self, "moe_q_proj"):
            return self.moe_q_proj(hidden_states), self.moe_k_proj(hidden_states), self.moe_v_proj(hidden_states)
        return self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)

    def project_out(self, attn_output: torch.Tensor, vision: bool) -> torch.Tensor:
        return self.moe_o_proj(attn_output) if vision and hasattr(self, "moe_o_proj") else self.o_proj(attn_output)

    def forward(
        self,
        text_states: torch.Tensor,
        vision_states: torch.Tensor | None,
        router,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        text_qkv = self.project_qkv(text_states, vision=False)
        vision_qkv = self.project_qkv(vision_states, vision=True) if vision_states is not None else (None,) * 3
        query, key, value = (router.merge(t, v) for t, v in zip(text_qkv, vision_qkv))  # [B, L, heads * head_dim]
        input_shape = query.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = query.view(hidden_shape).transpose(1, 2)  # [B, heads, L, head_dim]
        key_states = key.view(hidden_shape).transpose(1, 2)  # [B, kv_heads, L, head_dim]
        value_states = value.view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )
        text_attn, vision_attn = router.split(attn_output.reshape(*input_shape, -1))
        text_out = self.project_out(text_attn, vision=False)
        return text_out, self.project_out(vision_attn, vision=True) if vision_attn is not None else None


class EveDecoderLayer(GradientCheckpointingLayer):
    """Differs from Qwen2: both RMSNorms and the MLP have vision twins (`moe_*`) that serve image tokens.

    The residual stream arrives split by modality (text rows, image rows or None) and leaves the same way, so every
    norm, projection and MLP runs on its own modality's rows without gathering.
    """

    def __init__(self, config: EveConfig, layer_idx: int):
        super().__init__()
        self.self_attn = EveAttention(config, layer_idx)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if config.has_vision_twin("mlp"):
            self.moe_mlp = Qwen2MLP(config)
        if config.has_vision_twin("layernorm"):
            self.moe_input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.moe_post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def _vision(self, name: str) -> nn.Module:
        """The vision twin of a module, or the text module itself where the checkpoint has no twin."""
        twin = getattr(self, f"moe_{name}", None)
        return twin if twin is not None else getattr(self, name)

    def forward(
        self,
        text_states: torch.Tensor,
        vision_states: torch.Tensor | None,
        router,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        has_vision = vision_states is not None
        text_attn, vision_attn = self.self_attn(
            self.input_layernorm(text_states),
            self._vision("input_layernorm")(vision_states) if has_vision else None,
            router=router,
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        text_states = text_states + text_attn
        text_states = text_states + self.mlp(self.post_attention_layernorm(text_states))
        if has_vision:
            vision_states = vision_states + vision_attn
            vision_mlp, vision_norm = self._vision("mlp"), self._vision("post_attention_layernorm")
            vision_states = vision_states + vision_mlp(vision_norm(vision_states))
        return text_states, vision_states


class EvePreTrainedModel(PreTrainedModel):
    config: EveConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EveDecoderLayer"]
    _skip_keys_device_placement = [CACHE_NAME]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, EvePatchEmbedding):
            # Official init: both special tokens ~ N(0, 1).
            init.normal_(module.class_embedding, mean=0.0, std=1.0)
            init.normal_(module.split_embedding, mean=0.0, std=1.0)


class EveModel(EvePreTrainedModel):
    """Embeddings, patch embedding, routed decoder layers and the final norm (shared by both modalities)."""

    # The router used for a forward pass; tests and benchmarks swap in `routing.DenseBlendRouter` as a reference.
    router_class: type = ModalityRouter

    def __init__(self, config: EveConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([EveDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)
        self.vision_tower = EvePatchEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_image_features(self, pixel_values: list[torch.Tensor]) -> list[torch.Tensor]:
        """One [num_image_tokens, hidden] tensor per image."""
        return self.vision_tower(pixel_values)

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        pixel_values: list[torch.Tensor] | None,
        mm_token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Text embeddings with the image placeholder rows replaced by the images' tokens, in order."""
        inputs_embeds = self.embed_tokens(input_ids)
        if not pixel_values:
            return inputs_embeds
        if mm_token_type_ids is None:
            raise ValueError(
                "pixel_values need mm_token_type_ids marking the image positions (the processor makes both)"
            )
        features = torch.cat(self.get_image_features(pixel_values)).to(inputs_embeds.dtype)
        image_mask = mm_token_type_ids.bool()
        if int(image_mask.sum()) != features.shape[0]:
            raise ValueError(
                f"The prompt has {int(image_mask.sum())} image positions but the images give {features.shape[0]} "
                "tokens: pixel_values must be the processor's output for the same prompt"
            )
        return inputs_embeds.masked_scatter(image_mask.unsqueeze(-1).expand_as(inputs_embeds), features)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | dict[str, torch.Tensor] | None = None,  # a dict: masks made by generate
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: list[torch.Tensor] | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)  # the name before 5.24
        if input_ids is not None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, mm_token_type_ids)
        assert inputs_embeds is not None  # one of the two, checked above
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        causal_mask = attention_mask
        if not isinstance(causal_mask, dict):
            causal_mask = create_causal_mask(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **cache_kwargs(cache),
            )
        else:
            causal_mask = causal_mask["full_attention"]

        router = route_by_modality(mm_token_type_ids, self.router_class)
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)  # computed once, shared by all layers
        text_states, vision_states = router.split(inputs_embeds)  # the residual stream stays split across layers
        for decoder_layer in self.layers:
            text_states, vision_states = decoder_layer(
                text_states,
                vision_states,
                router=router,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        hidden_states = self.norm(router.merge(text_states, vision_states))
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **cache_kwargs(cache if use_cache else None))


class EveForCausalLM(EvePreTrainedModel, GenerationMixin):
    """EVEv2 with its (shared, untied) language-model head; the official `EVEQwen2ForCausalLM`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: EveConfig):
        super().__init__(config)
        self.model = EveModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """transformers' own, with `mm_token_type_ids` cut to this step's tokens: before 5.24 it passed the whole
        sequence's flags to every decode step."""
        model_inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        flags, ids = model_inputs.get("mm_token_type_ids"), model_inputs.get("input_ids")
        if flags is not None and ids is not None and flags.shape[-1] != ids.shape[-1]:
            model_inputs["mm_token_type_ids"] = flags[..., -ids.shape[-1] :]
        return model_inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | dict[str, torch.Tensor] | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: list[torch.Tensor] | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Like Qwen2ForCausalLM.forward, plus `pixel_values` (list of [3, H, W]) and `mm_token_type_ids` ([B, L],
        1 at image positions). `labels` cover the expanded sequence (image positions set to -100)."""
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)  # the name before 5.24
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            mm_token_type_ids=mm_token_type_ids,
            use_cache=use_cache,
            **kwargs,
        )
        # Differs from the official code: generation asks for the last position only (logits_to_keep=1).
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **cache_kwargs(getattr(outputs, CACHE_NAME)))


__all__ = ["EveAttention", "EveDecoderLayer", "EveForCausalLM", "EveModel", "EvePatchEmbedding", "EvePreTrainedModel"]
