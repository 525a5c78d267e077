"""Limits on raw requests, applied before Gradio reads them: `UploadQuota` on the upload route (charging each
visitor's `UploadBudget`), `EventGuard` on the event endpoints.

Gradio writes every file posted to `/gradio_api/upload` into its cache before any event handler sees it, and keeps it
for `--cache-hours`; `max_file_size` bounds one file, not how many a stranger posts, so a script could fill the disk
of a public Space in minutes. Every event of the UI is also an endpoint (`/gradio_api/queue/join`, `/call/...`,
`/run/...`) whose JSON body Gradio reads whole, and a file in it whose `path` is an http(s) link is downloaded by the
server into the same cache, of any size. Both are answered here, so a refused request costs nothing on disk.
"""

import json
import logging
import shutil
import threading
import time
from collections import deque
from pathlib import Path

from gradio_client.utils import is_http_url_like
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import UserError
from ..security import client_address, uploaded_file
from ..settings import MIB

logger = logging.getLogger("eve_app.refused")
API_PREFIX = "/gradio_api/"
UPLOAD_ROUTE = API_PREFIX + "upload"


async def refuse(status: int, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request with `message` (one log line for the operator, as `ui.refusals.refuse` does for events)."""
    logger.info("refused: %s", message)
    await PlainTextResponse(message, status_code=status)(scope, receive, send)


class _Charges(deque[tuple[float, int]]):
    """One visitor's charges in the window, (time, bytes) oldest first, with their running total: a visitor who
    uploads often (a script, or everyone behind one address) costs each upload the same, not a sum over the window."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def charge(self, when: float, size: int) -> None:
        self.append((when, size))
        self.total += size

    def forget_before(self, start: float) -> None:
        while self and self[0][0] <= start:
            self.total -= self.popleft()[1]


class UploadBudget:
    """What one visitor may add to the upload cache's disk: `bytes_per_window` within `window_s` seconds, uploads and
    History exports together, and nothing that would leave the disk with less than `min_free_bytes` free. Visitors
    are told apart by their client address. Shared by the upload route (`UploadQuota`) and the export handler."""

    def __init__(self, *, bytes_per_window: int, window_s: float, min_free_bytes: int, cache_dir: str | Path):
        self.bytes_per_window = bytes_per_window
        self.window_s = window_s
        self.min_free_bytes = min_free_bytes
        self.cache_dir = Path(cache_dir)
        self._charged: dict[str, _Charges] = {}
        self._lock = threading.Lock()

    def admit(self, client: str, size: int, what: str = "Upload", charge: bool = True) -> tuple[int, str] | None:
        """None if `client` may add `size` bytes now (charged to it unless `charge` is False), else (HTTP status,
        message); `what` names the action in the message ("Upload", "Export")."""
        if self.free_bytes() - size < self.min_free_bytes:
            return 507, f"The server's disk is nearly full, so {what.lower()}s are paused. Try again later."
        now = time.monotonic()
        with self._lock:
            recent = self._charged.setdefault(client, _Charges())
            recent.forget_before(now - self.window_s)
            if recent.total + size > self.bytes_per_window:
                wait = self.window_s - (now - recent[0][0]) if recent else self.window_s
                return 429, (
                    f"{what} limit reached: {round(self.bytes_per_window / MIB, 2):g} MiB per "
                    f"{self.window_s / 60:g} minutes from one visitor, uploads and exports together. "
                    f"Try again in {max(1, round(wait / 60))} minute(s)."
                )
            if charge:
                recent.charge(now, size)
            self._forget_idle(now)
        return None

    def free_bytes(self) -> int:
        """Free space on the disk that holds the upload cache (made by Gradio on first use)."""
        folder = self.cache_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def _forget_idle(self, now: float) -> None:
        """Drop visitors with nothing left in the window, so that the table stays as small as the recent traffic."""
        for client in [c for c, recent in self._charged.items() if not recent or recent[-1][0] <= now - self.window_s]:
            del self._charged[client]


class UploadQuota:
    """ASGI middleware on the upload route: each upload is charged to its visitor's `UploadBudget` before Gradio reads
    the body, by its `Content-Length`, and that is what it may send: a request that also says `Transfer-Encoding` is
    refused (the server would frame the body by the chunks and ignore the length, so `Content-Length: 1` could carry
    gigabytes), and the body handed on is counted as it streams and cut off at the declared length."""

    def __init__(self, app: ASGIApp, *, budget: UploadBudget):
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith(UPLOAD_ROUTE):
            connection = HTTPConnection(scope)
            declared = connection.headers.get("content-length", "")
            refusal: tuple[int, str] | None
            if "transfer-encoding" in connection.headers or not declared.isdigit():
                refusal = 411, "Uploads must declare their size (Content-Length) and not be sent in chunks."
            else:
                refusal = self.budget.admit(client_address(connection), int(declared))
            if refusal is not None:
                await refuse(*refusal, scope, receive, send)
                return
            receive = _at_most(int(declared), receive)
        await self.app(scope, receive, send)


class EventGuard:
    """ASGI middleware for POST requests under `/gradio_api/` other than uploads: a body larger than `max_bytes` is
    refused (counted as it arrives; a larger `Content-Length` is refused unread), and so is one that names a file the
    visitor cannot have uploaded: a link (files come in through the upload route only), a folder (the cache folder
    itself passes Gradio's own check), a symbolic link or a path outside `upload_folder` (see
    `security.uploaded_file`). Every event is checked here, before Gradio reads it, whichever handler it reaches,
    private ones included."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_folder: str | Path):
        self.app = app
        self.max_bytes = max_bytes
        self.upload_folder = Path(upload_folder)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["method"] == "POST" and API_PREFIX in scope["path"]
        if not guarded or scope["path"].endswith(UPLOAD_ROUTE):
            await self.app(scope, receive, send)
            return
        too_large = f"The request is larger than {self.max_bytes / MIB:g} MiB."
        declared = HTTPConnection(scope).headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:  # a fast path only: the body is counted below
            await refuse(413, too_large, scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await refuse(413, too_large, scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        refusal = self.file_refusal(bytes(body))
        if refusal is not None:
            await refuse(400, refusal, scope, receive, send)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    def file_refusal(self, body: bytes) -> str | None:
        """Why a file named in this event body may not be read (None when every one may)."""
        for path in file_paths(body):
            if is_http_url_like(path):
                return "Files must be uploaded, not given as links."
            try:
                uploaded_file(path, self.upload_folder)
            except UserError as error:
                return str(error)
        return None


def file_paths(body: bytes) -> list[str]:
    """The `path` of every file object (a JSON object with a string `path`) in an event body; [] for no JSON."""
    try:
        stack = [json.loads(body)]
    except (ValueError, RecursionError):
        return []  # not ours to judge: Gradio cannot read it either, and answers malformed requests itself
    paths = []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str):
                paths.append(path)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return paths


def _at_most(limit: int, receive: Receive) -> Receive:
    """A `receive` that counts the body and ends the request as a disconnect once it passes `limit` bytes (what it was
    charged), so that no more reaches the app than was paid for."""
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                logger.info("refused: an upload sent more than the %d bytes it declared; cut off", limit)
                return {"type": "http.disconnect"}
        return message

    return counted


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then whatever the connection sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
