"""What the UI's handlers share: the engine, the conversation service, the job store, the presets, the settings, and per-session stop events."""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from gradio.utils import get_upload_folder

from .conversations import ConversationService
from .jobs import JobRunner
from .jobs.retention import ValidatedUploads
from .limits.chat import ImageGate
from .limits.raw_requests import UploadBudget
from .presets import TaskPreset, load_presets
from .security import AdminGate
from .serving.base import ChatEngine
from .settings import MIB, Settings
from .storage import ConversationStore, Database, JobStore


class StopEvents:
    """One stop event per browser session, for the request it last submitted.

    A Stop click sets it, whether the request is already generating or still waiting in the queue. At most
    `capacity` sessions are remembered (the least recently used is forgotten first, as Gradio forgets sessions), so
    that a script opening session after session cannot grow the table without end.
    """

    def __init__(self, capacity: int = 10000) -> None:
        self._events: OrderedDict[str | None, threading.Event] = OrderedDict()  # by Gradio session (None: none)
        self.capacity = capacity
        self._lock = threading.Lock()

    def new(self, session: str | None) -> threading.Event:
        with self._lock:
            self._events[session] = threading.Event()
            return self._remember(session)

    def current(self, session: str | None) -> threading.Event:
        with self._lock:
            self._events.setdefault(session, threading.Event())
            return self._remember(session)

    def _remember(self, session: str | None) -> threading.Event:
        self._events.move_to_end(session)
        while len(self._events) > self.capacity:
            self._events.popitem(last=False)
        return self._events[session]

    def stop(self, session: str | None) -> None:
        with self._lock:
            event = self._events.get(session)
        if event is not None:
            event.set()


@dataclass
class AppContext:
    engine: ChatEngine
    jobs: JobStore
    presets: list[TaskPreset]
    settings: Settings
    runner: JobRunner | None
    conversations: ConversationService
    admin: AdminGate
    uploads: ValidatedUploads
    upload_budget: UploadBudget
    stops: StopEvents = field(default_factory=StopEvents)


def make_context(
    settings: Settings,
    engine: ChatEngine,
    database: Database,
    runner: JobRunner | None = None,
    upload_folder: str | Path | None = None,
) -> AppContext:
    """Everything the handlers share, wired from the settings (limits, password, retention). `upload_folder`: Gradio's
    upload cache (default: where Gradio puts it), where exports are written and uploads are charged."""
    images = ImageGate(settings.chat_limits())
    return AppContext(
        engine=engine,
        jobs=JobStore(database),
        presets=load_presets(engine.checkpoint_dir),
        settings=settings,
        runner=runner,
        conversations=ConversationService(
            ConversationStore(database), engine, images, settings.partial_save_seconds, settings.stream_interval
        ),
        admin=AdminGate(settings.admin_password),
        uploads=ValidatedUploads(
            settings.data_dir / "uploads",
            settings.upload_retention_minutes * 60,
            share=settings.upload_limits().max_total_bytes,
            budget=int(settings.pending_uploads_mb * MIB),
        ),
        upload_budget=UploadBudget(
            bytes_per_window=int(settings.upload_quota_mb * MIB),
            window_s=3600.0,
            min_free_bytes=int(settings.min_free_disk_mb * MIB),
            cache_dir=upload_folder or get_upload_folder(),
        ),
        stops=StopEvents(settings.max_sessions),
    )
