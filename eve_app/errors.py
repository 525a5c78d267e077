"""`UserError`: a request the app refuses on purpose, with a message for the person who sent it.

The UI shows it as it is and logs one line; anything else that goes wrong is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input or a refused action; `str(error)` is what the user reads (no server paths in it)."""
