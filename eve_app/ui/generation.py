"""The model line and the status line of the chat tab."""

from ..serving.base import ChatEngine
from ..serving.types import GenerationRecord


def model_line(engine: ChatEngine) -> str:
    """The loaded model, with its card's notice for visitors (e.g. what the small default model can do)."""
    line = f"**Model** {engine.describe()}"
    return line + (f"  \n<small>ℹ️ {engine.notice}</small>" if engine.notice else "")


def status_line(engine: ChatEngine, record: GenerationRecord | None = None) -> str:
    """The figures of the last answer; before the first one, and for an answer refused before generating, a line
    that says so (never empty: an empty line collapses and the chat below it jumps)."""
    line = "**Last answer** none yet"
    if record is not None and not record.prompt_tokens:
        reason = (record.error or record.status).splitlines()[0][:200]
        line = f"**Last answer** not generated ({record.status}): {reason}"
    elif record is not None:
        ttft = f"{record.time_to_first_token:.2f} s" if record.time_to_first_token is not None else "–"
        line = (
            f"**Last answer** {record.prompt_tokens} prompt tokens, first token {ttft}, "
            f"{record.new_tokens} new tokens at {record.tokens_per_second:.1f} tokens/s ({record.status})"
        )
        if record.new_tokens_limit is not None:
            line += (
                f"  \nℹ️ New tokens lowered to {record.new_tokens_limit}: that is what the model's "
                f"{engine.context_length}-token context left after this conversation's {record.prompt_tokens}."
            )
    return line
