"""Application settings from command-line flags, with environment variables as defaults (for Docker and Spaces).

Each setting is declared once, as a field of `Settings`: its default, and in its metadata (`flag`) the help text, the
environment variable (`EVE_<NAME>` unless named) and the allowed choices. `parse_settings` builds the argparse parser
from those fields, so a new setting is one line here.
"""

import argparse
import dataclasses
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.shared import PROJECT_ROOT

from .limits.chat import ChatLimits
from .limits.uploads import UploadLimits

DEFAULT_MODEL = str(PROJECT_ROOT / "assets" / "eve-tiny")
SECRET_FILE = ".secret"
MIB = 1 << 20
DEFAULT_DATA_DIR = Path("data")
LIMITS_GROUP = "limits on what a visitor may send"


def flag(
    default: Any,
    help: str,
    *,
    env: str | None = None,
    choices: list[str] | None = None,
    type: Any = None,
    group: str | None = None,
) -> Any:
    """A `Settings` field with what its command-line flag needs: `help`, its environment variable (`env`, default
    EVE_<NAME>), `choices`, the value `type` (default: the default's type, str for None) and an argparse `group`."""
    metadata = {"help": help, "env": env, "choices": choices, "type": type, "group": group}
    return dataclasses.field(default=default, metadata=metadata)


def limit(default: float, help: str, unit: str = "") -> Any:
    """A limit on what a visitor may send: a number in `unit` (named in the help), its default shown in the help."""
    return flag(default, f"{help}{', in ' + unit if unit else ''} (default {default:g})", group=LIMITS_GROUP)


@dataclass
class Settings:
    model: str = flag(
        DEFAULT_MODEL, "checkpoint folder or Hub id, e.g. BAAI/EVE-7B-HD-v2.0 (default: the project's small model)"
    )
    device: str = flag("cpu", "cpu, cuda, cuda:1")
    dtype: str | None = flag(
        None, "weights dtype (default bf16 on GPU, fp32 on CPU)", choices=["float32", "bfloat16", "float16"]
    )
    quantization: str | None = flag(
        None,
        "bitsandbytes quantisation; on CUDA, when neither this nor --dtype is given, the app picks bf16, 8-bit or "
        "4-bit by the GPU's free memory",
        choices=["8bit", "4bit", "none"],
    )
    backend: str = flag(
        "transformers",
        "what generates answers: transformers (one at a time) or vllm (continuous batching; needs the vLLM "
        "environment, make vllm-setup)",
        choices=["transformers", "vllm"],
    )
    api_base: str | None = flag(
        None,
        "URL of a running vLLM OpenAI-compatible server to answer instead (wins over --backend); --model names the "
        "same checkpoint, read for its tokenizer and image settings",
    )
    api_key: str | None = flag(None, "key for --api-base")
    stream_interval: float = flag(
        0.05,
        "seconds between two streamed pieces of one answer at least (text that comes sooner joins the next piece; "
        "0: one piece per token)",
    )
    host: str = flag("127.0.0.1", "address to listen on", env="GRADIO_SERVER_NAME")
    port: int = flag(7860, "port", env="GRADIO_SERVER_PORT")
    data_dir: Path = flag(DEFAULT_DATA_DIR, "database, images and job runs")  # noqa: RUF009 -- a Path is immutable
    db_url: str | None = flag(None, "any SQLAlchemy URL (default sqlite in the data directory)")
    admin_password: str | None = flag(None, "password that unlocks launching fine-tune jobs")
    allow_jobs_on_spaces: bool = flag(False, "allow fine-tune jobs on a Hugging Face Space (env value 1)")
    secret: str | None = flag(
        None,
        "the key Gradio encrypts the ids kept in browsers' local storage with; Gradio sends it to every page, so it "
        "is no secret from visitors, but it must stay the same across restarts (default: made once in the data "
        "directory)",
    )
    trusted_proxies: str = flag(
        "",
        "addresses or networks of the proxies in front of the app, comma-separated (e.g. 10.0.0.0/8; * for all): "
        "only their X-Forwarded-For names a visitor's address for the quota and the admin lock-out (default: none, "
        "every request counts for its TCP peer)",
    )
    max_image_mb: float = limit(20.0, "largest image file", "MiB")
    max_image_megapixels: float = limit(40.0, "largest image, in millions of pixels")
    max_images_per_message: int = limit(4, "images in one chat message")
    max_question_chars: int = limit(4000, "characters in one question")
    max_concurrent_decodes: int = limit(2, "uploaded images decoded at once (a burst of uploads waits its turn)")
    max_upload_mb: float = limit(1024.0, "fine-tune data: largest uploaded file or archive", "MiB")
    max_unpacked_mb: float = limit(4096.0, "fine-tune data: everything an upload unpacks to", "MiB")
    max_upload_files: int = limit(20000, "fine-tune data: files in one upload")
    max_compression_ratio: float = limit(100.0, "fine-tune data: unpacked size / packed size of an archive entry")
    max_dataset_mb: float = limit(64.0, "fine-tune data: the dataset JSON file", "MiB")
    max_dataset_rows: int = limit(100000, "fine-tune data: samples in one dataset")
    max_concurrent_validations: int = limit(1, "fine-tune data validations running at once")
    upload_retention_minutes: float = limit(60.0, "validated uploads that no job uses are deleted after this long")
    pending_uploads_mb: float = limit(
        8192.0,
        "validated uploads waiting for a launch, all visitors together, in MiB (at least twice --max-unpacked-mb: "
        "each visitor may hold one upload's worth, their oldest replaced beyond it)",
    )
    cache_hours: float = limit(24.0, "files in Gradio's upload cache are deleted after this long")
    upload_quota_mb: float = limit(2048.0, "what one visitor may upload in an hour (images and fine-tune data)", "MiB")
    min_free_disk_mb: float = limit(512.0, "uploads are refused when they would leave less free disk than this", "MiB")
    max_request_mb: float = limit(8.0, "largest request to an event (a question, its settings, its chat)", "MiB")
    partial_save_seconds: float = limit(2.0, "a streaming answer's text is saved this often (crash recovery)")
    max_sessions: int = limit(10000, "visitor sessions kept in memory (chat state; the least recently used first out)")

    def chat_limits(self) -> ChatLimits:
        return ChatLimits(
            max_image_bytes=int(self.max_image_mb * MIB),
            max_image_pixels=int(self.max_image_megapixels * 1e6),
            max_images_per_message=self.max_images_per_message,
            max_question_chars=self.max_question_chars,
            max_concurrent_decodes=self.max_concurrent_decodes,
        )

    def upload_limits(self) -> UploadLimits:
        return UploadLimits(
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


def _add_flag(parser: argparse.ArgumentParser, groups: dict[str, Any], field: dataclasses.Field) -> None:
    """One field's flag; its environment variable, when set, replaces the field's default."""
    meta = field.metadata
    env = meta["env"] or "EVE_" + field.name.upper()
    name = "--" + field.name.replace("_", "-")
    target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"])) if meta["group"] else parser
    help_text = f"{meta['help']} (env {env})"
    raw = os.environ.get(env) or None
    if isinstance(field.default, bool):
        target.add_argument(name, action="store_true", default=raw == "1" if raw else field.default, help=help_text)
        return
    default_value: Any = field.default
    convert = meta["type"] or (type(default_value) if default_value is not None else str)
    default = convert(raw) if raw is not None else default_value
    target.add_argument(name, type=convert, default=default, choices=meta["choices"], help=help_text)


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from flags; a flag not given takes its environment variable, else the `Settings` default."""
    parser = argparse.ArgumentParser(description="EVEv2 demo: chat with images, browse logs, fine-tune.")
    groups: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        _add_flag(parser, groups, field)
    args = parser.parse_args(argv)
    if args.pending_uploads_mb < args.max_unpacked_mb:
        parser.error(
            f"--pending-uploads-mb ({args.pending_uploads_mb:g}) must be at least --max-unpacked-mb "
            f"({args.max_unpacked_mb:g}), or no upload could ever wait for a launch (twice it keeps one visitor "
            "from blocking the others)"
        )
    return Settings(**vars(args))
