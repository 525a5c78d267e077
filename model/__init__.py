"""EVEv2 as a library on transformers 5: configuration, modeling, processing, loading, training and evaluation.

    from model import load_pretrained
    model, processor = load_pretrained("BAAI/EVE-7B-HD-v2.0", device="cuda")

`import model` alone loads nothing heavy: the app's light modules import `model.shared` (facts both sides use)
without torch or transformers. The first use of a name below imports the library and registers `eve-qwen2` with
transformers' Auto classes (`model.auto`).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .configuration_eve import EveConfig
    from .image_processing_eve import EveImageProcessor
    from .loading import load_pretrained
    from .modeling_eve import EveForCausalLM, EveModel
    from .processing_eve import EveProcessor

# Public name -> the module that defines it.
_EXPORTS = {
    "EveConfig": ".configuration_eve",
    "EveForCausalLM": ".modeling_eve",
    "EveImageProcessor": ".image_processing_eve",
    "EveModel": ".modeling_eve",
    "EveProcessor": ".processing_eve",
    "load_pretrained": ".loading",
}


def __getattr__(name: str) -> Any:
    """Imports a public name on first use, after registering the Auto classes."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(".auto", __name__)
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = ["EveConfig", "EveForCausalLM", "EveImageProcessor", "EveModel", "EveProcessor", "load_pretrained"]
