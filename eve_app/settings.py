"""Application settings from command-line flags, with environment variables as defaults (for Docker and Spaces)."""

import argparse
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.shared import PROJECT_ROOT

from .jobs.archive import Limits
from .limits import ChatLimits

DEFAULT_MODEL = str(PROJECT_ROOT / "assets" / "eve-tiny")
SECRET_FILE = ".secret"
MIB = 1 << 20

# What a visitor may send: (flag, default, help). Each is also an environment variable EVE_<FLAG>.
LIMIT_FLAGS: dict[str, tuple[Any, str]] = {
    "max_image_mb": (20.0, "largest image file, in MiB"),
    "max_image_megapixels": (40.0, "largest image, in millions of pixels"),
    "max_images_per_message": (4, "images in one chat message"),
    "max_question_chars": (4000, "characters in one question"),
    "max_concurrent_decodes": (2, "uploaded images decoded at once (a burst of uploads waits its turn)"),
    "max_upload_mb": (1024.0, "fine-tune data: largest uploaded file or archive, in MiB"),
    "max_unpacked_mb": (4096.0, "fine-tune data: everything an upload unpacks to, in MiB"),
    "max_upload_files": (20000, "fine-tune data: files in one upload"),
    "max_compression_ratio": (100.0, "fine-tune data: unpacked size / packed size of an archive entry"),
    "max_dataset_mb": (64.0, "fine-tune data: the dataset JSON file, in MiB"),
    "max_dataset_rows": (100000, "fine-tune data: samples in one dataset"),
    "max_concurrent_validations": (1, "fine-tune data validations running at once"),
    "upload_retention_minutes": (60.0, "validated uploads that no job uses are deleted after this long"),
    "pending_uploads_mb": (
        8192.0,
        (
            "validated uploads waiting for a launch, all visitors together, in MiB (at least twice "
            "--max-unpacked-mb: each visitor may hold one upload's worth, their oldest replaced beyond it)"
        ),
    ),
    "cache_hours": (24.0, "files in Gradio's upload cache are deleted after this long"),
    "upload_quota_mb": (2048.0, "MiB one visitor may upload in an hour (images and fine-tune data together)"),
    "min_free_disk_mb": (512.0, "uploads are refused when they would leave less free disk than this, in MiB"),
    "max_request_mb": (8.0, "largest request to an event (a question, its settings and the chat it sends), in MiB"),
    "partial_save_seconds": (2.0, "a streaming answer's text is saved this often (crash recovery)"),
    "max_sessions": (10000, "visitor sessions kept in memory (chat state; the least recently used goes first)"),
}


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str | None = None  # "float32", "bfloat16", "float16"; None: bf16 on GPU, fp32 on CPU
    quantization: str | None = None  # "8bit", "4bit", "none"; None: by the GPU's free memory on CUDA
    backend: str = "transformers"  # "transformers" (one answer at a time) or "vllm" (in-process async engine)
    api_base: str | None = None  # a running vLLM OpenAI-compatible server; wins over `backend`
    api_key: str | None = None  # its key, if it asks for one
    host: str = "127.0.0.1"
    port: int = 7860
    data_dir: Path = Path("data")
    db_url: str | None = None  # None: SQLite in data_dir
    admin_password: str | None = None  # enables launching fine-tune jobs
    allow_jobs_on_spaces: bool = False
    secret: str | None = None  # Gradio's key for the browsers' stored ids (sent to every page); None: made once
    trusted_proxies: str = ""  # peers whose X-Forwarded-For names the client (comma-separated IPs/networks; "*" all)
    max_image_mb: float = LIMIT_FLAGS["max_image_mb"][0]
    max_image_megapixels: float = LIMIT_FLAGS["max_image_megapixels"][0]
    max_images_per_message: int = LIMIT_FLAGS["max_images_per_message"][0]
    max_question_chars: int = LIMIT_FLAGS["max_question_chars"][0]
    max_concurrent_decodes: int = LIMIT_FLAGS["max_concurrent_decodes"][0]
    max_upload_mb: float = LIMIT_FLAGS["max_upload_mb"][0]
    max_unpacked_mb: float = LIMIT_FLAGS["max_unpacked_mb"][0]
    max_upload_files: int = LIMIT_FLAGS["max_upload_files"][0]
    max_compression_ratio: float = LIMIT_FLAGS["max_compression_ratio"][0]
    max_dataset_mb: float = LIMIT_FLAGS["max_dataset_mb"][0]
    max_dataset_rows: int = LIMIT_FLAGS["max_dataset_rows"][0]
    max_concurrent_validations: int = LIMIT_FLAGS["max_concurrent_validations"][0]
    upload_retention_minutes: float = LIMIT_FLAGS["upload_retention_minutes"][0]
    pending_uploads_mb: float = LIMIT_FLAGS["pending_uploads_mb"][0]
    cache_hours: float = LIMIT_FLAGS["cache_hours"][0]
    upload_quota_mb: float = LIMIT_FLAGS["upload_quota_mb"][0]
    min_free_disk_mb: float = LIMIT_FLAGS["min_free_disk_mb"][0]
    max_request_mb: float = LIMIT_FLAGS["max_request_mb"][0]
    partial_save_seconds: float = LIMIT_FLAGS["partial_save_seconds"][0]
    max_sessions: int = LIMIT_FLAGS["max_sessions"][0]

    def chat_limits(self) -> ChatLimits:
        return ChatLimits(
            max_image_bytes=int(self.max_image_mb * MIB),
            max_image_pixels=int(self.max_image_megapixels * 1e6),
            max_images_per_message=self.max_images_per_message,
            max_question_chars=self.max_question_chars,
            max_concurrent_decodes=self.max_concurrent_decodes,
        )

    def upload_limits(self) -> Limits:
        return Limits(
            max_archive_bytes=int(self.max_upload_mb * MIB),
            max_total_bytes=int(self.max_unpacked_mb * MIB),
            max_files=self.max_upload_files,
            max_json_bytes=int(self.max_dataset_mb * MIB),
            max_image_pixels=int(self.max_image_megapixels * 1e6),
            max_compression_ratio=self.max_compression_ratio,
            max_rows=self.max_dataset_rows,
        )

    @property
    def max_file_bytes(self) -> int:
        """Gradio's own cap on any uploaded file: the largest thing any form accepts."""
        return int(max(self.max_image_mb, self.max_upload_mb, self.max_dataset_mb) * MIB)

    def browser_secret(self) -> str:
        """The key Gradio's BrowserState encrypts the browsers' stored ids with: the same after a restart, or every
        visitor's history would be lost. Gradio sends it to every page (the page decrypts with it), so it guards
        nothing against visitors; the ids' randomness does."""
        if self.secret:
            return self.secret
        path = self.data_dir / SECRET_FILE
        if not path.is_file():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    @property
    def on_spaces(self) -> bool:
        """Running on a Hugging Face Space (its runtime sets SPACE_ID)."""
        return bool(os.environ.get("SPACE_ID"))

    @property
    def persistent_storage(self) -> bool:
        """Spaces keep files only under /data (persistent storage); elsewhere the data directory is the user's."""
        return not self.on_spaces or self.data_dir.resolve().is_relative_to("/data")


def _env(name: str, default=None):
    return os.environ.get(name) or default


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from flags; a flag not given takes its environment variable, else the `Settings` default."""
    defaults = Settings()  # the one place the defaults are written
    parser = argparse.ArgumentParser(description="EVEv2 demo: chat with images, browse logs, fine-tune.")
    parser.add_argument(
        "--model",
        default=_env("EVE_MODEL", defaults.model),
        help="checkpoint folder or Hub id, e.g. BAAI/EVE-7B-HD-v2.0 (env EVE_MODEL; default: the "
        "project's small model)",
    )
    parser.add_argument(
        "--device", default=_env("EVE_DEVICE", defaults.device), help="cpu, cuda, cuda:1 (env EVE_DEVICE)"
    )
    parser.add_argument(
        "--dtype",
        default=_env("EVE_DTYPE"),
        choices=["float32", "bfloat16", "float16"],
        help="weights dtype (env EVE_DTYPE; default bf16 on GPU, fp32 on CPU)",
    )
    parser.add_argument(
        "--quantization",
        default=_env("EVE_QUANTIZATION"),
        choices=["8bit", "4bit", "none"],
        help="bitsandbytes quantisation (env EVE_QUANTIZATION); on CUDA, when neither this nor --dtype is given, the "
        "app picks bf16, 8-bit or 4-bit by the GPU's free memory",
    )
    parser.add_argument(
        "--backend",
        default=_env("EVE_BACKEND", defaults.backend),
        choices=["transformers", "vllm"],
        help="what generates answers: transformers (one at a time) or vllm (continuous batching; needs the "
        "vLLM environment, make vllm-setup) (env EVE_BACKEND)",
    )
    parser.add_argument(
        "--api-base",
        default=_env("EVE_API_BASE", defaults.api_base),
        help="URL of a running vLLM OpenAI-compatible server to answer instead (env EVE_API_BASE); --model names "
        "the same checkpoint, read for its tokenizer and image settings",
    )
    parser.add_argument(
        "--api-key", default=_env("EVE_API_KEY", defaults.api_key), help="key for --api-base (env EVE_API_KEY)"
    )
    parser.add_argument(
        "--host",
        default=_env("GRADIO_SERVER_NAME", defaults.host),
        help="address to listen on (env GRADIO_SERVER_NAME)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(_env("GRADIO_SERVER_PORT", defaults.port)),
        help="port (env GRADIO_SERVER_PORT)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("EVE_DATA_DIR", defaults.data_dir)),
        help="database, images and job runs (env EVE_DATA_DIR)",
    )
    parser.add_argument(
        "--db-url",
        default=_env("EVE_DB_URL"),
        help="any SQLAlchemy URL (env EVE_DB_URL; default sqlite in the data directory)",
    )
    parser.add_argument(
        "--admin-password",
        default=_env("EVE_ADMIN_PASSWORD"),
        help="password that unlocks launching fine-tune jobs (env EVE_ADMIN_PASSWORD)",
    )
    parser.add_argument(
        "--allow-jobs-on-spaces",
        action="store_true",
        default=_env("EVE_ALLOW_JOBS_ON_SPACES", "") == "1",
        help="allow fine-tune jobs on a Hugging Face Space (env EVE_ALLOW_JOBS_ON_SPACES=1)",
    )
    parser.add_argument(
        "--secret",
        default=_env("EVE_SECRET"),
        help="the key Gradio encrypts the ids kept in browsers' local storage with; Gradio sends it to every page, "
        "so it is no secret from visitors, but it must stay the same across restarts (env EVE_SECRET; default: made "
        "once in the data directory)",
    )
    parser.add_argument(
        "--trusted-proxies",
        default=_env("EVE_TRUSTED_PROXIES", defaults.trusted_proxies),
        help="addresses or networks of the proxies in front of the app, comma-separated (e.g. 10.0.0.0/8): only "
        "their X-Forwarded-For names a visitor's address for the quota and the admin lock-out (env "
        "EVE_TRUSTED_PROXIES; default: none, every request counts for its TCP peer)",
    )
    limits = parser.add_argument_group("limits on what a visitor may send")
    for name, (value, text) in LIMIT_FLAGS.items():
        limits.add_argument(
            "--" + name.replace("_", "-"),
            type=type(value),
            default=type(value)(_env("EVE_" + name.upper(), value)),
            help=f"{text} (env EVE_{name.upper()}; default {value:g})",
        )
    args = parser.parse_args(argv)
    if args.pending_uploads_mb < args.max_unpacked_mb:
        parser.error(
            f"--pending-uploads-mb ({args.pending_uploads_mb:g}) must be at least --max-unpacked-mb "
            f"({args.max_unpacked_mb:g}), or no upload could ever wait for a launch (twice it keeps one visitor "
            "from blocking the others)"
        )
    return Settings(**vars(args))
