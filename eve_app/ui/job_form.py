"""The fine-tune form's settings, declared once in `FORM`.

Each `FormField` is one argument of /preview_command and /launch_job (its name, and the default an API caller who
leaves it out gets), one input of the form (the layout draws the training settings from their `component`), and one
key of `job.json` (`saved`: Save writes it as the `JobConfig` field of the same name, Load puts it back). Adding a
training setting to the form is one `FormField` here, beside the `JobConfig` field it fills. A value the form cannot
use is refused with a message that names the field (`read`), whoever sent it.
"""

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from model.shared import TRAIN_DEFAULTS, TRAIN_METHODS

from ..errors import UserError
from ..fields import number_field, optional_number, optional_whole_number
from ..jobs import JobConfig
from .refusals import refuse

Reader = Callable[[Any], Any]


@dataclass(frozen=True)
class FormField:
    """One setting of the fine-tune form.

    Attributes:
        name: the handlers' argument and the `JobConfig` field it fills.
        default: what an API caller who leaves the argument out sends; the form starts with it too.
        read: the form's value -> the `JobConfig` value (raises `UserError` naming the field); None where the
            handler reads it itself (the dataset, the base, the stages, the hardware).
        component: draws the input (None where the layout draws it: its choices depend on the server).
        row: the layout's row of the training settings the input sits in.
        saved: whether job.json holds it (the dataset, the base and the hardware belong to this server).
        shown: a `JobConfig` value -> the form's value, for Load.
    """

    name: str
    default: Any
    read: Reader | None = None
    component: Callable[[], gr.components.Component] | None = None
    row: int = 0
    saved: bool = True
    shown: Reader = field(default=lambda value: value)

    def value(self, raw: Any) -> Any:
        """The `JobConfig` value of what the form sent (as sent where the handler reads it itself)."""
        return self.read(raw) if self.read else raw


def _text(value: object) -> str:
    return "" if value is None else str(value)


def optional(
    name: str, label: str, what: str, placeholder: str, *, row: int, default: str = "", whole: bool = True
) -> FormField:
    """A number that may stay empty (the base's or the stage's own), typed as text: an empty number field sends 0.
    `what` names it in the refusal of a value that is no number."""

    def read(value: Any) -> Any:
        return optional_whole_number(value, what, positive=True) if whole else optional_number(value, what)

    def component() -> gr.components.Component:
        return gr.Textbox(value=default, label=label, placeholder=placeholder)

    return FormField(name, default, read, component, row, shown=_text)


def number(name: str, label: str, default: float, *, row: int, whole: bool) -> FormField:
    """A number the form always sends; empty or 0 means the default. A whole number counts something (at least 1)."""
    minimum = 1 if whole else None

    def read(value: Any) -> Any:
        return number_field(value or default, label, minimum=minimum, whole=whole)

    def component() -> gr.components.Component:
        return gr.Number(value=default, label=label, precision=0 if whole else None, minimum=minimum)

    return FormField(name, default, read, component, row)


def server_field(name: str, default: Any, *, saved: bool = False) -> FormField:
    """A setting the layout draws and the handler reads (its choices or its meaning depend on this server)."""
    return FormField(name, default, saved=saved)


def _whole_seed(value: Any) -> int:
    seed = optional_whole_number(value, "The seed")
    return TRAIN_DEFAULTS["seed"] if seed is None else seed


def _method(value: Any) -> str:
    return str(value or "full")


FORM: tuple[FormField, ...] = (
    server_field("dataset", inspect.Parameter.empty),  # the id /validate_dataset returned
    server_field("base", inspect.Parameter.empty),
    server_field("stages", inspect.Parameter.empty, saved=True),
    optional(
        "lr",
        "Learning rate (empty: the base's fine-tuning default, else the stage's)",
        "The learning rate",
        "the base's or the stage's",
        row=1,
        whole=False,
    ),
    optional("max_steps", "Steps (empty: epochs)", "Steps", "epochs", row=1, default="60"),
    number("epochs", "Epochs", TRAIN_DEFAULTS["epochs"], row=1, whole=False),
    number("batch_size", "Batch size", 4, row=1, whole=True),
    number("grad_accum", "Gradient accumulation", TRAIN_DEFAULTS["grad_accum"], row=1, whole=True),
    optional("max_image_size", "Max image size (empty: the stage's)", "The max image size", "the stage's", row=2),
    optional("max_length", "Max length in tokens (empty: 4096)", "The max length", "4096", row=2),
    FormField(
        "seed",
        TRAIN_DEFAULTS["seed"],
        _whole_seed,
        lambda: gr.Number(value=TRAIN_DEFAULTS["seed"], precision=0, label="Seed"),
        row=2,
    ),
    FormField(
        "eval_split",
        0.1,
        lambda value: number_field(value, "Eval split", minimum=0.0, maximum=0.5),
        lambda: gr.Slider(0.0, 0.5, value=0.1, step=0.05, label="Eval split"),
        row=2,
    ),
    server_field("hardware", "CPU"),
    server_field("strategy", "ddp"),
    FormField(
        "method",
        "full",
        _method,
        lambda: gr.Radio(
            list(TRAIN_METHODS),
            value="full",
            label="Method: every weight of the stages' groups, LoRA adapters, or LoRA on a 4-bit base (QLoRA)",
            elem_id="finetune-method",
        ),
        row=0,
    ),
    optional("lora_rank", "LoRA rank (empty: the base's, else 8)", "The LoRA rank", "the base's", row=0),
)
FIELDS = {spec.name: spec for spec in FORM}
FORM_FIELDS = [spec.name for spec in FORM]
# The fields a saved job.json fills (not the dataset, the base or the hardware, which belong to this server).
LOADED_FIELDS = [spec.name for spec in FORM if spec.saved]


def drawn_rows() -> list[dict[str, Callable[[], gr.components.Component]]]:
    """The training settings the layout draws, row by row: each input's name and what draws it."""
    drawn = [spec for spec in FORM if spec.component]
    return [
        {spec.name: spec.component for spec in drawn if spec.component and spec.row == row}
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
