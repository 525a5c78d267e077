"""Who is asking: the owner of a conversation, the admin password, and which server folders a visitor may name.

A public Space is reached by strangers, so every handler asks these questions instead of trusting its inputs:
- Owners. Each browser keeps a random token in its local storage (`gr.BrowserState`); its hash owns the
  conversations made there. On a Space with OAuth the Hugging Face user owns them instead. `/answer` calls share
  the owner `api`, the admin sees everyone's.
- The admin password, compared in constant time, with a delay, a per-address limit on wrong guesses and a
  server-wide back-off (see `AdminGate`).
- Paths: a checkpoint typed by a visitor must lie inside an allowed root (or be a Hub id in the Hub cache); a
  file named in an event must be a regular file inside the upload cache (`uploaded_file`).
"""

import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id

from model.shared import ADAPTER_CONFIG_FILE, PROJECT_ROOT

from .errors import UserError
from .storage.schema import ADMIN_OWNER

API_OWNER = "api"
TOKEN_BYTES = 24
MIN_TOKEN_LENGTH = 16


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


def client_address(request) -> str:
    """The caller's address for rate limits: the TCP peer, or the address a trusted proxy forwarded.

    uvicorn rewrites the peer from `X-Forwarded-For` only for the proxies listed in `--trusted-proxies` (none by
    default), so a header a visitor writes never chooses the address that their quota and lock-out are counted on.
    """
    if request is None:
        return "local"
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class AdminGate:
    """Checks the admin password so that guessing it is slow and a stranger cannot lock the admin out.

    - The comparison is constant-time and each wrong guess waits `delay` seconds.
    - Per address: after `max_failures` wrong guesses within `window` seconds, that address is refused until the
      window has passed.
    - Server-wide: once more than `global_failures` wrong guesses arrived within the window from all addresses
      together, every check waits its turn, one per `backoff` seconds. Guesses from many addresses are capped this
      way without refusing anyone: the right password still gets in, later.
    - An empty password is not a guess: refused at once, neither counted nor delayed.
    - `trusted`: the page was already unlocked by a valid admin token (issued to the admin's browser). The right
      password from it passes the lock-out and the back-off, so that others' guesses from a shared address (every
      visitor behind an untrusted proxy) cannot keep the admin out.
    """

    def __init__(
        self,
        password: str | None,
        max_failures: int = 5,
        window: float = 300.0,
        delay: float = 0.5,
        global_failures: int = 30,
        backoff: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._password = (password or "").encode()
        self.max_failures, self.window, self.delay = max_failures, window, delay
        self.global_failures, self.backoff = global_failures, backoff
        self._sleep = sleep
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._all_failures: deque[float] = deque()
        self._next_turn = 0.0
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._password)

    def check(self, password: str | None, client: str, trusted: bool = False) -> None:
        """Raises UserError unless `password` is the admin password and `client` is not locked out (or `trusted`)."""
        if not self.configured:
            raise UserError("This needs the admin password, and none is set: start the app with EVE_ADMIN_PASSWORD.")
        if not password:
            raise UserError("This needs the admin password.")
        right = hmac.compare_digest(password.encode(), self._password)
        if right and trusted:
            return
        now = time.monotonic()
        with self._lock:
            recent = self._recent(self._failures[client], now)
            if len(recent) >= self.max_failures:
                wait = int(self.window - (now - recent[0])) + 1
                raise UserError(f"Too many wrong admin passwords from your address; try again in {wait} s.")
            turn = self._turn(now)
        if turn > 0:
            self._sleep(turn)
        if right:
            return
        with self._lock:
            now = time.monotonic()
            self._failures[client].append(now)
            self._all_failures.append(now)
            self._forget_idle(now)
        self._sleep(self.delay)
        raise UserError("Wrong admin password.")

    def _recent(self, failures: deque[float], now: float) -> deque[float]:
        while failures and now - failures[0] > self.window:
            failures.popleft()
        return failures

    def _turn(self, now: float) -> float:
        """Seconds this check waits for its turn under the server-wide back-off (0 while it is off)."""
        if len(self._recent(self._all_failures, now)) < self.global_failures:
            return 0.0
        turn = max(now, self._next_turn)
        self._next_turn = turn + self.backoff
        return turn - now

    def _forget_idle(self, now: float) -> None:
        """Drop addresses with no wrong guess left in the window, so the table stays as small as recent traffic."""
        for client in [c for c, failures in self._failures.items() if not self._recent(failures, now)]:
            del self._failures[client]

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

    def is_admin(self, password: str | None, client: str, trusted: bool = False) -> bool:
        """True for the right password; an empty one is simply 'not admin' (no delay, not counted)."""
        if not password:
            return False
        self.check(password, client, trusted)
        return True


def viewer(owner: str | None, is_admin: bool) -> str | None:
    """Whose conversations a caller sees: everyone's for the admin, else its own (None: nobody's)."""
    return ADMIN_OWNER if is_admin else owner


def cached_hub_id(value: str, hub_cache: Path | str | None = None) -> str | None:
    """`value` if it is a Hub model id (`owner/name` by the Hub's own rules) whose config.json is in the server's
    Hub cache, else None.

    The cache is the test, not only the spelling: `etc/passwd` is spelled like a Hub id, and a name that is not in
    the cache would make a job or a model load look it up as a folder first, then on the Hub.
    """
    if value.count("/") != 1:
        return None
    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    if Path(value).exists() or (PROJECT_ROOT / value).exists():  # a relative folder here or where jobs run
        return None
    found = try_to_load_from_cache(value, "config.json", cache_dir=hub_cache)
    return value if isinstance(found, str) else None


def resolve_checkpoint_choice(value: str, roots: list[Path], hub_cache: Path | str | None = None) -> str:
    """A base checkpoint named by a visitor: a folder inside one of `roots`, or a Hub id already in the Hub cache.

    Raises:
        UserError: the folder is elsewhere on the server, or the text is neither.
    """
    value = (value or "").strip()
    if not value:
        raise UserError("Choose a base checkpoint.")
    if cached_hub_id(value, hub_cache):
        return value
    if value.count("/") == 1 and not value.startswith(("/", ".", "~")) and not Path(value).exists():
        raise UserError(
            f"{value[:100]!r} is not a Hub model in this server's Hub cache (an id is owner/name); the admin can "
            "download it first (hf download owner/name)."
        )
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
