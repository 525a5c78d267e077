"""Components of the chat tab (layout only; events are wired in `chat.py`)."""

import gradio as gr

from ..chat_session import ChatSession
from ..context import AppContext
from .generation import model_line, status_line


def chat_layout(ctx: AppContext) -> dict:
    presets = ctx.presets
    first = presets[0]
    c: dict = {"session": gr.State(ChatSession()), "shown_preset": gr.State(first.name)}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            c["preset"] = gr.Radio([p.name for p in presets], value=first.name, label="Task", elem_id="task-preset")
            c["hint"] = gr.Markdown(f"Instruction sent with an image alone: *{first.instruction}*")
            c["model"] = gr.Markdown(model_line(ctx.engine), elem_id="model-line")
            c["status"] = gr.Markdown(status_line(ctx.engine), elem_id="status-line")
            c["examples_row"] = gr.Column(elem_id="examples")
            c["chatbot"] = gr.Chatbot(
                label="EVEv2",
                height=380,
                editable="user",
                group_consecutive_messages=False,  # an image and its question in one bubble cannot be edited
                buttons=["copy", "copy_all"],
                feedback_options=("Like", "Dislike"),
                elem_id="chatbot",
                autoscroll=True,
                placeholder="Pick an example above, or drop an image in the box below, pick a task, and send.",
            )
            c["textbox"] = gr.MultimodalTextbox(
                file_types=["image"],
                file_count="multiple",
                show_label=False,
                placeholder="Ask about your images, or send an image alone to run the task…",
                elem_id="chat-input",
                sources=["upload"],
            )
        with gr.Column(scale=1, min_width=260), gr.Accordion("Parameters", open=False):
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
    return c


def example_pairs(ctx: AppContext) -> list[tuple[str, str]]:
    """(task name, image path) of every example image, in the order the gallery shows them."""
    return [(p.name, path) for p in ctx.presets for path in p.examples]


def examples(ctx: AppContext, c: dict) -> None:
    """Example images as a row of thumbnails; a click starts a fresh chat with the example in the box."""
    pairs = example_pairs(ctx)
    with c["examples_row"]:
        c["examples"] = gr.Gallery(
            [(path, name) for name, path in pairs],
            label="Examples (a click starts a fresh chat)",
            columns=len(pairs) or 1,
            rows=1,
            height=96,
            object_fit="contain",
            allow_preview=False,
            buttons=[],
            elem_id="examples-gallery",
            visible=bool(pairs),
        )
