"""The stateless scripting endpoint `/answer`: one image, a task preset, an optional question; streams the answer.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    for text in client.submit(handle_file("poster.png"), "Poster", "", 64, api_name="/answer"):
        print(text)

Calls are logged like chat turns: each is a conversation of one question and its answer.
"""

from pathlib import Path

import gradio as gr

from ..context import AppContext
from ..engine import ChatRequest, EngineError, Finished, GenerationRecord, GenerationSettings, Turn
from ..presets import preset_by_name
from ..spaces_support import gpu
from .generation import record_fields


class ApiHandlers:
    """The /answer endpoint, bound to the app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    @gpu
    def answer(self, image: str | None, task: str, question: str, max_new_tokens: float):
        """Streams the growing answer text for `image` under the task preset `task`."""
        try:
            preset = preset_by_name(self.ctx.presets, task)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        if not image:
            raise gr.Error("No image was given.")
        try:
            self.ctx.engine.check_image(image)
        except EngineError as error:
            raise gr.Error(f"The image could not be read: {error}") from error
        text = (question or "").strip() or preset.instruction
        if not text:
            raise gr.Error(f"The preset {task!r} has no instruction: give a question.")
        conversation = self.ctx.storage.create_conversation(task=preset.name)
        self.ctx.storage.save_user_message(
            conversation, text, task=preset.name, images=[(Path(image).read_bytes(), Path(image).name)]
        )
        stored_images = self.ctx.storage.get_conversation(conversation)["messages"][-1]["images"]
        settings = GenerationSettings(
            max_new_tokens=int(max_new_tokens or preset.max_new_tokens), temperature=preset.temperature
        )
        request = ChatRequest([Turn("user", text, stored_images)], settings)
        record, partial_text = None, ""
        try:
            for event in self.ctx.engine.stream(request):
                if isinstance(event, Finished):
                    record = event.record
                else:
                    partial_text += event.text
                    yield partial_text
        finally:
            record = record or GenerationRecord(status="stopped", text=partial_text)
            self.ctx.storage.finish_answer(
                conversation,
                record.text,
                record.status,
                task=preset.name,
                record=record_fields(record, settings, self.ctx.engine.name),
            )
        if record.status == "error":
            raise gr.Error(record.error or "Generation failed.")
        yield record.text


def build_api(ctx: AppContext) -> None:
    """Hidden components behind `/answer`; scripts call it through gradio_client."""
    h = ApiHandlers(ctx)
    with gr.Row(visible=False):
        image = gr.File(type="filepath", label="image")
        task = gr.Textbox(label="task")
        question = gr.Textbox(label="question")
        max_new_tokens = gr.Number(value=128, precision=0, label="max_new_tokens")
        output = gr.Textbox(label="answer")
        trigger = gr.Button("answer")
    trigger.click(
        h.answer,
        [image, task, question, max_new_tokens],
        output,
        api_name="answer",
        concurrency_id="gpu",
        concurrency_limit=1,
    )
