"""`UploadQuota`: a byte budget per visitor on Gradio's upload route, and a floor under the server's free disk.

Gradio writes every file posted to `/gradio_api/upload` into its cache before any event handler sees it, and keeps it
for `--cache-hours`. `max_file_size` bounds one file, not how many a stranger posts: a script could fill the disk of
a public Space in minutes. This middleware answers such a request before Gradio reads its body, from its declared
length (the server reads no more than that), so a refused upload costs nothing on disk.
"""

import logging
import shutil
import threading
import time
from collections import deque
from pathlib import Path

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .security import client_address

logger = logging.getLogger("eve_app.refused")
UPLOAD_ROUTE = "/gradio_api/upload"
MIB = 1 << 20


class UploadQuota:
    """ASGI middleware: each visitor (client address) may upload `bytes_per_window` within `window_s` seconds, and no
    upload may leave the upload cache's disk with less than `min_free_bytes` free."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bytes_per_window: int,
        window_s: float,
        min_free_bytes: int,
        cache_dir: Path,
        behind_proxy: bool = False,
    ):
        self.app = app
        self.bytes_per_window = bytes_per_window
        self.window_s = window_s
        self.min_free_bytes = min_free_bytes
        self.cache_dir = Path(cache_dir)
        self.behind_proxy = behind_proxy
        self._uploads: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith(UPLOAD_ROUTE):
            connection = HTTPConnection(scope)
            refusal = self.admit(
                client_address(connection, self.behind_proxy), connection.headers.get("content-length")
            )
            if refusal is not None:
                status, message = refusal
                logger.info("refused: %s", message)
                await PlainTextResponse(message, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def admit(self, client: str, content_length: str | None) -> tuple[int, str] | None:
        """None if `client` may upload `content_length` bytes now (and charge them), else (HTTP status, message)."""
        if content_length is None or not content_length.isdigit():
            return 411, "Uploads must declare their size (Content-Length)."
        size = int(content_length)
        if self.free_bytes() - size < self.min_free_bytes:
            return 507, "The server's disk is nearly full, so uploads are paused. Try again later."
        now = time.monotonic()
        with self._lock:
            recent = self._uploads.setdefault(client, deque())
            while recent and recent[0][0] <= now - self.window_s:
                recent.popleft()
            if sum(n for _, n in recent) + size > self.bytes_per_window:
                wait = self.window_s - (now - recent[0][0]) if recent else self.window_s
                return 429, (
                    f"Upload limit reached: {round(self.bytes_per_window / MIB, 2):g} MiB per {self.window_s / 60:g} minutes "
                    f"from one visitor. Try again in {max(1, round(wait / 60))} minute(s)."
                )
            recent.append((now, size))
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
        for client in [c for c, recent in self._uploads.items() if not recent or recent[-1][0] <= now - self.window_s]:
            del self._uploads[client]
