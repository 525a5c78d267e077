"""How the fine-tune form asks for a job setting: one `FormField`, declared with the `JobConfig` field it fills.

A `JobConfig` field declared with `setting(..., form=...)` (in `command.py`) is one argument of /preview_command and
/launch_job (named after the field, with the default an API caller who leaves it out gets), one input of the form
(`widget`: the Gradio component's class and options, which the UI draws), and one key of `job.json` (`saved`). The
readers refuse a value the form cannot use with a message that names the field, whoever sent it. Nothing here imports
gradio: the jobs layer stays light, and the UI builds its form, its endpoints' signatures and Save/Load from these.
"""

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model.shared import TRAIN_DEFAULTS, TRAIN_METHODS

from ..errors import UserError
from ..fields import number_field, optional_number, optional_whole_number

Reader = Callable[[Any], Any]
REQUIRED = inspect.Parameter.empty  # an argument API callers must give
FIELD_DEFAULT: Any = object()  # the `JobConfig` field's own default (`setting` puts it in)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class FormField:
    """One setting of the fine-tune form.

    Attributes:
        default: what an API caller who leaves the argument out sends; the form's input starts with it too.
        read: the form's value -> the `JobConfig` value (raises `UserError` naming the field); None where the
            handler reads it itself (the dataset, the base, the stages).
        widget: the Gradio component's class name that draws the input, `options` its arguments besides the value;
            None where the layout draws it (its choices depend on the server).
        row: the layout's row of the training settings the input sits in.
        saved: whether job.json holds it (the dataset, the base and the hardware belong to this server).
        shown: a `JobConfig` value -> the form's value, for Load.
        blank_is_default: an empty value (or 0) means `default`.
        name: the handlers' argument; the `JobConfig` field's name unless given (`setting` fills it in).
    """

    default: Any
    read: Reader | None = None
    widget: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    row: int = 0
    saved: bool = True
    shown: Reader = _same
    blank_is_default: bool = False
    name: str = ""

    def value(self, raw: Any) -> Any:
        """The `JobConfig` value of what the form sent (as sent where the handler reads it itself)."""
        if self.blank_is_default and not raw:
            raw = self.default
        return self.read(raw) if self.read else raw


def _text(value: object) -> str:
    return "" if value is None else str(value)


def optional(label: str, what: str, placeholder: str, *, row: int, default: str = "", whole: bool = True) -> FormField:
    """A number that may stay empty (the base's or the stage's own), typed as text: an empty number field sends 0.
    `what` names it in the refusal of a value that is no number."""

    def read(value: Any) -> Any:
        return optional_whole_number(value, what, positive=True) if whole else optional_number(value, what)

    options = {"label": label, "placeholder": placeholder}
    return FormField(default, read, "Textbox", options, row, shown=_text)


def number(label: str, *, row: int, whole: bool, default: Any = FIELD_DEFAULT) -> FormField:
    """A number the form always sends; empty or 0 means the default. A whole number counts something (at least 1)."""
    minimum = 1 if whole else None

    def read(value: Any) -> Any:
        return number_field(value, label, minimum=minimum, whole=whole)

    options = {"label": label, "precision": 0 if whole else None, "minimum": minimum}
    return FormField(default, read, "Number", options, row, blank_is_default=True)


def server(default: Any = REQUIRED, read: Reader | None = None, *, saved: bool = False, name: str = "") -> FormField:
    """A setting the layout draws (its choices or its meaning depend on this server)."""
    return FormField(default, read, saved=saved, name=name)


def _whole_seed(value: Any) -> int:
    seed = optional_whole_number(value, "The seed")
    return TRAIN_DEFAULTS["seed"] if seed is None else seed


def _hardware(value: Any) -> str | int:
    """ "CPU" or "N GPU(s)", as the layout offers them, -> "cpu" or N."""
    text = str(value or "CPU").strip()
    if text == "CPU":
        return "cpu"
    count = text.split()[0]
    if not count.isdigit():
        raise UserError(f'The hardware must be "CPU" or a number of GPUs ("2 GPUs"); got {text[:40]!r}.')
    return int(count)


SEED = FormField(TRAIN_DEFAULTS["seed"], _whole_seed, "Number", {"label": "Seed", "precision": 0}, row=2)
EVAL_SPLIT = FormField(
    0.1,
    lambda value: number_field(value, "Eval split", minimum=0.0, maximum=0.5),
    "Slider",
    {"minimum": 0.0, "maximum": 0.5, "step": 0.05, "label": "Eval split"},
    row=2,
)
METHOD = FormField(
    FIELD_DEFAULT,
    lambda value: str(value or "full"),
    "Radio",
    {
        "choices": list(TRAIN_METHODS),
        "label": "Method: every weight of the stages' groups, LoRA adapters, or LoRA on a 4-bit base (QLoRA)",
        "elem_id": "finetune-method",
    },
)
HARDWARE = server("CPU", _hardware)
