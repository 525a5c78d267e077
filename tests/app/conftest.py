"""An app context on the official-layout tiny checkpoint with a real database, for handler tests."""

from types import SimpleNamespace

import pytest

from eve_app.context import make_context
from eve_app.serving.transformers_engine import TransformersEngine
from eve_app.settings import Settings
from eve_app.storage import ConversationStore, Database

# What Gradio hands a handler as `request`, with the fields the handlers read.
REQUEST = SimpleNamespace(session_hash="test-session", headers={}, client=SimpleNamespace(host="127.0.0.1"))
OWNER = "browser:handler-tests"


@pytest.fixture(scope="module")
def ctx(tiny_checkpoint, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("chat-data")
    engine = TransformersEngine.load(str(tiny_checkpoint))
    settings = Settings(data_dir=data_dir, admin_password="s3cret")
    upload_folder = tmp_path_factory.mktemp("gradio-cache")
    return make_context(settings, engine, Database(data_dir=data_dir), upload_folder=upload_folder)


def answered(
    store: ConversationStore, conversation_id: int, text: str, status: str = "done", task: str | None = None, **finish
) -> int:
    """An answer saved as the app saves one: begun ("streaming"), then finished in place; returns its id."""
    answer_id = store.begin_answer(conversation_id, task)
    store.finish_answer(answer_id, text, status, **finish)
    return answer_id
