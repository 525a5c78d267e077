"""A job's memory plan: its settings turned into the per-device estimate of `model.train.memory_plan` (torch-free).

plan = job_plan(config, longest_row=61)       # the heaviest stage of the job
plan.refusal(hardware_capacity(config, gpu_bytes), base_config)   # None when it fits
"""

import os
from pathlib import Path

from model.train.memory_plan import MemoryPlan, Workload, plan_memory, read_config, sequence_length

from .command import JobConfig

DEFAULT_LORA_RANK = 8  # model.train's built-in default when neither the job nor the base's defaults set one
# model.train builds the model in fp32 for every method (mixed precision casts on the fly), so a LoRA job's frozen
# base takes 4 bytes a weight on GPUs too (DeepSpeed casts it to bf16); loading it in bf16 would halve that.
LORA_BASE_BF16 = False


def base_config(config: JobConfig) -> dict:
    """The base checkpoint's config.json (ValueError when the base is not a local checkpoint folder)."""
    if not Path(config.base).is_dir():
        raise ValueError(f"{config.base} is not a local checkpoint folder, so its size is unknown here")
    return read_config(config.base)


def job_plan(config: JobConfig, model_config: dict, longest_row: int | None = None) -> MemoryPlan:
    """The plan of the job's heaviest stage: its method, batch, longest row (measured on the validated data when
    given) and hardware. The method comes from the job's settings where they carry one (full otherwise)."""
    method = getattr(config, "method", None) or "full"
    rank = getattr(config, "lora_rank", None) or DEFAULT_LORA_RANK
    plans = []
    for stage in config.stages or [config.stage]:
        seq_len, image_tokens = sequence_length(
            model_config, stage, config.max_length, config.max_image_size, longest_row
        )
        workload = Workload(
            method=method,
            stage=stage,
            batch_size=config.batch_size,
            seq_len=max(seq_len, 1),
            image_tokens=image_tokens,
            devices=config.processes,
            strategy=config.strategy if config.gpus else "ddp",
            precision="bf16" if config.gpus else "fp32",
            lora_rank=int(rank),
            lora_base_bf16=LORA_BASE_BF16,
            gradient_checkpointing="--gradient-checkpointing" in config.extra_args,
        )
        plans.append(plan_memory(model_config, workload))
    return max(plans, key=lambda plan: plan.total)


def hardware_capacity(config: JobConfig, gpu_bytes: int | None) -> tuple[float, str]:
    """(bytes one device has, what to call it): a GPU's memory, or the machine's memory for a CPU job (shared by its
    processes)."""
    if config.gpus:
        return float(gpu_bytes or 0), "GPU"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return memory / max(config.processes, 1), "CPU process"
