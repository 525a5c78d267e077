"""One browser session's conversation: turns with their stored ids, and how they show in the chat component.

Plain Python, no Gradio: the conversation service fills a `ChatSession` (from a stored conversation, or turn by turn
as it saves them), the chat tab keeps it in its state and renders it with `to_chatbot`. A user
turn shows as one chat message per image and then one for its text (a message that mixes both cannot be edited in
the browser, so the chat shows each message on its own: `group_consecutive_messages=False`), so the index that Gradio's retry/undo/edit/like events carry is mapped back with `turn_of`.
"""

import re
from dataclasses import dataclass, field

from .serving.types import Turn
from .storage.schema import ADMIN_OWNER


@dataclass
class ChatTurn:
    role: str  # "user" or "assistant"
    text: str
    images: list[str] = field(default_factory=list)  # stored image paths (content-addressed, under the data dir)
    message_id: int | None = None
    status: str = "done"  # answers: "streaming" (not ended yet), "done", "stopped", "error", "interrupted"
    error: str | None = None


@dataclass
class ChatSession:
    conversation_id: int | None = None
    owner: str | None = None  # who opened or started the conversation (the admin may continue anyone's)
    turns: list[ChatTurn] = field(default_factory=list)
    inert: bool = False  # shows a stranger's messages (the admin's view): rendered with `inert_markdown`
    task: str | None = None  # the task the stored conversation was started with

    @classmethod
    def from_stored(cls, conversation: dict, viewer: str) -> "ChatSession":
        """A stored conversation (`ConversationStore.get_conversation`) as `viewer` continues it. The admin's view (of
        anyone's conversation) fetches nothing a message's author linked: see `inert_markdown`."""
        turns = [
            ChatTurn(
                message["role"],
                message["text"],
                images=message["images"],
                message_id=message["id"],
                status=message.get("status") or "done",
                error=message.get("error"),
            )
            for message in conversation["messages"]
        ]
        return cls(conversation["id"], viewer, turns, inert=viewer == ADMIN_OWNER, task=conversation["task"])

    def engine_turns(self) -> list[Turn]:
        """The conversation as the engine's input: failed answers (no usable text) are left out."""
        turns = []
        for turn in self.turns:
            if turn.role == "assistant" and (turn.status == "error" or not turn.text):
                continue
            turns.append(Turn(turn.role, turn.text, list(turn.images)))
        return turns

    def truncate(self, index: int) -> list[ChatTurn]:
        """Drops turns from `index` on and returns them (their messages get hidden in storage)."""
        removed, self.turns = self.turns[index:], self.turns[:index]
        return removed

    def last_user_index(self) -> int | None:
        for index in range(len(self.turns) - 1, -1, -1):
            if self.turns[index].role == "user":
                return index
        return None

    def to_chatbot(self) -> list[dict]:
        return [message for turn in self.turns for message in _messages(turn, self.inert)]

    def turn_of(self, chat_index: int) -> int:
        """The turn that the chat message at `chat_index` shows."""
        shown = 0
        for index, turn in enumerate(self.turns):
            shown += len(_messages(turn, self.inert))
            if chat_index < shown:
                return index
        return len(self.turns)


# Shown for an answer that ended before any text (the model wrote its end token first).
EMPTY_ANSWER = "_(no answer: the model ended it before writing anything; Retry, perhaps with another seed)_"

# Code (fenced blocks, inline spans) is shown as written, so it is left as it is; elsewhere `![` starts an image.
CODE = re.compile(r"(```.*?(?:```|$)|~~~.*?(?:~~~|$)|`[^`\n]*`)", re.DOTALL)


def inert_markdown(text: str) -> str:
    """`text` as Markdown that makes the browser fetch nothing: images (`![..](url)`, `![..][ref]`) and HTML
    (`<img src=...>` and the like) are shown as the characters they are written with.

    The admin opens strangers' conversations; a Markdown image in one would otherwise be fetched by the admin's
    browser from wherever its author chose (telling them the admin's address and when they looked).
    """
    parts = CODE.split(text)
    for index in range(0, len(parts), 2):  # the parts between code
        parts[index] = parts[index].replace("![", "!\\[").replace("<", "&lt;")
    return "".join(parts)


def _messages(turn: ChatTurn, inert: bool = False) -> list[dict]:
    if turn.role == "user":
        images = [{"role": "user", "content": {"path": path}} for path in turn.images]
        text = inert_markdown(turn.text) if inert else turn.text
        return images + ([{"role": "user", "content": text}] if turn.text or not images else [])
    text = inert_markdown(turn.text) if inert else turn.text
    if turn.status == "stopped":
        text += " _(stopped)_"
    elif turn.status == "interrupted":
        text += " _(interrupted: the app stopped before this answer was finished)_"
    elif turn.status == "error":
        text = (text + "\n\n" if text else "") + f"⚠️ {turn.error}"
    elif turn.status == "done" and not text.strip():
        # An empty bubble is a sliver nobody sees (nor its Retry button): say what happened.
        text = EMPTY_ANSWER
    return [{"role": "assistant", "content": text}]
