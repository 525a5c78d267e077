"""The app's storage: one database shared by the conversation store (conversations, images by content hash,
feedback, generation records) and the job store.

SQLAlchemy and the standard library only. Usage:

    database = Database(data_dir="data")           # SQLite at data/eve.db, images under data/images/
    conversations = ConversationStore(database)
    saved = conversations.save_question(None, "What is this?", images=[(png_bytes, "photo.png")], begin_answer=True)
    conversations.finish_answer(saved.answer_id, "A red circle.", "done", record={"model": "eve"})
    jobs = JobStore(database)
"""

from .conversations import ConversationStore, SavedTurn
from .database import Database
from .jobs import JobStore
from .migrations import MIGRATIONS, SchemaVersionError
from .schema import SCHEMA_VERSION

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ConversationStore",
    "Database",
    "JobStore",
    "SavedTurn",
    "SchemaVersionError",
]
