"""Optional number fields, typed as text: an empty Gradio number field shows and sends 0, which is a real value for
a seed and a wrong one for a learning rate, so fields that may stay empty are text boxes parsed here."""

from ..errors import UserError


def optional_number(value: str | float | None, what: str) -> float | None:
    """"" (or None) means unset; anything else must be a number."""
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
    number = optional_number(value, what)
    if number is None:
        return None
    if number != int(number):
        raise UserError(f"{what} must be a whole number (or empty), got {value!r}.")
    if number < 0 or (positive and number == 0):
        return None
    return int(number)
