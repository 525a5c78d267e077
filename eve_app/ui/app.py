"""Assembles the tabs into one Blocks app and sets the queue."""

import gradio as gr

from ..context import AppContext
from ..security import new_browser_token, owner_of, valid_token
from .api import build_api
from .chat import build_chat_tab
from .chat_layout import CHAT_CSS
from .finetune import build_finetune_tab
from .finetune_layout import FINETUNE_CSS
from .history import HistoryHandlers, build_history_tab
from .refusals import Blocks

TITLE = "EVEv2 — encoder-free vision-language chat"
CSS = (
    CHAT_CSS
    + FINETUNE_CSS
    + """
/* A compact header: the chat below it stays in view at 800 px high. */
#intro h2 { margin: 0 0 var(--size-1); }
#intro p { margin: 0; }
/* Phones: 8 px page margins instead of Gradio's 32 px, which take a sixth of the width from the chat input. Gradio
   scopes rules inside @media to the app's content, out of reach of this padding: clamp() switches at 640 px instead. */
.gradio-container .main.app { padding-inline: clamp(var(--size-2), (100vw - 640px) * 1000, var(--size-8)); }
"""
)


HIDE_SHARE = '#chatbot button[aria-label="Share"] { display: none; }\n'


def identify(token: str | None, request: gr.Request) -> tuple[str, str | None]:
    """On page load: the browser's stored token (a new one for a new browser) and the owner id it stands for."""
    if token is None or not valid_token(token):
        token = new_browser_token()
    return token, owner_of(token, request)


def build_app(ctx: AppContext) -> gr.Blocks:
    hours = ctx.settings.cache_hours * 3600
    # Gradio's upload cache (every image a visitor sent) is swept hourly of files older than cache_hours.
    with Blocks(title=TITLE, delete_cache=(max(60, min(3600, int(hours))), max(60, int(hours)))) as demo:
        # The browser's id: a random token in its local storage (kept across reloads), and per page the owner id.
        # Kept in the browser's local storage, so they survive a reload; made here, outside the tabs, because a
        # tab's components load only when the tab is first shown.
        secret = ctx.settings.browser_secret()
        token = gr.BrowserState(None, storage_key="eve-owner", secret=secret)
        kept = {
            "watched_job": gr.BrowserState(None, storage_key="eve-watched-job", secret=secret),
            "admin_token": gr.BrowserState(None, storage_key="eve-admin", secret=secret),
        }
        owner = gr.State(None)
        unlocked = gr.State(False)  # this page holds a valid admin token (set on load from "eve-admin")
        gr.Markdown(
            # What images suit the model is said by the model line under the tasks (from the loaded model's card),
            # so the intro names none that the model might not read.
            f"## {TITLE}\nPick a task, drop in an image and watch the answer stream. "
            "Conversations are saved; see the History tab.",
            elem_id="intro",
        )
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chat = build_chat_tab(ctx, owner)
            with gr.Tab("History", id="history"):
                history = build_history_tab(ctx, chat, owner, unlocked)
            with gr.Tab("Fine-tune", id="finetune"):
                finetune = build_finetune_tab(ctx, owner, chat, kept, unlocked)
        # "Open in chat" shows the chat it opened (the History tab stays one click away).
        history["opened"].success(lambda: gr.Tabs(selected="chat"), None, tabs, api_visibility="private")
        build_api(ctx)
        identified = demo.load(identify, token, [token, owner], api_visibility="private")
        identified.then(HistoryHandlers(ctx).search, history["listing"], history["table"], api_visibility="private")
        demo.load(finetune["jobs_table"], None, finetune["jobs"], api_visibility="private")
        demo.load(*finetune["restore"], api_visibility="private")
        demo.load(*finetune["plan"], api_visibility="private", show_progress="hidden")
        for answered in chat["answered"]:  # the History table follows each new answer
            answered.then(HistoryHandlers(ctx).search, history["listing"], history["table"], api_visibility="private")
    # Generation shares one concurrency group ("gpu", limit 1); light events run alongside.
    demo.queue(default_concurrency_limit=8, max_size=128)
    return demo
