"""Storage verbs against real SQLite files: round trips, images by hash, search, undo, feedback, records, threads."""

import struct
import threading
import zlib
from pathlib import Path

import pytest
from sqlalchemy import event, text

from eve_app.storage import ConversationStore, Database, JobStore
from eve_app.storage.images import describe, image_size
from tests.app.conftest import answered


def png_bytes(width: int = 4, height: int = 3, shade: int = 0) -> bytes:
    """A valid RGB PNG; different shades give different content (and hashes)."""
    raw = b"".join(b"\x00" + bytes([shade]) * 3 * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def count_messages(
    storage: ConversationStore, conversation_id: int | None = None, include_hidden: bool = False
) -> int:
    """Rows in the messages table, read with SQL rather than through the verbs under test."""
    query = "SELECT count(*) FROM messages WHERE (:cid IS NULL OR conversation_id = :cid) AND (:all OR hidden = 0)"
    with storage.database.engine.connect() as connection:
        return connection.execute(text(query), {"cid": conversation_id, "all": include_hidden}).scalar()


@pytest.fixture
def database(tmp_path):
    database = Database(data_dir=tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
def storage(database):
    return ConversationStore(database)


def image_files(storage: ConversationStore) -> list:
    return sorted(p for p in (storage.data_dir / "images").rglob("*") if p.is_file())


def test_round_trip_with_images_stored_once(storage):
    red, blue = png_bytes(4, 3, shade=200), png_bytes(8, 5, shade=10)
    saved = storage.save_question(None, "Compare these", task="describe", images=[(red, "red.png"), (blue, "b")])
    cid, first = saved.conversation_id, saved.message_id
    answered(storage, cid, "Red and blue.", "done")
    storage.save_question(cid, "And this one again?", images=[(red, "again.PNG")])

    conversation = storage.get_conversation(cid)
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant", "user"]
    assert [m["position"] for m in conversation["messages"]] == [0, 1, 2]
    user = conversation["messages"][0]
    assert user["id"] == first and user["text"] == "Compare these" and user["task"] == "describe"
    assert user["status"] == "ok"
    red_path, blue_path = user["images"]
    assert conversation["messages"][2]["images"] == [red_path]  # the same stored file
    assert red_path.endswith(".png") and Path(red_path).read_bytes() == red and Path(blue_path).read_bytes() == blue
    assert len(image_files(storage)) == 2
    with storage.database.engine.connect() as connection:
        rows = connection.execute(text("SELECT width, height, mime, size FROM images ORDER BY id")).all()
    assert rows == [(4, 3, "image/png", len(red)), (8, 5, "image/png", len(blue))]


def test_images_are_stored_once_by_content(storage):
    data = png_bytes()
    first = storage.save_question(None, "one", images=[(data, "x.png")])
    cid, [path] = first.conversation_id, first.image_paths
    second = storage.save_question(cid, "two", images=[(data, "other-name.jpg")])  # magic bytes beat the name
    assert second.image_paths == [path]
    assert [m["images"] for m in storage.get_conversation(cid)["messages"]] == [[path], [path]]
    sha = Path(path).stem
    assert Path(path) == storage.data_dir / "images" / sha[:2] / f"{sha}.png"
    assert image_files(storage) == [Path(path)]
    with pytest.raises(ValueError, match="not an accepted image"):
        storage.save_question(cid, "three", images=[(b"not an image", "notes.txt")])
    assert count_messages(storage, cid) == 2  # the refused image saved nothing


def test_a_question_and_its_streaming_answer_are_saved_together(storage):
    data = png_bytes(shade=77)
    saved = storage.save_question(
        None, "  What is this  ", task="OCR", images=[(data, "a.png")], owner="api", begin_answer=True
    )
    assert saved.image_paths == storage.get_conversation(saved.conversation_id)["messages"][0]["images"]
    assert Path(saved.image_paths[0]).read_bytes() == data
    conversation = storage.get_conversation(saved.conversation_id, owner="api")
    assert conversation["title"] == "What is this" and conversation["task"] == "OCR"
    question, answer = conversation["messages"]
    assert (question["id"], question["role"], question["status"], question["position"]) == (
        saved.message_id,
        "user",
        "ok",
        0,
    )
    assert (answer["id"], answer["role"], answer["status"], answer["position"]) == (
        saved.answer_id,
        "assistant",
        "streaming",
        1,
    )
    with pytest.raises(LookupError):
        storage.get_conversation(saved.conversation_id, owner="browser:someone-else")
    assert storage.recover_interrupted() == [saved.conversation_id]  # a crash now leaves both on record
    assert storage.get_conversation(saved.conversation_id)["messages"][1]["status"] == "interrupted"
    # A follow-up in the same conversation: next positions, the title kept, someone else's conversation refused.
    again = storage.save_question(saved.conversation_id, "and again", images=[(data, "b.png")], owner="api")
    assert again.answer_id is None and again.image_paths == saved.image_paths
    assert [m["position"] for m in storage.get_conversation(saved.conversation_id)["messages"]] == [0, 1, 2]
    assert storage.get_conversation(saved.conversation_id)["title"] == "What is this"
    with pytest.raises(LookupError):
        storage.save_question(saved.conversation_id, "not mine", owner="browser:someone-else", begin_answer=True)
    assert count_messages(storage, saved.conversation_id) == 3


def test_image_formats_from_headers():
    jpeg = (
        b"\xff\xd8\xff\xe0"
        + struct.pack(">H", 16)
        + b"JFIF\x00"
        + bytes(9)
        + b"\xff\xc0"
        + struct.pack(">HBHH", 17, 8, 30, 40)
    )
    assert (describe(jpeg).ext, image_size(jpeg, "jpg")) == ("jpg", (40, 30))
    gif = b"GIF89a" + struct.pack("<HH", 7, 9) + bytes(10)
    assert (describe(gif).mime, image_size(gif, "gif")) == ("image/gif", (7, 9))
    bmp = b"BM" + bytes(16) + struct.pack("<ii", 5, -6) + bytes(30)
    assert image_size(bmp, describe(bmp).ext) == (5, 6)
    webp = b"RIFF" + bytes(4) + b"WEBPVP8X" + bytes(8) + (11).to_bytes(3, "little") + (12).to_bytes(3, "little")
    assert (describe(webp).ext, image_size(webp, "webp")) == ("webp", (12, 13))
    assert describe(b"\x00\x01odd", "scan.JPEG").ext == "jpg"  # unknown content: the name decides


def test_sqlite_runs_in_wal_mode_with_foreign_keys(storage):
    with storage.database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    assert (storage.data_dir / "eve.db").is_file()


def test_title_from_first_user_message(storage):
    cid = storage.save_question(None, "   A   very long question " + "about the picture " * 10).conversation_id
    storage.save_question(cid, "second message does not rename")
    title = storage.get_conversation(cid)["title"]
    assert title.startswith("A very long question about") and title.endswith("…") and len(title) <= 60


def test_list_and_search(storage):
    cats = storage.save_question(None, "Cats: is this a tabby?").conversation_id
    dogs = storage.save_question(None, "Read the DOG sign", task="ocr").conversation_id
    answered(storage, dogs, "It says 100% dogs", "done")
    listed = storage.list_conversations()
    assert [c["id"] for c in listed] == [dogs, cats]  # newest activity first
    assert listed[0] | {"updated_at": None, "created_at": None} == {
        "id": dogs,
        "title": "Read the DOG sign",
        "task": "ocr",
        "message_count": 2,
        "preview": "Read the DOG sign",
        "updated_at": None,
        "created_at": None,
        "status": "done",
    }
    assert [c["id"] for c in storage.list_conversations(search="dog sign")] == [dogs]
    assert [c["id"] for c in storage.list_conversations(search="CATS")] == [cats]  # title match
    assert [c["id"] for c in storage.list_conversations(search="TABBY")] == [cats]  # message match
    assert [c["id"] for c in storage.list_conversations(search="100%")] == [dogs]
    assert storage.list_conversations(search="%%") == []  # wildcards are literal
    assert [c["id"] for c in storage.list_conversations(limit=1, offset=1)] == [cats]
    storage.save_question(cats, "one more")  # activity moves it to the top
    assert [c["id"] for c in storage.list_conversations()] == [cats, dogs]


def test_unknown_conversations_are_lookup_errors(storage):
    cid = storage.save_question(None, "first").conversation_id
    with pytest.raises(LookupError):
        storage.save_question(cid + 100, "more")
    with pytest.raises(LookupError):
        storage.get_conversation(cid + 100)


def test_hide_for_undo_retry_and_edit(storage):
    cid = storage.save_question(None, "first").conversation_id
    answered(storage, cid, "answer one", "done")
    question = storage.save_question(cid, "second").message_id
    answer = answered(storage, cid, "answer two", "done")

    storage.hide_messages([answer])  # retry
    retried = answered(storage, cid, "answer two, again", "done")
    assert [m["text"] for m in storage.get_conversation(cid)["messages"]][-2:] == ["second", "answer two, again"]

    storage.hide_messages([question, retried])  # undo
    assert [m["text"] for m in storage.get_conversation(cid)["messages"]] == ["first", "answer one"]
    assert count_messages(storage, cid) == 2 and count_messages(storage, cid, include_hidden=True) == 5
    storage.save_question(cid, "edited")
    everything = storage.get_conversation(cid, include_hidden=True)["messages"]
    assert [m["position"] for m in everything] == [0, 1, 2, 3, 4, 5]  # history never reused or destroyed
    assert [m["hidden"] for m in everything] == [False, False, True, True, True, False]
    storage.hide_messages([everything[-1]["id"]])
    assert storage.list_conversations(search="edited") == []
    assert storage.list_conversations()[0]["message_count"] == 2


def test_feedback_latest_click_counts(storage):
    cid = storage.save_question(None, "q").conversation_id
    answer = answered(storage, cid, "a", "done")
    storage.save_feedback(answer, "like")
    storage.save_feedback(answer, "dislike")
    assert storage.get_conversation(cid)["messages"][1]["feedback"] == "dislike"
    storage.save_feedback(answer, None)
    assert storage.get_conversation(cid)["messages"][1]["feedback"] is None
    with pytest.raises(ValueError):
        storage.save_feedback(answer, "love")
    with pytest.raises(LookupError):
        storage.save_feedback(answer + 99, "like")


def test_stopped_and_failed_answers_with_generation_records(storage):
    cid = storage.save_question(None, "Describe it").conversation_id
    params = {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 64,
        "repetition_penalty": 1.05,
        "seed": 3,
        "image_max_size": 448,
    }
    record = {
        "model": "eve-tiny",
        "parameters": params,
        "prompt_tokens": 120,
        "new_tokens": 7,
        "time_to_first_token": 0.25,
        "duration": 1.5,
        "status": "stopped",
        "text": "A red",
    }
    answered(storage, cid, "A red", "stopped", task="describe", record=record)
    answered(storage, cid, "", "error", record={"model": "eve-tiny", "error": "out of memory"})
    stopped, failed = storage.get_conversation(cid)["messages"][1:]
    assert (stopped["text"], stopped["status"], stopped["task"]) == ("A red", "stopped", "describe")
    generation = stopped["generation"]
    assert generation["parameters"] == params and generation["model"] == "eve-tiny"
    assert (generation["prompt_tokens"], generation["new_tokens"]) == (120, 7)
    assert (generation["time_to_first_token"], generation["duration"], generation["status"]) == (0.25, 1.5, "stopped")
    assert (failed["status"], failed["error"], failed["generation"]["error"]) == ("error", *["out of memory"] * 2)
    assert failed["generation"]["status"] == "error"
    answer = storage.begin_answer(cid)
    with pytest.raises(ValueError, match="answer status"):
        storage.finish_answer(answer, "x", "finished")
    with pytest.raises(ValueError, match="unknown generation record fields"):
        storage.finish_answer(answer, "x", "done", record={"tokens": 3})
    with pytest.raises(LookupError, match="no answer"):
        storage.finish_answer(stopped["id"] - 1, "x", "done")  # the question
    assert storage.get_conversation(cid)["messages"][-1]["status"] == "streaming"  # the refused calls saved nothing
    assert count_messages(storage, cid) == 4


def test_concurrent_writes_from_threads(storage):
    shared = storage.save_question(None, "t0 m0").conversation_id
    image = png_bytes(2, 2, shade=7)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            own = storage.save_question(None, f"thread {n}").conversation_id
            for i in range(10):
                if (n, i) != (0, 0):  # t0 m0 started the shared conversation
                    storage.save_question(shared, f"t{n} m{i}", images=[(image, "same.png")] if i % 3 == 0 else ())
                answered(storage, own, f"t{n} a{i}", "done", record={"new_tokens": i})
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    messages = storage.get_conversation(shared)["messages"]
    assert len(messages) == 80 and [m["position"] for m in messages] == list(range(80))
    assert {m["text"] for m in messages} == {f"t{n} m{i}" for n in range(8) for i in range(10)}
    assert count_messages(storage) == 80 + 8 * 11 and len(image_files(storage)) == 1


def test_writers_of_one_process_wait_for_each_other_not_for_sqlites_busy_handler(storage):
    # With no busy timeout, SQLite refuses a second writer at once ("database is locked"): a thread that starts a
    # write while another one holds the write lock must wait in the app, and then write.
    engine = storage.database.engine

    @event.listens_for(engine, "connect")
    def no_busy_wait(dbapi_connection, connection_record) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    engine.dispose()  # new connections, with the setting above
    cid = storage.save_question(None, "first").conversation_id
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            answered(storage, cid, "an answer", "done", record={"new_tokens": 2})
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    writer = threading.Thread(target=second_writer)
    with storage.database.session(write=True) as s:
        s.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: this thread holds SQLite's write lock
        writer.start()
        writer.join(0.5)  # long enough for the writer to reach BEGIN IMMEDIATE and fail (or wait)
    writer.join()
    assert errors == []
    assert [m["text"] for m in storage.get_conversation(cid)["messages"]] == ["first", "an answer"]


def test_finishing_an_answer_of_a_deleted_conversation_is_refused(storage):
    cid = storage.save_question(None, "a question").conversation_id
    answer = storage.begin_answer(cid)
    with storage.database.session(write=True) as s:
        s.execute(text("UPDATE conversations SET deleted = 1 WHERE id = :cid"), {"cid": cid})
    with pytest.raises(LookupError, match=f"no conversation {cid}"):
        storage.finish_answer(answer, "late text", "done", record={"new_tokens": 2})
    messages = storage.get_conversation(cid)["messages"]
    assert (messages[1]["text"], messages[1]["status"], messages[1]["generation"]) == ("", "streaming", None)


def test_jobs(database):
    storage = JobStore(database)
    job = storage.create_job({"stage": 3, "lr": 2e-5}, run_dir="runs/a")
    assert storage.get_job(job)["status"] == "queued"
    running = storage.update_job(job, status="running", pid=1234)
    assert running["pid"] == 1234 and running["started_at"] and running["finished_at"] is None
    other = storage.create_job(["--stage", "3"])
    done = storage.update_job(job, status="done", final_metrics={"loss": 0.5})
    assert done["finished_at"] and done["final_metrics"] == {"loss": 0.5} and done["args"]["stage"] == 3
    assert [j["id"] for j in storage.list_jobs()] == [other, job]
    assert [j["id"] for j in storage.list_jobs(status="queued")] == [other]
    with pytest.raises(ValueError):
        storage.update_job(job, status="exploded")
    with pytest.raises(ValueError):
        storage.update_job(job, colour="red")
    with pytest.raises(LookupError):
        storage.get_job(999)


def test_other_urls(tmp_path):
    memory = ConversationStore(Database("sqlite://", data_dir=tmp_path / "mem"))
    cid = memory.save_question(None, "thread start").conversation_id
    threads = [threading.Thread(target=memory.save_question, args=(cid, f"thread {n}")) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = sorted(m["text"] for m in memory.get_conversation(cid)["messages"])
    assert texts == [f"thread {n}" for n in range(4)] + ["thread start"]
    assert not (tmp_path / "mem" / "eve.db").exists()
    other = f"sqlite:///{tmp_path / 'db' / 'other.db'}"
    elsewhere = Database(other, data_dir=tmp_path / "files")
    ConversationStore(elsewhere).save_question(None, "listed once it has a message")
    elsewhere.close()
    assert (tmp_path / "db" / "other.db").is_file()
    assert ConversationStore(Database(other, data_dir=tmp_path / "files")).list_conversations()


def test_start_up_recovery_marks_unfinished_turns_interrupted(storage):
    streamed = storage.save_question(None, "long answer please", owner="browser:a").conversation_id
    answer = storage.begin_answer(streamed)
    storage.save_partial_answer(answer, "the first half")
    queued = storage.save_question(None, "waited in the queue", owner="browser:b").conversation_id  # never answered
    finished = storage.save_question(None, "done before the crash").conversation_id
    answered(storage, finished, "all of it", "done")

    assert storage.recover_interrupted() == sorted([streamed, queued])
    assert [(m["status"], m["text"]) for m in storage.get_conversation(streamed)["messages"]][-1] == (
        "interrupted",
        "the first half",
    )
    assert storage.get_conversation(queued)["messages"][-1]["status"] == "interrupted"
    assert storage.get_conversation(finished)["messages"][-1]["status"] == "done"
    assert storage.recover_interrupted() == []  # nothing left to recover on the next start
