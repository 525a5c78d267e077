"""`EventGuard`: bounds the requests that call the app's events, and refuses files given as links.

Every event of the UI is also an API endpoint (`/gradio_api/queue/join`, `/call/...`, `/run/...`). Gradio reads a
request's whole JSON body into memory, and a file in it whose `path` is an http(s) link is downloaded by the server
into its upload cache, with no size limit and past `UploadQuota`. Files reach this app through the upload route
only, so a link is refused before Gradio sees the request, and a body larger than `max_bytes` is refused unread.
"""

import json
import logging

from gradio_client.utils import is_http_url_like
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .upload_quota import UPLOAD_ROUTE

logger = logging.getLogger("eve_app.refused")
API_PREFIX = "/gradio_api/"


class EventGuard:
    """ASGI middleware for POST requests under `/gradio_api/` other than uploads."""

    def __init__(self, app: ASGIApp, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or API_PREFIX not in path
            or path.endswith(UPLOAD_ROUTE)
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(413, self._too_large(), scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(413, self._too_large(), scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        link = remote_file(body)
        if link is not None:
            await self._refuse(400, "Files must be uploaded, not given as links.", scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> str:
        return f"The request is larger than {self.max_bytes / (1 << 20):g} MiB."

    @staticmethod
    async def _refuse(status: int, message: str, scope: Scope, receive: Receive, send: Send) -> None:
        logger.info("refused: %s", message)
        await PlainTextResponse(message, status_code=status)(scope, receive, send)


def remote_file(body: bytes) -> str | None:
    """The first file in a JSON event body whose `path` is an http(s) link; None if there is none (or no JSON)."""
    try:
        stack = [json.loads(body)]
    except ValueError:
        return None  # not ours to judge: Gradio answers malformed requests itself
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str) and is_http_url_like(path):
                return path
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


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
