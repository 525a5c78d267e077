"""Process-group helpers for training jobs, on psutil's process table.

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

import psutil

TRAIN_MODULE = "model.train"


def cmdline(pid: int) -> list[str]:
    """A process's arguments (empty when it is gone or unreadable)."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def group_members(pgid: int) -> dict[int, int]:
    """Live (not zombie) processes of a group, pid -> parent pid."""
    members = {}
    for process in psutil.process_iter(["ppid", "status"]):
        try:
            if (
                process.info["status"] not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                and os.getpgid(process.pid) == pgid
            ):
                members[process.pid] = process.info["ppid"]
        except (ProcessLookupError, PermissionError):
            continue  # gone since the table was read, or not ours to ask
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
    return any(module in " ".join(cmdline(pid)) for pid in group_members(pgid))


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
