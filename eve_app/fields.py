"""Number fields, parsed with a message that names the field and what it expects.

Optional numbers are typed as text: an empty Gradio number field shows and sends 0, which is a real value for a seed
and a wrong one for a learning rate, so fields that may stay empty are text boxes parsed here. Sliders and number
fields are checked with `number_field` by `ui.refusals.Blocks` before Gradio reads them (an API caller can send any
value: text, NaN, infinity).
"""

import math

from .errors import UserError


def optional_number(value: str | float | None, what: str) -> float | None:
    """ "" (or None) means unset; anything else must be a number."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{what} must be a number (or empty), got {text!r}.") from None


def optional_whole_number(value: str | float | None, what: str, positive: bool = False) -> int | None:
    """Like `optional_number` for whole numbers; a negative number (or 0 with `positive`) also means unset, as old
    API callers sent -1 and 0 for "random" and "the model's"."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise UserError(f"{what} must be a whole number (or empty), got {text!r}.")
    return None if number < 0 or (positive and number == 0) else int(number)


def number_field(
    value: object, field: str, *, minimum: float | None = None, maximum: float | None = None, whole: bool = False
) -> float | int:
    """`value` as a finite number within [minimum, maximum] (a whole one with `whole`), else a UserError that names
    `field` and what it expects. Numbers written as text ("12") are read; booleans, lists, NaN and infinity are not."""
    kind = "a whole number" if whole else "a number"
    if minimum is not None and maximum is not None:
        expected = f"{kind} from {minimum:g} to {maximum:g}"
    elif minimum is not None:
        expected = f"{kind} of at least {minimum:g}"
    else:
        expected = kind
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    refused = UserError(f"{field} must be {expected}; got {shown}.")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise refused
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise refused from None
    if not math.isfinite(number) or (whole and not number.is_integer()):
        raise refused
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise refused
    return int(number) if whole else number


class Refusal:
    """A number input that `ui.refusals.Blocks` refused, handed to a handler marked `takes_refusals` instead of ending
    the event before it runs: the handler reports `message` as its own refusal, and can save it with the answer the
    setting was for."""

    def __init__(self, message: str):
        self.message = message

    @staticmethod
    def first(*values: object) -> str | None:
        """The message of the first refused value among `values`, None when none was refused."""
        return next((value.message for value in values if isinstance(value, Refusal)), None)
