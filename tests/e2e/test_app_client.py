"""The real app driven through gradio_client: streamed answers, multi-turn, stop, bad files, and the log."""

import gc
import json
import random
import weakref
import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from model.evaluation import score_sample
from model.evaluation.metrics import MAIN_METRIC
from model.synthetic import generate_sample
from tests.e2e.helpers import MODEL, streamed

# seed -1: random; image_max_size 0: the model's own setting (the UI shows both as empty fields).
PARAMS = {
    "temperature": 0.0,
    "top_p": 1.0,
    "max_new_tokens": 48,
    "repetition_penalty": 1.0,
    "seed": -1,
    "image_max_size": 0,
}


def _sample_file(tmp_path, task: str, seed: str, level: int = 0, spread: float = 1.0):
    sample = generate_sample(task, random.Random(seed), level=level, split="test", spread=spread)
    path = tmp_path / f"{task}-{seed}.png"
    sample.image.save(path)
    return sample, path


def _chat_turn(client, text, files, preset):
    client.predict({"text": text, "files": [handle_file(str(f)) for f in files]}, preset, api_name="/submit_message")
    job = client.submit(preset, *PARAMS.values(), api_name="/respond")
    outputs = list(streamed(job))
    return outputs, job


def _eval_rows() -> list[dict]:
    """The rows of the evaluation that the model under test's export wrote (none if it has no eval.json)."""
    eval_file = Path(MODEL) / "eval.json"
    return json.loads(eval_file.read_text())["results"] if eval_file.is_file() else []


def _shipped_scores() -> dict[str, dict]:
    """Task -> metrics at levels 0-2 with text anywhere."""
    return {r["task"]: r["metrics"] for r in _eval_rows() if not r.get("variant") and r.get("spread", 1.0) == 1.0}


def _fixed_place_reading() -> float:
    """OCR exact match with the text at the first free patch (spread 0)."""
    rows = [r for r in _eval_rows() if r["task"] == "ocr" and not r.get("variant") and r.get("spread") == 0.0]
    return rows[0]["metrics"]["exact"] if rows else 0.0


SHIPPED = _shipped_scores()
FIXED_PLACE_READING = _fixed_place_reading()
PRESETS = {"ocr": "OCR", "poster": "Poster", "webpage": "Webpage", "scene": "Scene description"}


def test_api_streams_an_ocr_answer_and_logs_it(client, running_app, tmp_path):
    _, path = _sample_file(tmp_path, "ocr", "e2e-ocr")
    job = client.submit(handle_file(str(path)), "OCR", "", 32, api_name="/answer")
    updates = list(streamed(job))
    assert updates, "no streamed output"
    conversation = running_app[1].conversations.store.list_conversations(limit=1)[0]
    messages = running_app[1].conversations.store.get_conversation(conversation["id"])["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "done" and messages[1]["generation"]["new_tokens"] > 0
    assert messages[1]["text"] == updates[-1]
    # Each partial answer reads as the final one begins: no leading space that the final answer drops.
    assert all(update == update.lstrip() and updates[-1].startswith(update) for update in updates), updates


def test_an_api_call_leaves_only_its_upload_in_gradios_cache(client, running_app, tmp_path):
    """Gradio's file component, reading its input for a handler, made an empty file in the upload cache on every
    call (kept for --cache-hours: 12,867 of them after a day of load tests); /answer reads the upload's path itself."""
    from gradio.utils import get_upload_folder

    def empty_files() -> set[Path]:
        return {p for p in Path(get_upload_folder()).iterdir() if p.is_file() and p.stat().st_size == 0}

    _, path = _sample_file(tmp_path, "ocr", "e2e-cache")
    before = empty_files()
    answers = [client.predict(handle_file(str(path)), "OCR", question, 4, api_name="/answer") for question in "ab"]
    assert all(isinstance(answer, str) and answer for answer in answers), answers
    assert empty_files() - before == set()


def test_the_api_exports_the_open_chat_in_each_format_by_its_value(client, tmp_path):
    _, image = _sample_file(tmp_path, "ocr", "e2e-export")
    _chat_turn(client, "", [image], "OCR")
    members = {"json": "conversations.json", "markdown": "conversations.md", "llava": "data.json"}
    for fmt, member in members.items():
        archive = client.predict("", fmt, "", api_name="/export_conversations")
        with zipfile.ZipFile(archive) as zipped:
            assert any(name.endswith(member) for name in zipped.namelist()), (fmt, zipped.namelist())
    with pytest.raises(AppError, match=r"must be one of .*json.*markdown.*llava"):
        client.predict("", "pdf", "", api_name="/export_conversations")


@pytest.mark.parametrize("task", list(PRESETS))
def test_streamed_answers_hold_the_content_of_held_out_samples(client, tmp_path, task):
    """Held-out samples of each task (levels 0, 1, 2; text anywhere), each sent alone with its preset as a new chat:
    the streamed answer must hold what the image shows (parsed and scored like the evaluation)."""
    main = MAIN_METRIC[task]
    shipped = SHIPPED.get(task, {}).get("exact", 0.0)
    if shipped < 0.6:  # 2 of 3 right is then more luck than skill: the model's own eval.json says so
        pytest.skip(f"{MODEL} answers {task} exactly right {shipped:.0%} of the time in its eval.json")
    right = 0
    for level in (0, 1, 2):
        sample, path = _sample_file(tmp_path, task, f"e2e-content-{level}", level=level)
        updates = list(streamed(client.submit(handle_file(str(path)), PRESETS[task], "", 96, api_name="/answer")))
        assert len(updates) > 1, "the answer was not streamed"
        right += score_sample(task, updates[-1], sample.target)["exact"] == 1.0
    assert right >= 2, (
        f"{right} of 3 held-out {task} samples answered right ({task} {main} {shipped:.2f} in eval.json)"
    )


def test_streamed_ocr_answers_read_held_out_text_at_one_place(client, tmp_path):
    """Held-out words at levels 0-2 with the text at the first free patch, each sent alone as a new chat: where the
    model's eval.json says it reads, the streamed answers hold the rendered text."""
    if FIXED_PLACE_READING < 0.6:
        pytest.skip(f"{MODEL} reads text at one place {FIXED_PLACE_READING:.0%} of the time in its eval.json")
    right = 0
    for i in range(6):
        sample, path = _sample_file(tmp_path, "ocr", f"e2e-fixed-{i}", level=i % 3, spread=0.0)
        updates = list(streamed(client.submit(handle_file(str(path)), "OCR", "", 48, api_name="/answer")))
        assert len(updates) > 1, "the answer was not streamed"
        right += score_sample("ocr", updates[-1], sample.target)["exact"] == 1.0
    assert right >= 4, f"read {right} of 6 held-out texts at one place (eval.json: {FIXED_PLACE_READING:.2f})"


def test_multi_turn_chat_with_a_second_image_is_logged_turn_by_turn(client, running_app, tmp_path):
    _, first = _sample_file(tmp_path, "ocr", "e2e-turn-1")
    _, second = _sample_file(tmp_path, "scene", "e2e-turn-2")
    before = {c["id"] for c in running_app[1].conversations.store.list_conversations(limit=200)}
    _chat_turn(client, "", [first], "OCR")
    _chat_turn(client, "Describe the objects in the image and where they are.", [second], "Scene description")
    new = [c for c in running_app[1].conversations.store.list_conversations(limit=200) if c["id"] not in before]
    assert len(new) == 1
    messages = running_app[1].conversations.store.get_conversation(new[0]["id"])["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    ocr = next(p for p in running_app[1].presets if p.name == "OCR")
    assert messages[0]["text"] == ocr.instruction  # an image sent alone gets the preset's instruction
    assert [len(m["images"]) for m in messages] == [1, 0, 1, 0]
    for answer in messages[1::2]:
        assert answer["status"] == "done" and answer["generation"]["prompt_tokens"] > 0
    # The second answer saw both images: its prompt is longer than the first one's.
    assert messages[3]["generation"]["prompt_tokens"] > messages[1]["generation"]["prompt_tokens"]


def test_stop_leaves_a_partial_answer_marked_stopped_and_the_worker_idle(client, running_app, tmp_path):
    _, image = _sample_file(tmp_path, "webpage", "e2e-stop")
    client.predict({"text": "", "files": [handle_file(str(image))]}, "Webpage", api_name="/submit_message")
    job = client.submit("Webpage", *{**PARAMS, "max_new_tokens": 512}.values(), api_name="/respond")
    client.predict(api_name="/stop")
    list(streamed(job))
    ctx = running_app[1]
    conversation = ctx.conversations.store.list_conversations(limit=1)[0]
    answer = ctx.conversations.store.get_conversation(conversation["id"])["messages"][-1]
    assert answer["role"] == "assistant" and answer["status"] == "stopped", answer
    assert answer["generation"]["new_tokens"] < 512
    assert ctx.engine._lock.acquire(timeout=5)  # the stopped generation let go of the model
    ctx.engine._lock.release()


@pytest.mark.parametrize(
    "content, name, message",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt.png", "corrupt.png looks like PNG but its header is broken"),
        (b"just some text, not a picture\n", "notes.txt", "notes.txt is not an accepted image"),
    ],
)
def test_bad_files_get_a_clear_message_and_the_app_keeps_serving(client, tmp_path, content, name, message):
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(bad)), "OCR", "", 16, api_name="/answer")
    # The chat box accepts images only; Gradio itself refuses other file types before our check runs.
    with pytest.raises(AppError, match=f"{message}|Invalid file type"):
        client.predict(
            {"text": "what is this?", "files": [handle_file(str(bad))]}, "Free chat", api_name="/submit_message"
        )
    _, good = _sample_file(tmp_path, "ocr", f"e2e-after-{name}")
    assert isinstance(client.predict(handle_file(str(good)), "OCR", "", 8, api_name="/answer"), str)


def test_a_model_swapped_out_after_start_up_is_freed(client, running_app, tmp_path):
    """The app freezes what start-up built so that Python's full collections no longer walk it (a 0.2-0.35 s stall
    of every request). A frozen object in a reference cycle would never be freed: the swapped-out model must go by
    reference counting alone, or each reload would keep a whole model in memory."""
    ctx = running_app[1]
    assert gc.get_freeze_count() > 0
    old_model = weakref.ref(ctx.engine.model)
    ctx.engine.reload(MODEL)
    assert old_model() is None
    _, image = _sample_file(tmp_path, "ocr", "e2e-after-reload")
    assert isinstance(client.predict(handle_file(str(image)), "OCR", "", 8, api_name="/answer"), str)
