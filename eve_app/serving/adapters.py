"""LoRA adapters (peft folders, e.g. a fine-tune job's `--method lora` output) for the vLLM backends.

Both vLLM backends serve a job's adapter beside the base model they were started with, without a restart: the
admin's model picker calls `reload` with the job folder, and requests go out with the adapter from then on (answers
under way finish on what they started with; base and adapter requests share vLLM's batches).
"""

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

ADAPTER_CONFIG = "adapter_config.json"  # what peft's save_pretrained writes beside the adapter weights


@dataclass(frozen=True)
class Adapter:
    name: str  # what the chat shows and vLLM knows it by
    path: str  # the folder, absolute
    rank: int


def read_adapter(path: str, name: str | None = None) -> Adapter | None:
    """The LoRA adapter in the folder `path`, or None where the folder holds no adapter (a full checkpoint)."""
    folder = Path(path).expanduser()
    config_file = folder / ADAPTER_CONFIG
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except ValueError as error:
        raise UserError(f"{config_file.name} in {folder.name} is not valid JSON: {error}") from None
    if config.get("peft_type") != "LORA":
        raise UserError(f"{folder.name} holds a {config.get('peft_type')} adapter; vLLM serves LoRA adapters only.")
    return Adapter(name or folder.name, str(folder.resolve()), int(config.get("r") or 0))


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same folder (e.g. the picker's choice and the checkpoint the engine serves)."""
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


__all__ = ["ADAPTER_CONFIG", "Adapter", "read_adapter", "same_folder"]
