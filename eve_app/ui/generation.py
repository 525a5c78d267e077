"""Small helpers shared by the chat tab and the API: the status line and the stored generation record."""

from ..engine import Engine, GenerationRecord, GenerationSettings


def record_fields(record: GenerationRecord, settings: GenerationSettings, model_name: str) -> dict:
    """The generation record as storage keeps it."""
    return {
        "model": model_name,
        "parameters": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "repetition_penalty": settings.repetition_penalty,
            "seed": settings.seed,
            "image_max_size": settings.image_max_size,
        },
        "prompt_tokens": record.prompt_tokens,
        "new_tokens": record.new_tokens,
        "time_to_first_token": record.time_to_first_token,
        "duration": record.duration,
        "status": record.status,
        "error": record.error,
    }


def status_line(engine: Engine, record: GenerationRecord | None = None) -> str:
    line = f"**Model** {engine.describe()}"
    if record is not None and record.prompt_tokens:
        ttft = f"{record.time_to_first_token:.2f} s" if record.time_to_first_token is not None else "–"
        line += (
            f" · **last answer** {record.prompt_tokens} prompt tokens, first token {ttft}, "
            f"{record.new_tokens} new tokens at {record.tokens_per_second:.1f} tokens/s ({record.status})"
        )
    return line
