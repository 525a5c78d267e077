"""Components of the chat tab (layout only; events are wired in `chat.py`)."""

import gradio as gr

from ..chat_session import ChatSession
from ..context import AppContext
from .generation import status_line


def chat_layout(ctx: AppContext) -> dict:
    presets = ctx.presets
    first = presets[0]
    c: dict = {"session": gr.State(ChatSession())}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            c["preset"] = gr.Radio([p.name for p in presets], value=first.name, label="Task", elem_id="task-preset")
            c["hint"] = gr.Markdown(f"Instruction sent with an image alone: *{first.instruction}*")
            c["chatbot"] = gr.Chatbot(
                label="EVEv2",
                height=520,
                editable="user",
                buttons=["copy", "copy_all"],
                feedback_options=("Like", "Dislike"),
                elem_id="chatbot",
                autoscroll=True,
                placeholder="Drop an image below, pick a task, and send. Add more images later in the same chat.",
            )
            with gr.Row():
                c["textbox"] = gr.MultimodalTextbox(
                    file_types=["image"],
                    file_count="multiple",
                    show_label=False,
                    scale=8,
                    placeholder="Ask about your images, or send an image alone to run the task…",
                    elem_id="chat-input",
                    sources=["upload"],
                )
                c["stop_button"] = gr.Button("Stop", variant="stop", scale=1, min_width=60, elem_id="stop-button")
            c["status"] = gr.Markdown(status_line(ctx.engine), elem_id="status-line")
        with gr.Column(scale=1, min_width=260):
            with gr.Accordion("Parameters", open=False):
                c["temperature"] = gr.Slider(
                    0.0, 1.5, value=first.temperature, step=0.05, label="Temperature (0 = greedy)"
                )
                c["top_p"] = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
                c["max_new_tokens"] = gr.Slider(
                    8,
                    ctx.conversations.max_new_tokens_limit(),
                    value=min(first.max_new_tokens, ctx.conversations.max_new_tokens_limit()),
                    step=8,
                    label="Max new tokens",
                )
                c["repetition_penalty"] = gr.Slider(1.0, 1.5, value=1.0, step=0.01, label="Repetition penalty")
                c["seed"] = gr.Number(value=None, precision=0, label="Seed (empty = random)")
                c["image_max_size"] = gr.Number(
                    value=None,
                    precision=0,
                    minimum=0,
                    maximum=ctx.conversations.image_size_limit(),
                    label=f"Image max size (empty = the model's {ctx.engine.image_max_size})",
                )
            pairs = [(p, path) for p in presets for path in p.examples]
            if pairs:
                # Compact labelled buttons: the multimodal example table is far wider than this column.
                gr.Examples(
                    [[{"text": p.instruction, "files": [path]}, p.name] for p, path in pairs],
                    inputs=[c["textbox"], c["preset"]],
                    label="Examples",
                    examples_per_page=12,
                    example_labels=[f"{p.name} · {i % len(p.examples) + 1}" for i, (p, _) in enumerate(pairs)],
                )
    return c
