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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from model.shared import TRAIN_DEFAULTS, TRAIN_METHODS, stage_presets

from .form import EVAL_SPLIT, FIELD_DEFAULT, HARDWARE, METHOD, SEED, FormField, number, optional, server

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


def setting(
    default: Any = dataclasses.MISSING,
    *,
    flag: bool = False,
    unless: Any = None,
    form: FormField | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A `JobConfig` field, declared once with what it is to the training CLI and to the fine-tune form.

    Args:
        flag: model.train takes it as `--name-with-dashes value` (left out while the value is None or `unless`).
        form: how the fine-tune form, its API endpoints and job.json ask for it (see `form.py`); its default is this
            field's unless it says otherwise.
    """
    if form is not None and form.default is FIELD_DEFAULT:
        form = dataclasses.replace(form, default=default)
    metadata = {"flag": flag, "unless": unless, "form": form}
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(kw_only=True)
class JobConfig:
    """Everything a fine-tuning job needs; `None` means "the training CLI's default" (mostly the stage preset's).

    The fields with a form come first, in the order of the fine-tune form and its endpoints' arguments.

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

    data: str = setting(flag=True, form=server(name="dataset"))  # the form sends the id /validate_dataset gave
    base: str = setting(form=server())
    stages: list[str] | None = setting(None, form=server(saved=True))
    lr: float | None = setting(
        None,
        flag=True,
        form=optional(
            "Learning rate (empty: the base's fine-tuning default, else the stage's)",
            "The learning rate",
            "the base's or the stage's",
            row=1,
            whole=False,
        ),
    )
    max_steps: int | None = setting(
        None, flag=True, form=optional("Steps (empty: epochs)", "Steps", "epochs", row=1, default="60")
    )
    epochs: float = setting(TRAIN_DEFAULTS["epochs"], flag=True, form=number("Epochs", row=1, whole=False))
    batch_size: int = setting(
        TRAIN_DEFAULTS["batch_size"], flag=True, form=number("Batch size", row=1, whole=True, default=4)
    )
    grad_accum: int = setting(
        TRAIN_DEFAULTS["grad_accum"],
        flag=True,
        form=number("Gradient accumulation", row=1, whole=True),
    )
    max_image_size: int | None = setting(
        None,
        flag=True,
        form=optional("Max image size (empty: the stage's)", "The max image size", "the stage's", row=2),
    )
    max_length: int | None = setting(
        None, flag=True, form=optional("Max length in tokens (empty: 4096)", "The max length", "4096", row=2)
    )
    seed: int = setting(TRAIN_DEFAULTS["seed"], flag=True, form=SEED)
    eval_split: float = setting(TRAIN_DEFAULTS["eval_split"], flag=True, form=EVAL_SPLIT)
    hardware: str | int = setting("cpu", form=HARDWARE)
    strategy: str = setting("ddp", form=server(FIELD_DEFAULT))
    method: str = setting("full", flag=True, unless="full", form=METHOD)
    lora_rank: int | None = setting(
        None,
        flag=True,
        form=optional("LoRA rank (empty: the base's, else 8)", "The LoRA rank", "the base's", row=0),
    )
    image_folder: str | None = setting(None, flag=True)
    stage: str = TRAIN_DEFAULTS["stage"]
    eval_every: int = setting(TRAIN_DEFAULTS["eval_every"], flag=True)
    save_every: int = setting(TRAIN_DEFAULTS["save_every"], flag=True)
    log_every: int = setting(1, flag=True)  # a line per step, so the loss plot has points from the first steps on
    cpu_processes: int = 1
    output_dir: str | None = None
    resume: str | None = setting(None, flag=True)
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


# The fine-tune form's fields, in order: the `JobConfig` fields declared with one, each named (the field's name unless
# its form names the argument otherwise).
FORM: tuple[FormField, ...] = tuple(
    dataclasses.replace(spec.metadata["form"], name=spec.metadata["form"].name or spec.name)
    for spec in dataclasses.fields(JobConfig)
    if spec.metadata.get("form")
)


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
    if config.stages and len(set(config.stages)) < len(config.stages):
        problems.append("each stage of a pipeline runs once; a stage is listed twice")
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
    """The model.train flags every stage of the job shares: the `JobConfig` fields declared as flags, in order."""
    flags = []
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        skipped = spec.name == "epochs" and config.max_steps is not None  # --max-steps overrides --epochs
        if spec.metadata.get("flag") and value is not None and value != spec.metadata["unless"] and not skipped:
            flags += ["--" + spec.name.replace("_", "-"), str(value)]
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
        # The form's stages are a set (a checkbox group hands them over in click order): they run in the paper's
        # order, the presets' own (model/train/stages.json), whatever order they were ticked or sent in.
        in_order = sorted(config.stages, key=list(stage_presets()).index)
        pipeline = [sys.executable, "-m", "model.train.pipeline", "--stages", ",".join(in_order)]
        pipeline += ["--output-dir", output_dir, "--base", config.base, "--launcher", shlex.join(launcher)]
        return pipeline + training_flags(config)
    stage = ["--base", config.base, "--stage", config.stage, "--output-dir", output_dir]
    return [*launcher, "-m", "model.train", *stage, *training_flags(config)]


def command_preview(config: JobConfig) -> str:
    """The command as one shell line, for the UI to show and users to copy (run it from the project root)."""
    return shlex.join(build_command(config))
