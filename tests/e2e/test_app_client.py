"""The real app driven through gradio_client: streamed answers, multi-turn, stop, bad files, and the log."""

import json
import random
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from eve_app.settings import DEFAULT_MODEL
from model.synthetic import generate_sample
from tests.e2e.helpers import MODEL

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
    outputs = list(job)
    return outputs, job


def _word_reading() -> dict:
    """The single-word OCR row (level 0) of the evaluation that the model under test's export wrote, best first."""
    eval_file = Path(MODEL) / "eval.json"
    results = json.loads(eval_file.read_text())["results"] if eval_file.is_file() else []
    rows = [r for r in results if r["task"] == "ocr" and r["level"] == 0]
    return max(rows, key=lambda r: r["metrics"]["exact"], default={"metrics": {"exact": 0.0}})


WORD_READING = _word_reading()


def test_api_streams_an_ocr_answer_and_logs_it(client, running_app, tmp_path):
    _, path = _sample_file(tmp_path, "ocr", "e2e-ocr")
    job = client.submit(handle_file(str(path)), "OCR", "", 32, api_name="/answer")
    updates = list(job)
    assert updates, "no streamed output"
    conversation = running_app[1].storage.list_conversations(limit=1)[0]
    messages = running_app[1].storage.get_conversation(conversation["id"])["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "done" and messages[1]["generation"]["new_tokens"] > 0
    assert messages[1]["text"].strip() == updates[-1].strip()


@pytest.mark.skipif(
    MODEL != DEFAULT_MODEL and WORD_READING["metrics"]["exact"] < 0.8,
    reason="EVE_TEST_MODEL does not read single words (OCR level-0 exact < 0.8 in its eval.json)",
)
def test_streamed_ocr_answers_contain_the_rendered_words(client, tmp_path):
    """Five held-out words rendered where the model learnt to find them; a reader gets nearly all of them."""
    assert WORD_READING["metrics"]["exact"] >= 0.8, "the shipped model's eval.json says it does not read words"
    spread = WORD_READING.get("spread", 1.0)
    read = 0
    for i in range(5):
        sample, path = _sample_file(tmp_path, "ocr", f"e2e-read-{i}", spread=spread)
        updates = list(client.submit(handle_file(str(path)), "OCR", "", 32, api_name="/answer"))
        assert len(updates) > 1, "the answer was not streamed"
        read += sample.target["text"].lower() in updates[-1].lower()
    assert read >= 4, f"read {read} of 5 rendered words"


def test_multi_turn_chat_with_a_second_image_is_logged_turn_by_turn(client, running_app, tmp_path):
    _, first = _sample_file(tmp_path, "ocr", "e2e-turn-1")
    _, second = _sample_file(tmp_path, "scene", "e2e-turn-2")
    before = {c["id"] for c in running_app[1].storage.list_conversations(limit=200)}
    _chat_turn(client, "", [first], "OCR")
    _chat_turn(client, "Describe the objects in the image and where they are.", [second], "Scene description")
    new = [c for c in running_app[1].storage.list_conversations(limit=200) if c["id"] not in before]
    assert len(new) == 1
    messages = running_app[1].storage.get_conversation(new[0]["id"])["messages"]
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
    list(job)
    ctx = running_app[1]
    conversation = ctx.storage.list_conversations(limit=1)[0]
    answer = ctx.storage.get_conversation(conversation["id"])["messages"][-1]
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
