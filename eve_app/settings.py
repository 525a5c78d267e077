"""Application settings from command-line flags, with environment variables as defaults (for Docker and Spaces)."""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = str(Path(__file__).resolve().parents[1] / "assets" / "eve-tiny")


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str | None = None  # "float32", "bfloat16", "float16"; None: bf16 on GPU, fp32 on CPU
    quantization: str | None = None  # None, "8bit", "4bit"
    host: str = "127.0.0.1"
    port: int = 7860
    data_dir: Path = Path("data")
    db_url: str | None = None  # None: SQLite in data_dir
    admin_password: str | None = None  # enables launching fine-tune jobs
    allow_jobs_on_spaces: bool = False

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
    parser = argparse.ArgumentParser(description="EVEv2 demo: chat with images, browse logs, fine-tune.")
    parser.add_argument(
        "--model",
        default=_env("EVE_MODEL", DEFAULT_MODEL),
        help="checkpoint folder or Hub id, e.g. BAAI/EVE-7B-HD-v2.0 (env EVE_MODEL; default: the "
        "project's small model)",
    )
    parser.add_argument("--device", default=_env("EVE_DEVICE", "cpu"), help="cpu, cuda, cuda:1 (env EVE_DEVICE)")
    parser.add_argument(
        "--dtype",
        default=_env("EVE_DTYPE"),
        choices=["float32", "bfloat16", "float16"],
        help="weights dtype (env EVE_DTYPE; default bf16 on GPU, fp32 on CPU)",
    )
    parser.add_argument(
        "--quantization",
        default=_env("EVE_QUANTIZATION"),
        choices=["8bit", "4bit"],
        help="bitsandbytes quantisation (env EVE_QUANTIZATION)",
    )
    parser.add_argument(
        "--host", default=_env("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on (env GRADIO_SERVER_NAME)"
    )
    parser.add_argument(
        "--port", type=int, default=int(_env("GRADIO_SERVER_PORT", 7860)), help="port (env GRADIO_SERVER_PORT)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("EVE_DATA_DIR", "data")),
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
    args = parser.parse_args(argv)
    return Settings(**vars(args))
