"""Optional number fields, typed as text: an empty Gradio number field shows and sends 0, which is a real value for
a seed and a wrong one for a learning rate, so fields that may stay empty are text boxes parsed here."""

import math

from ..errors import UserError


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
