"""The chat tab: task presets, multimodal input, streamed answers, stop, retry, undo, edit, like, and a status line.

A turn is a chain: `submit_message` saves the user's message (before it waits for the model) and `respond` streams
the answer. The conversation service does both (`ask`, then `answer`), with the owner checks, and keeps the
`ChatSession` that the browser shows; the handlers only translate between Gradio and it.
"""

from typing import Any

import gradio as gr

from ..chat_session import ChatSession
from ..context import AppContext
from ..conversations import RawSettings
from ..errors import UserError
from ..presets import FREE_CHAT, preset_by_name
from ..security import session_owner
from ..serving.types import Finished
from .chat_layout import SHOW_CHAT_JS, chat_layout, example_pairs, examples
from .generation import model_line, status_line
from .refusals import refuse, takes_refusals


class ChatHandlers:
    """The chat tab's event handlers, bound to the app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def submit_message(
        self, message: dict, preset_name: str, session: ChatSession, owner: str | None, request: gr.Request
    ):
        """Validates and saves the user's message; the answer is streamed by `respond`, chained after this."""
        text = ((message or {}).get("text") or "").strip()
        files = [f if isinstance(f, str) else f["path"] for f in (message or {}).get("files", [])]
        try:
            preset = preset_by_name(self.ctx.presets, preset_name)
        except ValueError as error:
            raise refuse(str(error)) from None
        if not text and not files:
            raise refuse("Type a question or add an image.")
        if not text:
            if preset.name == FREE_CHAT:
                raise refuse("Free chat needs a question: type what you want to know about the image.")
            text = preset.instruction
        self.add_user_turn(session, text, files, preset.name, owner or session_owner(request))
        self.ctx.stops.new(request.session_hash)
        return self.answering_input(clear=True), session.to_chatbot(), session

    @staticmethod
    def answering_input(clear: bool = False):
        """While an answer streams: the box takes no input and Send turns into Stop (a new message, a retry or an
        edit alike); `clear` empties it (the message it held was just sent)."""
        if clear:
            return gr.MultimodalTextbox(value=None, interactive=False, submit_btn=False, stop_btn=True)
        return gr.MultimodalTextbox(interactive=False, submit_btn=False, stop_btn=True)

    def add_user_turn(self, session: ChatSession, text: str, files: list[str], task: str, owner: str) -> None:
        session.owner = session.owner or owner
        try:
            self.ctx.conversations.ask(session, text, files, task)
        except UserError as error:
            raise refuse(str(error)) from None

    @takes_refusals
    def respond(
        self,
        session: ChatSession,
        preset_name: str,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        repetition_penalty: float,
        seed: str | float | None,
        image_max_size: str | float | None,
        request: gr.Request,
    ):
        """Streams the answer to the last user turn; the service saves it as it grows and when it ends. Inputs arrive
        checked, or as a `Refusal` (see `refusals.Blocks`): the service saves that as this answer's error."""
        if not session.turns or session.turns[-1].role != "user" or session.conversation_id is None:
            yield session.to_chatbot(), session, gr.skip(), gr.skip()
            return
        raw = RawSettings(temperature, top_p, max_new_tokens, repetition_penalty, seed, image_max_size)
        stop = self.ctx.stops.current(request.session_hash)
        for event in self.ctx.conversations.answer(session, preset_name, raw, stop):
            if isinstance(event, Finished):
                status = status_line(self.ctx.engine, event.record)
                yield session.to_chatbot(), session, status, model_line(self.ctx.engine)
            else:
                yield session.to_chatbot(), session, gr.skip(), gr.skip()

    def check_parameters(self, *values: Any) -> None:
        """Before a message is sent: settings that cannot run are refused here, the message kept in the box, rather
        than saved as a failed answer in History. `values`: the Parameters fields, in `RawSettings`' order."""
        try:
            self.ctx.conversations.settings(RawSettings(*values))
        except UserError as error:
            raise refuse(str(error)) from None

    def stop_generation(self, request: gr.Request) -> None:
        self.ctx.stops.stop(request.session_hash)

    def undo(self, session: ChatSession, data: gr.UndoData):
        """Removes the user message at the undone index and everything after it; puts its text back in the box."""
        index = data.index if isinstance(data.index, int) else data.index[0]
        removed = self.ctx.conversations.drop(session, session.turn_of(index))
        first = removed[0] if removed else None
        restored: dict[str, Any] | None = None
        if first and first.role == "user":
            restored = {"text": first.text, "files": first.images}
        return session.to_chatbot(), session, gr.MultimodalTextbox(value=restored)

    def retry(self, session: ChatSession, data: gr.RetryData, request: gr.Request):
        """Drops the answer being retried (hidden in storage, not deleted); `respond` follows."""
        user_index = session.last_user_index()
        if user_index is not None:
            self.ctx.conversations.drop(session, user_index + 1)
        self.ctx.stops.new(request.session_hash)
        return session.to_chatbot(), session, self.answering_input()

    def edit(self, session: ChatSession, preset_name: str, data: gr.EditData, request: gr.Request):
        """Replaces an earlier user message: later turns are hidden, the edited text is saved as a new message."""
        index = data.index if isinstance(data.index, int) else data.index[0]
        removed = self.ctx.conversations.drop(session, session.turn_of(index))
        images = removed[0].images if removed else []
        new_text = data.value if isinstance(data.value, str) else self._text_of(data.value)
        self.add_user_turn(session, new_text.strip(), images, preset_name, session.owner or session_owner(request))
        self.ctx.stops.new(request.session_hash)
        return session.to_chatbot(), session, self.answering_input()

    @staticmethod
    def _text_of(value) -> str:
        items = value if isinstance(value, list) else [value]
        return " ".join(item for item in items if isinstance(item, str))

    def like(self, session: ChatSession, data: gr.LikeData) -> None:
        index = session.turn_of(data.index if isinstance(data.index, int) else data.index[0])
        message_id = session.turns[index].message_id if 0 <= index < len(session.turns) else None
        if message_id is not None and data.liked is not None:
            value = "like" if data.liked is True or data.liked == "Like" else "dislike"
            try:
                self.ctx.conversations.feedback(session.owner, message_id, value)
            except UserError as error:
                raise refuse(str(error)) from None

    @staticmethod
    def clear(session: ChatSession):
        return ChatSession(), []

    def start_example(self, event: gr.SelectData):
        """An example thumbnail was clicked: a fresh chat, its task picked, its image and instruction in the box."""
        name, path = example_pairs(self.ctx)[event.index]
        preset = preset_by_name(self.ctx.presets, name)
        box = gr.MultimodalTextbox(value={"text": preset.instruction, "files": [path]})
        return ChatSession(), [], status_line(self.ctx.engine), name, box

    @staticmethod
    def enable_input():
        """After an answer: the box takes input again and Stop turns back into Send."""
        return gr.MultimodalTextbox(interactive=True, submit_btn=True, stop_btn=False)

    def choose_preset(self, preset_name: str, shown: str, max_new_tokens: float, temperature: float):
        """The new task's hint, and its defaults for the settings the user left at the previous task's defaults."""
        preset = preset_by_name(self.ctx.presets, preset_name)
        previous = next((p for p in self.ctx.presets if p.name == shown), None)
        limit = self.ctx.conversations.max_new_tokens_limit()
        hint = (
            f"Instruction sent with an image alone: *{preset.instruction}*"
            if preset.instruction
            else ("Ask anything about your images.")
        )
        untouched_tokens = previous is None or int(max_new_tokens) == min(previous.max_new_tokens, limit)
        untouched_temperature = previous is None or float(temperature) == previous.temperature
        return (
            hint,
            min(preset.max_new_tokens, limit) if untouched_tokens else gr.skip(),
            preset.temperature if untouched_temperature else gr.skip(),
            preset.name,
        )


def build_chat_tab(ctx: AppContext, owner: gr.State) -> dict:
    """Lays out the chat tab and wires its events; returns the named components."""
    h = ChatHandlers(ctx)

    c = chat_layout(ctx)
    examples(ctx, c)
    params = [
        c["temperature"],
        c["top_p"],
        c["max_new_tokens"],
        c["repetition_penalty"],
        c["seed"],
        c["image_max_size"],
    ]
    answer_inputs = [c["session"], c["preset"], *params]
    answer_outputs = [c["chatbot"], c["session"], c["status"], c["model"]]
    # Answers the backend generates at once: 1 for transformers, many for vLLM.
    gpu_queue = {"concurrency_id": "gpu", "concurrency_limit": ctx.engine.concurrency_limit}

    message_inputs = [c["textbox"], c["preset"], c["session"], owner]
    message_outputs = [c["textbox"], c["chatbot"], c["session"]]

    def answer_after(submitted, public: bool):
        """The answer chain after a saved message: stream the answer, then give the box back."""
        api = {"api_name": "respond"} if public else {"api_visibility": "private"}
        answering = submitted.success(h.respond, answer_inputs, answer_outputs, **api, **gpu_queue)
        answering.then(h.enable_input, None, c["textbox"], api_visibility="private")
        submitted.failure(h.enable_input, None, c["textbox"], api_visibility="private")
        return answering

    # The Parameters are checked first (a refusal leaves the message in the box); API callers of /submit_message
    # get a refused setting from /respond, saved as that answer's error.
    checked = c["textbox"].submit(h.check_parameters, params, None, api_visibility="private")
    submitted = checked.success(h.submit_message, message_inputs, message_outputs, api_name="submit_message")
    c["answered"] = [answer_after(submitted, public=True)]
    c["textbox"].stop(h.stop_generation, None, None, api_name="stop", queue=False)
    # An example thumbnail starts a fresh chat and sends it at once.
    picked = c["examples"].select(
        h.start_example,
        None,
        [c["session"], c["chatbot"], c["status"], c["preset"], c["textbox"]],
        api_visibility="private",
    )
    example_checked = picked.then(h.check_parameters, params, None, api_visibility="private")
    example_sent = example_checked.success(h.submit_message, message_inputs, message_outputs, api_visibility="private")
    c["answered"].append(answer_after(example_sent, public=False))
    for sent in (submitted, example_sent):  # the new message in view (on a phone the chat appears with it)
        sent.success(None, None, None, js=SHOW_CHAT_JS, api_visibility="private")

    # A retry or an edit streams like a sent message: Stop instead of Send until the answer ends.
    retried = c["chatbot"].retry(
        h.retry, [c["session"]], [c["chatbot"], c["session"], c["textbox"]], api_visibility="private"
    )
    c["answered"].append(answer_after(retried, public=False))
    edited = c["chatbot"].edit(
        h.edit, [c["session"], c["preset"]], [c["chatbot"], c["session"], c["textbox"]], api_visibility="private"
    )
    c["answered"].append(answer_after(edited, public=False))
    c["chatbot"].undo(h.undo, [c["session"]], [c["chatbot"], c["session"], c["textbox"]], api_visibility="private")
    c["chatbot"].like(h.like, [c["session"]], None, api_visibility="private")
    c["chatbot"].clear(h.clear, [c["session"]], [c["session"], c["chatbot"]], api_name="clear")
    c["preset"].change(
        h.choose_preset,
        [c["preset"], c["shown_preset"], c["max_new_tokens"], c["temperature"]],
        [c["hint"], c["max_new_tokens"], c["temperature"], c["shown_preset"]],
        api_visibility="private",
    )
    return c
