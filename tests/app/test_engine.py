"""The streaming engine on a real (tiny, random) EVEv2: streaming, stop, errors that end the answer, the budget."""

import threading

import pytest
import torch
from PIL import Image

from eve_app.serving.transformers_engine import TransformersEngine
from eve_app.serving.types import ChatRequest, Finished, GenerationSettings, TextDelta, Turn


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    """The tiny random model, nudged to answer "red red red ..." so that text streams word by word."""
    engine = TransformersEngine.load(str(tiny_checkpoint))
    (word,) = engine.processor.tokenizer(" red", add_special_tokens=False)["input_ids"][-1:]
    with torch.no_grad():
        engine.model.lm_head.weight[word] = engine.model.model.norm.weight.sign() * 50
    return engine


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (80, 40), "red").save(path)
    return str(path)


def _idle(engine) -> bool:
    """Whether the model is free for the next request (the generation lock is released)."""
    if not engine._lock.acquire(timeout=5):
        return False
    engine._lock.release()
    return True


def _run(engine, request):
    events = list(engine.stream(request))
    assert isinstance(events[-1], Finished) and not any(isinstance(e, Finished) for e in events[:-1])
    return [e.text for e in events if isinstance(e, TextDelta)], events[-1].record


def test_streams_pieces_then_one_record(engine, image):
    settings = GenerationSettings(max_new_tokens=12)
    pieces, record = _run(engine, ChatRequest([Turn("user", "Read the text.", [image])], settings))
    assert record.status == "done" and record.error is None
    assert "".join(pieces) == record.text and len(pieces) >= 2
    assert record.prompt_tokens > 50 and 1 <= record.new_tokens <= 12
    assert record.time_to_first_token is not None and record.duration >= record.time_to_first_token


def test_greedy_stream_matches_generate(engine, image):
    settings = GenerationSettings(max_new_tokens=10)
    _, record = _run(engine, ChatRequest([Turn("user", "hello", [image])], settings))
    inputs = engine.build_inputs([Turn("user", "hello", [image])], settings)
    with torch.no_grad():
        ids = engine.model.generate(**inputs, **settings.generate_kwargs())
    assert (
        record.text.strip()
        == engine.processor.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    )


def test_stop_event_ends_generation_with_partial_text(engine, image):
    stop = threading.Event()
    request = ChatRequest([Turn("user", "Describe.", [image])], GenerationSettings(max_new_tokens=400), stop)
    pieces = []
    for event in engine.stream(request):
        if isinstance(event, TextDelta):
            pieces.append(event.text)
            if len(pieces) == 3:
                stop.set()
        else:
            record = event.record
    assert record.status == "stopped"
    assert record.new_tokens < 50 and record.text == "".join(pieces)
    assert _idle(engine)


def test_unreadable_image_becomes_a_clear_error(engine, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _, record = _run(engine, ChatRequest([Turn("user", "Read.", [str(bad)])]))
    assert record.status == "error" and "broken.png" in record.error and "not a readable image" in record.error


def test_max_new_tokens_shrink_to_what_the_context_leaves(engine, image):
    """More new tokens than the prompt leaves room for: the answer is shortened (and says so), not refused."""
    request = ChatRequest([Turn("user", "Read.", [image])], GenerationSettings(max_new_tokens=engine.context_length))
    _, record = _run(engine, request)
    assert record.status == "done" and record.new_tokens_limit == engine.context_length - record.prompt_tokens
    assert record.new_tokens <= record.new_tokens_limit


def test_prompt_over_the_context_is_refused_before_generating(engine, image):
    settings = GenerationSettings(max_new_tokens=64)
    _, record = _run(engine, ChatRequest([Turn("user", "Read. " * engine.context_length, [image])], settings))
    assert record.status == "error" and "too long for the context" in record.error and record.new_tokens == 0


def test_a_failure_inside_generate_reaches_the_user_instead_of_hanging(engine, image, monkeypatch):
    def broken_generate(**kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(engine.model, "generate", broken_generate)
    _, record = _run(engine, ChatRequest([Turn("user", "Read.", [image])]))
    assert record.status == "error" and "kernel exploded" in record.error


def test_out_of_memory_gets_its_own_message(engine, image, monkeypatch):
    def oom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine.model, "generate", oom)
    _, record = _run(engine, ChatRequest([Turn("user", "Read.", [image])]))
    assert record.status == "error" and record.error.startswith("Out of memory")


def test_closing_the_stream_early_stops_the_worker(engine, image):
    request = ChatRequest([Turn("user", "Describe.", [image])], GenerationSettings(max_new_tokens=400))
    stream = engine.stream(request)
    next(stream)
    stream.close()
    assert request.stop_event.is_set() and _idle(engine)


def test_multi_turn_with_a_second_image(engine, image, tmp_path):
    second = tmp_path / "blue.png"
    Image.new("RGB", (40, 80), "blue").save(second)
    turns = [Turn("user", "Read.", [image]), Turn("assistant", "red"), Turn("user", "And this one?", [str(second)])]
    _, record = _run(engine, ChatRequest(turns, GenerationSettings(max_new_tokens=5)))
    both = engine.build_inputs(turns, GenerationSettings())
    assert record.status == "done" and record.prompt_tokens == both["input_ids"].shape[1]
    assert len(both["pixel_values"]) == 2
    assert int(both["mm_token_type_ids"].sum()) == sum(
        engine.processor.count_image_tokens(p) for p in both["pixel_values"]
    )


def test_reload_swaps_the_checkpoint_and_keeps_the_dtype(tiny_checkpoint, tiny_checkpoint_no_moe):
    engine = TransformersEngine.load(str(tiny_checkpoint), dtype="bfloat16")
    engine.reload(str(tiny_checkpoint_no_moe))
    assert engine.name == tiny_checkpoint_no_moe.name and not engine.model.config.add_moe
    assert engine.dtype == "bfloat16" and engine.device == "cpu"
