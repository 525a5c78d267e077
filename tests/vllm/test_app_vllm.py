"""The app on `--backend vllm`: vLLM's async engine in the app's process, behind the same engine seam.

One app (and one engine) for the module, on a checkpoint shaped like the default model: `/answer` streams the same
answer the transformers backend gives, concurrent calls are generated together (the chat's queue follows the
backend's limit), Stop aborts the request inside vLLM, a prompt beyond the context is refused with the same
message as on the transformers backend, and a request that meets vLLM's processor cache out of step is answered.
"""

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eve_app.serving.sent_images import SentImages
from tests.e2e.helpers import free_port, streamed
from tests.vllm.checkpoints import transformers_engine, write_default_shaped, write_lora_adapter, write_official


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_default_shaped(tmp_path_factory.mktemp("default-shaped"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, size in enumerate([(140, 90), (96, 160), (200, 200), (64, 64)]):
        path = folder / f"image-{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def app(checkpoint, tmp_path_factory):
    from app import create_app, launch_options

    port = free_port()
    # LoRA on (off by default on a CPU), so that the model picker can serve adapters; the other tests then check the
    # base model's path through an engine with LoRA on.
    with pytest.MonkeyPatch.context() as patch:
        extra = json.loads(os.environ.get("EVE_VLLM_ENGINE_ARGS", "{}"))
        patch.setenv("EVE_VLLM_ENGINE_ARGS", json.dumps({**extra, "enable_lora": True}))
        demo, ctx = create_app(
            [
                "--backend",
                "vllm",
                "--model",
                str(checkpoint),
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path_factory.mktemp("data")),
            ]
        )
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    yield f"http://127.0.0.1:{port}/", ctx, demo
    demo.close()
    ctx.engine.shutdown()


def _transformers_answer(
    checkpoint: Path, image: Path, question: str, max_new_tokens: int, adapter: Path | None = None
) -> str:
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    engine = transformers_engine(checkpoint, adapter)
    request = ChatRequest([Turn("user", question, [str(image)])], GenerationSettings(max_new_tokens=max_new_tokens))
    return list(engine.stream(request))[-1].record.text


def _clean(text: str) -> str:
    # Bytes of a character cut off by max tokens (see test_server._text); vLLM's detokenizer also drops the space
    # the first answer token starts with, which transformers' streamer keeps.
    return text.replace("\ufffd", "").strip()


def test_answer_endpoint_streams_the_transformers_answer(app, checkpoint, images):
    from gradio_client import Client, handle_file

    url, ctx, _ = app
    assert "vLLM" in ctx.engine.describe()
    preset = ctx.presets[0]
    job = Client(url, verbose=False).submit(handle_file(str(images[0])), preset.name, "", 24, api_name="/answer")
    partials = list(streamed(job))
    assert len(partials) > 1 and partials[-1] == job.result()
    expected = _transformers_answer(checkpoint, images[0], preset.instruction, 24)
    assert _clean(job.result()) == _clean(expected)


def test_concurrent_answers_are_generated_together(app, images):
    from gradio_client import Client, handle_file

    url, ctx, demo = app
    limits = {fn.name: fn.concurrency_limit for fn in demo.fns.values()}
    assert limits["respond"] == ctx.engine.concurrency_limit > 1  # the chat's queue follows the backend
    results: dict[int, str] = {}
    spans: dict[int, tuple[float, float]] = {}

    def call(i: int) -> None:
        start = time.perf_counter()
        job = Client(url, verbose=False).submit(
            handle_file(str(images[i])), ctx.presets[0].name, "", 48, api_name="/answer"
        )
        results[i] = job.result()
        spans[i] = (start, time.perf_counter())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert sorted(results) == [0, 1, 2, 3] and all(results.values())
    # Answers overlapped in time instead of queueing one after another.
    assert max(start for start, _ in spans.values()) < min(end for _, end in spans.values())
    # Every call is logged under the owner "api" with its generation record from the vLLM backend.
    generations = [
        message["generation"]
        for summary in ctx.conversations.store.list_conversations(owner="admin")
        for message in ctx.conversations.store.get_conversation(summary["id"])["messages"]
        if message["role"] == "assistant"
    ]
    done = [g for g in generations if g and g["status"] == "done"]
    assert len(done) >= 5
    assert all(g["prompt_tokens"] > 157 and g["new_tokens"] > 0 and g["time_to_first_token"] > 0 for g in done)


def test_stop_aborts_inside_vllm_and_records_stopped(app, images):
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    engine = app[1].engine
    request = ChatRequest(
        [Turn("user", "describe the image", [str(images[1])])], GenerationSettings(max_new_tokens=700)
    )
    events = []
    for event in engine.stream(request):
        events.append(event)
        if len(events) == 2:
            request.stop_event.set()
    record = events[-1].record
    assert record.status == "stopped" and 0 < record.new_tokens < 700
    assert record.prompt_tokens > 157 and record.time_to_first_token is not None
    deadline = time.perf_counter() + 5
    while engine._engine.output_processor.get_num_unfinished_requests() and time.perf_counter() < deadline:
        time.sleep(0.1)
    assert engine._engine.output_processor.get_num_unfinished_requests() == 0


def test_errors_are_records_not_hangs(app, images, tmp_path):
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    engine = app[1].engine
    too_long = ChatRequest([Turn("user", "hello", [str(images[0])] * 6)], GenerationSettings(max_new_tokens=200))
    record = list(engine.stream(too_long))[-1].record
    assert record.status == "error" and "too long for the context" in record.error
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    record = list(engine.stream(ChatRequest([Turn("user", "hi", [str(broken)])])))[-1].record
    assert record.status == "error" and "not a readable image" in record.error
    from eve_app.errors import UserError

    with pytest.raises(UserError, match="restart the app"):  # the fine-tune tab shows it as a refusal
        engine.reload(str(tmp_path))


def test_a_request_after_a_processor_cache_drift_is_answered(app, tmp_path):
    """vLLM's processor cache (on in the app) drifts when a request fails after its image was processed; the
    next request with that image is then ended by vLLM before any token, and the engine sends it again."""
    import asyncio

    from vllm import SamplingParams
    from vllm.v1.engine.exceptions import EngineGenerateError

    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    engine = app[1].engine
    image = tmp_path / "drift.png"
    Image.fromarray(np.random.default_rng(11).integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(image)

    async def without_a_placeholder() -> None:  # only a raw prompt can do this; the app always places the image
        inputs = {
            "prompt": "hello",
            "multi_modal_data": {"image": [Image.open(image).convert("RGB")]},
            "multi_modal_uuids": {"image": [engine.sent_images.digest(str(image))]},  # the engine's id for it
        }
        async for _ in engine._engine.generate(inputs, SamplingParams(max_tokens=4), "no-placeholder"):
            pass

    with pytest.raises(EngineGenerateError):
        asyncio.run_coroutine_threadsafe(without_a_placeholder(), engine._loop).result(timeout=60)
    request = ChatRequest([Turn("user", "What is written here?", [str(image)])], GenerationSettings(max_new_tokens=8))
    record = list(engine.stream(request))[-1].record
    assert record.status == "done" and record.error is None
    assert record.new_tokens == 8 and record.text.strip()


def test_a_follow_up_sends_earlier_images_by_id_and_gets_the_same_answer(app, tmp_path, monkeypatch):
    """Turns after the first send the conversation's earlier images as ids only (vLLM holds them processed): the
    answer is the one the same conversation gets with every image's pixels sent."""
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    engine = app[1].engine
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"turn-{i}.png"))
        Image.fromarray(np.random.default_rng(20 + i).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(paths[i])
    settings = GenerationSettings(max_new_tokens=12)
    first = list(engine.stream(ChatRequest([Turn("user", "What is written here?", [paths[0]])], settings)))[-1]
    turns = [
        Turn("user", "What is written here?", [paths[0]]),
        Turn("assistant", first.record.text),
        Turn("user", "and here?", [paths[1]]),
    ]
    decoded: list[str] = []
    load_image = engine.processor.image_processor.load_image
    monkeypatch.setattr(
        engine.processor.image_processor, "load_image", lambda path: decoded.append(path) or load_image(path)
    )
    by_id = list(engine.stream(ChatRequest(turns, settings)))[-1].record
    assert by_id.status == "done" and decoded == [paths[1]]  # the first image was neither decoded nor checked again
    monkeypatch.setattr(engine, "sent_images", SentImages())  # an engine that has sent nothing: every image's pixels
    with_pixels = list(engine.stream(ChatRequest(turns, settings)))[-1].record
    assert (by_id.text, by_id.prompt_tokens) == (with_pixels.text, with_pixels.prompt_tokens)
    assert by_id.new_tokens == 12


def test_an_image_vllm_no_longer_holds_is_sent_again(app, tmp_path):
    """The engine's record of what vLLM holds is a hint: after vLLM's cache evicted an image, the request sent by id
    is refused before it starts, and the engine sends it once more with the pixels."""
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    engine = app[1].engine
    image = tmp_path / "evicted.png"
    Image.fromarray(np.random.default_rng(30).integers(0, 256, (100, 70, 3), dtype=np.uint8)).save(image)
    engine.sent_images.remember(engine.sent_images.digest(str(image)), None, (70, 100))  # never actually sent
    request = ChatRequest([Turn("user", "What is written here?", [str(image)])], GenerationSettings(max_new_tokens=8))
    record = list(engine.stream(request))[-1].record
    assert record.status == "done" and record.error is None and record.new_tokens == 8


def test_the_processor_cache_keeps_each_image_size_apart(app, images):
    """The image size setting reaches vLLM's processor as a keyword, which its cache key includes."""
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn
    from model.shared import num_image_tokens

    engine = app[1].engine

    def image_tokens(max_size: int | None) -> int:
        settings = GenerationSettings(max_new_tokens=2, image_max_size=max_size)
        with_image = list(engine.stream(ChatRequest([Turn("user", "hi", [str(images[2])])], settings)))[-1].record
        without = list(engine.stream(ChatRequest([Turn("user", "hi")], settings)))[-1].record
        assert with_image.status == without.status == "done"
        return with_image.prompt_tokens - without.prompt_tokens

    # images[2] is 200x200: 192 pixels a side by default, 96 at max size 96 (16-pixel patches); the second request at
    # each size finds its own tensor in the cache
    default, small = image_tokens(None), image_tokens(96)
    assert default - small == num_image_tokens(192, 192, 16) - num_image_tokens(96, 96, 16)
    assert (image_tokens(None), image_tokens(96)) == (default, small)


def test_the_model_picker_switches_to_an_adapter_and_back_without_a_restart(app, checkpoint, images, tmp_path):
    """The picker's call (`reload` with a fine-tune job's adapter folder) serves the adapter on the same vLLM engine:
    answers equal the transformers backend's with the adapter (peft); the checkpoint switches back to the base."""
    from eve_app.errors import UserError
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    _, ctx, _ = app
    engine = ctx.engine
    adapter = write_lora_adapter(checkpoint, tmp_path / "job-3", seed=3)
    vllm_engine = engine._engine

    def answer() -> str:
        settings = GenerationSettings(max_new_tokens=16)
        record = list(engine.stream(ChatRequest([Turn("user", "What is written here?", [str(images[3])])], settings)))
        assert record[-1].record.status == "done", record[-1].record.error
        return _clean(record[-1].record.text)

    base = answer()
    engine.reload(str(adapter), name="job-3")
    assert engine._engine is vllm_engine and engine.describe().startswith("job-3 (LoRA on ")
    tuned = answer()
    assert tuned == _clean(_transformers_answer(checkpoint, images[3], "What is written here?", 16, adapter))
    assert tuned != base
    engine.reload(str(checkpoint), name="default")
    assert answer() == base and "LoRA" not in engine.describe()
    # An adapter above the engine's rank limit is refused with what to change, and the model stays as it was.
    big = write_lora_adapter(checkpoint, tmp_path / "job-4", seed=4, rank=32)
    with pytest.raises(UserError, match="max_lora_rank"):
        engine.reload(str(big), name="job-4")
    # So is an adapter trained on another model.
    other = write_lora_adapter(write_official(tmp_path / "other"), tmp_path / "job-5", seed=5)
    with pytest.raises(UserError, match="trained on other, a different model"):
        engine.reload(str(other), name="job-5")
    assert "LoRA" not in engine.describe()


def _descendants(pid: int) -> set[int]:
    """Live descendant process ids of `pid` (Linux /proc)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
    return children | {d for c in children for d in _descendants(c)}


def test_sigterm_stops_the_app_and_its_vllm_processes(checkpoint, tmp_path):
    from tests.e2e.helpers import start_server

    port = free_port()
    process = start_server(
        ["--backend", "vllm", "--model", str(checkpoint), "--data-dir", str(tmp_path / "data")], port, timeout=300
    )
    engine_processes = _descendants(process.pid)
    assert engine_processes, "vLLM's engine runs in child processes"
    process.terminate()  # what `docker stop` and service managers send
    assert process.wait(timeout=60) != 0
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in engine_processes) and time.time() < deadline:
        time.sleep(0.5)
    alive = [pid for pid in engine_processes if Path(f"/proc/{pid}").exists()]
    assert not alive, f"vLLM processes outlived the app: {alive}"
