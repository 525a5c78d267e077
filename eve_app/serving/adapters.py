"""LoRA adapters (peft folders, e.g. a fine-tune job's `--method lora` output) for the vLLM backends.

Both vLLM backends serve a job's adapter beside the base model they were started with, without a restart: the
admin's model picker calls `reload` with the job folder, and requests go out with the adapter from then on (answers
under way finish on what they started with; base and adapter requests share vLLM's batches).
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from model.shared import ADAPTER_CONFIG_FILE as ADAPTER_CONFIG  # what peft's save_pretrained writes

from ..errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adapter:
    name: str  # what the chat shows and vLLM knows it by
    path: str  # the folder, absolute
    rank: int
    base: str | None  # the checkpoint it was trained on, as the job named it


class ServesAdapters(Protocol):
    """A backend whose engine serves LoRA adapters beside the base model it was started with."""

    checkpoint_dir: str

    def set_adapter(self, name: str | None, path: str | None = None) -> None: ...


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
    return Adapter(
        name or folder.name, str(folder.resolve()), int(config.get("r") or 0), config.get("base_model_name_or_path")
    )


def switch_model(engine: ServesAdapters, path: str, name: str | None, restart_hint: str) -> None:
    """The model picker on a vLLM backend: an adapter folder for the engine's base model is served from now on,
    the engine's own checkpoint switches back to the base; any other model is refused with `restart_hint`."""
    adapter = read_adapter(path, name)
    if adapter is not None:
        _check_base(adapter, engine.checkpoint_dir)
        engine.set_adapter(adapter.name, adapter.path)
    elif same_folder(path, engine.checkpoint_dir):
        engine.set_adapter(None)
    else:
        raise UserError(restart_hint)


def _check_base(adapter: Adapter, checkpoint_dir: str) -> None:
    """Refuses an adapter trained on another model: its base folder is here and its config differs from the served
    checkpoint's. (A base that is not here, e.g. a job moved from another machine, is taken on trust.)"""
    if not adapter.base or same_folder(adapter.base, checkpoint_dir):
        return
    theirs, ours = Path(adapter.base).expanduser() / "config.json", Path(checkpoint_dir) / "config.json"
    if not theirs.is_file() or not ours.is_file():
        log.info(
            "Adapter %s names base %s, which is not here; serving it on %s", adapter.name, adapter.base, ours.parent
        )
        return
    ignore = {"_name_or_path", "transformers_version", "dtype", "torch_dtype"}

    def fields(file: Path) -> dict:
        return {k: v for k, v in json.loads(file.read_text()).items() if k not in ignore}

    if fields(theirs) != fields(ours):
        raise UserError(
            f"{adapter.name} was trained on {Path(adapter.base).name}, a different model from the one this engine "
            f"serves ({Path(checkpoint_dir).name}); start the app on its base to use it."
        )


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same folder (e.g. the picker's choice and the checkpoint the engine serves)."""
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


__all__ = ["ADAPTER_CONFIG", "Adapter", "ServesAdapters", "read_adapter", "same_folder", "switch_model"]
