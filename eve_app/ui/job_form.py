"""The fine-tune form's settings, as `JobConfig` declares them (`jobs.command.FORM`, gradio-free).

Each `FormField` is one argument of /preview_command and /launch_job (its name, and the default an API caller who
leaves it out gets), one input of the form (the layout draws the training settings from their `widget`), and one key
of `job.json` (`saved`: Save writes it as the `JobConfig` field of the same name, Load puts it back). Adding a
training setting to the form is one `setting(..., form=...)` on its `JobConfig` field. A value the form cannot use is
refused with a message that names the field (`read`), whoever sent it.
"""

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from ..errors import UserError
from ..jobs import JobConfig
from ..jobs.command import FORM
from ..jobs.form import FormField
from .refusals import refuse

FIELDS = {spec.name: spec for spec in FORM}
FORM_FIELDS = [spec.name for spec in FORM]
# The fields a saved job.json fills (not the dataset, the base or the hardware, which belong to this server).
LOADED_FIELDS = [spec.name for spec in FORM if spec.saved]


def _component(spec: FormField) -> Callable[[], gr.components.Component]:
    """What draws the field's input: its Gradio component, starting at the field's default."""
    return lambda: getattr(gr, str(spec.widget))(value=spec.default, **spec.options)


def drawn_rows() -> list[dict[str, Callable[[], gr.components.Component]]]:
    """The training settings the layout draws, row by row: each input's name and what draws it."""
    drawn = [spec for spec in FORM if spec.widget]
    return [
        {spec.name: _component(spec) for spec in drawn if spec.row == row}
        for row in sorted({spec.row for spec in drawn})
    ]


def read_settings(form: dict[str, Any]) -> dict[str, Any]:
    """The `JobConfig` values of the form's training settings, each read by its field (refused naming the field)."""
    try:
        return {spec.name: spec.value(form[spec.name]) for spec in FORM if spec.read}
    except UserError as error:
        raise refuse(str(error)) from None


def shown_settings(config: JobConfig) -> dict[str, Any]:
    """The form's values of a loaded job.json, by field name."""
    values = {spec.name: spec.shown(getattr(config, spec.name)) for spec in FORM if spec.saved and spec.read}
    return {"stages": config.stages or [config.stage], **values}


def takes_form(fields: Sequence[FormField] = FORM) -> Callable[[Callable], Callable]:
    """Gives a handler `handler(self, form: dict, *rest)` the signature API callers see: one argument per field (its
    name and default), then the handler's own further arguments. Gradio names the endpoint's parameters, and passes
    the inputs, by that signature; the handler gets the fields' values as one dict."""

    def wrap(handler: Callable) -> Callable:
        own = list(inspect.signature(handler).parameters.values())
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter(spec.name, kind, default=spec.default) for spec in fields]
        signature = inspect.Signature([own[0], *params, *own[2:]])

        @functools.wraps(handler)
        def endpoint(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            form = {spec.name: values.pop(spec.name) for spec in fields}
            this = values.pop(own[0].name)
            return handler(this, form, **values)

        endpoint.__signature__ = signature  # type: ignore[attr-defined]
        endpoint.__annotations__ = {p.name: p.annotation for p in own[2:] if p.annotation is not p.empty}
        return endpoint

    return wrap
