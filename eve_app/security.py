"""Who is asking: the owner of a conversation, the admin password, and which server folders a visitor may name.

A public Space is reached by strangers, so every handler asks these questions instead of trusting its inputs:
- Owners. Each browser keeps a random token in its local storage (`gr.BrowserState`); its hash owns the
  conversations made there. On a Space with OAuth the Hugging Face user owns them instead. `/answer` calls share
  the owner `api`, the admin sees everyone's.
- The admin password, compared in constant time, with a delay and a per-client limit on wrong guesses.
- Paths: a checkpoint typed by a visitor must lie inside an allowed root (or be a Hub id); a file named in an event
  must be a regular file inside the upload cache (`uploaded_file`).
"""

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

from model.shared import ADAPTER_CONFIG_FILE

from .errors import UserError
from .storage.schema import ADMIN_OWNER

API_OWNER = "api"
TOKEN_BYTES = 24
MIN_TOKEN_LENGTH = 16
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def new_browser_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def valid_token(token: object) -> bool:
    return isinstance(token, str) and MIN_TOKEN_LENGTH <= len(token) <= 128


def hub_user(request) -> str | None:
    """The Hugging Face user signed in with OAuth on a Space (None elsewhere or when nobody signed in)."""
    try:
        info = request.request.session.get("oauth_info") or {}
    except (AttributeError, AssertionError):  # no request, or no session middleware (OAuth not enabled)
        return None
    return (info.get("userinfo") or {}).get("preferred_username")


def owner_of(token: object, request=None) -> str | None:
    """The owner id of a caller: its Hugging Face user, else its browser token's hash; None for neither."""
    user = hub_user(request) if request is not None else None
    if user:
        return f"hf:{user}"
    if valid_token(token):
        return "browser:" + hashlib.sha256(str(token).encode()).hexdigest()[:32]
    return None


def session_owner(request) -> str:
    """The owner of a caller that has no browser id (an API client): its Gradio session, so it sees only the
    conversations it made in that session."""
    session_hash = getattr(request, "session_hash", None) or secrets.token_hex(16)
    return "session:" + hashlib.sha256(session_hash.encode()).hexdigest()[:32]


def client_address(request, behind_proxy: bool = False) -> str:
    """The caller's address for rate limits; behind a proxy (a Space) the one it appended last."""
    if request is None:
        return "local"
    if behind_proxy:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class AdminGate:
    """Checks the admin password: constant-time comparison, a delay after each wrong guess, and a lock-out of a
    client after `max_failures` wrong guesses within `window` seconds."""

    def __init__(self, password: str | None, max_failures: int = 5, window: float = 300.0, delay: float = 0.5):
        self._password = (password or "").encode()
        self.max_failures, self.window, self.delay = max_failures, window, delay
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._password)

    def check(self, password: str | None, client: str) -> None:
        """Raises UserError unless `password` is the admin password and `client` is not locked out."""
        if not self.configured:
            raise UserError("This needs the admin password, and none is set: start the app with EVE_ADMIN_PASSWORD.")
        now = time.monotonic()
        with self._lock:
            recent = self._failures[client]
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) >= self.max_failures:
                wait = int(self.window - (now - recent[0])) + 1
                raise UserError(f"Too many wrong admin passwords from your address; try again in {wait} s.")
        if hmac.compare_digest((password or "").encode(), self._password):
            return
        with self._lock:
            self._failures[client].append(now)
        time.sleep(self.delay)
        raise UserError("Wrong admin password." if password else "This needs the admin password.")

    def issue_token(self, lifetime: float = 12 * 3600) -> str:
        """A random token that stands for the password on this page until `lifetime` or a restart (kept by the
        browser, so a reloaded admin page stays unlocked)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: end for t, end in self._tokens.items() if end > now}
            self._tokens[token] = now + lifetime
        return token

    def token_valid(self, token: object) -> bool:
        with self._lock:
            return isinstance(token, str) and self._tokens.get(token, 0) > time.monotonic()

    def is_admin(self, password: str | None, client: str) -> bool:
        """True for the right password; an empty one is simply 'not admin' (no delay, not counted)."""
        if not password:
            return False
        self.check(password, client)
        return True


def viewer(owner: str | None, is_admin: bool) -> str | None:
    """Whose conversations a caller sees: everyone's for the admin, else its own (None: nobody's)."""
    return ADMIN_OWNER if is_admin else owner


def resolve_checkpoint_choice(value: str, roots: list[Path]) -> str:
    """A base checkpoint named by a visitor: a folder inside one of `roots`, or a Hub id (loaded from the cache).

    Raises:
        UserError: the folder is elsewhere on the server, or the text is neither.
    """
    value = (value or "").strip()
    if not value:
        raise UserError("Choose a base checkpoint.")
    if HUB_ID.match(value) and not Path(value).exists():
        return value
    path = Path(value).expanduser().resolve()
    if not any(path.is_relative_to(root.resolve()) for root in roots):
        raise UserError("Base checkpoints must be the default model, a finished job, or a Hub id.")
    if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG_FILE).is_file():
        raise UserError("That checkpoint has no config.json (nor adapter_config.json, for a LoRA job).")
    return str(path)


def uploaded_file(path: object, upload_folder: str | Path) -> Path:
    """The file a visitor names in an event, if it is one a visitor can have uploaded: a regular file strictly inside
    Gradio's upload cache. Never the cache folder itself or one of its folders (Gradio accepts a path "inside or
    equal to" the cache, so naming the folder made the app copy every visitor's files), never a link, never a path
    elsewhere. The cache's files lie in folders named by a keyed hash of their content, so knowing a path means having
    uploaded the file or having been sent it by the app.

    Raises:
        UserError: a message that names the file (not its server path) and says what was expected.
    """
    text = path if isinstance(path, str) else ""
    name = Path(text).name or "The file"
    if not text.strip():
        raise UserError("A file in the request has an empty path: upload the file, then send it.")
    if ".." in Path(text).parts:  # Gradio reads the path as given, so no component may step back out of a folder
        raise UserError(f"{name} is not a file you uploaded: a file path has no '..' in it.")
    given = Path(os.path.abspath(text))
    folder = Path(os.path.realpath(upload_folder))
    real = Path(os.path.realpath(given))
    try:
        mode = os.lstat(given).st_mode
    except (OSError, ValueError):
        raise UserError(f"{name} was not uploaded (or has expired): upload it again.") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{name} is a folder, not a file you uploaded: upload files (or a zip), not folders.")
    if stat.S_ISLNK(mode):
        raise UserError(f"{name} is a link, not a file you uploaded: upload the file itself.")
    if real == folder or not real.is_relative_to(folder):
        raise UserError(f"{name} is not a file you uploaded: upload it first (files elsewhere are never read).")
    if not stat.S_ISREG(mode):
        raise UserError(f"{name} is not a regular file: upload the file itself.")
    return real
