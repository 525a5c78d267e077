"""Fine-tuning jobs: validate an uploaded dataset, build the training command, run it, watch it, abort it.

No gradio and no torch here (nor the `model` package): the UI calls these from its handlers, and the job itself is
the training CLI in a process group of its own, which writes its progress to files this package reads.

    result = validate_upload(["data.json", "images.zip"], data_dir="data", base="ckpt")
    runner = JobRunner(storage, data_dir="data")
    job_id = runner.submit(JobConfig(base="ckpt", data=str(result.data_path),
                                     image_folder=str(result.image_folder), max_steps=100))
"""

from ..limits.uploads import UploadLimits
from .archive import UploadError
from .command import ConfigError, JobConfig, build_command, command_preview, config_problems, stage_presets
from .images import ImageSettings
from .runner import JobRunner
from .validation import ValidationResult, paged_preview, validate_dataset, validate_upload

__all__ = [
    "ConfigError",
    "ImageSettings",
    "JobConfig",
    "JobRunner",
    "UploadError",
    "UploadLimits",
    "ValidationResult",
    "build_command",
    "command_preview",
    "config_problems",
    "paged_preview",
    "stage_presets",
    "validate_dataset",
    "validate_upload",
]
