"""The model line and the status line of the chat tab."""

from ..engine import Engine, GenerationRecord


def model_line(engine: Engine) -> str:
    """The loaded model, with its card's notice for visitors (e.g. what the small default model can do)."""
    line = f"**Model** {engine.describe()}"
    return line + (f"  \n<small>ℹ️ {engine.notice}</small>" if engine.notice else "")


def status_line(engine: Engine, record: GenerationRecord | None = None) -> str:
    """The figures of the last answer (empty before the first one)."""
    line = ""
    if record is not None and record.prompt_tokens:
        ttft = f"{record.time_to_first_token:.2f} s" if record.time_to_first_token is not None else "–"
        line += (
            f"**Last answer** {record.prompt_tokens} prompt tokens, first token {ttft}, "
            f"{record.new_tokens} new tokens at {record.tokens_per_second:.1f} tokens/s ({record.status})"
        )
        if record.new_tokens_limit is not None:
            line += (
                f"  \nℹ️ New tokens lowered to {record.new_tokens_limit}: that is what the model's "
                f"{engine.context_length}-token context left after this conversation's {record.prompt_tokens}."
            )
    return line
