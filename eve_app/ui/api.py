"""The stateless scripting endpoint `/answer`: one image, a task preset, an optional question; streams the answer.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    for text in client.submit(handle_file("poster.png"), "Poster", "", 64, api_name="/answer"):
        print(text)

Calls are logged like chat turns, under the owner `api` (only the admin sees them): each is a conversation of one
question and its answer. The question and an empty answer are saved as soon as the call arrives, before it waits
for the model, so a call that a crash cuts off is still on record (as interrupted).
"""

import gradio as gr

from ..chat_session import ChatSession
from ..context import AppContext
from ..conversations import RawSettings
from ..errors import UserError
from ..presets import preset_by_name
from ..security import API_OWNER
from ..serving.types import Finished
from .refusals import refuse

API_CONCURRENCY = 8  # /answer calls handled at once on a backend that answers one at a time (the rest queue)


class ApiHandlers:
    """The /answer endpoint, bound to the app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def answer(self, image: str | dict | None, task: object, question: object, max_new_tokens: int | None):
        """Streams the growing answer text for `image` under the task preset `task`.

        The event runs without Gradio's per-component pre- and postprocessing (each a hop to a worker thread and
        back, four an answer and one a streamed piece): Gradio has already checked the file (an uploaded one, in
        its cache) and the number (`Blocks`) by then, and what the components' own steps did is done here: the
        file's path from its record, text inputs as text, the answer as it is.

        Args:
            image: the image file (its path, or Gradio's file record with the path).
            task: a task preset's name, e.g. "OCR" or "Poster".
            question: the question; empty sends the preset's instruction.
            max_new_tokens: the longest answer in tokens, at least 1 (empty: the preset's).
        """
        image = image.get("path") if isinstance(image, dict) else image
        task, question = _text(task), _text(question)
        try:
            preset = preset_by_name(self.ctx.presets, task)  # type: ignore[arg-type] # None: refused by name
            if not image:
                raise UserError("image must be an uploaded image file; none was given.")
            text = (question or "").strip() or preset.instruction
            if not text:
                raise UserError(f"The preset {task!r} has no instruction: give a question.")
            tokens = preset.max_new_tokens if max_new_tokens is None else max_new_tokens
            raw = RawSettings(temperature=preset.temperature, max_new_tokens=tokens)
            # The question and its empty "streaming" answer are saved in one transaction, then the answer streams.
            turn = self.ctx.conversations.answer(
                ChatSession(owner=API_OWNER), preset.name, raw, question=(text, [image])
            )
            partial = ""
            for event in turn:
                if isinstance(event, Finished):
                    if event.record.status == "error":
                        raise UserError(event.record.error or "Generation failed.")
                    yield event.record.text
                else:
                    partial += event.text
                    if partial.strip():  # as the final answer reads: no leading space (a tokenizer's word boundary)
                        yield partial.lstrip()
        except (UserError, ValueError) as error:
            raise refuse(str(error)) from None


def _text(value: object) -> str | None:
    """A text input as the Textbox component hands it on: any JSON value as text, None as None."""
    return None if value is None else str(value)


def build_api(ctx: AppContext) -> None:
    """Hidden components behind `/answer`; scripts call it through gradio_client."""
    h = ApiHandlers(ctx)
    with gr.Row(visible=False):
        image = gr.File(type="filepath", label="image")
        task = gr.Textbox(label="task")
        question = gr.Textbox(label="question")
        max_new_tokens = gr.Number(value=128, precision=0, minimum=1, label="max_new_tokens")
        output = gr.Textbox(label="answer")
        trigger = gr.Button("answer")
    # Not in the "gpu" group: the call is saved at once, then waits for the engine's own lock (transformers) or joins
    # vLLM's batch: as many calls at once as the engine answers, and at least the queue's default.
    limit = max(ctx.engine.concurrency_limit, API_CONCURRENCY)
    trigger.click(
        h.answer,
        [image, task, question, max_new_tokens],
        output,
        api_name="answer",
        concurrency_limit=limit,
        preprocess=False,
        postprocess=False,
    )
