"""Chat tab and `/answer` handlers on the real tiny model and a real database: a turn, retry, undo, edit, like, clear,
history export."""

import json
import zipfile
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from eve_app.chat_session import ChatSession
from eve_app.conversations import RawSettings
from eve_app.limits.raw_requests import UploadBudget
from eve_app.serving.types import TextDelta
from eve_app.ui.api import ApiHandlers
from eve_app.ui.chat import ChatHandlers
from eve_app.ui.history import HistoryHandlers
from tests.app.conftest import OWNER, REQUEST

PARAMS = (0.0, 1.0, 6, 1.0, -1, 0)  # temperature, top_p, max_new_tokens, repetition_penalty, seed, image size


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "orange").save(path)
    return str(path)


def _turn(handlers, session, text, files, preset="OCR"):
    _, _, session = handlers.submit_message({"text": text, "files": files}, preset, session, OWNER, REQUEST)
    *_, (chatbot, session, status, _model) = handlers.respond(session, preset, *PARAMS, REQUEST)
    return chatbot, session, status


def _visible(ctx, session):
    return ctx.conversations.store.get_conversation(session.conversation_id)["messages"]


def test_a_turn_is_saved_before_and_after_generation(ctx, image):
    handlers = ChatHandlers(ctx)
    chatbot, session, status = _turn(handlers, ChatSession(), "", [image])
    messages = _visible(ctx, session)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["text"] == ctx.presets[0].instruction and len(messages[0]["images"]) == 1
    assert messages[1]["generation"]["parameters"]["max_new_tokens"] == 6
    assert "tokens/s" in status
    assert [m["content"] if isinstance(m["content"], str) else "image" for m in chatbot][:2] == [
        "image",
        ctx.presets[0].instruction,
    ]  # the image, then the question: each is its own chat message
    assert len(chatbot) == 3


def test_retry_hides_the_old_answer_and_saves_a_new_one(ctx, image):
    handlers = ChatHandlers(ctx)
    _, session, _ = _turn(handlers, ChatSession(), "read it", [image])
    old_answer = session.turns[-1].message_id
    _, session, _ = handlers.retry(session, gr.RetryData(None, {"index": 1, "value": ""}), REQUEST)
    *_, (_chatbot, session, _, _) = handlers.respond(session, "OCR", *PARAMS, REQUEST)
    visible = _visible(ctx, session)
    assert [m["role"] for m in visible] == ["user", "assistant"] and visible[1]["id"] != old_answer
    everything = ctx.conversations.store.get_conversation(session.conversation_id, include_hidden=True)["messages"]
    assert any(m["id"] == old_answer and m["hidden"] for m in everything)


def test_undo_puts_the_message_back_in_the_box(ctx, image):
    handlers = ChatHandlers(ctx)
    _, session, _ = _turn(handlers, ChatSession(), "first", [image])
    _, session, _ = _turn(handlers, session, "second question", [])
    # Chat messages: image, "first", answer, "second question", answer -> undo at index 3.
    chatbot, session, box = handlers.undo(session, gr.UndoData(None, {"index": 3, "value": "second question"}))
    assert len(chatbot) == 3 and box.value["text"] == "second question"
    assert [m["text"] for m in _visible(ctx, session) if m["role"] == "user"] == ["first"]


def test_undoing_the_only_turn_leaves_no_empty_conversation_in_history(ctx, image):
    handlers = ChatHandlers(ctx)
    _, session, _ = _turn(handlers, ChatSession(), "only question", [image])
    owner, conversation_id = session.owner, session.conversation_id
    assert conversation_id in [c["id"] for c in ctx.conversations.search(owner, "")]
    handlers.undo(session, gr.UndoData(None, {"index": 1, "value": "only question"}))
    assert conversation_id not in [c["id"] for c in ctx.conversations.search(owner, "")]


def test_edit_replaces_the_question_and_keeps_its_images(ctx, image):
    handlers = ChatHandlers(ctx)
    _, session, _ = _turn(handlers, ChatSession(), "orginal typo", [image])
    _, session, _ = handlers.edit(
        session, "OCR", gr.EditData(None, {"index": 1, "value": "original", "previous_value": "orginal typo"}), REQUEST
    )
    *_, (_chatbot, session, _, _) = handlers.respond(session, "OCR", *PARAMS, REQUEST)
    visible = _visible(ctx, session)
    assert visible[0]["text"] == "original" and len(visible[0]["images"]) == 1 and len(visible) == 2


def test_like_and_dislike_are_saved_on_the_answer(ctx, image):
    handlers = ChatHandlers(ctx)
    _, session, _ = _turn(handlers, ChatSession(), "read", [image])
    handlers.like(session, gr.LikeData(None, {"index": 2, "value": "x", "liked": False}))
    assert _visible(ctx, session)[1]["feedback"] == "dislike"


def test_free_chat_needs_a_question(ctx, image):
    with pytest.raises(gr.Error, match="Free chat needs a question"):
        ChatHandlers(ctx).submit_message({"text": "", "files": [image]}, "Free chat", ChatSession(), OWNER, REQUEST)


def test_history_search_open_and_export(ctx, image, tmp_path):
    handlers = ChatHandlers(ctx)
    _, session, _ = _turn(handlers, ChatSession(), "unicorn question", [image])
    history = HistoryHandlers(ctx)
    rows = history.search("unicorn", "", OWNER, REQUEST)
    assert [row[0] for row in rows] == [session.conversation_id]
    assert history.search("unicorn", "", "browser:someone-else", REQUEST) == []
    chatbot, opened, preset = history.open_conversation(str(session.conversation_id), "", OWNER, REQUEST)
    assert len(chatbot) == 3 and opened.turns[0].text == "unicorn question" and preset == "OCR"
    archive = history.export(str(session.conversation_id), ChatSession(), "JSON (zip with images)", "", OWNER, REQUEST)
    with zipfile.ZipFile(archive) as zf:
        exported = json.loads(zf.read("conversations.json"))
        image_name = exported[0]["messages"][0]["images"][0]
        assert image_name.startswith("images/") and image_name in zf.namelist()  # relative, and in the zip
    assert exported[0]["messages"][0]["text"] == "unicorn question"
    assert history.export("", session, "LLaVA training data (zip)", "", OWNER, REQUEST).endswith(".zip")


def test_an_empty_seed_is_stored_as_none_and_a_bad_one_is_refused(ctx, image):
    handlers = ChatHandlers(ctx)
    _, _, session = handlers.submit_message({"text": "read", "files": [image]}, "OCR", ChatSession(), OWNER, REQUEST)
    *_, (_, session, _, _) = handlers.respond(session, "OCR", 0.0, 1.0, 6, 1.0, "", "", REQUEST)
    assert _visible(ctx, session)[-1]["generation"]["parameters"]["seed"] is None
    _, _, session = handlers.submit_message({"text": "again", "files": []}, "OCR", session, OWNER, REQUEST)
    *_, (chatbot, session, _status, _) = handlers.respond(session, "OCR", 0.0, 1.0, 6, 1.0, "abc", "", REQUEST)
    assert "The seed must be a whole number" in chatbot[-1]["content"]
    assert _visible(ctx, session)[-1]["status"] == "error"


def test_a_new_task_keeps_settings_the_user_changed(ctx):
    handlers = ChatHandlers(ctx)
    ocr, free = ctx.presets[0], ctx.presets[-1]
    _, tokens, temperature, shown = handlers.choose_preset(free.name, ocr.name, ocr.max_new_tokens, ocr.temperature)
    assert (tokens, temperature, shown) == (free.max_new_tokens, free.temperature, free.name)  # defaults follow
    _, tokens, temperature, _ = handlers.choose_preset(free.name, ocr.name, 40, 0.3)
    assert isinstance(tokens, type(gr.skip())) and isinstance(temperature, type(gr.skip()))  # the user's stay


def test_settings_beyond_the_models_context_are_refused_with_the_limit(ctx, image):
    handlers = ChatHandlers(ctx)
    limit = ctx.conversations.max_new_tokens_limit()
    _, _, session = handlers.submit_message({"text": "read", "files": [image]}, "OCR", ChatSession(), OWNER, REQUEST)
    *_, (chatbot, session, _, _) = handlers.respond(session, "OCR", 0.0, 1.0, limit + 8, 1.0, "", "", REQUEST)
    assert f"Max new tokens must be between 1 and {limit}" in chatbot[-1]["content"]
    too_big = ctx.conversations.image_size_limit() + 16
    _, _, session = handlers.submit_message({"text": "again", "files": []}, "OCR", session, OWNER, REQUEST)
    *_, (chatbot, session, _, _) = handlers.respond(session, "OCR", 0.0, 1.0, 8, 1.0, "", str(too_big), REQUEST)
    assert "Image size must be between 16 and" in chatbot[-1]["content"]
    assert [m["status"] for m in _visible(ctx, session) if m["role"] == "assistant"] == ["error", "error"]


def test_exports_are_charged_to_the_visitors_budget_and_stop_at_the_disk_floor(ctx, image, tmp_path, monkeypatch):
    """Each export's zip counts against the visitor's hourly upload budget (here 16 KiB): once it is spent, exports
    are refused and the refused zip is not kept; below the disk floor none starts."""
    cache = tmp_path / "cache"
    budget = UploadBudget(bytes_per_window=16 << 10, window_s=3600, min_free_bytes=0, cache_dir=cache)
    monkeypatch.setattr(ctx, "upload_budget", budget)
    _, session, _ = _turn(ChatHandlers(ctx), ChatSession(), "export me", [image])
    history = HistoryHandlers(ctx)
    sizes = []
    with pytest.raises(gr.Error, match="Export limit reached: 0.02 MiB per 60 minutes from one visitor"):
        for _ in range(100):
            archive = Path(history.export("", session, "JSON (zip with images)", "", OWNER, REQUEST))
            assert archive.parent.parent == cache  # written where Gradio serves it
            sizes.append(archive.stat().st_size)
    assert sizes and sum(sizes) <= 16 << 10
    assert len(list(cache.rglob("*.zip"))) == len(sizes) == len(list(cache.iterdir()))
    budget.bytes_per_window, budget.min_free_bytes = 1 << 40, 1 << 50
    with pytest.raises(gr.Error, match="disk is nearly full, so exports are paused"):
        history.export("", session, "JSON (zip with images)", "", OWNER, REQUEST)


def test_stop_events_are_kept_for_a_bounded_number_of_sessions():
    """One stop event per session, like Gradio's sessions: a script opening session after session does not grow the
    table past its capacity, and the sessions still in use keep theirs."""
    from eve_app.context import StopEvents

    stops = StopEvents(capacity=3)
    kept = stops.new("visitor")
    for i in range(100):
        stops.new(f"script-{i}")
        assert stops.current("visitor") is kept  # in use, so never the oldest
    stops.stop("visitor")
    assert kept.is_set() and len(stops._events) == 3


def test_the_admin_opens_a_strangers_message_without_fetching_what_it_links(ctx):
    """A Markdown or HTML image in a stranger's message would be fetched by the admin's browser when the admin opens
    the conversation (telling its author the admin's address and when); the admin sees it as text. Code is shown as
    written."""
    text = (
        "hello ![pixel](https://attacker.example/t.png) and <img src='https://attacker.example/u.png'> "
        "and ![ref][1]\n\n[1]: https://attacker.example/r.png\n\n```html\n<img src=x>\n```"
    )
    saved = ChatSession(owner="browser:a-stranger")
    ctx.conversations.ask(saved, text, [], "Free chat")
    history = HistoryHandlers(ctx)
    chatbot, opened, _ = history.open_conversation(str(saved.conversation_id), "s3cret", OWNER, REQUEST)
    shown = chatbot[0]["content"]
    assert "![" not in shown.replace("```html\n<img src=x>\n```", "") and "<img src='https" not in shown
    assert "attacker.example/t.png" in shown and "```html\n<img src=x>\n```" in shown
    assert opened.turns[0].text == text  # the stored text is unchanged
    mine, _, _ = history.open_conversation(str(saved.conversation_id), "", "browser:a-stranger", REQUEST)
    assert mine[0]["content"] == text  # its author sees it as written


def _api_conversations(ctx) -> list[dict]:
    return ctx.conversations.store.list_conversations(owner="api", limit=1000)


def test_the_answer_endpoint_streams_and_logs_one_turn_under_api(ctx, image):
    before = {c["id"] for c in _api_conversations(ctx)}
    outputs = list(ApiHandlers(ctx).answer(image, "OCR", "", 6))
    [new] = [c for c in _api_conversations(ctx) if c["id"] not in before]
    question, answer = ctx.conversations.store.get_conversation(new["id"])["messages"]
    assert question["text"] == ctx.presets[0].instruction and len(question["images"]) == 1
    assert answer["status"] == "done" and answer["text"] == outputs[-1]
    assert answer["generation"]["parameters"]["max_new_tokens"] == 6


def test_the_answer_endpoint_refuses_a_setting_before_saving_anything(ctx, image):
    before = _api_conversations(ctx)
    limit = ctx.conversations.max_new_tokens_limit()
    with pytest.raises(gr.Error, match=f"Max new tokens must be between 1 and {limit}"):
        list(ApiHandlers(ctx).answer(image, "OCR", "", limit + 8))
    assert _api_conversations(ctx) == before


def test_a_turn_whose_caller_goes_away_keeps_its_partial_text_as_stopped(ctx, image):
    """The visitor closes the tab mid-answer: Gradio closes the handler, and the answer is saved with what it had."""
    session = ChatSession(owner=OWNER)
    turn = ctx.conversations.answer(session, "OCR", RawSettings(max_new_tokens=64), question=("read it", [image]))
    first = next(turn)
    assert isinstance(first, TextDelta), "the tiny model answers with text"
    turn.close()
    answer = _visible(ctx, session)[-1]
    assert (answer["status"], answer["text"]) == ("stopped", first.text.strip())
    assert session.turns[-1].status == "stopped" and session.turns[-1].message_id == answer["id"]


def test_settings_that_cannot_run_are_refused_before_the_message_is_sent(ctx):
    handlers = ChatHandlers(ctx)
    handlers.check_parameters(*PARAMS)  # the Parameters fields, in their order
    with pytest.raises(gr.Error, match="The seed must be a whole number"):
        handlers.check_parameters(0.0, 1.0, 6, 1.0, "abc", "")
    with pytest.raises(gr.Error, match="Max new tokens must be between 1 and"):
        handlers.check_parameters(0.0, 1.0, ctx.conversations.max_new_tokens_limit() + 1, 1.0, "", "")


def test_an_answer_that_ended_before_any_text_says_so_in_the_chat():
    """An empty bubble is a sliver with no visible Retry (issue 29: a shortened answer of one end token); while an
    answer streams, its empty start shows nothing yet."""
    from eve_app.chat_session import EMPTY_ANSWER, ChatTurn

    session = ChatSession(turns=[ChatTurn("user", "What is this?"), ChatTurn("assistant", " ", status="done")])
    assert session.to_chatbot()[-1] == {"role": "assistant", "content": EMPTY_ANSWER}
    session.turns[-1] = ChatTurn("assistant", "", status="streaming")
    assert session.to_chatbot()[-1]["content"] == ""
