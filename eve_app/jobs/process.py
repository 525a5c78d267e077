"""Process-group helpers for training jobs (Linux `/proc`; `killpg` where there is no `/proc`).

Each job starts in a session of its own, so its process group id is the pid of the command it ran, and every
process it starts (accelerate's launcher, torchrun, the training processes, data-loader workers) shares the group.
Stopping a job therefore never misses a GPU process, and the job survives the web server: nothing ties it to the
app but the pid in the database.

Abort is two-phase. SIGTERM goes to the training processes only (those running `-m model.train`, not their forked
data-loader workers): the trainer saves a checkpoint after the current step and exits 0, and the launchers above
it then exit on their own. Signalling the launchers too would be worse: torchrun and the pipeline forward SIGTERM
to their children, and a second SIGTERM makes the trainer stop at once without a checkpoint. Whatever remains
after the grace period gets SIGKILL, sent to the whole group.
"""

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

PROC = Path("/proc")
TRAIN_MODULE = "model.train"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name in parentheses may hold spaces
    return fields[0], int(fields[1]), int(fields[2])


def cmdline(pid: int) -> list[str]:
    """A process's arguments (empty when it is gone or unreadable)."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def group_members(pgid: int) -> dict[int, int]:
    """Live (not zombie) processes of a group, pid -> parent pid; without /proc, {pgid: 0} if the group exists."""
    if not PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return {}
        return {pgid: 0}
    members = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info and info[2] == pgid and info[0] not in ("Z", "X"):
                members[int(entry.name)] = info[1]
    return members


def runs_module(argv: list[str], module: str = TRAIN_MODULE) -> bool:
    """Whether a Python command line runs `-m module` itself (not a launcher that passes `-m module` on)."""
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m":
            return i + 1 < len(argv) and argv[i + 1] == module
        if not arg.startswith("-"):
            return False  # a script (e.g. the `accelerate` entry point) comes before any -m of ours
    return False


def is_job_alive(pgid: int, module: str = TRAIN_MODULE) -> bool:
    """Whether a job's group still has a live process that runs `module` (a reused pid does not)."""
    members = group_members(pgid)
    if not PROC.is_dir():
        return bool(members)
    return any(module in " ".join(cmdline(pid)) for pid in members)


def trainer_pids(pgid: int) -> list[int]:
    """The training processes of a group: they run `-m model.train`, and their parent does not (data-loader
    workers are forks of a trainer and share its command line)."""
    members = group_members(pgid)
    trainers = {pid for pid in members if runs_module(cmdline(pid))}
    return sorted(pid for pid in trainers if members[pid] not in trainers)


def reap(pid: int) -> int | None:
    """Collect a finished child of this process so it does not linger as a zombie; its exit status, if ours."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None  # not our child (the app restarted), or already collected
    return os.waitstatus_to_exitcode(status) if done else None


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def request_stop(pgid: int, signalled: set[int]) -> None:
    """SIGTERM the group's trainers not signalled yet (they save a checkpoint after the current step); while none
    runs yet (still starting up: nothing to save), the launcher itself. `signalled` is updated."""
    fresh = [pid for pid in trainer_pids(pgid) if pid not in signalled]
    for pid in fresh:
        _signal(pid, signal.SIGTERM)
    signalled.update(fresh)
    if not signalled and pgid not in signalled:
        _signal(pgid, signal.SIGTERM, group=True)
        signalled.add(pgid)


def kill_group(pgid: int, collect: Callable[[], object] = lambda: None, wait: float = 30.0) -> None:
    """SIGKILL the whole group and wait (reaping with `collect`) until no live process is left in it."""
    _signal(pgid, signal.SIGKILL, group=True)
    deadline = time.monotonic() + wait
    while group_members(pgid) and time.monotonic() < deadline:
        collect()
        time.sleep(0.05)
    collect()


def stop_group(pgid: int, grace: float = 5.0, collect: Callable[[], object] = lambda: None) -> bool:
    """SIGTERM the trainers (the group if none runs yet), SIGKILL the group after `grace` seconds.

    Trainers that appear during the grace period (the next stage of a pipeline) are signalled too. `collect` is
    called while waiting, to reap the group leader when it is our child. Returns True when the job stopped within
    the grace period, False when it had to be killed.
    """
    signalled: set[int] = set()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        collect()
        if not group_members(pgid):
            collect()  # the leader may have died after the call above: reap it now, it is a zombie at most
            return True
        request_stop(pgid, signalled)
        time.sleep(0.1)
    kill_group(pgid, collect)
    return False
