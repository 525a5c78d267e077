"""`refuse`: how a handler says no to a request — the message for the visitor, one log line for the operator.

Expected refusals (bad input, a limit, a missing password) are not bugs: no traceback on the console.
"""

import logging

import gradio as gr

logger = logging.getLogger("eve_app.refused")


def refuse(message: str) -> gr.Error:
    """The error to raise (`raise refuse(...) from None`), logged as one line."""
    logger.info("refused: %s", message)
    return gr.Error(message, print_exception=False)
