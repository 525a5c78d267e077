"""What the benchmarks of the app's request path share: test images, one `/answer` call over Gradio's HTTP API, and
the engine's own time to first token of each call as the app stored it."""

import http.client
import json
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def random_images(folder: Path, count: int, size: tuple[int, int] = (160, 120), seed: int = 0) -> list[str]:
    """`count` PNG files of random pixels (each one different, so each is stored anew)."""
    paths = []
    for i in range(count):
        path = folder / f"image-{seed + i}.png"
        pixels = np.random.default_rng(seed + i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def stored_ttfts(storage) -> list[float]:
    """Engine TTFTs of the /answer calls, oldest first, from the stored generation records."""
    rows = []
    for summary in storage.list_conversations(owner="admin", limit=1000):
        for message in storage.get_conversation(summary["id"])["messages"]:
            if message["role"] == "assistant" and message["generation"]:
                rows.append((message["generation"]["created_at"], message["generation"]["time_to_first_token"]))
    return [ttft for _, ttft in sorted(rows)]


def answer_over_http(
    http: httpx.Client, image: str, rest: list, mark: Callable[[str], None] = lambda name: None
) -> str:
    """One `/answer` call through Gradio's HTTP API (what `curl` does; see Gradio's "Querying Gradio Apps with
    Curl"): upload the image, start the call, read its server-sent events to the end; returns the final answer.
    `http` has the base URL `.../gradio_api`; `mark` is called with "upload_end", "join_end", then "arrived" and
    "first" at each streamed piece (the benchmarks keep the first of each)."""
    with open(image, "rb") as file:
        uploaded = http.post("/upload", files={"files": (Path(image).name, file, "image/png")})
    mark("upload_end")
    image_data = {"path": uploaded.raise_for_status().json()[0], "meta": {"_type": "gradio.FileData"}}
    started = http.post("/call/answer", json={"data": [image_data, *rest]})
    mark("join_end")
    with http.stream("GET", f"/call/answer/{started.raise_for_status().json()['event_id']}") as stream:
        return final_answer(stream.iter_lines(), mark)


def final_answer(lines: Iterable[str], mark: Callable[[str], None]) -> str:
    """The answer of /answer's server-sent events (`lines`, without their line ends), marking each streamed piece."""
    event, final = None, None
    for line in lines:
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:") and event == "generating":
            mark("arrived")
            mark("first")
        elif line.startswith("data:") and event == "complete":
            final = json.loads(line.removeprefix("data:"))[0]
        elif line.startswith("data:") and event == "error":
            raise RuntimeError(f"/answer failed: {line}")
    if final is None:
        raise RuntimeError("/answer ended without an answer")
    return str(final)


def answer_over_stdlib(
    connection: http.client.HTTPConnection, image: str, rest: list, mark: Callable[[str], None] = lambda name: None
) -> str:
    """`answer_over_http` on the standard library's HTTP client, for a load test whose clients share the server's
    cores: the same three requests (upload, POST /call/answer, the event stream) over one kept-alive connection, at a
    third of httpx's CPU a call (1.5 ms against 4.2, one client). `mark` is called as there."""
    data, boundary = Path(image).read_bytes(), uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{Path(image).name}"\r\n'
    body = (head + "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    connection.request(
        "POST", "/gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    path = json.loads(_ok(connection.getresponse()))[0]
    mark("upload_end")
    payload = json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, *rest]})
    connection.request("POST", "/gradio_api/call/answer", payload, {"Content-Type": "application/json"})
    event_id = json.loads(_ok(connection.getresponse()))["event_id"]
    mark("join_end")
    connection.request("GET", f"/gradio_api/call/answer/{event_id}")
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"/answer's event stream: HTTP {response.status}")
    return final_answer((raw.decode().rstrip("\r\n") for raw in response), mark)


def _ok(response: http.client.HTTPResponse) -> bytes:
    """The body of a successful response; raises with the status and body otherwise."""
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
    return body
