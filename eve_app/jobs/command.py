"""A fine-tuning job's settings (`JobConfig`) and the exact command line that runs them.

The UI launches the same command a user would type, so the command preview is the real thing:

    config = JobConfig(base="ckpt", data="data.json", stage="3", max_steps=100, hardware=2, strategy="fsdp")
    build_command(config)
    # [python, -m, accelerate.commands.launch, --config_file, configs/accelerate/fsdp.yaml, --num_processes, 2,
    #  -m, model.train, --base, ckpt, --stage, 3, ...]

Every run goes through `accelerate launch` with one of the files in `configs/accelerate/`; a multi-stage run is
`python -m model.train.pipeline ... --launcher "<accelerate launch ...>"`, which runs each stage that way. Paths in
the command are relative to the project root, where the runner starts it. Stage presets come from `model.shared`,
which loads neither torch nor transformers.
"""

import dataclasses
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from model.shared import TRAIN_DEFAULTS, TRAIN_METHODS, stage_presets

ACCELERATE_DIR = "configs/accelerate"
STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
# accelerate config file per strategy on GPUs; the CPU uses cpu.yaml (one process) or cpu_ddp.yaml (several).
GPU_CONFIGS = {
    "ddp": "multi_gpu.yaml",
    "fsdp": "fsdp.yaml",
    "deepspeed-zero2": "deepspeed_zero2.yaml",
    "deepspeed-zero3": "deepspeed_zero3.yaml",
}

# Strategies that shard the weights themselves, which a bitsandbytes 4-bit base does not allow.
SHARDED_STRATEGIES = ("fsdp", "deepspeed-zero3")


class ConfigError(ValueError):
    """The job settings cannot run; the message lists every problem."""


@dataclass
class JobConfig:
    """Everything a fine-tuning job needs; `None` means "the training CLI's default" (mostly the stage preset's).

    Attributes:
        base: checkpoint folder (or Hub id) the first stage starts from.
        data: LLaVA JSON file; image_folder: the folder its image paths are relative to (default: the JSON's).
        stage: one stage preset; stages: several presets run in order as a pipeline (then `stage` is ignored).
        method: how the stages' groups learn: "full", "lora" (peft adapters) or "qlora" (adapters on a 4-bit base).
        lora_rank: the adapters' rank (None: the base's default, else 8); LoRA methods only.
        max_steps: optimizer steps; overrides `epochs` when given.
        hardware: "cpu" or the number of GPUs; cpu_processes: CPU processes (DDP over gloo when more than one).
        strategy: how several GPUs share the work: "ddp", "fsdp", "deepspeed-zero2" or "deepspeed-zero3".
        output_dir: where the model and checkpoints go; the runner fills it with `<run folder>/out` when empty.
        resume: a checkpoint folder to continue from (the CLI's `--resume`).
    """

    base: str
    data: str
    image_folder: str | None = None
    stage: str = TRAIN_DEFAULTS["stage"]
    stages: list[str] | None = None
    method: str = "full"
    lora_rank: int | None = None
    lr: float | None = None
    epochs: float = TRAIN_DEFAULTS["epochs"]
    max_steps: int | None = None
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    grad_accum: int = TRAIN_DEFAULTS["grad_accum"]
    max_image_size: int | None = None
    max_length: int | None = None
    seed: int = TRAIN_DEFAULTS["seed"]
    eval_split: float = TRAIN_DEFAULTS["eval_split"]
    eval_every: int = TRAIN_DEFAULTS["eval_every"]
    save_every: int = TRAIN_DEFAULTS["save_every"]
    log_every: int = 1  # a line per step, so the loss plot has points from the first steps on
    hardware: str | int = "cpu"
    cpu_processes: int = 1
    strategy: str = "ddp"
    output_dir: str | None = None
    resume: str | None = None
    extra_args: list[str] = field(default_factory=list)  # further model.train flags, passed as they are

    def __post_init__(self):
        # Form fields and hand-edited files give the GPU count as text.
        if isinstance(self.hardware, str) and self.hardware.strip().isdigit():
            self.hardware = int(self.hardware)

    @property
    def gpus(self) -> int:
        """GPUs the job uses (0 on the CPU)."""
        return 0 if self.hardware == "cpu" else int(self.hardware)

    @property
    def processes(self) -> int:
        return self.gpus or self.cpu_processes

    def to_json(self) -> str:
        """The settings as JSON (what the Save button writes and `job.json` holds)."""
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> "JobConfig":
        """Settings from a dict; unknown keys are an error, so a typo in a saved file does not vanish silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown job settings {unknown}; known: {sorted(names)}")
        missing = [name for name in ("base", "data") if not values.get(name)]
        if missing:
            raise ConfigError(f"missing job settings {missing}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "JobConfig":
        """Settings saved with `to_json` (raises ConfigError for invalid JSON or unknown keys)."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"the job settings are not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError("the job settings must be a JSON object")
        return cls.from_dict(values)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "JobConfig":
        return cls.from_json(Path(path).read_text())


def _hardware_problems(config: JobConfig) -> list[str]:
    problems = []
    if config.hardware != "cpu" and not (isinstance(config.hardware, int) and config.hardware >= 1):
        problems.append(f'hardware must be "cpu" or a number of GPUs (1 or more), got {config.hardware!r}')
        return problems
    if config.strategy not in STRATEGIES:
        problems.append(f"unknown strategy {config.strategy!r}; choose one of {list(STRATEGIES)}")
    elif config.hardware == "cpu" and config.strategy != "ddp":
        problems.append(f"strategy {config.strategy} needs GPUs; on the CPU use ddp (or pick a number of GPUs)")
    if config.method == "qlora" and config.gpus > 1 and config.strategy in SHARDED_STRATEGIES:
        problems.append(
            f"qlora keeps the 4-bit base whole on each GPU: {config.strategy} would shard it; use ddp or "
            "deepspeed-zero2 (or lora with this strategy)"
        )
    if config.cpu_processes < 1:
        problems.append("cpu_processes must be at least 1")
    elif config.hardware != "cpu" and config.cpu_processes != 1:
        problems.append("cpu_processes applies to CPU runs only; set it to 1 with GPUs")
    return problems


def _training_problems(config: JobConfig) -> list[str]:
    presets, problems = stage_presets(), []
    for name in config.stages or [config.stage]:
        if name not in presets:
            problems.append(f"unknown stage {name!r}; choose from {list(presets)}")
    if config.stages is not None and not config.stages:
        problems.append("a pipeline needs at least one stage")
    if config.stages and config.resume:
        problems.append("resume applies to one stage; a pipeline resumes each stage from its own folder by itself")
    if not config.base:
        problems.append("choose a base checkpoint")
    if not config.data:
        problems.append("choose a dataset (a validated upload)")
    if config.method not in TRAIN_METHODS:
        problems.append(f"unknown method {config.method!r}; choose one of {list(TRAIN_METHODS)}")
    elif config.lora_rank is not None and (config.method == "full" or config.lora_rank < 1):
        problems.append("the LoRA rank is a whole number of at least 1, for the lora and qlora methods")
    if config.lr is not None and config.lr <= 0:
        problems.append("the learning rate must be positive")
    if config.max_steps is None and config.epochs <= 0:
        problems.append("give a positive number of epochs or of max steps")
    if config.max_steps is not None and config.max_steps < 1:
        problems.append("max steps must be at least 1")
    for name in ("batch_size", "grad_accum", "log_every"):
        if getattr(config, name) < 1:
            problems.append(f"{name.replace('_', ' ')} must be at least 1")
    for name in ("max_image_size", "max_length"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            problems.append(f"{name.replace('_', ' ')} must be positive")
    if not 0.0 <= config.eval_split < 1.0:
        problems.append("the eval split is a fraction in [0, 1)")
    return problems


def config_problems(config: JobConfig) -> list[str]:
    """Every reason the settings cannot run (empty when they can)."""
    return _hardware_problems(config) + _training_problems(config)


def launcher_argv(config: JobConfig) -> list[str]:
    """`accelerate launch --config_file configs/accelerate/X.yaml [--num_processes N]` for the hardware."""
    if config.hardware == "cpu":
        name = "cpu_ddp.yaml" if config.cpu_processes > 1 else "cpu.yaml"
    else:
        name = GPU_CONFIGS[config.strategy]
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"{ACCELERATE_DIR}/{name}"]
    if config.processes > 1 or name != "cpu.yaml":
        argv += ["--num_processes", str(config.processes)]
    if config.hardware == "cpu":
        argv += ["--num_cpu_threads_per_process", str(cpu_threads_per_process(config.processes))]
    return argv


def cpu_threads_per_process(processes: int) -> int:
    """Threads each CPU training process uses: OMP_NUM_THREADS when set, else the physical cores shared out.

    accelerate picks the same number itself, but then prints a notice into every job's log that the option was not
    passed; passing it says what the job uses (the command preview shows it too).
    """
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        return int(threads)
    return max(1, (psutil.cpu_count(logical=False) or 1) // max(processes, 1))


def training_flags(config: JobConfig) -> list[str]:
    """The model.train flags every stage of the job shares (the data, the optimisation and logging settings)."""
    flags = ["--data", config.data]
    optional = {
        "--image-folder": config.image_folder,
        "--method": None if config.method == "full" else config.method,
        "--lora-rank": config.lora_rank,
        "--lr": config.lr,
        "--max-image-size": config.max_image_size,
        "--max-length": config.max_length,
        "--resume": config.resume,
    }
    flags += [item for key, value in optional.items() if value is not None for item in (key, str(value))]
    steps = config.max_steps is not None
    flags += ["--max-steps", str(config.max_steps)] if steps else ["--epochs", str(config.epochs)]
    for key in ("batch_size", "grad_accum", "seed", "eval_split", "eval_every", "save_every", "log_every"):
        flags += ["--" + key.replace("_", "-"), str(getattr(config, key))]
    if config.hardware == "cpu":
        flags.append("--cpu")  # stay on the CPU even on a machine with a GPU
    return flags + list(config.extra_args)


def build_command(config: JobConfig) -> list[str]:
    """The argument list that runs the job (started without a shell, from the project root).

    Raises:
        ConfigError: the settings cannot run (all problems in one message), or no output folder is set.
    """
    problems = config_problems(config)
    if not config.output_dir:
        problems.append("no output folder (the runner sets one for each job)")
    if problems:
        raise ConfigError("; ".join(problems))
    launcher, output_dir = launcher_argv(config), str(config.output_dir)  # checked above
    if config.stages:
        pipeline = [sys.executable, "-m", "model.train.pipeline", "--stages", ",".join(config.stages)]
        pipeline += ["--output-dir", output_dir, "--base", config.base, "--launcher", shlex.join(launcher)]
        return pipeline + training_flags(config)
    stage = ["--base", config.base, "--stage", config.stage, "--output-dir", output_dir]
    return [*launcher, "-m", "model.train", *stage, *training_flags(config)]


def command_preview(config: JobConfig) -> str:
    """The command as one shell line, for the UI to show and users to copy (run it from the project root)."""
    return shlex.join(build_command(config))
