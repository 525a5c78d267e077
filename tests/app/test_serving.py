"""The engine seam without vLLM: backend choice from the settings, the prompt checks the vLLM backends share, and
the `--api-base` client's answer to a failed or malformed stream."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from eve_app.serving import load_engine
from eve_app.serving.openai_engine import OpenAIEngine
from eve_app.serving.prompts import prepare
from eve_app.serving.sent_images import SentImages
from eve_app.serving.transformers_engine import TransformersEngine
from eve_app.serving.types import ChatRequest, EngineError, Finished, GenerationSettings, Turn
from eve_app.settings import parse_settings
from model.shared import IMAGE_TOKEN


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return TransformersEngine.load(str(tiny_checkpoint))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_backend_flags_and_their_defaults(monkeypatch):
    monkeypatch.delenv("EVE_BACKEND", raising=False)
    monkeypatch.delenv("EVE_API_BASE", raising=False)
    assert parse_settings([]).backend == "transformers" and parse_settings([]).api_base is None
    settings = parse_settings(["--backend", "vllm", "--api-base", "http://127.0.0.1:8000/v1", "--api-key", "k"])
    assert (settings.backend, settings.api_base, settings.api_key) == ("vllm", "http://127.0.0.1:8000/v1", "k")
    with pytest.raises(SystemExit):
        parse_settings(["--backend", "tgi"])


def test_quantization_is_refused_on_the_vllm_backends():
    with pytest.raises(ValueError, match="transformers backend only"):
        load_engine(parse_settings(["--backend", "vllm", "--quantization", "8bit"]))


def test_transformers_backend_answers_one_at_a_time(tiny_checkpoint):
    engine = load_engine(parse_settings(["--model", str(tiny_checkpoint)]))
    assert isinstance(engine, TransformersEngine) and engine.concurrency_limit == 1


def test_api_base_without_a_server_is_a_clear_error(tiny_checkpoint):
    with pytest.raises(EngineError, match="No OpenAI-compatible model server answers at http://127.0.0.1:9/v1"):
        OpenAIEngine.connect("http://127.0.0.1:9", str(tiny_checkpoint))


def _sse(*chunks: dict) -> bytes:
    return "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks).encode() + b"data: [DONE]\n\n"


def _server_replies(*replies: bytes) -> tuple[httpx.MockTransport, list]:
    """A stand-in for `vllm serve`'s /chat/completions that answers each request with the next event stream."""
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(200, content=replies[len(calls) - 1], headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle), calls


FAILED = {"error": {"message": "Internal server error", "type": "InternalServerError", "code": 500}}


def _text(piece: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": piece}}]}


def test_api_base_asks_once_more_when_the_server_fails_before_any_token(engine, image):
    """vLLM ends a request whose processor cache drifted with a retryable error before any token; the stand-in
    server replays that event (a live `vllm serve` answers the same client in tests/vllm/test_server.py)."""
    transport, calls = _server_replies(_sse(FAILED), _sse(_text("hello"), _text(" there")))
    remote = OpenAIEngine(
        "http://server/v1", "eve", 1024, engine.processor, engine.checkpoint_dir, transport=transport
    )
    record = list(remote.stream(ChatRequest([Turn("user", "What is here?", [image])])))[-1].record
    assert (record.status, record.text, len(calls)) == ("done", "hello there", 2)
    assert calls[0] == calls[1]


def test_api_base_reports_a_failure_after_text_without_asking_again(engine, image):
    transport, calls = _server_replies(_sse(_text("hel"), FAILED), _sse(_text("hello")))
    remote = OpenAIEngine(
        "http://server/v1", "eve", 1024, engine.processor, engine.checkpoint_dir, transport=transport
    )
    record = list(remote.stream(ChatRequest([Turn("user", "What is here?", [image])])))[-1].record
    assert (record.status, record.text, len(calls)) == ("error", "hel", 1)
    assert record.error == "The model server failed: Internal server error"
    transport, calls = _server_replies(_sse(FAILED), _sse(FAILED))
    remote = OpenAIEngine(
        "http://server/v1", "eve", 1024, engine.processor, engine.checkpoint_dir, transport=transport
    )
    record = list(remote.stream(ChatRequest([Turn("user", "What is here?", [image])])))[-1].record
    assert (record.status, record.text, len(calls)) == ("error", "", 2)


def test_prepared_prompt_counts_the_tokens_the_library_builds(engine, image):
    turns = [
        Turn("user", "What is written here?", [image]),
        Turn("assistant", "hello"),
        Turn("user", "and this one?", [image, image]),
    ]
    settings = GenerationSettings(max_new_tokens=8)
    prompt = prepare(engine.processor, turns, settings, SentImages())
    inputs = engine.build_inputs(turns, settings)
    assert prompt.prompt_tokens == inputs["input_ids"].shape[1]
    assert prompt.text.count(IMAGE_TOKEN) == 3 and "<image>" not in prompt.text
    assert len(prompt.images) == 3 and all(i.mode == "RGB" for i in prompt.images)


def test_prepared_prompt_refuses_an_unreadable_image(engine, image, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(EngineError, match="not a readable image"):
        prepare(
            engine.processor,
            [Turn("user", "hi", [str(broken)])],
            GenerationSettings(),
            SentImages(),
        )


def test_an_image_vllm_holds_is_sent_by_id_without_decoding_it_again(engine, image, monkeypatch):
    """The in-process vLLM backend's follow-up turns: earlier images go by content digest (vLLM's id), not pixels."""
    settings = GenerationSettings(max_new_tokens=8)
    turns = [Turn("user", "What is written here?", [image])]
    sent = SentImages()
    first = prepare(engine.processor, turns, settings, sent)
    assert first.images[0] is not None and first.image_ids == [sent.digest(image)]
    sent.remember_sent(first.images, first.image_ids, None)  # what the engine does once vLLM accepts it
    decoded = []
    monkeypatch.setattr(engine.processor.image_processor, "load_image", lambda path: decoded.append(path))
    again = prepare(engine.processor, turns, settings, sent)
    assert again.images == [None] and not decoded
    assert (again.prompt_tokens, again.text, again.image_ids) == (first.prompt_tokens, first.text, first.image_ids)
    monkeypatch.undo()
    # another image size is another item in vLLM's cache: the pixels go again
    other_size = prepare(engine.processor, turns, GenerationSettings(image_max_size=32), sent)
    assert other_size.images[0] is not None and other_size.prompt_tokens < first.prompt_tokens
    with pytest.raises(EngineError, match="not a readable image"):
        prepare(engine.processor, [Turn("user", "hi", [image + ".gone"])], settings, sent)


def test_an_image_file_changed_in_place_gets_a_new_id(image, tmp_path):
    sent = SentImages(capacity=2)
    before = sent.digest(image)
    Image.fromarray(np.zeros((50, 80, 3), dtype=np.uint8)).save(image)
    assert sent.digest(image) != before
    for i in range(3):
        sent.remember(f"id-{i}", None, (8, 8))
    assert sent.size("id-0", None) is None and sent.size("id-2", None) == (8, 8)  # bounded, oldest out first
    with pytest.raises(OSError):
        sent.digest(str(tmp_path / "gone.png"))


def test_vllm_on_a_cpu_runs_its_worker_in_the_engine_process(monkeypatch, tmp_path):
    """vLLM's default CPU worker, a process of its own, cost 14.2 ms a decode step against 4.6 ms in-process (docs/vllm.md,
    "The CPU options explained"); its CPU platform keeps `uni` only with multiprocessing switched off, so both are set."""
    from eve_app.serving.vllm_engine import engine_args

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # so that the change below is undone after the test
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    monkeypatch.delenv("EVE_VLLM_ENGINE_ARGS", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    assert "distributed_executor_backend" not in engine_args(str(tmp_path), "cuda", None)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    assert engine_args(str(tmp_path), "cpu", None)["distributed_executor_backend"] == "uni"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_vllm_on_a_cpu_leaves_the_app_a_core_and_jobs_their_threads(monkeypatch):
    """The engine core's OpenMP threads spin at every barrier: on all cores they stall whenever the app's process needs
    one (docs/benchmarks.md). They get one core fewer; the setting lasts only while the engine core starts (fine-tune
    jobs share the cores out by OMP_NUM_THREADS), and one the owner set wins."""
    from eve_app.serving.vllm_engine import _engine_core_environment, engine_core_threads

    cores = len(os.sched_getaffinity(0))
    assert engine_core_threads() == max(1, cores - 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # so that the change below is undone after the test
    monkeypatch.delenv("OMP_NUM_THREADS")
    with _engine_core_environment("cpu"):
        assert os.environ["OMP_NUM_THREADS"] == str(max(1, cores - 1))
    assert "OMP_NUM_THREADS" not in os.environ
    with _engine_core_environment("cuda"):
        assert "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with _engine_core_environment("cpu"):
        assert os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_vllm_compiles_on_a_cpu_with_a_compiler_and_runs_eagerly_without(monkeypatch, tmp_path):
    """The compiled text path is the CPU default; a machine without a C++ compiler still serves, eagerly."""
    from eve_app.serving.vllm_engine import engine_args

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.delenv("EVE_VLLM_ENGINE_ARGS", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("CXX", sys.executable)  # any program on the path
    assert engine_args(str(tmp_path), "cpu", None)["enforce_eager"] is False
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert engine_args(str(tmp_path), "cpu", None)["enforce_eager"] is True
    assert engine_args(str(tmp_path), "cuda", None)["enforce_eager"] is True  # untried on GPUs
    monkeypatch.setenv("EVE_VLLM_ENGINE_ARGS", '{"enforce_eager": true}')
    monkeypatch.setenv("CXX", sys.executable)
    assert engine_args(str(tmp_path), "cpu", None)["enforce_eager"] is True


class _ModelServer(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible server: lists one model and answers every chat request with `server.reply`."""

    def do_GET(self) -> None:
        self._send(200, "application/json", json.dumps({"data": [{"id": "eve", "max_model_len": 1024}]}).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, "text/event-stream", self.server.reply)  # type: ignore[attr-defined]

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def model_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("chunk", "what"),
    [
        ('{"choices": [{"delta": {"content": "lo"', "not JSON"),
        ('{"id": "chatcmpl-1", "object": "chat.completion.chunk"}', "`choices` is missing"),
        ('{"choices": {"delta": {"content": "lo"}}}', "`choices` is missing or not a list"),
        ('{"choices": [{"delta": {"content": 7}}]}', "`delta` is not an object with text"),
        ('{"choices": [], "usage": {"completion_tokens": "two"}}', "`usage` is not an object of token counts"),
    ],
)
def test_api_base_records_a_malformed_chunk_as_an_error(model_server, tiny_checkpoint, chunk, what):
    """A chunk that is not what the OpenAI API sends ends the answer as an error (saved as "error", not "stopped"),
    with the text so far and one final event, from a real HTTP server the client connects to."""
    model_server.reply = f"data: {json.dumps(_text('hel'))}\n\ndata: {chunk}\n\ndata: [DONE]\n\n".encode()
    remote = OpenAIEngine.connect(f"http://127.0.0.1:{model_server.server_port}", str(tiny_checkpoint))
    events = list(remote.stream(ChatRequest([Turn("user", "hello")], GenerationSettings(max_new_tokens=8))))
    assert [type(event) for event in events].count(Finished) == 1 and isinstance(events[-1], Finished)
    record = events[-1].record
    assert (record.status, record.text) == ("error", "hel")
    assert record.error.startswith("The model server sent a malformed answer") and what in record.error


def test_the_api_base_client_imports_no_torch():
    """The `--api-base` client and the serving package's types and base load neither torch nor the library's
    processor when imported (checked in a fresh interpreter): a thin client machine needs no torch to start them."""
    heavy = "('torch', 'model.processing_eve', 'model.modeling_eve')"
    code = (
        "import sys, eve_app.serving, eve_app.serving.types, eve_app.serving.base, eve_app.serving.openai_engine; "
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "[]"
