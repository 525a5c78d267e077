"""The app's storage: conversations, images by content hash, feedback, generation records and jobs.

SQLAlchemy and the standard library only. Usage:

    storage = Storage(data_dir="data")            # SQLite at data/eve.db, images under data/images/
    cid = storage.create_conversation(task="caption")
    storage.save_user_message(cid, "What is this?", images=[(png_bytes, "photo.png")])
    storage.finish_answer(cid, "A red circle.", "done", record={"model": "eve", "new_tokens": 5})
"""

from .migrations import MIGRATIONS, SchemaVersionError
from .schema import SCHEMA_VERSION
from .store import Storage

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaVersionError", "Storage"]
