"""vLLM's OpenAI-compatible server with the EVEv2 plugin, started the way a user starts it, on a loopback port.

One server for the module (engine start is about a minute on a CPU): an OpenAI-client chat with an image (the
answer equals the transformers implementation's, so the chat template and the image path are the library's), two
streams at once, an abort that frees the request, and the app's `--api-base` backend against the same server.
"""

import base64
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.e2e.helpers import free_port
from tests.vllm.checkpoints import transformers_engine, write_lora_adapter, write_official

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is written here?"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_official(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "sign.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (90, 140, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def adapter(checkpoint, tmp_path_factory) -> Path:
    """A fine-tune job's LoRA adapter for the checkpoint (peft's layout, random weights)."""
    return write_lora_adapter(checkpoint, tmp_path_factory.mktemp("job-7"), seed=7)


@pytest.fixture(scope="module")
def server(checkpoint, adapter, tmp_path_factory):
    """Base URL of `python -m vllm.entrypoints.openai.api_server --model CHECKPOINT --enable-lora --lora-modules
    job-7=ADAPTER` (the plugin loads itself)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    # As docs/vllm.md serves on a CPU: the worker inside the engine core's process, the text path compiled (see
    # eve_app.serving.vllm_engine).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(checkpoint),
            "--served-model-name",
            "eve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--block-size",
            "32",
            "--compilation-config",
            '{"custom_ops": ["all"]}',
            "--gpu-memory-utilization",
            "0.2",
            "--distributed-executor-backend",
            "uni",
            "--enable-lora",
            "--max-lora-rank",
            "8",
            "--lora-modules",
            f"job-7={adapter}",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        process.kill()
        raise RuntimeError(f"the server did not start: see {log.name}")
    yield url
    process.terminate()
    process.wait(timeout=60)


def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _library_ids(checkpoint: Path, image: Path, new_tokens: int, adapter: Path | None = None) -> list[int]:
    from model import load_pretrained

    model, processor = load_pretrained(checkpoint, device="cpu", dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    inputs = processor(
        text=processor.build_prompt([{"role": "user", "content": f"<|image_pad|>\n{QUESTION}"}]), images=[image]
    )
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return ids[0, inputs["input_ids"].shape[1] :].tolist()


def _text(text: str) -> str:
    """Random byte-level tokens often end inside a UTF-8 character: vLLM holds those bytes back at the end of a
    stream, transformers' streamer prints them as U+FFFD."""
    return text.replace("\ufffd", "").strip()  # vLLM also drops the leading space of the first answer token


def _chat(server: str, model: str, image: Path, max_tokens: int):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="none")
    return client.chat.completions.create(
        model=model,
        temperature=0,
        max_tokens=max_tokens,
        extra_body={"return_token_ids": True},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _data_url(image)}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )


def test_the_server_serves_a_lora_adapter_by_name(server, checkpoint, adapter, image_file):
    """`--lora-modules job-7=PATH`: the model `job-7` answers like transformers with the adapter (peft)."""
    models = httpx.get(f"{server}/v1/models", timeout=5).json()["data"]
    assert {(m["id"], m.get("parent")) for m in models} == {("eve", None), ("job-7", "eve")}
    tuned = _chat(server, "job-7", image_file, 16).choices[0].token_ids
    assert tuned == _library_ids(checkpoint, image_file, 16, adapter)
    assert tuned != _library_ids(checkpoint, image_file, 16)


def test_openai_chat_with_an_image_answers_like_the_library(server, checkpoint, image_file):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="none")
    reply = client.chat.completions.create(
        model="eve",
        temperature=0,
        max_tokens=16,
        extra_body={"return_token_ids": True},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _data_url(image_file)}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )
    assert reply.choices[0].token_ids == _library_ids(checkpoint, image_file, 16)
    # class token + rows of patches and split tokens of the resized image, plus the prompt's text
    assert reply.usage.prompt_tokens > 1 + 2 * 3


def _stream(server: str, image: Path, max_tokens: int, stamps: list, stop_after: int | None = None) -> None:
    """Streams one chat; appends each token's arrival time to `stamps`; closes early after `stop_after` tokens."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="none")
    stream = client.chat.completions.create(
        model="eve",
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        extra_body={"ignore_eos": True, "return_token_ids": True},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _data_url(image)}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )
    for chunk in stream:
        if chunk.choices and getattr(chunk.choices[0], "token_ids", None):
            stamps.extend([time.perf_counter()] * len(chunk.choices[0].token_ids))
            if stop_after and len(stamps) >= stop_after:
                stream.close()  # the client goes away mid-answer
                return


def test_two_streams_run_at_the_same_time(server, image_file):
    stamps: list[list[float]] = [[], []]
    threads = [threading.Thread(target=_stream, args=(server, image_file, 120, stamps[i])) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [len(s) for s in stamps] == [120, 120]
    # Interleaved, not queued: each stream's first chunk came before the other's last one.
    assert stamps[0][0] < stamps[1][-1] and stamps[1][0] < stamps[0][-1]


def _running(server: str) -> float:
    metrics = httpx.get(f"{server}/metrics", timeout=5).text
    values = [
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("vllm:num_requests_running")
    ]
    return sum(values)


def test_closing_a_stream_aborts_the_request(server, image_file):
    stamps: list[float] = []
    _stream(server, image_file, 6000, stamps, stop_after=5)  # 6,000 tokens would take far longer than the wait
    closed = time.perf_counter()
    while _running(server) > 0 and time.perf_counter() - closed < 10:
        time.sleep(0.2)
    assert _running(server) == 0, "the abandoned request is still generating"
    again: list[float] = []
    _stream(server, image_file, 8, again)
    assert len(again) == 8


def test_app_backend_on_api_base_streams_like_the_transformers_backend(server, checkpoint, image_file):
    from eve_app.serving.openai_engine import OpenAIEngine
    from eve_app.serving.transformers_engine import TransformersEngine
    from eve_app.serving.types import ChatRequest, Finished, GenerationSettings, TextDelta, Turn

    remote = OpenAIEngine.connect(server, str(checkpoint))
    assert remote.concurrency_limit > 1 and remote.context_length == 8192
    local = TransformersEngine.load(str(checkpoint), dtype="float32")
    settings = GenerationSettings(max_new_tokens=12)
    records = {}
    for name, engine in {"remote": remote, "local": local}.items():
        events = list(engine.stream(ChatRequest([Turn("user", QUESTION, [str(image_file)])], settings)))
        assert all(isinstance(e, TextDelta) for e in events[:-1]) and isinstance(events[-1], Finished)
        records[name] = events[-1].record
    assert records["remote"].status == "done", records["remote"].error
    assert _text(records["remote"].text) == _text(records["local"].text)
    assert records["remote"].prompt_tokens == records["local"].prompt_tokens
    assert records["remote"].new_tokens == records["local"].new_tokens
    assert records["remote"].time_to_first_token is not None

    # Stop: the answer ends as "stopped" after its first pieces, and the server drops the request.
    request = ChatRequest([Turn("user", QUESTION, [str(image_file)])], GenerationSettings(max_new_tokens=3000))
    events = []
    for event in remote.stream(request):
        events.append(event)
        if len(events) == 3:
            request.stop_event.set()
    assert events[-1].record.status == "stopped" and events[-1].record.new_tokens < 3000
    deadline = time.perf_counter() + 10
    while _running(server) > 0 and time.perf_counter() < deadline:
        time.sleep(0.2)
    assert _running(server) == 0

    # A prompt beyond the context is refused before anything is sent, with the transformers backend's message.
    long = ChatRequest([Turn("user", QUESTION * 4000, [str(image_file)])], GenerationSettings(max_new_tokens=64))
    record = list(remote.stream(long))[-1].record
    assert record.status == "error" and "too long for the context" in record.error


def test_api_base_model_picker_switches_to_the_served_adapter_and_back(server, checkpoint, adapter, image_file):
    """On `--api-base` the picker's call (`reload` with the job's adapter folder) sends requests to the server's
    model of that adapter; the `--model` checkpoint switches back. An adapter the server lacks is refused with how to
    serve it."""
    from eve_app.errors import UserError
    from eve_app.serving.openai_engine import OpenAIEngine
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    remote = OpenAIEngine.connect(server, str(checkpoint))
    assert remote.served_name == "eve"

    def answer(engine) -> str:
        request = ChatRequest([Turn("user", QUESTION, [str(image_file)])], GenerationSettings(max_new_tokens=16))
        record = list(engine.stream(request))[-1].record
        assert record.status == "done", record.error
        return _text(record.text)

    base = answer(remote)
    remote.reload(str(adapter), name="job-7")
    assert remote.served_name == "job-7" and "job-7 (LoRA)" in remote.describe()
    tuned = answer(remote)
    assert tuned == answer(transformers_engine(checkpoint, adapter)) and tuned != base
    remote.reload(str(checkpoint))
    assert remote.served_name == "eve" and answer(remote) == base
    with pytest.raises(UserError, match="--lora-modules"):
        remote.reload(str(write_lora_adapter(checkpoint, adapter.parent / "job-8", seed=8)), name="job-8")
    assert remote.served_name == "eve"


def test_api_base_follow_ups_send_earlier_images_by_id(server, checkpoint, image_file, tmp_path):
    """On `--api-base`, an image the server was sent before goes as its id alone (`uuid`, no data URL): the answer
    is the one the same conversation gets with every image uploaded. An id the server no longer holds is refused,
    and the client sends the request again with the data."""
    from eve_app.serving.openai_engine import OpenAIEngine
    from eve_app.serving.types import ChatRequest, GenerationSettings, Turn

    second = tmp_path / "second.png"
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (70, 110, 3), dtype=np.uint8)).save(second)
    settings = GenerationSettings(max_new_tokens=10)
    remote = OpenAIEngine.connect(server, str(checkpoint))
    uploads: list[int] = []
    remote._client.event_hooks["request"].append(lambda request: uploads.append(request.read().count(b"data:image")))
    first = list(remote.stream(ChatRequest([Turn("user", QUESTION, [str(image_file)])], settings)))[-1].record
    turns = [
        Turn("user", QUESTION, [str(image_file)]),
        Turn("assistant", first.text),
        Turn("user", "and here?", [str(second)]),
    ]
    by_id = list(remote.stream(ChatRequest(turns, settings)))[-1].record
    assert (first.status, by_id.status) == ("done", "done") and uploads == [1, 1]
    fresh = OpenAIEngine.connect(server, str(checkpoint))  # has sent nothing: uploads both images
    with_data = list(fresh.stream(ChatRequest(turns, settings)))[-1].record
    assert (by_id.text, by_id.prompt_tokens, by_id.new_tokens) == (with_data.text, with_data.prompt_tokens, 10)

    unseen = tmp_path / "unseen.png"
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(unseen)
    remote.sent_images.remember(remote.sent_images.digest(str(unseen)), None, (60, 60))  # never sent
    uploads.clear()
    record = list(remote.stream(ChatRequest([Turn("user", QUESTION, [str(unseen)])], settings)))[-1].record
    assert record.status == "done" and record.new_tokens == 10 and uploads == [0, 1]
