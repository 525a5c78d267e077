"""The history tab: search past conversations, open one, export conversations as JSON, Markdown or training data."""

import shutil
import tempfile
from pathlib import Path

import gradio as gr

from ..chat_session import ChatSession, ChatTurn
from ..context import AppContext

COLUMNS = ["id", "updated", "task", "title", "messages"]


def parse_conversation_ids(text: str) -> list[int]:
    """Conversation ids typed as "3, 5 8" -> [3, 5, 8], with a clear error otherwise (History and Fine-tune tabs)."""
    try:
        return [int(part) for part in (text or "").replace(",", " ").split()]
    except ValueError as error:
        raise gr.Error("Conversation ids are numbers, separated by commas or spaces.") from error


class HistoryHandlers:
    """The history tab's event handlers, bound to the app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def search(self, query: str) -> list[list]:
        rows = self.ctx.storage.list_conversations(search=query or None, limit=200)
        return [
            [r["id"], str(r["updated_at"])[:16], r.get("task") or "", r.get("title") or "", r.get("message_count", 0)]
            for r in rows
        ]

    def open_conversation(self, ids_text: str):
        ids = parse_conversation_ids(ids_text)
        if not ids:
            raise gr.Error("Pick a conversation: click a row or type its id.")
        conversation = self.ctx.storage.get_conversation(ids[0])
        session = ChatSession(conversation_id=conversation["id"])
        for message in conversation["messages"]:
            session.turns.append(
                ChatTurn(
                    message["role"],
                    message["text"],
                    images=message["images"],
                    message_id=message["id"],
                    status=message.get("status") or "done",
                    error=message.get("error"),
                )
            )
        return session.to_chatbot(), session

    @staticmethod
    def pick_row(rows, event: gr.SelectData) -> str:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return str(rows.iloc[row, 0]) if hasattr(rows, "iloc") else str(rows[row][0])

    def export(self, ids_text: str, current: ChatSession, fmt: str) -> str:
        """A file to download: the selected conversations (or the open chat) as JSON, Markdown or a LLaVA zip."""
        ids = parse_conversation_ids(ids_text) or ([current.conversation_id] if current.conversation_id else [])
        if not ids:
            raise gr.Error("Nothing to export: select conversations or start a chat first.")
        folder = Path(tempfile.mkdtemp(prefix="eve-export-"))
        if fmt == "JSON":
            path = folder / "conversations.json"
            path.write_text(self.ctx.storage.export_json(ids))
        elif fmt == "Markdown":
            path = folder / "conversations.md"
            path.write_text(self.ctx.storage.export_markdown(ids))
        else:
            self.ctx.storage.export_llava(ids, folder / "llava")
            path = Path(shutil.make_archive(str(folder / "training-data"), "zip", folder / "llava"))
        return str(path)


def build_history_tab(ctx: AppContext, chat: dict) -> dict:
    h = HistoryHandlers(ctx)
    c: dict = {}
    with gr.Row():
        c["query"] = gr.Textbox(label="Search titles and messages", scale=4)
        c["refresh"] = gr.Button("Search", scale=1)
    c["table"] = gr.Dataframe(
        headers=COLUMNS,
        value=h.search(""),
        interactive=False,
        wrap=True,
        label="Conversations (click a row to select it)",
    )
    with gr.Row():
        c["ids"] = gr.Textbox(label="Selected ids (comma-separated; empty = the open chat)", scale=3)
        c["open"] = gr.Button("Open in chat", scale=1)
    with gr.Row():
        c["format"] = gr.Radio(["JSON", "Markdown", "LLaVA training data (zip)"], value="JSON", label="Export as")
        c["export"] = gr.Button("Export")
    c["file"] = gr.File(label="Download")
    if not ctx.settings.persistent_storage:
        gr.Markdown("⚠️ This Space has no persistent storage: the log is temporary and is lost on restart.")

    c["refresh"].click(h.search, c["query"], c["table"], api_name="search_conversations")
    c["query"].submit(h.search, c["query"], c["table"], api_visibility="private")
    c["table"].select(h.pick_row, c["table"], c["ids"], api_visibility="private")
    c["open"].click(h.open_conversation, c["ids"], [chat["chatbot"], chat["session"]], api_visibility="private")
    c["export"].click(h.export, [c["ids"], chat["session"], c["format"]], c["file"], api_name="export_conversations")
    return c
