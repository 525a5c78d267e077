"""How much memory a fine-tuning job needs on each device, worked out before it starts (no torch: the app uses it).

Every parameter is counted from the checkpoint's `config.json` (both weight copies, the embeddings, the patch
embedding), and the job's method, stage, batch, sequence length and hardware give the bytes per device:

    config = read_config("assets/eve-tiny")
    plan = plan_memory(config, Workload(method="lora", stage="3", batch_size=2, seq_len=300))
    print(plan.describe())          # weights, gradients, optimizer state, activations, total; which GPUs it fits
    plan.refusal(capacity_bytes)    # None when it fits, else a message naming a method that would

    python -m model.train.memory_plan --config assets/eve-tiny --method full --batch-size 2 --seq-len 300

What is counted (bytes per parameter; `P` all parameters, `T` the trained ones):

| | weights | gradients | optimizer state |
|---|---|---|---|
| full, CPU (fp32) | 4 P | 4 T | 8 T (AdamW m, v) |
| full, GPU, DDP / FSDP (accelerate's bf16 autocast over fp32 weights) | 4 P | 4 T | 8 T |
| full, GPU, DeepSpeed ZeRO (bf16 weights, fp32 master copy) | 2 P | 2 T | 12 T (master, m, v) |
| LoRA (frozen base in bf16, or fp32 where it is loaded so or on the CPU; fp32 adapters) | 2 or 4 P + 4 T | 4 T | 8 T |
| QLoRA (linear layers in 4-bit nf4, 0.5 B + one fp32 scale per 64; the rest fp32, as peft's `prepare_model_for_kbit_training` leaves it) | 0.5625 P_lin + 4 P_rest + 4 T | 4 T | 8 T |

ZeRO-2 divides gradients and optimizer state by the number of GPUs; ZeRO-3 and FSDP divide the weights too, and
then hold two gathered units (a decoder layer, or the embedding or the head, whichever is largest) during forward and
backward. LoRA adapts every q/k/v/o and gate/up/down projection of the groups the stage trains (text layers for the
language model, `moe_*` twins for the vision twins), `rank * (in + out)` parameters each; the patch embedding trains
in full only when asked (vLLM refuses adapters with full modules).

Activations are an approximation, per token of the micro-batch, stored for the backward pass (bytes `a` = 2 in bf16,
4 in fp32; hidden size `H`, key/value width `KV`, MLP width `I`):
- each decoder layer: its two RMSNorms keep an fp32 copy of their input and their output (2 x (4 + a) H), q/k/v
  after RoPE (a (H + 2 KV)), the attention output and its reshaped copy (2 a H), and the MLP's gate, SiLU, up and
  product (4 a I). Each token passes through one weight copy (text or vision twin), so twins add no activations.
  A fused attention kernel (flash, memory-efficient, or PyTorch's CPU flash) is assumed: no L x L score matrix.
  LoRA with dropout adds the dropped-out input of every adapted projection (a (6 H + I)).
- with gradient checkpointing: one layer input per layer (a H), plus one layer's full set while it is recomputed.
- the backward pass: one layer's activation gradients beside them (one more layer's worth).
- the logits: vocabulary-wide rows for every position, their fp32 copy in the loss, the saved log-softmax and the
  gradient (a + 4 + 4 + 4 bytes per logit; no extra copy in fp32).
- the patch embedding: the first convolution's output and its GELU for every image token (2 a mm_hidden dense^2),
  and the second convolution's output.
Not counted: the CUDA context, allocator fragmentation and kernel workspaces; a plan "fits" a GPU when it uses at
most 90% of it. `tests/model/test_memory_plan.py` checks the estimate against the measured peak of real steps.
"""

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..shared import (
    DEFAULT_DENSE_STRIDE,
    DEFAULT_IMAGE_MAX_SIZE,
    DEFAULT_PATCH_STRIDE,
    TRAIN_METHODS,
    num_image_tokens,
    parameter_group,
    stage_image_max_size,
    stage_presets,
)

METHODS = TRAIN_METHODS  # in order of memory: a refusal suggests the next that fits
METHOD_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit)"}
# Strategy -> what it shards over the devices: 0 nothing (DDP), 2 gradients and optimizer state, 3 weights too.
SHARDING = {"ddp": 0, "deepspeed-zero2": 2, "deepspeed-zero3": 3, "fsdp": 3}
PRECISIONS = ("bf16", "fp32")
GPU_SIZES_GB = (24, 48, 80)  # common cards: RTX 4090 / A5000-class, A6000 / L40S, A100 / H100
USABLE_SHARE = 0.9  # the rest is the CUDA context, allocator fragmentation and kernel workspaces
GIB = 1024**3
NF4_BYTES = 0.5 + 4 / 64  # 4-bit weights plus one fp32 absmax per block of 64
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TEXT_TOKENS = 256  # text of a row (question and answer) when no dataset has been measured
# Defaults of EveConfig (the released EVE-7B-HD-v2.0) for keys an official config.json leaves out.
CONFIG_DEFAULTS: dict[str, Any] = {
    "add_moe": False,
    "moe_part": "",
    "mm_hidden_size": 1024,
    "patch_stride": DEFAULT_PATCH_STRIDE,
    "dense_stride": DEFAULT_DENSE_STRIDE,
    "image_max_size": DEFAULT_IMAGE_MAX_SIZE,
    "tie_word_embeddings": False,
}
TWIN_PARTS = "layernorm-self_attn-mlp"  # the official layout of vision twins added to a checkpoint without them


def read_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint folder's (or a file's, or a Hub repo's) config.json as a dict, without loading transformers.

    A Hub id (e.g. "BAAI/EVE-7B-HD-v2.0") fetches only its config.json (from the Hub cache when offline).
    """
    path = Path(path)
    if not path.exists() and str(path).count("/") == 1:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(path), "config.json"))
        except Exception as error:  # offline without a cached copy, unknown repo, no network, ...
            raise ValueError(f"could not read {path}'s config.json locally or from the Hub: {error}") from error
    file = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has no readable config.json: {error}") from error
    if not isinstance(config, dict) or "hidden_size" not in config:
        raise ValueError(f"{file} is not a model config (it has no hidden_size)")
    return config


def _get(config: Mapping[str, Any], key: str) -> Any:
    value = config.get(key)
    return CONFIG_DEFAULTS.get(key) if value is None else value


@dataclass(frozen=True)
class Sizes:
    """The widths that decide parameter counts and activations."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    mm_hidden: int
    patch_stride: int
    dense_stride: int
    image_max_size: int
    twins: tuple[str, ...]  # vision-twin parts: "layernorm", "self_attn", "mlp"
    tied: bool

    @classmethod
    def of(cls, config: Mapping[str, Any], with_twins: bool = False) -> "Sizes":
        """Sizes of a config; `with_twins` adds the official twins where the checkpoint has none (a stage needs them)."""
        heads = int(config["num_attention_heads"])
        part = str(_get(config, "moe_part") or "") if _get(config, "add_moe") else ""
        if with_twins and not part:
            part = TWIN_PARTS
        return cls(
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
            vocab=int(config["vocab_size"]),
            mm_hidden=int(_get(config, "mm_hidden_size")),
            patch_stride=int(_get(config, "patch_stride")),
            dense_stride=int(_get(config, "dense_stride")),
            image_max_size=int(_get(config, "image_max_size")),
            twins=tuple(p for p in ("layernorm", "self_attn", "mlp") if p in part),
            tied=bool(_get(config, "tie_word_embeddings")),
        )

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def q(self) -> int:
        return self.heads * self.head_dim


def parameter_shapes(sizes: Sizes) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model by its state-dict name, as `EveForCausalLM` builds it (the tests compare)."""
    h, i, q, kv = sizes.hidden, sizes.intermediate, sizes.q, sizes.kv
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (sizes.vocab, h)}
    tower = "model.vision_tower."
    shapes[tower + "patch_embedding.0.weight"] = (sizes.mm_hidden, 3, sizes.patch_stride, sizes.patch_stride)
    shapes[tower + "patch_embedding.0.bias"] = (sizes.mm_hidden,)
    shapes[tower + "patch_embedding.2.weight"] = (h, sizes.mm_hidden, sizes.dense_stride, sizes.dense_stride)
    shapes[tower + "patch_embedding.2.bias"] = (h,)
    shapes[tower + "class_embedding"] = (h,)
    shapes[tower + "split_embedding"] = (h,)
    attention = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q)}
    mlp = {"gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}
    for layer in range(sizes.layers):
        prefix = f"model.layers.{layer}."
        for twin in ("", "moe_"):
            if twin and "self_attn" not in sizes.twins:
                continue
            for name, shape in attention.items():
                shapes[f"{prefix}self_attn.{twin}{name}.weight"] = shape
                if name != "o_proj":
                    shapes[f"{prefix}self_attn.{twin}{name}.bias"] = (shape[0],)
        for twin in ("", "moe_"):
            if twin and "mlp" not in sizes.twins:
                continue
            for name, shape in mlp.items():
                shapes[f"{prefix}{twin}mlp.{name}.weight"] = shape
        for twin in ("", "moe_"):
            if twin and "layernorm" not in sizes.twins:
                continue
            shapes[f"{prefix}{twin}input_layernorm.weight"] = (h,)
            shapes[f"{prefix}{twin}post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    if not sizes.tied:
        shapes["lm_head.weight"] = (sizes.vocab, h)
    return shapes


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _is_projection(name: str) -> bool:
    """A q/k/v/o or MLP projection weight (a LoRA target, and a layer QLoRA stores in 4 bits)."""
    return name.endswith(".weight") and name.split(".")[-2].removeprefix("moe_") in LORA_TARGETS


@dataclass(frozen=True)
class Workload:
    """What the job asks of each device.

    Attributes:
        method: "full", "lora" or "qlora".
        stage: a stage preset (which groups learn).
        batch_size: rows per device per micro-step.
        seq_len: tokens of the longest row, image tokens included.
        image_tokens: how many of those are image tokens (the patch embedding's activations).
        devices: processes (GPUs, or CPU processes) the job runs on.
        strategy: "ddp", "fsdp", "deepspeed-zero2" or "deepspeed-zero3".
        precision: "bf16" (GPUs: mixed precision) or "fp32" (the CPU).
        lora_rank: LoRA's rank r.
        lora_dropout: LoRA's dropout (above 0 it keeps a dropped-out copy of each adapted projection's input).
        lora_patch_embedding: under LoRA, train the patch embedding in full where the stage trains it.
        lora_base_bf16: under LoRA on GPUs, the frozen base is held in bf16 (2 B a weight) rather than fp32 (DeepSpeed
            casts it to bf16 either way).
        gradient_checkpointing: recompute each layer in the backward pass instead of keeping its activations.
    """

    method: str = "full"
    stage: str = "3"
    batch_size: int = 1
    seq_len: int = 4096
    image_tokens: int = 0
    devices: int = 1
    strategy: str = "ddp"
    precision: str = "bf16"
    lora_rank: int = 8
    lora_dropout: float = 0.0
    lora_patch_embedding: bool = False
    lora_base_bf16: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self):
        problems = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.stage not in stage_presets():
            problems.append(f"stage must be one of {list(stage_presets())}, got {self.stage!r}")
        if self.strategy not in SHARDING:
            problems.append(f"strategy must be one of {list(SHARDING)}, got {self.strategy!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("batch_size", "seq_len", "devices", "lora_rank"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 <= self.image_tokens <= self.seq_len:
            problems.append("image_tokens must be between 0 and seq_len")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of one workload; `total` is what must fit."""

    workload: Workload
    parameters: int  # every weight of the model as the stage trains it (twins included)
    trainable: int  # weights the optimizer updates (LoRA: adapter weights, plus the patch embedding if it trains)
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def fits(self, capacity_bytes: float, usable_share: float = USABLE_SHARE) -> bool:
        """Whether the plan fits a device of `capacity_bytes` (a GPU keeps 10% for what the plan does not count)."""
        return self.total <= capacity_bytes * usable_share

    def fitting_gpus(self) -> list[int]:
        """The common GPU sizes (GB) it fits on, smallest first."""
        return [size for size in GPU_SIZES_GB if self.fits(size * GIB)]

    def describe(self) -> str:
        """Markdown: the per-device figures and the GPUs the plan fits."""
        w = self.workload
        where = f"{w.devices} device{'s' if w.devices > 1 else ''}, {w.strategy}, {w.precision}"
        lines = [
            f"**Memory plan** ({METHOD_LABELS[w.method]}, stage {w.stage}, batch {w.batch_size} x "
            f"{w.seq_len} tokens, {where}"
            + (", gradient checkpointing" if w.gradient_checkpointing else "")
            + f"): {_gb(self.total)} per device",
            (
                f"- weights {_gb(self.weights)}, gradients {_gb(self.gradients)}, optimizer state "
                f"{_gb(self.optimizer)}, activations {_gb(self.activations)}"
            ),
            f"- {self.trainable / 1e6:,.2f} M of {self.parameters / 1e6:,.2f} M parameters train",
        ]
        gpus = self.fitting_gpus()
        if w.precision == "bf16":
            lines.append(
                "- fits GPUs of " + ", ".join(f"{g} GB" for g in gpus) if gpus else "- fits none of 24, 48, 80 GB GPUs"
            )
        return "\n".join(lines)

    def refusal(self, capacity_bytes: float, config: Mapping[str, Any], device: str = "GPU") -> str | None:
        """None when the plan fits a device of `capacity_bytes`; else why not, naming a method that would fit."""
        if self.fits(capacity_bytes):
            return None
        have = f"{capacity_bytes / GIB:.0f} GiB"
        message = (
            f"This job needs about {_gb(self.total)} per {device} ({METHOD_LABELS[self.workload.method]}), "
            f"more than the {have} the chosen hardware has."
        )
        alternative = suggest(config, self.workload, capacity_bytes)
        if alternative is None:
            return message + " No method fits at this batch size and length: lower them, or add devices."
        return message + f" {alternative.describe_change(self.workload)} would need {_gb(alternative.total)} and fits."

    def describe_change(self, before: Workload) -> str:
        """What differs from `before`, e.g. "LoRA with gradient checkpointing"."""
        w = self.workload
        text = METHOD_LABELS[w.method]
        if w.strategy != before.strategy:
            text += f" with {w.strategy}"
        if w.gradient_checkpointing and not before.gradient_checkpointing:
            text += (" and" if w.strategy != before.strategy else " with") + " gradient checkpointing"
        return text[0].upper() + text[1:]


def _gb(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.0f} MiB"


def _trained_groups(stage: str) -> set[str]:
    return set(stage_presets()[stage]["train"])


def plan_memory(config: Mapping[str, Any], workload: Workload) -> MemoryPlan:
    """The per-device memory of `workload` on the model `config` describes (see the module docstring)."""
    w = workload
    preset = stage_presets()[w.stage]
    sizes = Sizes.of(config, with_twins=bool(preset["vision_twins"]))
    shapes = parameter_shapes(sizes)
    groups = _trained_groups(w.stage)
    total = sum(_numel(s) for s in shapes.values())
    in_groups = {n: _numel(s) for n, s in shapes.items() if parameter_group(n) in groups}
    fp32 = w.precision == "fp32"
    deepspeed = w.strategy.startswith("deepspeed") and not fp32
    shard = SHARDING[w.strategy] if w.devices > 1 else 0

    if w.method == "full":
        trainable = sum(in_groups.values())
        per_weight = 2 if deepspeed else 4
        weights = per_weight * total
        gradients = (2 if deepspeed else 4) * trainable
        optimizer = (12 if deepspeed else 8) * trainable
    else:
        adapters = sum(w.lora_rank * sum(s[:2]) for n, s in shapes.items() if n in in_groups and _is_projection(n))
        patch = (
            sum(v for n, v in in_groups.items() if parameter_group(n) == "vision_tower")
            if w.lora_patch_embedding
            else 0
        )
        trainable = adapters + patch
        if w.method == "lora":
            base = (2 if not fp32 and (w.lora_base_bf16 or deepspeed) else 4) * total
        else:
            projections = sum(_numel(s) for n, s in shapes.items() if _is_projection(n))
            base = math.ceil(NF4_BYTES * projections) + 4 * (total - projections)
        per_weight = base // total if w.method == "lora" else 4
        weights = base + 4 * trainable
        gradients = 4 * trainable
        optimizer = 8 * trainable

    if shard >= 2:
        gradients //= w.devices
        optimizer //= w.devices
    if shard == 3:
        weights //= w.devices
        weights += 2 * per_weight * _largest_unit(shapes, sizes)  # gathered units in flight
    return MemoryPlan(
        workload=w,
        parameters=total,
        trainable=trainable,
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=activation_bytes(sizes, w),
    )


def _largest_unit(shapes: Mapping[str, tuple[int, ...]], sizes: Sizes) -> int:
    """Parameters of the largest unit a sharded run gathers at once: one decoder layer, the embedding or the head."""
    layer = sum(_numel(s) for n, s in shapes.items() if n.startswith("model.layers.0."))
    return max(layer, sizes.vocab * sizes.hidden)


def activation_bytes(sizes: Sizes, w: Workload) -> int:
    """Activations kept for the backward pass of one micro-batch (see the module docstring for each term)."""
    a = 4 if w.precision == "fp32" else 2
    h, i, kv = sizes.hidden, sizes.intermediate, sizes.kv
    per_layer = 2 * (4 + a) * h + a * (h + 2 * kv) + 2 * a * h + 4 * a * i
    if w.method != "full" and w.lora_dropout > 0:
        per_layer += a * (6 * h + i)
    tokens = w.batch_size * w.seq_len
    # The backward pass holds one layer's activation gradients beside what is saved (a recomputed layer's too).
    kept = sizes.layers * a * h if w.gradient_checkpointing else sizes.layers * per_layer
    layers = (kept + per_layer) * tokens
    embeddings = a * h * tokens + (4 + a) * h * tokens  # embedding output, final norm
    logits = tokens * sizes.vocab * (a + (4 if a == 2 else 0) + 4 + 4)
    image = w.batch_size * w.image_tokens * a * (2 * sizes.mm_hidden * sizes.dense_stride**2 + h)
    return layers + embeddings + logits + image


def suggest(config: Mapping[str, Any], workload: Workload, capacity_bytes: float) -> MemoryPlan | None:
    """The first of: each lighter method as set, then each method with gradient checkpointing, that fits. QLoRA is
    not offered where the strategy shards the weights (FSDP, ZeRO-3 on several GPUs), which model.train refuses."""
    start = METHODS.index(workload.method)
    sharded = SHARDING[workload.strategy] == 3
    methods = [m for m in METHODS[start:] if not (m == "qlora" and sharded)]
    tries = [replace(workload, method=m) for m in methods if m != workload.method]
    if not workload.gradient_checkpointing:
        tries += [replace(workload, method=m, gradient_checkpointing=True) for m in methods]
    if sharded:  # then QLoRA with each GPU holding the whole 4-bit base
        tries += [replace(workload, method="qlora", strategy="ddp", gradient_checkpointing=gc) for gc in (False, True)]
    for candidate in tries:
        plan = plan_memory(config, candidate)
        if plan.fits(capacity_bytes):
            return plan
    return None


def sequence_length(
    config: Mapping[str, Any],
    stage: str,
    max_length: int | None,
    max_image_size: int | None = None,
    longest_row: int | None = None,
) -> tuple[int, int]:
    """(tokens, image tokens) of the longest row a job trains on.

    The measured longest row of a validated dataset when there is one, else one image at the stage's largest size
    plus `DEFAULT_TEXT_TOKENS` of text; cut at `max_length`. The image is counted at its largest (an area of
    size**2) since a job cannot know its images before they are validated.
    """
    sizes = Sizes.of(config)
    rule = stage_presets()[stage]["image_size"]
    side = stage_image_max_size(rule, sizes.image_max_size, max_image_size)
    patch = sizes.patch_stride * sizes.dense_stride
    image = num_image_tokens(side, side, patch) if side else 0
    tokens = longest_row if longest_row else image + DEFAULT_TEXT_TOKENS
    if max_length:
        tokens = min(tokens, max_length)
    return tokens, min(image, tokens)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train.memory_plan", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="checkpoint folder or config.json")
    parser.add_argument("--method", choices=METHODS, default="full")
    parser.add_argument("--stage", choices=list(stage_presets()), default="3")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--seq-len", type=int, help="tokens per row, image tokens included (default: one image + text)"
    )
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", choices=list(SHARDING), default="ddp")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-base-fp32", action="store_true", help="LoRA: the frozen base in fp32, not bf16")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = read_config(args.config)
        seq_len, image_tokens = sequence_length(config, args.stage, None, longest_row=args.seq_len)
        workload = Workload(
            method=args.method,
            stage=args.stage,
            batch_size=args.batch_size,
            seq_len=seq_len,
            image_tokens=image_tokens,
            devices=args.devices,
            strategy=args.strategy,
            precision=args.precision,
            lora_rank=args.lora_rank,
            lora_base_bf16=not args.lora_base_fp32,
            gradient_checkpointing=args.gradient_checkpointing,
        )
    except ValueError as error:
        parser.error(str(error))
    print(plan_memory(config, workload).describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
