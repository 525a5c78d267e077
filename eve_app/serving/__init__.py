"""Serving: the engines that answer, and the factory that picks one from the settings.

Every backend is a `ChatEngine` (base.py): it takes the same `ChatRequest` (types.py) and yields the same events,
`TextDelta` pieces, then one `Finished` with the generation record (prompt tokens, time to first token, tokens/s),
whether the answer completed, was stopped (the request's stop event: the backend aborts the generation itself) or
failed (a message for the user, never a hang). A backend also says how many answers it runs at once; the chat's queue
follows that.

- `transformers` (default): `TransformersEngine` (transformers_engine.py), one `generate` at a time in this process.
- `vllm`: `VllmEngine` (vllm_engine.py), vLLM's async engine in this process (continuous batching, prefix caching).
- `--api-base URL`: `OpenAIEngine` (openai_engine.py), a running vLLM OpenAI-compatible server (`vllm serve`).

Importing this package, its types and the `--api-base` client loads no torch; each backend is imported when picked.
"""

from .base import ChatEngine

BACKENDS = ("transformers", "vllm")


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
    from .transformers_engine import TransformersEngine

    return TransformersEngine.load(settings.model, settings.device, settings.dtype, settings.quantization)


__all__ = ["BACKENDS", "ChatEngine", "load_engine"]
