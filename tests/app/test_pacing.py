"""Streamed answers at a bounded rate (eve_app/serving/pacing.py): pieces that come faster than the interval are
joined, the text is never cut, the final event follows the whole text, and closing the stream ends the generation."""

import itertools
import random
import time

import pytest

from eve_app.chat_session import ChatSession
from eve_app.conversations import ConversationService, RawSettings
from eve_app.limits.chat import ImageGate
from eve_app.serving.pacing import paced
from eve_app.serving.transformers_engine import TransformersEngine
from eve_app.serving.types import Finished, GenerationRecord, TextDelta
from eve_app.settings import DEFAULT_MODEL, Settings
from eve_app.storage import ConversationStore, Database
from model.synthetic import generate_sample

WORDS = [f" w{i}" for i in range(60)]


def tokens_every(seconds: float, closed: list[str] | None = None):
    """An engine's stream: one piece per token every `seconds`, then its Finished event."""
    try:
        for word in WORDS:
            time.sleep(seconds)
            yield TextDelta(word)
        yield Finished(GenerationRecord(status="done", text="".join(WORDS)))
    finally:
        if closed is not None:
            closed.append("closed")


def test_pieces_faster_than_the_interval_are_joined_and_the_text_is_whole():
    start = time.monotonic()
    received = [(time.monotonic(), event) for event in paced(tokens_every(0.002), interval=0.03)]
    elapsed = time.monotonic() - start
    pieces = [(at, e.text) for at, e in received if isinstance(e, TextDelta)]
    assert isinstance(received[-1][1], Finished) and len(received) == len(pieces) + 1
    assert "".join(text for _, text in pieces) == "".join(WORDS)
    assert pieces[0][1] == WORDS[0]  # the first token is shown at once
    # One piece per interval at most (the last may be the rest flushed before Finished): not one per token.
    assert len(pieces) <= elapsed / 0.03 + 2 and len(pieces) < len(WORDS) / 2
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pieces[:-1])]  # the last: the rest, flushed
    assert all(gap >= 0.03 - 0.002 for gap in gaps), gaps


def test_a_slow_engine_streams_every_token_and_zero_interval_changes_nothing():
    slow = [e for e in paced(tokens_every(0.0), interval=0.0)]
    assert [e.text for e in slow if isinstance(e, TextDelta)] == WORDS


def test_closing_the_paced_stream_closes_the_engines_stream():
    """A visitor who closes the tab closes the handler's generator: the engine's stream must see it (it then sets the
    stop event and vLLM aborts the request)."""
    closed: list[str] = []
    stream = paced(tokens_every(0.001, closed), interval=0.0)
    next(stream)
    stream.close()
    assert closed == ["closed"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped model (it writes readable text, token by token) with a real database."""
    data_dir = tmp_path_factory.mktemp("pacing-data")
    store = ConversationStore(Database(data_dir=data_dir))
    return TransformersEngine.load(DEFAULT_MODEL), store, ImageGate(Settings(data_dir=data_dir).chat_limits())


@pytest.mark.parametrize("interval", [0.0, 60.0])
def test_a_paced_answer_is_saved_and_finished_whole(shipped, tmp_path, interval):
    """Through the conversation service with the real engine and database: with a long interval the visitor gets the
    first piece and then the rest at the end, with none one piece per token; the saved answer, the final event and
    the pieces agree either way."""
    engine, store, images = shipped
    path = tmp_path / "sign.png"
    generate_sample("ocr", random.Random("pacing"), split="test").image.save(path)
    service = ConversationService(store, engine, images, stream_interval=interval)
    session = ChatSession(owner="api")
    question = ("What is written here?", [str(path)])
    events = list(service.answer(session, "OCR", RawSettings(max_new_tokens=24), question=question))
    pieces = [e.text for e in events if isinstance(e, TextDelta)]
    final = events[-1]
    assert isinstance(final, Finished) and final.record.status == "done" and final.record.new_tokens > 4
    assert "".join(pieces).strip() == final.record.text
    assert len(pieces) <= 2 if interval else len(pieces) > 4
    stored = store.get_conversation(session.conversation_id)["messages"][-1]
    assert stored["text"] == final.record.text and stored["status"] == "done"
