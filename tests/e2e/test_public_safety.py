"""The app as a stranger on the internet meets it: a live server on a loopback port, driven over HTTP and the API.

Each test replays something a visitor could do to a public Space before these protections: download the database,
read or export another visitor's conversations, use the admin actions without the password, exhaust memory or disk
with crafted uploads, or leave empty conversations behind with refused files.
"""

import asyncio
import io
import json
import os
import socket
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from eve_app.limits.raw_requests import UploadBudget, UploadQuota
from model.synthetic import write_dataset
from tests.e2e.helpers import MODEL, free_port, peak_rss_growth, start_server, streamed

PASSWORD = "correct horse battery staple"
LIMITS = [
    "--max-image-mb",
    "2",
    "--max-upload-mb",
    "5",
    "--max-dataset-mb",
    "1",
    "--max-upload-files",
    "200",
    "--upload-retention-minutes",
    "0.02",
    "--max-request-mb",
    "1",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, ctx) of a server with an admin password and small limits, on its own data folder."""
    from app import create_app, launch_options

    data_dir = tmp_path_factory.mktemp("public-data")
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        # An upload cache of its own: what these tests send as files must not be other processes' uploads.
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-cache")))
        demo, ctx = create_app(
            ["--model", MODEL, "--data-dir", str(data_dir), "--port", str(port), "--admin-password", PASSWORD, *LIMITS]
        )
        demo.launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            **launch_options(ctx),
        )
        yield f"http://127.0.0.1:{port}/", ctx
        ctx.runner.stop_monitor()
        demo.close()


def client_of(server) -> Client:
    return Client(server[0], verbose=False)


def png(path: Path, size=(64, 32), color="white") -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def chat(client: Client, text: str, image: Path) -> None:
    client.predict({"text": text, "files": [handle_file(str(image))]}, "OCR", api_name="/submit_message")
    list(streamed(client.submit("OCR", 0.0, 1.0, 8, 1.0, -1, 0, api_name="/respond")))


def test_the_data_folder_is_not_served(server, tmp_path):
    url, ctx = server
    data = ctx.settings.data_dir.resolve()
    chat(client_of(server), "read this", png(tmp_path / "shown.png"))
    (data / "runs" / "job-1").mkdir(parents=True, exist_ok=True)
    (data / "runs" / "job-1" / "train.log").write_text("secret log")
    (data / "uploads" / "x").mkdir(parents=True, exist_ok=True)
    (data / "uploads" / "x" / "train.json").write_text("[]")
    targets = ["eve.db", "eve.db-wal", "eve.db-shm", ".secret", "runs/job-1/train.log", "uploads/x/train.json"]
    for name in targets:
        if (data / name).exists():
            response = httpx.get(f"{url}gradio_api/file={data / name}")
            assert response.status_code == 403, (name, response.status_code)
    # The database keeps working after the attempts (nothing opened and closed the live file).
    assert ctx.conversations.store.list_conversations()


def test_a_visitor_sees_only_their_own_conversations(server, tmp_path):
    _url, ctx = server
    alice, bob = client_of(server), client_of(server)
    chat(alice, "alice's private question", png(tmp_path / "alice.png", color="pink"))
    mine = alice.predict("alice's private", "", api_name="/search_conversations")
    rows = mine["data"] if isinstance(mine, dict) else mine
    assert len(rows) == 1
    conversation_id = str(rows[0][0])

    theirs = bob.predict("alice's private", "", api_name="/search_conversations")
    assert (theirs["data"] if isinstance(theirs, dict) else theirs) == []
    with pytest.raises(AppError, match="no conversation|not yours"):
        bob.predict(conversation_id, "", api_name="/open_conversation")
    with pytest.raises(AppError, match="not yours"):
        bob.predict(conversation_id, "json", "", api_name="/export_conversations")

    # The admin sees and exports everyone's, and the export carries no server path.
    everyone = bob.predict("alice's private", PASSWORD, api_name="/search_conversations")
    assert len(everyone["data"] if isinstance(everyone, dict) else everyone) == 1
    archive = bob.predict(conversation_id, "json", PASSWORD, api_name="/export_conversations")
    with zipfile.ZipFile(archive) as zf:
        exported = zf.read("conversations.json").decode()
        assert str(ctx.settings.data_dir.resolve()) not in exported
        images = json.loads(exported)[0]["messages"][0]["images"]
        assert images and all(name in zf.namelist() for name in images)


def test_answer_calls_are_logged_under_their_own_owner(server, tmp_path):
    client = client_of(server)
    client.predict(handle_file(str(png(tmp_path / "api.png"))), "OCR", "api call question", 8, api_name="/answer")
    found = client.predict("api call question", "", api_name="/search_conversations")
    assert (found["data"] if isinstance(found, dict) else found) == []
    _, ctx = server
    assert ctx.conversations.store.list_conversations(search="api call question", owner="api")


def test_every_admin_action_needs_the_password(server):
    client = client_of(server)
    refusals = [
        lambda: client.predict(
            dataset="", base="default model (eve-tiny)", stages=["3"], password="", api_name="/launch_job"
        ),
        lambda: client.predict("", 1, api_name="/abort_job"),
        lambda: client.predict(1, "", api_name="/watch_job"),
        lambda: client.predict("", "default model (eve-tiny)", api_name="/load_model"),
    ]
    for refused in refusals:
        with pytest.raises(AppError, match="needs the admin password"):
            refused()


def test_previewing_a_command_shows_no_server_path(server, tmp_path):
    _url, ctx = server
    client = client_of(server)
    data_file = write_dataset(tmp_path / "dataset", ["ocr"], n=4, seed=1, level=0)
    files = [data_file, *(data_file.parent / "images").iterdir()]
    summary, _, dataset, _ = client.predict(
        [handle_file(str(f)) for f in files], "", "default model (eve-tiny)", "", api_name="/validate_dataset"
    )
    assert "4 samples, 4 valid" in summary
    command = client.predict(
        dataset=dataset, base="default model (eve-tiny)", stages=["3"], max_steps="4", api_name="/preview_command"
    )
    assert "-m model.train" in command and "$EVE_DATA_DIR/uploads/" in command
    assert str(ctx.settings.data_dir.resolve()) not in command and "/work/" not in command


def test_images_beyond_the_limits_are_refused_with_a_clear_message(server, tmp_path):
    client = client_of(server)
    small = io.BytesIO()
    Image.new("RGB", (1, 1), "red").save(small, format="PNG")
    padded = tmp_path / "padded.png"
    padded.write_bytes(small.getvalue() + b"\0" * (1536 << 10))  # 1.5 MiB of junk after a 1x1 image
    with pytest.raises(AppError, match="far more than a 1x1 image needs"):
        client.predict(handle_file(str(padded)), "OCR", "", 8, api_name="/answer")
    big = tmp_path / "big.png"
    big.write_bytes(small.getvalue() + b"\0" * (3 << 20))
    with pytest.raises(AppError, match="the limit is 2.0 MiB an image"):
        client.predict(handle_file(str(big)), "OCR", "", 8, api_name="/answer")
    huge = png(tmp_path / "huge.png", size=(8000, 6000))  # 48 megapixels, above the 40 allowed
    with pytest.raises(AppError, match="8000x6000 pixels; the limit is 40 megapixels"):
        client.predict(handle_file(str(huge)), "OCR", "", 8, api_name="/answer")
    with pytest.raises(AppError, match="the limit is 4"):
        client.predict(
            {"text": "five", "files": [handle_file(str(png(tmp_path / f"{i}.png"))) for i in range(5)]},
            "OCR",
            api_name="/submit_message",
        )
    with pytest.raises(AppError, match="characters long; the limit is 4000"):
        client.predict({"text": "x" * 5000, "files": []}, "Free chat", api_name="/submit_message")


def test_a_burst_of_large_images_is_decoded_a_few_at_a_time(server, tmp_path, monkeypatch):
    """8 visitors send a 36-megapixel image each at once: decodes queue (two at a time) instead of all running."""
    image = png(tmp_path / "large.png", size=(6000, 6000), color="gray")
    errors: list[BaseException] = []
    gate = server[1].conversations.images
    running, most = [0], [0]
    lock = threading.Lock()
    real_decode = gate.decode

    def counted_decode(path: str, ext: str) -> None:  # the real decode, counted
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            real_decode(path, ext)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(gate, "decode", counted_decode)

    def send() -> None:
        try:
            client_of(server).predict(handle_file(str(image)), "OCR", "", 4, api_name="/answer")
        except BaseException as error:  # noqa: BLE001 -- collected and asserted below
            errors.append(error)

    def burst() -> None:
        threads = [threading.Thread(target=send) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    burst()
    assert not errors, errors
    assert most[0] == gate.limits.max_concurrent_decodes == 2


def test_fine_tune_uploads_are_bounded(server, tmp_path):
    client = client_of(server)
    base = "default model (eve-tiny)"
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("data.json", "w") as entry:
        for _ in range(100):
            entry.write(b" " * (1 << 20))  # 100 MiB of spaces pack into about 100 KiB
    growth = peak_rss_growth(lambda: _expect(client, [bomb], base, "more than 100 times its packed size"))
    assert growth < 50 << 20  # refused from the entry headers: nothing was unpacked
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(300):
            zf.writestr(f"images/{i}.txt", "x")
    _expect(client, [many], base, "more than 200 files in the upload")
    big_json = tmp_path / "data.json"
    big_json.write_text(json.dumps([{"id": str(i), "conversations": []} for i in range(40000)]))
    _expect(client, [big_json], base, "above the limit of 1.0 MiB")


def _expect(client: Client, files: list[Path], base: str, message: str) -> None:
    summary, *_ = client.predict([handle_file(str(f)) for f in files], "", base, "", api_name="/validate_dataset")
    assert message in summary, summary


def test_validation_results_and_unused_uploads_are_dropped_after_the_retention(server, tmp_path):
    _url, ctx = server
    client = client_of(server)
    data_file = write_dataset(tmp_path / "kept-for-a-while", ["ocr"], n=3, seed=2, level=0)
    files = [data_file, *(data_file.parent / "images").iterdir()]
    client.predict(
        [handle_file(str(f)) for f in files], "", "default model (eve-tiny)", "", api_name="/validate_dataset"
    )
    uploads = ctx.settings.data_dir / "uploads"
    assert len(ctx.uploads) >= 1 and any(uploads.iterdir())
    deadline = time.time() + 15  # retention 1.2 s; the sweeper runs every 0.6 s
    while (len(ctx.uploads) or any(uploads.iterdir())) and time.time() < deadline:
        time.sleep(0.2)
    assert len(ctx.uploads) == 0 and not any(uploads.iterdir())


def test_tiff_is_read_eps_is_refused_and_nothing_empty_is_left(server, tmp_path):
    _, ctx = server
    client = client_of(server)
    tiff = tmp_path / "scan.tiff"
    Image.new("RGB", (64, 32), "white").save(tiff, format="TIFF")
    assert isinstance(client.predict(handle_file(str(tiff)), "OCR", "", 4, api_name="/answer"), str)
    eps = tmp_path / "figure.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    before = len(ctx.conversations.store.list_conversations(limit=1000))
    with pytest.raises(AppError, match="figure.eps is not an accepted image: send a PNG, JPEG"):
        client.predict(handle_file(str(eps)), "OCR", "", 4, api_name="/answer")
    with pytest.raises(AppError, match="not an accepted image|Invalid file type"):
        client.predict(
            {"text": "what is it?", "files": [handle_file(str(eps))]}, "Free chat", api_name="/submit_message"
        )
    assert len(ctx.conversations.store.list_conversations(limit=1000)) == before


def test_a_visitor_uploads_no_more_than_the_hourly_quota(tmp_path):
    """A script posting file after file to Gradio's upload route stops at its quota, with a message that says so;
    the refused bytes never reach the upload cache."""
    port = free_port()
    cache = tmp_path / "gradio-cache"
    env = {"GRADIO_TEMP_DIR": str(cache)}
    process = start_server(["--data-dir", str(tmp_path / "data"), "--upload-quota-mb", "1"], port, env=env)
    try:
        url = f"http://127.0.0.1:{port}/gradio_api/upload"
        assert httpx.post(url, files={"files": ("a.bin", b"\0" * (1000 << 10))}).status_code == 200
        refused = httpx.post(url, files={"files": ("b.bin", b"\0" * (100 << 10))})
        assert refused.status_code == 429
        assert "Upload limit reached: 1 MiB per 60 minutes from one visitor" in refused.text
        assert [path.name for path in cache.rglob("*.bin")] == ["a.bin"]
        # A chat image from the same visitor is refused the same way, before any model work.
        noise = tmp_path / "noise.png"
        Image.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3)).save(noise)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(Exception, match="429 Too Many Requests"):
            client.predict({"text": "read", "files": [handle_file(str(noise))]}, "OCR", api_name="/submit_message")
    finally:
        process.kill()
        process.wait()


def chunked_upload(port: int, name: str, size: int, declared: str | None = "1") -> str:
    """POST a file of `size` bytes to the upload route in chunks, with a `Content-Length` that lies; the status line
    of the answer (or "" when the server closed the connection without one)."""
    boundary = "eve-boundary-0123456789"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    request = (
        f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        + (f"Content-Length: {declared}\r\n" if declared is not None else "")
        + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    piece = 64 << 10
    chunks = b"".join(
        b"%x\r\n" % len(body[i : i + piece]) + body[i : i + piece] + b"\r\n" for i in range(0, len(body), piece)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request)
        try:  # a server that refuses from the headers answers now (sending on would only reset the connection)
            answer = sock.recv(65536)
        except TimeoutError:  # it waits for the body
            sock.settimeout(30)
            sock.sendall(chunks + b"0\r\n\r\n")
            answer = sock.recv(65536)
    return answer.split(b"\r\n", 1)[0].decode()


def test_a_chunked_upload_cannot_lie_about_its_size(tmp_path):
    """The quota is spent; an upload sent in chunks with `Content-Length: 1` (2 MiB in fact) is refused, and not one
    byte of it reaches the upload cache."""
    port = free_port()
    cache = tmp_path / "gradio-cache"
    process = start_server(
        ["--data-dir", str(tmp_path / "data"), "--upload-quota-mb", "1"], port, env={"GRADIO_TEMP_DIR": str(cache)}
    )
    try:
        url = f"http://127.0.0.1:{port}/gradio_api/upload"
        assert httpx.post(url, files={"files": ("a.bin", b"\0" * (1000 << 10))}).status_code == 200
        status = chunked_upload(port, "sneaky.bin", 2 << 20)
        assert status.split()[1:2] == ["411"], status
        time.sleep(0.5)  # a background copy into the cache, had there been one, has finished
        assert [path.name for path in cache.rglob("*.bin")] == ["a.bin"]
        assert not [path for path in cache.glob("tmp*") if path.is_file()]  # no half-received upload either
        # Without the lie it is refused too: a body of unknown length could be any size.
        assert chunked_upload(port, "honest.bin", 10, declared=None).split()[1:2] == ["411"]
    finally:
        process.kill()
        process.wait()


def test_a_nearly_full_disk_refuses_uploads_with_a_message_and_api_calls_end_with_an_error(tmp_path):
    """The disk floor on a live server: the upload route says why, and an `/answer` call through gradio_client ends
    with that refusal instead of waiting (its own iterator would wait forever)."""
    port = free_port()
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio-cache")}
    floor = ["--min-free-disk-mb", str(1 << 40)]  # more than any disk has free
    process = start_server(["--data-dir", str(tmp_path / "data"), *floor], port, env=env)
    try:
        refused = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", files={"files": ("a.bin", b"\0" * 1000)})
        assert refused.status_code == 507 and "disk is nearly full" in refused.text
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        job = client.submit(handle_file(str(png(tmp_path / "q.png"))), "OCR", "", 8, api_name="/answer")
        with pytest.raises(httpx.HTTPStatusError, match="507 Insufficient Storage"):
            list(streamed(job, timeout=60))
    finally:
        process.kill()
        process.wait()


def test_uploads_stop_before_the_disk_fills(tmp_path):
    budget = UploadBudget(
        bytes_per_window=1 << 40, window_s=3600, min_free_bytes=1 << 50, cache_dir=tmp_path / "not-made-yet"
    )
    status, message = budget.admit("1.2.3.4", 1000)
    assert status == 507 and "disk is nearly full" in message
    budget.min_free_bytes = 0
    assert budget.admit("1.2.3.4", 1000) is None


def test_an_upload_body_longer_than_it_declared_is_cut_off(tmp_path):
    """Whatever the HTTP server makes of the framing, no more bytes reach Gradio than the upload was charged."""
    seen: list = []

    async def gradio(scope, receive, send) -> None:
        while True:
            message = await receive()
            seen.append(message["type"] if message["type"] == "http.disconnect" else len(message["body"]))
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    body = iter([{"type": "http.request", "body": b"x" * 8, "more_body": True}] * 3)

    async def receive():
        return next(body)

    budget = UploadBudget(bytes_per_window=1 << 20, window_s=60, min_free_bytes=0, cache_dir=tmp_path)
    quota = UploadQuota(gradio, budget=budget)
    headers = [(b"content-length", b"10"), (b"content-type", b"multipart/form-data")]
    scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "headers": headers, "client": ("a", 1)}
    asyncio.run(quota(scope, receive, None))
    assert seen == [8, "http.disconnect"]


def test_the_quota_is_per_visitor_and_frees_up_after_its_window(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("eve_app.limits.raw_requests.time.monotonic", lambda: clock[0])
    budget = UploadBudget(bytes_per_window=1000, window_s=60, min_free_bytes=0, cache_dir=tmp_path)
    assert budget.admit("alice", 800) is None
    status, message = budget.admit("alice", 300)
    assert status == 429 and "Try again in 1 minute(s)" in message
    assert budget.admit("bob", 900) is None  # someone else's budget is untouched
    clock[0] += 61
    assert budget.admit("alice", 300) is None


def test_the_quota_counts_what_is_left_in_the_window_after_older_uploads_leave_it(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("eve_app.limits.raw_requests.time.monotonic", lambda: clock[0])
    budget = UploadBudget(bytes_per_window=1000, window_s=60, min_free_bytes=0, cache_dir=tmp_path)
    for size, wait in [(300, 20), (300, 20), (300, 21)]:
        assert budget.admit("alice", size) is None
        clock[0] += wait
    # t=61: the first 300 bytes left the window, 600 remain.
    assert budget.admit("alice", 401, charge=False)[0] == 429
    assert budget.admit("alice", 400) is None
    clock[0] += 40  # t=101: the second and third left, the 400 remains
    assert budget.admit("alice", 601, charge=False)[0] == 429
    assert budget.admit("alice", 600) is None


def test_files_given_as_links_are_refused_and_never_fetched(server, monkeypatch):
    """A file whose path is a link would have the server download it into its cache, of any size and past the upload
    quota; the request is refused before Gradio reads it."""
    fetched = []

    async def download(url: str, cache_dir: str) -> str:
        fetched.append(url)
        path = Path(cache_dir) / "fetched.png"
        Image.new("RGB", (64, 32), "white").save(path)
        return str(path)

    monkeypatch.setattr("gradio.processing_utils.async_ssrf_protected_download", download)
    link = {"path": "https://example.com/huge.png", "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(Exception, match="400 Bad Request"):
        client_of(server).predict({"text": "read", "files": [link]}, "OCR", api_name="/submit_message")
    assert fetched == []


def test_an_oversized_event_request_is_refused_unread(server):
    url, _ctx = server
    question = "x" * (2 << 20)  # 2 MiB against the server's 1 MiB
    body = {"data": [{"text": question, "files": []}, "OCR"], "fn_index": 0, "session_hash": "abc"}
    response = httpx.post(f"{url}gradio_api/queue/join", json=body)
    assert response.status_code == 413 and "larger than 1 MiB" in response.text


def call_raw(url: str, api_name: str, data: list) -> httpx.Response:
    """An event called the way a script without gradio_client would: POST its inputs as JSON, file objects and all."""
    return httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=30)


def as_file(path: str | Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_the_upload_cache_and_its_folders_are_not_files(server, tmp_path):
    """The cache folder (its location is in every upload's answer) and one of its subfolders, named as files: each
    is refused before any handler copies it, so no visitor can read what others uploaded."""
    url, ctx = server
    secret = tmp_path / "data.json"
    secret.write_text(json.dumps([{"id": "someone else's row", "conversations": []}]))
    uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("data.json", secret.read_bytes())}).json()[0]
    subfolder = Path(uploaded).parent
    cache = subfolder.parent
    pending_before = sorted((ctx.settings.data_dir / "uploads").glob("*"))
    base = "default model (eve-tiny)"
    for folder in (cache, subfolder):
        for api_name, data in (
            ("validate_dataset", [[as_file(folder)], "", base, ""]),
            ("answer", [as_file(folder), "OCR", "", 8]),
            ("submit_message", [{"text": "read", "files": [as_file(folder)]}, "OCR"]),
        ):
            response = call_raw(url, api_name, data)
            assert response.status_code == 400, (api_name, folder, response.text)
            assert f"{folder.name} is a folder, not a file you uploaded" in response.text
    assert sorted((ctx.settings.data_dir / "uploads").glob("*")) == pending_before  # nothing was staged
    # The file itself, uploaded by this visitor, is still accepted.
    response = call_raw(url, "validate_dataset", [[as_file(uploaded)], "", base, ""])
    assert response.status_code == 200, response.text


def test_exports_leave_no_working_folder_behind(server, tmp_path, monkeypatch):
    """Thirty exports of one chat: each zip is served from the upload cache, and no temporary folder stays."""
    _url, ctx = server
    client = Client(server[0], verbose=False, download_files=False)  # its downloads would fill the temp folder
    chat(client, "export me thirty times", png(tmp_path / "export.png", color="teal"))
    found = client.predict("export me thirty times", "", api_name="/search_conversations")
    conversation_id = str((found["data"] if isinstance(found, dict) else found)[0][0])
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where the app's temporary folders go, in this test
    for _ in range(30):
        archive = client.predict(conversation_id, "json", "", api_name="/export_conversations")
        path = Path(archive["path"] if isinstance(archive, dict) else archive.path)
        assert path.parent.parent == ctx.upload_budget.cache_dir  # written where Gradio serves it, not copied there
        with zipfile.ZipFile(path) as zf:
            assert "conversations.json" in zf.namelist()
    assert list(private.iterdir()) == []


def png_bytes() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(image, format="PNG")
    return image.getvalue()


def test_empty_password_clicks_never_lock_the_admin_out(server):
    """Admin buttons clicked with the password field empty are refused, and are not wrong guesses."""
    client = client_of(server)
    for _ in range(8):
        with pytest.raises(AppError, match="needs the admin password"):
            client.predict("", 999, api_name="/abort_job")
    with pytest.raises(AppError, match="There is no job 999"):  # the right password still gets in
        client.predict(PASSWORD, 999, api_name="/abort_job")


def test_a_forged_forwarded_address_escapes_neither_the_lock_out_nor_the_quota(tmp_path):
    """By default no proxy is trusted: an `X-Forwarded-For` a visitor writes does not give them a fresh address,
    neither for guessing the admin password nor for a new upload quota."""
    port = free_port()
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio-cache")}
    args = ["--data-dir", str(tmp_path / "data"), "--admin-password", PASSWORD, "--upload-quota-mb", "1"]
    process = start_server(args, port, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        for i in range(5):
            forged = Client(url, headers={"X-Forwarded-For": f"203.0.113.{i}"}, verbose=False)
            with pytest.raises(AppError, match="Wrong admin password"):
                forged.predict("guess", 999, api_name="/abort_job")
        forged = Client(url, headers={"X-Forwarded-For": "198.51.100.7"}, verbose=False)
        with pytest.raises(AppError, match="Too many wrong admin passwords"):
            forged.predict(PASSWORD, 999, api_name="/abort_job")

        upload = f"{url}gradio_api/upload"
        assert httpx.post(upload, files={"files": ("a.bin", b"\0" * (1000 << 10))}).status_code == 200
        for address in ("198.51.100.8", "198.51.100.9, 203.0.113.1"):
            refused = httpx.post(
                upload, files={"files": ("b.bin", b"\0" * (100 << 10))}, headers={"X-Forwarded-For": address}
            )
            assert refused.status_code == 429, (address, refused.status_code)
    finally:
        process.kill()
        process.wait()


def test_a_trusted_proxy_names_each_visitor(tmp_path):
    """`--trusted-proxies` reaches uvicorn: behind the listed proxy, the address it forwards is the visitor's, so
    two visitors behind it have a quota each (and a visitor's own header before the proxy's entry does not count)."""
    port = free_port()
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio-cache")}
    args = ["--data-dir", str(tmp_path / "data"), "--upload-quota-mb", "1", "--trusted-proxies", "127.0.0.1"]
    process = start_server(args, port, env=env)
    upload = f"http://127.0.0.1:{port}/gradio_api/upload"

    def post(forwarded: str, size: int) -> int:
        files = {"files": ("a.bin", b"\0" * size)}
        return httpx.post(upload, files=files, headers={"X-Forwarded-For": forwarded}).status_code

    try:
        assert post("198.51.100.1", 1000 << 10) == 200
        assert post("198.51.100.1", 100 << 10) == 429
        assert post("203.0.113.5, 198.51.100.1", 100 << 10) == 429  # forged first entry, proxy appended the real
        assert post("198.51.100.2", 100 << 10) == 200
    finally:
        process.kill()
        process.wait()


def test_fresh_sessions_cost_little_memory(tmp_path):
    """A script calling an anonymous endpoint with a new session each time (as every gradio_client does) makes the
    server keep one session each: their memory stays a few KB apiece (it was about 220 KB)."""
    port = free_port()
    process = start_server(["--data-dir", str(tmp_path / "data")], port, env={"GRADIO_TEMP_DIR": str(tmp_path / "c")})

    def rss() -> int:
        line = next(x for x in Path(f"/proc/{process.pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def calls(n: int) -> None:
        """`n` calls of /search_conversations over Gradio's REST route, a new session each (none is sent)."""
        url = f"http://127.0.0.1:{port}/gradio_api/call/search_conversations"
        with httpx.Client(timeout=60) as http:
            for _ in range(n):
                event = http.post(url, json={"data": ["", ""]}).json()["event_id"]
                assert "event: complete" in http.get(f"{url}/{event}").text

    try:
        calls(100)  # warm-up: the first calls allocate what any call needs
        before = rss()
        sessions = 1000
        calls(sessions)
        growth = (rss() - before) / sessions
        print(f"memory per fresh session: {growth / 1000:.1f} KB")
        assert growth < 50_000, f"{growth / 1000:.0f} KB per session"
    finally:
        process.kill()
        process.wait()


def call_json(url: str, api: str, data: str, session_hash: str | None = None) -> tuple[str, object]:
    """(event, data) of the last message of a `/call/<api>` request whose inputs are written as raw JSON (so that
    NaN and Infinity can be sent, as any HTTP client can); a bare "Error" comes back with data None, a request the
    event guard refuses as ("refused", {"error": its message})."""
    body = '{"data": ' + data + (f', "session_hash": "{session_hash}"' if session_hash else "") + "}"
    route = f"{url}gradio_api/call/{api}"
    started = httpx.post(route, content=body, headers={"content-type": "application/json"})
    if started.status_code == 400:
        return "refused", {"error": started.text}
    assert started.status_code == 200, started.text
    lines = httpx.get(f"{route}/{started.json()['event_id']}", timeout=120).text.strip().splitlines()
    return lines[-2].removeprefix("event: "), json.loads(lines[-1].removeprefix("data: "))


FILE = '{"path": %s, "meta": {"_type": "gradio.FileData"}}'


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ('[IMAGE, "OCR", "", "abc"]', "max_new_tokens must be a whole number of at least 1; got 'abc'"),
        ('[IMAGE, "OCR", "", NaN]', "max_new_tokens must be a whole number of at least 1; got nan"),
        ('[IMAGE, "OCR", "", Infinity]', "max_new_tokens must be a whole number of at least 1; got inf"),
        ('[IMAGE, "OCR", "", 0]', "max_new_tokens must be a whole number of at least 1; got 0"),
        ('[IMAGE, "OCR", "", 12.5]', "max_new_tokens must be a whole number of at least 1; got 12.5"),
        ('[IMAGE, "OCR", "", [8]]', "max_new_tokens must be a whole number of at least 1; got [8]"),
        ("[" + FILE % '""' + ', "OCR", "", 8]', "A file in the request has an empty path"),
        ('["", "OCR", "", 8]', "image must be an uploaded file"),
        ('["notes.png", "OCR", "", 8]', "image must be an uploaded file"),
        ("[" + FILE % '"/etc/passwd"' + ', "OCR", "", 8]', "passwd is not a file you uploaded"),
        ('[IMAGE, ["OCR"], "", 8]', "The task must be one of ['OCR'"),
        ("[IMAGE]", "This endpoint takes 4 inputs (image, task, question, max_new_tokens); got 1"),
    ],
)
def test_bad_answer_inputs_are_refused_by_name(server, capfd, inputs, message):
    """Replays of fuzzed /answer inputs that got a bare "Error" (and a traceback in the log): each is refused with
    the input's name and what it expects, without a traceback."""
    url, _ctx = server
    uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("q.png", png_bytes())}).json()[0]
    event, data = call_json(url, "answer", inputs.replace("IMAGE", FILE % json.dumps(uploaded)))
    assert event in ("error", "refused") and isinstance(data, dict) and message in data["error"], data
    assert "Traceback" not in capfd.readouterr().err


def test_settings_refused_before_the_answer_are_saved_as_its_error(server, capfd):
    """Chat settings Gradio cannot read (text, NaN, a task that does not exist) ended the event before the handler:
    the question stayed without an answer, later shown as an interruption. Now the answer is saved with the refusal."""
    url, ctx = server
    client = client_of(server)
    temperature = "Temperature (0 = greedy) must be a number from 0 to 1.5; got"
    cases = [
        ('["Free chat", "warm", 1.0, 8, 1.0, "", ""]', f"{temperature} 'warm'."),
        ('["Free chat", NaN, 1.0, 8, 1.0, "", ""]', f"{temperature} nan."),
        ('["Free chat", 7, 1.0, 8, 1.0, "", ""]', f"{temperature} 7."),
        (
            '["Free chat", 0.0, 1.0, 8, 1.0, "", Infinity]',
            "The image size must be a whole number (or empty), got 'inf'.",
        ),
        (
            '["Cooking", 0.0, 1.0, 8, 1.0, "", ""]',
            "Task must be one of ['OCR', 'Poster', 'Webpage', 'Scene description'",
        ),
    ]
    for number, (settings, error) in enumerate(cases):
        question = f"settings test {number}"
        client.predict({"text": question, "files": []}, "Free chat", api_name="/submit_message")
        event, _ = call_json(url, "respond", settings, session_hash=client.session_hash)
        assert event == "complete"
        [found] = ctx.conversations.store.list_conversations(search=question)
        answer = ctx.conversations.store.get_conversation(found["id"])["messages"][-1]
        assert answer["role"] == "assistant" and answer["status"] == "error", answer
        assert answer["error"].startswith(error), answer["error"]
    assert "Traceback" not in capfd.readouterr().err
