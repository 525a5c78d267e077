"""EVEv2 as a vLLM model: Qwen2 decoder layers whose image tokens run through the vision twins (`moe_*` weights).

Each decoder layer has a text and a vision copy of its two RMSNorms, the q/k/v projection (merged into one
`QKVParallelLinear`), the output projection and the gated MLP (gate/up merged into one `MergedColumnParallelLinear`);
attention is one causal attention over all tokens through vLLM's paged KV cache, with 1D RoPE. vLLM flattens the
running requests into one [T, hidden] batch; the model receives the raw token ids next to the embeddings
(`requires_raw_input_tokens`), marks image rows as those holding the placeholder id, and runs every norm,
projection and MLP on its own modality's rows only (a decode step or a text-only batch takes the text path with no
indexing at all). The linear layers are vLLM's tensor-parallel ones, so `--tensor-parallel-size` splits both copies
the same way. Weights load from the official key names (see `load_weights`).

Text-only batches (every decode step) run `EveVllmModel.forward`, which has no data-dependent branch, so vLLM can
compile it (`support_torch_compile`, whenever it runs without `enforce_eager`; vLLM's CPU platform does not with LoRA on);
batches with image rows run `forward_routed` eagerly, because how many rows each modality has is known only at run
time.

LoRA (`SupportsLoRA`, `enable_lora=True`): adapters trained with peft on the text projections and their vision twins
load by their peft names (`q_proj` ... `moe_q_proj` ... packed into `qkv_proj` and `moe_qkv_proj`, `gate_proj` and
`up_proj` into `gate_up_proj` of both MLPs). vLLM's LoRA kernels pair the i-th input row with the i-th token's adapter,
so a layer must see every row of the batch: while any row of a batch with image tokens has an adapter, each routed
layer runs both weight copies on all rows and keeps, per row, its own modality's output (twice the projection work
for that step only); otherwise the plain routed path runs.
"""

from collections.abc import Iterable
from typing import ClassVar, cast

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsLoRA, SupportsMultiModal
from vllm.model_executor.models.qwen2 import Qwen2MLP, Qwen2Model
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from ..configuration_eve import EveConfig
from ..modeling_eve import EvePatchEmbedding
from . import placeholder_token_id, tokens_in_use
from .processing import (
    IMAGE_PLACEHOLDER,
    EveDummyInputsBuilder,
    EveMultiModalProcessor,
    EveProcessingInfo,
)

# Official checkpoint names -> (parameter here, shard): vLLM's Qwen2 mapping (q/k/v and gate/up stored apart, loaded
# into one merged tensor each) plus the attention's vision twins, whose names `.q_proj` does not match. The MLP twins'
# `moe_mlp.gate_proj` is matched by `.gate_proj` already. Everything else loads under its own name.
WEIGHTS_MAPPER = Qwen2Model.hf_to_vllm_mapper | WeightsMapper(
    orig_to_new_stacked={
        ".moe_q_proj": (".moe_qkv_proj", "q"),
        ".moe_k_proj": (".moe_qkv_proj", "k"),
        ".moe_v_proj": (".moe_qkv_proj", "v"),
    }
)


class Modalities:
    """Which rows of a flattened batch are image tokens; splits a [T, D] tensor by modality and puts it back.

    `lora_indices`: vLLM's adapter index of every token of the batch (-1: none), when LoRA is enabled. If any row of a
    batch with image tokens has an adapter, `apply` runs both functions on all rows and selects per row instead.
    """

    def __init__(self, input_ids: torch.Tensor | None, image_token_id: int, lora_indices: torch.Tensor | None = None):
        self.mixed = False
        self.per_row: torch.Tensor | None = None
        if input_ids is None:
            return
        # CUDA graphs are captured and replayed for decode batches only, whose tokens are generated ones, and the
        # placeholder is never generated (its logit is masked): text-only, without the host sync below.
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return
        mask = input_ids == image_token_id
        # One host sync per forward (not per layer): text-only steps then skip all indexing.
        self.mixed = bool(mask.any())
        if not self.mixed:
            return
        if lora_indices is not None and bool((lora_indices[: mask.shape[0]] >= 0).any()):
            self.per_row = mask.unsqueeze(1)
            return
        self.vision = mask.nonzero().squeeze(1)
        self.text = (~mask).nonzero().squeeze(1)

    def apply(self, text_fn, vision_fn, x: torch.Tensor) -> torch.Tensor:
        """`text_fn` on text rows, `vision_fn` on image rows, results in row order."""
        if not self.mixed:
            return text_fn(x)
        if self.per_row is not None:  # an adapter is active: every LoRA layer sees the whole batch
            return torch.where(self.per_row, vision_fn(x), text_fn(x))
        vision_out = vision_fn(x.index_select(0, self.vision))
        out = x.new_empty((x.shape[0], vision_out.shape[-1]))
        out.index_copy_(0, self.vision, vision_out)
        if self.text.numel():
            out.index_copy_(0, self.text, text_fn(x.index_select(0, self.text)))
        return out


TEXT_ONLY = Modalities(None, image_token_id=-1)


class EveVllmAttention(nn.Module):
    """Differs from Qwen2: q/k/v and o have vision twins (`moe_qkv_proj`, `moe_o_proj`) that serve image rows."""

    def __init__(self, config: EveConfig, cache_config, quant_config, prefix: str):
        super().__init__()
        tp_size = get_tensor_model_parallel_world_size()
        self.total_num_heads = config.num_attention_heads
        self.total_num_kv_heads = config.num_key_value_heads
        if self.total_num_heads % tp_size:
            raise ValueError(f"{self.total_num_heads} attention heads do not split over {tp_size} GPUs")
        self.num_heads = self.total_num_heads // tp_size
        # Fewer KV heads than GPUs: each GPU keeps a replica of one KV head (QKVParallelLinear does the same).
        self.num_kv_heads = max(1, self.total_num_kv_heads // tp_size)
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.total_num_heads
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim

        def qkv(name: str) -> QKVParallelLinear:
            return QKVParallelLinear(
                config.hidden_size,
                self.head_dim,
                self.total_num_heads,
                self.total_num_kv_heads,
                bias=True,
                quant_config=quant_config,
                prefix=f"{prefix}.{name}",
            )

        def out(name: str) -> RowParallelLinear:
            return RowParallelLinear(
                self.total_num_heads * self.head_dim,
                config.hidden_size,
                bias=False,
                quant_config=quant_config,
                prefix=f"{prefix}.{name}",
            )

        self.qkv_proj, self.o_proj = qkv("qkv_proj"), out("o_proj")
        self.has_twin = config.has_vision_twin("self_attn")
        if self.has_twin:
            self.moe_qkv_proj, self.moe_o_proj = qkv("moe_qkv_proj"), out("moe_o_proj")
        self.rotary_emb = get_rope(
            self.head_dim, max_position=config.max_position_embeddings, rope_parameters=config.rope_parameters
        )
        self.attn = Attention(
            self.num_heads,
            self.head_dim,
            self.head_dim**-0.5,
            num_kv_heads=self.num_kv_heads,
            cache_config=cache_config,
            quant_config=quant_config,
            prefix=f"{prefix}.attn",
        )

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, modalities: Modalities) -> torch.Tensor:
        vision_qkv = self.moe_qkv_proj if self.has_twin else self.qkv_proj
        vision_o = self.moe_o_proj if self.has_twin else self.o_proj
        qkv = modalities.apply(lambda x: self.qkv_proj(x)[0], lambda x: vision_qkv(x)[0], hidden_states)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        attn_output = self.attn(q, k, v)  # one causal attention over text and image tokens together
        return modalities.apply(lambda x: self.o_proj(x)[0], lambda x: vision_o(x)[0], attn_output)


class EveVllmDecoderLayer(nn.Module):
    """Differs from Qwen2: both RMSNorms and the MLP have vision twins (`moe_*`) that serve image rows."""

    def __init__(self, config: EveConfig, cache_config, quant_config, prefix: str):
        super().__init__()
        self.self_attn = EveVllmAttention(config, cache_config, quant_config, prefix=f"{prefix}.self_attn")
        self.mlp = _mlp(config, quant_config, prefix=f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if config.has_vision_twin("mlp"):
            self.moe_mlp = _mlp(config, quant_config, prefix=f"{prefix}.moe_mlp")
        if config.has_vision_twin("layernorm"):
            self.moe_input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.moe_post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def _vision(self, name: str) -> nn.Module:
        """The vision twin of a module, or the text module where the checkpoint has none (official `moe_part`)."""
        return getattr(self, f"moe_{name}", None) or getattr(self, name)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, modalities: Modalities) -> torch.Tensor:
        # Pre-norm residual layout of Qwen2, each step on its own modality's weights.
        normed = modalities.apply(self.input_layernorm, self._vision("input_layernorm"), hidden_states)
        hidden_states = hidden_states + self.self_attn(positions, normed, modalities)
        mlp_text = lambda x: self.mlp(self.post_attention_layernorm(x))
        vision_mlp, vision_norm = self._vision("mlp"), self._vision("post_attention_layernorm")
        return hidden_states + modalities.apply(mlp_text, lambda x: vision_mlp(vision_norm(x)), hidden_states)


@support_torch_compile(dynamic_arg_dims={"positions": 0, "inputs_embeds": 0})
class EveVllmModel(nn.Module):
    """Embeddings, patch embedding (`vision_tower`, the library's own module), routed layers, final norm."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config: EveConfig = vllm_config.model_config.hf_config
        cache_config, quant_config = vllm_config.cache_config, vllm_config.quant_config
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            EveVllmDecoderLayer(config, cache_config, quant_config, prefix=f"{prefix}.layers.{i}")
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # Two small convolutions and two vectors: replicated on every GPU, not split.
        self.vision_tower = EvePatchEmbedding(config)

    def forward(self, positions: torch.Tensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """A batch of text tokens only: the branch-free path that vLLM compiles."""
        return self.forward_routed(positions, inputs_embeds, TEXT_ONLY)

    def forward_routed(
        self, positions: torch.Tensor, inputs_embeds: torch.Tensor, modalities: Modalities
    ) -> torch.Tensor:
        """Any batch: each row through its own modality's weights (eager when there are image rows)."""
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(positions, hidden_states, modalities)
        return self.norm(hidden_states)  # shared by both modalities, as in the official model


@MULTIMODAL_REGISTRY.register_processor(
    EveMultiModalProcessor, info=EveProcessingInfo, dummy_inputs=EveDummyInputsBuilder
)
class EveVllmForCausalLM(nn.Module, SupportsMultiModal, SupportsLoRA):
    """The official `EVEQwen2ForCausalLM` (and this project's `EveForCausalLM`) for vLLM."""

    # peft's module names -> the merged layers here, for the text copy and the vision twins alike (the MLPs' merged
    # layer is `gate_up_proj` in both `mlp` and `moe_mlp`). No LoRA on the embeddings or the patch embedding.
    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "moe_qkv_proj": ["moe_q_proj", "moe_k_proj", "moe_v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    embedding_modules: ClassVar[dict[str, str]] = {}

    # vLLM hands `forward` the token ids next to the merged embeddings: the ids say which rows are image tokens,
    # in prefill, decode and mixed batches alike, with no state kept between calls.
    requires_raw_input_tokens = True

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config: EveConfig = vllm_config.model_config.hf_config
        self.config = config
        # Both from the config (no file is read here): the placeholder id that marks image positions, and how many
        # ids the tokenizer produces. The official loader shrinks the embedding to the tokenizer's length (the 7B has
        # 399 unused padding rows); the library suppresses those ids. Here their logits are masked.
        self.image_token_id = placeholder_token_id(config)
        self.text_vocab_size = tokens_in_use(config)
        self.model = EveVllmModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        if config.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            self.lm_head = ParallelLMHead(
                config.vocab_size,
                config.hidden_size,
                quant_config=vllm_config.quant_config,
                prefix=maybe_prefix(prefix, "lm_head"),
            )
        self.logits_processor = LogitsProcessor(config.vocab_size)

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        return IMAGE_PLACEHOLDER if modality.startswith("image") else None

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """One [1 + h * (w + 1), hidden] tensor per image, in prompt order."""
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        if isinstance(pixel_values, torch.Tensor):  # same-sized images may arrive stacked
            images = list(pixel_values.unbind(0)) if pixel_values.dim() == 4 else [pixel_values]
        else:
            images = list(cast(Iterable[torch.Tensor], pixel_values))
        return self.model.vision_tower(images)

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: MultiModalEmbeddings | None = None,
        *,
        is_multimodal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs_embeds = self.model.embed_tokens(input_ids)
        if multimodal_embeddings is None or len(multimodal_embeddings) == 0:
            return inputs_embeds
        features = torch.cat(list(multimodal_embeddings)).to(inputs_embeds.dtype)
        if is_multimodal is None or int(is_multimodal.sum()) != features.shape[0]:
            raise ValueError("The image placeholders and the image embeddings do not line up")
        inputs_embeds[is_multimodal] = features
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.model.embed_tokens(input_ids)
        modalities = Modalities(input_ids, self.image_token_id, self._lora_indices())
        if modalities.mixed:
            return self.model.forward_routed(positions, inputs_embeds, modalities)
        return self.model(positions, inputs_embeds)

    def _lora_indices(self) -> torch.Tensor | None:
        """Each token's adapter slot in this step (-1: none), when the engine runs with LoRA enabled."""
        manager = getattr(self, "lora_manager", None)  # set by vLLM's LoRA model manager
        if manager is None:
            return None
        wrappers = list(manager.punica_wrapper_mapping.values())
        return wrappers[0].token_lora_indices if wrappers else None

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        logits = self.logits_processor(self.lm_head, hidden_states)
        if logits is not None:
            logits[..., self.text_vocab_size :] = float("-inf")
            # A generated placeholder would be read back as an image position: never generate one.
            logits[..., self.image_token_id] = float("-inf")
        return logits

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Loads the official state-dict names. vLLM's loader raises on an unexpected tensor, and on a missing one
        once it compares the returned names with the model's parameters, as the library does."""
        return AutoWeightsLoader(self).load_weights(weights, mapper=WEIGHTS_MAPPER)


def _mlp(config: EveConfig, quant_config, prefix: str) -> Qwen2MLP:
    """Qwen2's gated SiLU MLP (gate/up merged, down row-parallel), for the text copy and its vision twin alike."""
    return Qwen2MLP(
        config.hidden_size, config.intermediate_size, config.hidden_act, quant_config=quant_config, prefix=prefix
    )


__all__ = ["EveVllmForCausalLM", "Modalities"]
