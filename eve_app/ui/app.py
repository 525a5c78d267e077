"""Assembles the tabs into one Blocks app and sets the queue."""

import gradio as gr

from ..context import AppContext
from .api import build_api
from .chat import build_chat_tab
from .finetune import build_finetune_tab
from .history import build_history_tab

TITLE = "EVEv2 — encoder-free vision-language chat"
CSS = """
#chatbot { min-height: 360px; }
@media (max-width: 640px) { #chatbot { height: 60vh !important; } }
/* Phones: 8 px page margins instead of Gradio's 32 px, which take a sixth of the width from the chat input. Gradio
   scopes rules inside @media to the app's content, out of reach of this padding: clamp() switches at 640 px instead. */
.gradio-container .main.app { padding-inline: clamp(var(--size-2), (100vw - 640px) * 1000, var(--size-8)); }
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"## {TITLE}\nPick a task, drop in an image (screenshot, poster, webpage capture or photo), "
            "and watch the answer stream. Conversations are saved; see the History tab."
        )
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat = build_chat_tab(ctx)
            with gr.Tab("History", id="history"):
                build_history_tab(ctx, chat)
            with gr.Tab("Fine-tune", id="finetune"):
                build_finetune_tab(ctx)
        build_api(ctx)
    # Generation shares one concurrency group ("gpu", limit 1); light events run alongside.
    demo.queue(default_concurrency_limit=8, max_size=128)
    return demo
