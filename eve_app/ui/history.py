"""The history tab: search your past conversations, open one, export them as JSON, Markdown or training data.

A visitor sees only the conversations made in their own browser (or by their Hugging Face account); the admin
password shows everyone's. Every export is a zip that holds its images, linked by relative paths.
"""

import secrets
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from ..chat_session import ChatSession
from ..context import AppContext
from ..errors import UserError
from ..security import client_address, session_owner, viewer
from .refusals import refuse

COLUMNS = ["id", "updated", "task", "title", "messages", "last answer"]
EXPORT_FORMATS = {
    "JSON (zip with images)": "json",
    "Markdown (zip with images)": "markdown",
    "LLaVA training data (zip)": "llava",
}


def export_format(value: str | None) -> str:
    """The export kind for the format a caller gave: the value ("json", "markdown", "llava") or the UI's label."""
    value = (value or "json").strip()
    kind = EXPORT_FORMATS.get(value, value.lower())
    if kind not in EXPORT_FORMATS.values():
        raise refuse(f"The format must be one of {', '.join(EXPORT_FORMATS.values())} (got {value[:40]!r}).")
    return kind


def parse_conversation_ids(text: str) -> list[int]:
    """Conversation ids typed as "3, 5 8" -> [3, 5, 8], with a clear error otherwise (History and Fine-tune tabs)."""
    try:
        return [int(part) for part in (text or "").replace(",", " ").split()]
    except ValueError as error:
        raise refuse("Conversation ids are numbers, separated by commas or spaces.") from error


class HistoryHandlers:
    """The history tab's event handlers, bound to the app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def _viewer(self, owner: str | None, password: str, request: gr.Request, unlocked: bool = False) -> str | None:
        """Whose conversations this caller may see (raises gr.Error for a wrong admin password); `unlocked`: the
        page holds a valid admin token (see AdminGate)."""
        try:
            is_admin = self.ctx.admin.is_admin(password, client_address(request), bool(unlocked))
        except UserError as error:
            raise refuse(str(error)) from None
        return viewer(owner or session_owner(request), is_admin)

    def search(
        self, query: str, password: str, owner: str | None, request: gr.Request, unlocked: bool = False
    ) -> list[list]:
        """Your conversations (everyone's with the admin password) whose title or messages contain `query`."""
        rows = self.ctx.conversations.search(self._viewer(owner, password, request, unlocked), query)
        return [
            [
                r["id"],
                str(r["updated_at"])[:16],
                r.get("task") or "",
                r.get("title") or "",
                r.get("message_count", 0),
                r.get("status") or "",
            ]
            for r in rows
        ]

    def open_conversation(
        self, ids_text: str, password: str, owner: str | None, request: gr.Request, unlocked: bool = False
    ):
        ids = parse_conversation_ids(ids_text)
        if not ids:
            raise refuse("Pick a conversation: click a row or type its id.")
        who = self._viewer(owner, password, request, unlocked)
        try:
            session = self.ctx.conversations.open(who, ids[0])
        except UserError as error:
            raise refuse(str(error)) from None
        presets = [p.name for p in self.ctx.presets]
        preset = session.task if session.task in presets else gr.skip()
        return session.to_chatbot(), session, preset

    @staticmethod
    def pick_row(rows, event: gr.SelectData) -> str:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return str(rows.iloc[row, 0]) if hasattr(rows, "iloc") else str(rows[row][0])

    def export(
        self,
        ids_text: str,
        current: ChatSession,
        fmt: str,
        password: str,
        owner: str | None,
        request: gr.Request,
        unlocked: bool = False,
    ) -> str:
        """A zip to download: the selected conversations (or the open chat) with their images.

        The zip is written straight into Gradio's upload cache, which serves it and deletes it with the cache's other
        files (`--cache-hours`); its working folder is removed at once. Its size is charged to the visitor's upload
        budget, and no export starts below the disk floor or once the budget is spent."""
        ids = parse_conversation_ids(ids_text) or ([current.conversation_id] if current.conversation_id else [])
        if not ids:
            raise refuse("Nothing to export: select conversations or start a chat first.")
        who = (
            current.owner
            if not ids_text.strip() and current.owner
            else self._viewer(owner, password, request, unlocked)
        )
        budget, client = self.ctx.upload_budget, client_address(request)
        refusal = budget.admit(client, 1, what="Export", charge=False)
        if refusal is not None:
            raise refuse(refusal[1])
        kind = export_format(fmt)
        name = {"json": "conversations-json", "markdown": "conversations-markdown", "llava": "training-data"}[kind]
        served = budget.cache_dir / f"export-{secrets.token_hex(16)}"
        served.mkdir(parents=True)
        try:
            with tempfile.TemporaryDirectory(prefix="eve-export-") as work:
                self.ctx.conversations.export(who, ids, Path(work), kind)
                archive = Path(shutil.make_archive(str(served / name), "zip", work))
            refusal = budget.admit(client, archive.stat().st_size, what="Export")
            if refusal is not None:
                raise UserError(refusal[1])
        except BaseException as error:  # nothing is left behind, whatever stopped the export
            shutil.rmtree(served, ignore_errors=True)
            if isinstance(error, UserError):
                raise refuse(str(error)) from None
            raise
        return str(archive)


def build_history_tab(ctx: AppContext, chat: dict, owner: gr.State, unlocked: gr.State) -> dict:
    """Lays out the history tab; `unlocked`: whether the page holds a valid admin token (set on load)."""
    h = HistoryHandlers(ctx)
    c: dict = {}
    with gr.Row():
        c["query"] = gr.Textbox(label="Search titles and messages", scale=4)
        c["refresh"] = gr.Button("Search", scale=1)
    c["table"] = gr.Dataframe(
        headers=COLUMNS,
        interactive=False,
        wrap=True,
        label="Your conversations in this browser (click a row to select it)",
        elem_id="history-table",
    )
    with gr.Row():
        c["ids"] = gr.Textbox(label="Selected ids (comma-separated; empty = the open chat)", scale=3)
        c["open"] = gr.Button("Open in chat", scale=1)
    with gr.Row():
        # Label shown, value sent: the API takes "json", "markdown" or "llava".
        c["format"] = gr.Radio(list(EXPORT_FORMATS.items()), value="json", label="Export as")
        c["export"] = gr.Button("Export")
    c["file"] = gr.File(label="Download", elem_id="export-file")
    with gr.Accordion("Admin", open=False):
        c["password"] = gr.Textbox(label="Admin password (shows everyone's conversations)", type="password")
    if not ctx.settings.persistent_storage:
        gr.Markdown("⚠️ This Space has no persistent storage: the log is temporary and is lost on restart.")

    listing = [c["query"], c["password"], owner, unlocked]
    c["refresh"].click(h.search, listing, c["table"], api_name="search_conversations")
    c["query"].submit(h.search, listing, c["table"], api_visibility="private")
    c["table"].select(h.pick_row, c["table"], c["ids"], api_visibility="private")
    c["opened"] = c["open"].click(
        h.open_conversation,
        [c["ids"], c["password"], owner, unlocked],
        [chat["chatbot"], chat["session"], chat["preset"]],
        api_name="open_conversation",
    )
    c["export"].click(
        h.export,
        [c["ids"], chat["session"], c["format"], c["password"], owner, unlocked],
        c["file"],
        api_name="export_conversations",
    )
    c["listing"] = listing
    return c
