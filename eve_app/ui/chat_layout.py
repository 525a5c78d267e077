"""Components of the chat tab (layout only; events are wired in `chat.py`)."""

import gradio as gr

from ..chat_session import ChatSession
from ..context import AppContext
from .generation import model_line, status_line

# The chat's height: what the header, the task choice and the input box leave of the window (the box stays in view
# at 800 px high), within bounds.
CHAT_HEIGHT = "clamp(300px, calc(100vh - 330px), 720px)"
# After an example click or a sent message: the chat, where the answer will stream, scrolled into view if any of it is
# off screen. Measured two frames later, once the chat has drawn the message (on a phone an empty chat is not shown:
# the first message makes it appear above the box, pushing the box down).
SHOW_CHAT_JS = """() => requestAnimationFrame(() => requestAnimationFrame(() => {
    const chat = document.querySelector('#chatbot');
    const box = chat && chat.getBoundingClientRect();
    if (box && (box.top < 0 || box.bottom > window.innerHeight)) chat.scrollIntoView({block: 'start'});
}))"""
# Gradio's gallery lays its thumbnails out in fixed columns of at least 100 px (12 overflow a desktop column, behind a
# sideways scroll) with captions over their lower part: here they wrap, and captions sit under the image.
# Phones (up to 768 px): the two columns become one, ordered task, hint, examples, chat, box, status,
# settings, model. So that the box is on screen at first load (844 px high), the examples are five a row and the chat
# is left out while empty (its placeholder said what the examples and the box say); a new message brings the chat
# into view (`SHOW_CHAT_JS`). Gradio scopes rules inside @media to the app's content, which holds all of these.
CHAT_CSS = """
#examples-gallery .grid-wrap { padding: 0; overflow: visible; height: auto; max-height: none; min-height: 0; }
#examples-gallery .grid-container {
    grid-template-columns: repeat(auto-fill, minmax(76px, 1fr)); grid-template-rows: none; grid-auto-rows: auto;
    gap: var(--spacing-md);
}
#examples-gallery .thumbnail-item { aspect-ratio: auto; height: 100%; display: flex; flex-direction: column; }
#examples-gallery .thumbnail-item img { aspect-ratio: 1; height: auto; }
#examples-gallery .caption-label {
    position: static; max-width: none; white-space: normal; border: none; border-radius: 0; padding: 1px 2px;
    text-align: center;
}
@media (max-width: 768px) {
    #chat-row { flex-direction: column; flex-wrap: nowrap; }
    #chat-column, #side-column { display: contents; }
    #chat-column > *, #side-column > * { order: 6; }
    #chat-column > :has(#task-preset), #task-preset { order: 1; }
    #task-hint { order: 2; }
    #examples { order: 3; }
    #chatbot { order: 4; }
    #chat-column > :has(#chat-input), #chat-input { order: 5; }
    #examples-gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(60px, 1fr)); gap: var(--spacing-sm); }
    #examples-gallery .caption-label { font-size: var(--text-xs); line-height: 1.2; }
    #chatbot:has(.placeholder-content) { display: none; }
}
"""


def chat_layout(ctx: AppContext) -> dict:
    """The chat beside the examples and settings on a desktop, so that the box and a new answer are in view without
    scrolling; on a phone (see `CHAT_CSS`) one column: task, examples, chat, then the rest."""
    presets = ctx.presets
    first = presets[0]
    c: dict = {"session": gr.State(ChatSession()), "shown_preset": gr.State(first.name)}
    with gr.Row(equal_height=False, elem_id="chat-row"):
        with gr.Column(scale=3, min_width=320, elem_id="chat-column"):
            c["preset"] = gr.Radio([p.name for p in presets], value=first.name, label="Task", elem_id="task-preset")
            c["chatbot"] = gr.Chatbot(
                label="EVEv2",
                height=CHAT_HEIGHT,
                editable="user",
                group_consecutive_messages=False,  # an image and its question in one bubble cannot be edited
                buttons=["copy", "copy_all"],
                feedback_options=("Like", "Dislike"),
                elem_id="chatbot",
                autoscroll=True,
                placeholder="Pick an example, or drop an image in the box below, pick a task, and send.",
            )
            c["textbox"] = gr.MultimodalTextbox(
                file_types=["image"],
                file_count="multiple",
                show_label=False,
                placeholder="Ask about your images, or send an image alone to run the task…",
                elem_id="chat-input",
                sources=["upload"],
            )
        with gr.Column(scale=2, min_width=300, elem_id="side-column"):
            c["hint"] = gr.Markdown(
                f"Instruction sent with an image alone: *{first.instruction}*", elem_id="task-hint"
            )
            c["examples_row"] = gr.Column(elem_id="examples")
            c["status"] = gr.Markdown(status_line(ctx.engine), elem_id="status-line")
            with gr.Accordion("Parameters", open=False, elem_id="parameters"):
                c["temperature"] = gr.Slider(
                    0.0, 1.5, value=first.temperature, step=0.05, label="Temperature (0 = greedy)"
                )
                c["top_p"] = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
                c["max_new_tokens"] = gr.Slider(
                    8,
                    ctx.conversations.max_new_tokens_limit(),
                    value=min(first.max_new_tokens, ctx.conversations.max_new_tokens_limit()),
                    step=8,
                    label=f"Max new tokens (the model's context is {ctx.engine.context_length} tokens)",
                )
                c["repetition_penalty"] = gr.Slider(1.0, 1.5, value=1.0, step=0.01, label="Repetition penalty")
                # Text boxes, not number fields: an empty number field shows and sends 0, and 0 is a valid seed.
                c["seed"] = gr.Textbox(value="", label="Seed (empty = random)", placeholder="random")
                c["image_max_size"] = gr.Textbox(
                    value="",
                    label=f"Image max size in pixels (empty = the model's {ctx.engine.image_max_size}; "
                    f"at most {ctx.conversations.image_size_limit()})",
                    placeholder=str(ctx.engine.image_max_size),
                )
            c["model"] = gr.Markdown(model_line(ctx.engine), elem_id="model-line")
    return c


def example_pairs(ctx: AppContext) -> list[tuple[str, str]]:
    """(task name, image path) of every example image, in the order the gallery shows them."""
    return [(p.name, path) for p in ctx.presets for path in p.examples]


def examples(ctx: AppContext, c: dict) -> None:
    """Example thumbnails, captioned with their task; a click starts a fresh chat with the example in the box, and
    brings the chat into view where it was off screen (on a phone, below the examples)."""
    pairs = example_pairs(ctx)
    with c["examples_row"]:
        # A heading of its own: the gallery's label would lie over the first thumbnails.
        gr.Markdown("**Examples** (a click starts a fresh chat)", elem_id="examples-label", visible=bool(pairs))
        c["examples"] = gr.Gallery(
            [(path, name) for name, path in pairs],
            show_label=False,
            columns=6,
            height="auto",
            object_fit="contain",
            allow_preview=False,
            buttons=[],
            elem_id="examples-gallery",
            visible=bool(pairs),
        )
