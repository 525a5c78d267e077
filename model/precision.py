"""Which precision a checkpoint runs in on the GPU it is given: bf16 if it fits, else 8-bit, else 4-bit.

EVE-7B-HD-v2.0 holds 14.16 B parameters (both weight copies): 28.3 GB in bf16, more than a 24 GB card. Rather than
fail at load time, `choose_precision` works out from the config's parameter counts (the memory plan's,
model/train/memory_plan.py) what each precision needs, weights plus the KV cache of a few image turns plus a
margin for activations and kernel workspaces, and picks the first that fits the free memory; when none does, it
names the smallest common GPU that would. An explicit dtype or quantisation always wins (`resolve_precision`).

    choice = choose_precision(read_config("BAAI/EVE-7B-HD-v2.0 folder"), free_bytes=22 * GB)
    choice.quantization, choice.reason   # "8bit", "bf16 needs 32.0 GB, 22.0 GB free: 8-bit (16.6 GB) fits"
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .shared import num_image_tokens
from .train.memory_plan import NF4_BYTES, Sizes, parameter_shapes
from .train.memory_plan import _is_projection as is_projection

GB = 10**9
# What the GPU must hold beside the weights: the KV cache of this many image turns at the model's image area (with
# their text), and a margin for activations, the CUDA context and kernel workspaces.
RESERVED_TURNS = 4
TEXT_TOKENS_PER_TURN = 256
WORKSPACE_BYTES = int(1.5 * GB)
# (name, GB) of GPUs people rent, smallest first: the refusal names the first that would do.
COMMON_GPUS: tuple[tuple[str, int], ...] = (
    ("T4", 16),
    ("A10G / L4", 24),
    ("A100 40 GB", 40),
    ("L40S", 48),
    ("A100 / H100 80 GB", 80),
    ("H200", 141),
)
# In order of preference: full precision first, then the bitsandbytes formats.
QUANTIZATION_ORDER: tuple[str | None, ...] = (None, "8bit", "4bit")
LABELS = {None: "bf16", "8bit": "8-bit", "4bit": "4-bit"}
# bytes per weight of a quantised linear layer: int8 plus one fp32 scale per row (counted per element: negligible)
INT8_BYTES = 1.0


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: str  # "bfloat16"
    quantization: str | None  # None, "8bit", "4bit"
    needed_bytes: int
    reason: str  # one line for the model line


def weight_bytes(config: Mapping[str, Any], quantization: str | None = None, dtype_bytes: int = 2) -> int:
    """Bytes of the weights as loaded: 16-bit everywhere, or the projections in 8/4 bits (the head, embeddings, norms
    and patch embedding stay 16-bit, as model.loading.quantization_config leaves them)."""
    total = 0.0
    for name, shape in parameter_shapes(Sizes.of(config)).items():
        count = 1
        for dim in shape:
            count *= dim
        if quantization and is_projection(name):
            total += count * (INT8_BYTES if quantization == "8bit" else NF4_BYTES)
        else:
            total += count * dtype_bytes
    return int(total)


def kv_cache_bytes(config: Mapping[str, Any], tokens: int, dtype_bytes: int = 2) -> int:
    """Keys and values of `tokens` positions in every layer."""
    sizes = Sizes.of(config)
    return 2 * sizes.layers * sizes.kv * dtype_bytes * tokens


def reserved_tokens(config: Mapping[str, Any]) -> int:
    """Positions kept free for the KV cache: a few turns, each with one image at the model's full image area."""
    sizes = Sizes.of(config)
    side = sizes.image_max_size
    image = num_image_tokens(side, side, sizes.patch_stride * sizes.dense_stride)
    return RESERVED_TURNS * (image + TEXT_TOKENS_PER_TURN)


def needed_bytes(config: Mapping[str, Any], quantization: str | None) -> int:
    """Weights, the reserved KV cache and the workspace margin."""
    return weight_bytes(config, quantization) + kv_cache_bytes(config, reserved_tokens(config)) + WORKSPACE_BYTES


def smallest_gpu(needed: int) -> str | None:
    """The smallest common GPU with room for `needed` bytes, or None when none has."""
    for name, size in COMMON_GPUS:
        if needed <= size * GB:
            return f"{name} ({size} GB)"
    return None


def choose_precision(config: Mapping[str, Any], free_bytes: int) -> PrecisionChoice:
    """The first of bf16, 8-bit, 4-bit whose weights and reserve fit `free_bytes`; ValueError when none does."""
    free = f"{free_bytes / GB:.1f} GB free"
    needs = {quantization: needed_bytes(config, quantization) for quantization in QUANTIZATION_ORDER}
    for quantization, needed in needs.items():
        if needed <= free_bytes:
            if quantization is None:
                reason = f"auto: bf16 needs {needed / GB:.1f} GB, {free}"
            else:
                reason = f"auto: bf16 needs {needs[None] / GB:.1f} GB, {free}; {LABELS[quantization]} needs {needed / GB:.1f} GB"
            return PrecisionChoice("bfloat16", quantization, needed, reason)
    smallest = needs["4bit"]
    gpu = smallest_gpu(smallest)
    raise ValueError(
        f"The model does not fit this GPU ({free}): even 4-bit needs {smallest / GB:.1f} GB "
        f"(weights, the KV cache of {RESERVED_TURNS} image turns and a workspace margin). "
        + (f"The smallest common GPU that would do: {gpu}." if gpu else "No single common GPU holds it.")
    )


def resolve_precision(
    config: Mapping[str, Any], device: str, dtype: str | None, quantization: str | None, free_bytes: int | None = None
) -> PrecisionChoice | None:
    """On CUDA with neither dtype nor quantisation given, the automatic choice (free memory read from the device
    unless `free_bytes` is given); None where the caller's settings stand as they are (CPU, or set explicitly)."""
    if not device.startswith("cuda") or dtype is not None or quantization is not None:
        return None
    if free_bytes is None:
        import torch

        try:
            free_bytes, _ = torch.cuda.mem_get_info(torch.device(device))
        except RuntimeError:  # no GPU attached yet (ZeroGPU attaches one per call): bf16, as before
            return None
    return choose_precision(config, int(free_bytes))


@dataclass(frozen=True)
class SpaceHardware:
    flavor: str  # the Space's `suggested_hardware` value
    gpu: str
    gpu_gb: int  # 0: no GPU


# Hugging Face Spaces hardware people rent (https://huggingface.co/docs/hub/spaces-gpus), smallest first.
SPACE_HARDWARE: tuple[SpaceHardware, ...] = (
    SpaceHardware("cpu-basic", "none (2 vCPU)", 0),
    SpaceHardware("t4-small", "T4", 16),
    SpaceHardware("l4x1", "L4", 24),
    SpaceHardware("a10g-large", "A10G", 24),
    SpaceHardware("l40sx1", "L40S", 48),
    SpaceHardware("a100-large", "A100", 80),
    SpaceHardware("zero-a10g", "ZeroGPU slice", 70),
)
FREE_SHARE = 0.95  # of a card's memory, free for the model once the CUDA context is up
VLLM_SHARE = 0.9  # vLLM's default gpu_memory_utilization


def what_runs(config: Mapping[str, Any], hardware: SpaceHardware) -> tuple[str, str]:
    """(the app's automatic choice on the transformers backend, whether vLLM serves it) on `hardware`."""
    gpu_gb = hardware.gpu_gb
    if gpu_gb == 0:
        return "no (CPU: the small default model only)", "no"
    if hardware.flavor.startswith("zero-"):  # the GPU is attached per call: no memory to read at start, no engine
        return "bf16", "no (ZeroGPU attaches the GPU per call)"
    try:
        choice = choose_precision(config, int(gpu_gb * GB * FREE_SHARE))
    except ValueError:
        return "no", "no"
    served = needed_bytes(config, None) <= gpu_gb * GB * VLLM_SHARE  # vLLM serves bf16 weights here
    return LABELS[choice.quantization], "yes (bf16)" if served else "no (bf16 does not fit)"


def hardware_table(config: Mapping[str, Any]) -> str:
    """The README's table of Space hardware: what the app runs on each, from `choose_precision`."""
    rows = ["| Space hardware | GPU | the 7B on the default backend (auto) | the 7B on vLLM |", "|---|---|---|---|"]
    for hardware in SPACE_HARDWARE:
        transformers, vllm = what_runs(config, hardware)
        memory = f"{hardware.gpu} {hardware.gpu_gb} GB" if hardware.gpu_gb else hardware.gpu
        rows.append(f"| `{hardware.flavor}` | {memory} | {transformers} | {vllm} |")
    return "\n".join(rows)
