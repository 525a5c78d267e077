"""The engine seam: what the app asks of a backend, and the factory that picks one from the settings.

Every backend takes the same `ChatRequest` (eve_app/engine.py) and yields the same events: `TextDelta` pieces, then
one `Finished` with the generation record (prompt tokens, time to first token, tokens/s), whether the answer
completed, was stopped (the request's stop event: the backend aborts the generation itself) or failed (a message for
the user, never a hang). A backend also says how many answers it runs at once; the chat's queue follows that.

- `transformers` (default): `eve_app.engine.Engine`, one `generate` at a time in this process, behind a lock.
- `vllm`: `VllmEngine`, vLLM's async engine in this process (continuous batching, prefix caching).
- `--api-base URL`: `OpenAIEngine`, a running vLLM OpenAI-compatible server (`vllm serve`).
"""

from collections.abc import Iterator
from typing import Protocol

from ..engine import ChatRequest, Finished, TextDelta

BACKENDS = ("transformers", "vllm")


class ChatEngine(Protocol):
    """What the UI, the conversation service and /answer use of an engine."""

    name: str
    concurrency_limit: int  # answers generated at once; the chat's Gradio queue allows that many

    @property
    def checkpoint_dir(self) -> object:
        """The model folder (tasks.json, model card), or None."""

    def stream(self, request: ChatRequest) -> Iterator[TextDelta | Finished]: ...

    def describe(self) -> str: ...

    def reload(self, path: str, name: str | None = None) -> None: ...

    @property
    def notice(self) -> str | None: ...

    @property
    def context_length(self) -> int: ...

    @property
    def image_max_size(self) -> int: ...

    @property
    def patch_size(self) -> int: ...

    @property
    def gpu_count(self) -> int: ...


def load_engine(settings) -> ChatEngine:
    """The backend the settings ask for: `--api-base` wins, then `--backend`."""
    if settings.quantization not in (None, "none") and (settings.api_base or settings.backend != "transformers"):
        raise ValueError("--quantization (bitsandbytes) applies to the transformers backend only")
    if settings.api_base:
        from .openai_engine import OpenAIEngine

        return OpenAIEngine.connect(settings.api_base, settings.model, api_key=settings.api_key)
    if settings.backend == "vllm":
        from .vllm_engine import VllmEngine

        return VllmEngine.load(settings.model, device=settings.device, dtype=settings.dtype)
    if settings.backend != "transformers":
        raise ValueError(f"Unknown backend {settings.backend!r}; choose one of {BACKENDS}")
    from ..engine import Engine

    return Engine.load(settings.model, settings.device, settings.dtype, settings.quantization)


__all__ = ["BACKENDS", "ChatEngine", "load_engine"]
