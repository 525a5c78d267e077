"""`refuse`: how a handler says no to a request — the message for the visitor, one log line for the operator.

Expected refusals (bad input, a limit, a missing password) are not bugs: no traceback on the console. `Blocks` does
the same for values Gradio itself cannot read before any handler runs (a file given as text, a path that is not an
uploaded file): a message naming the input and what it expects, instead of a bare "Error" and a traceback.
"""

import inspect
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import gradio as gr
from gradio.exceptions import ComponentProcessingError, InvalidPathError

from ..errors import UserError
from ..fields import Refusal, number_field

logger = logging.getLogger("eve_app.refused")

# What each kind of input expects, by Gradio component name (the rest: Gradio's own API description).
EXPECTED = {
    "file": "an uploaded file ({'path': ..., 'meta': {'_type': 'gradio.FileData'}}, as gradio_client's handle_file)",
    "multimodaltextbox": "a message {'text': ..., 'files': [uploaded files]}",
    "number": "a number",
    "slider": "a number",
    "textbox": "text",
}


def refuse(message: str) -> gr.Error:
    """The error to raise (`raise refuse(...) from None`), logged as one line."""
    logger.info("refused: %s", message)
    return gr.Error(message, print_exception=False)


def takes_refusals(handler: Callable) -> Callable:
    """Marks a handler that takes a refused number input as a `Refusal` (and reports it itself, e.g. saved as the
    answer it was for) instead of being skipped."""
    handler.takes_refusals = True  # type: ignore[attr-defined]
    return handler


class Blocks(gr.Blocks):
    """`gr.Blocks` whose events refuse bad inputs with `refuse` (the input's name and what it expects, one log line,
    no traceback) instead of Gradio's bare "Error" and traceback.

    Number fields and sliders are checked here first (finite, within their bounds, whole where they step by whole
    numbers), since Gradio lets NaN through and fails on text; a handler marked `takes_refusals` gets a `Refusal`
    in place of a bad one. Any other input Gradio cannot read is refused when Gradio fails on it.
    """

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False):
        inputs, refused = self._checked_numbers(block_fn, list(inputs))
        takes = getattr(block_fn.fn, "takes_refusals", False)
        if refused and not takes:
            raise refuse(next(iter(refused.values())).message)
        while True:
            try:
                processed = await super().preprocess_data(block_fn, inputs, state, explicit_call)
                break
            except Exception as error:  # any failure to read an input is the caller's bad value
                if isinstance(error, gr.Error) and not error.print_exception:
                    raise  # already a refusal
                index = _failed_input(block_fn, inputs, error)
                message = _described(block_fn, inputs, error, index)
                if not takes or index is None or index in refused:
                    raise refuse(message) from None
                # The handler reports it (and saves it with its answer); Gradio reads the input's own value instead.
                refused[index] = Refusal(message)
                inputs[index] = getattr(block_fn.inputs[index], "value", None)
        for index, refusal in refused.items():
            processed[index] = refusal
        return processed

    @staticmethod
    def _checked_numbers(block_fn: Any, inputs: list[Any]) -> tuple[list[Any], dict[int, Refusal]]:
        """`inputs` with every number and slider value checked by `number_field`; a refused one is replaced by the
        component's own value (for Gradio to read) and returned by index as a `Refusal`."""
        refused: dict[int, Refusal] = {}
        if len(inputs) != len(block_fn.inputs):
            return inputs, refused  # Gradio refuses the request as a whole
        names = _input_names(block_fn)
        for index, block in enumerate(block_fn.inputs):
            if not isinstance(block, (gr.Number, gr.Slider)) or (
                isinstance(block, gr.Number) and inputs[index] is None
            ):
                continue
            step = getattr(block, "step", 1)
            whole = block.precision == 0 if isinstance(block, gr.Number) else float(step).is_integer()
            whole = whole and (block.minimum is None or float(block.minimum).is_integer())
            try:
                inputs[index] = number_field(
                    inputs[index], names[index], minimum=block.minimum, maximum=block.maximum, whole=whole
                )
            except UserError as error:
                refused[index] = Refusal(str(error))
                inputs[index] = block.value if isinstance(block.value, (int, float)) else block.minimum
        return inputs, refused


def _described(block_fn: Any, inputs: list[Any], error: Exception, index: int | None) -> str:
    """The refusal's message. Gradio's own text is shown only for its `gr.Error`s: its other errors can name server
    paths (the working folder, the blocked paths)."""
    names = _input_names(block_fn)
    if len(inputs) != len(block_fn.inputs):
        return f"This endpoint takes {len(names)} inputs ({', '.join(names)}); got {len(inputs)}."
    reason = error.message if isinstance(error, gr.Error) else None
    if isinstance(error, InvalidPathError):
        reason = "the file was not uploaded to this server"
    if index is None:
        return f"An input of this request was refused: {reason or 'it is not of the expected kind'}."
    block = block_fn.inputs[index]
    choices = [value for _, value in getattr(block, "choices", None) or []]
    expected = (
        f"one of {choices}"
        if choices
        else EXPECTED.get(block.get_block_name()) or str(block.api_info().get("type") or "another value")
    )
    value = repr(inputs[index])
    shown = value if len(value) <= 60 else value[:60] + "..."
    if choices:
        reason = None  # Gradio's text repeats the value and the choices
    return f"{names[index]} must be {expected}; got {shown}" + (f" ({reason})." if reason else ".")


def _input_names(block_fn: Any) -> list[str]:
    """Each input's label, else the handler's parameter for it (the name API callers see)."""
    try:
        parameters = [
            name
            for name, parameter in inspect.signature(block_fn.fn).parameters.items()
            if not _filled_by_gradio(parameter.annotation)
            and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        parameters = []
    names = []
    for index, block in enumerate(block_fn.inputs):
        label = getattr(block, "label", None)
        fallback = parameters[index] if index < len(parameters) else f"input {index + 1}"
        names.append(str(label) if label else fallback)
    return names


def _filled_by_gradio(annotation: object) -> bool:
    """A parameter Gradio fills itself (the request, an event's data), not from an input."""
    if isinstance(annotation, type):
        return issubclass(annotation, (gr.Request, gr.EventData))
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "Request" in text or ("Data" in text and "gradio" in text) or text.endswith("Data")


def _failed_input(block_fn: Any, inputs: list[Any], error: Exception) -> int | None:
    """Which input failed: the one Gradio's processing error names; for a file Gradio would not take, the first input
    that names a file; else the first whose value is not among its choices, or that its data model rejects."""
    if isinstance(error, ComponentProcessingError):
        found = re.search(r"at index (\d+)", str(error))
        if found:
            return int(found.group(1))
    if isinstance(error, InvalidPathError):
        return next((i for i, value in enumerate(inputs) if '"path"' in json.dumps(value, default=str)), None)
    if len(inputs) != len(block_fn.inputs):
        return None
    for index, block in enumerate(block_fn.inputs):
        choices = [value for _, value in getattr(block, "choices", None) or []]
        value = inputs[index]
        if (
            choices
            and value is not None
            and any(v not in choices for v in (value if isinstance(value, list) else [value]))
        ):
            return index
    for index, block in enumerate(block_fn.inputs):
        model = getattr(block, "data_model", None)
        if model is None or inputs[index] is None:
            continue
        try:
            model.model_validate(inputs[index], context={"validate_meta": True})
        except Exception:  # noqa: BLE001 -- pydantic's ValidationError, or a value of the wrong shape altogether
            return index
    return None
