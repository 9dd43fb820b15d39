"""One run per work directory: an OS file lock on ``<work>/.lock``, held for the run's life.

Two runs writing one work directory damage each other: both write the same Parquet rows,
DuckDB allows one writer, and MLflow's SQLite store can be created twice and replaced under
the first run. ``work_dir_lock`` takes an exclusive ``flock`` on ``<work>/.lock`` before
anything else touches the directory; a second run is refused at once with one line naming
the holder (``WorkDirBusy``). The kernel drops the lock when the holder's last file
descriptor closes, so a run that dies (``kill -9`` included) never leaves a stale lock; the
file itself stays (removing it would let two runs lock two different files).

The lock is re-entrant within a process: the CLI takes it, and the flow takes it again (for
deployment runs, which start in the flow); an ablation's variants take it once each. Threads
of one process share it. The descriptor is not inherited by ``exec``'d children (Prefect's
server); a ``fork``'d child would keep the lock until it exits too. ``flock`` is advisory and
works across processes of one machine; on network file systems it is only as good as the
server's locking.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.errors import InputError, VlmtError

LOCK_FILE = ".lock"


class WorkDirBusy(VlmtError):
    """Another process holds the work directory's lock."""

    def __init__(self, work: Path, holder: dict) -> None:
        self.work, self.holder = work, holder
        who = f"pid {holder['pid']}" if holder.get("pid") else "another process"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        since = f" since {holder['since']}" if holder.get("since") else ""
        what = f" ({holder['command']})" if holder.get("command") else ""
        super().__init__(f"work dir {work} is in use by {who}{since}{what}: wait for it to finish, or give another work dir")


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd, self.count = fd, 1


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


def holder(work: str | Path) -> dict:
    """What the lock file says about its holder (pid, host, since, command); {} when unknown."""
    try:
        info = json.loads((Path(work) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def acquire(work: str | Path, command: str | None = None) -> Path:
    """Take ``work``'s lock (creating the directory) or raise ``WorkDirBusy``; returns the resolved work dir."""
    root = Path(work).resolve()
    with _guard:
        if (held := _held.get(root)) is not None:
            held.count += 1
            return root
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"work dir {root}", f"cannot hold its lock file ({exc.strerror or exc})",
                             "a directory this user can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkDirBusy(root, holder(root)) from None
        except OSError as exc:  # a file system without locks: running unlocked could damage another run
            os.close(fd)
            raise InputError(f"work dir {root}", f"cannot be locked ({exc.strerror or exc})",
                             "a work dir on a file system with flock locks") from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[root] = _Held(fd)
        return root


def release(work: str | Path) -> None:
    """Undo one ``acquire`` of this process; the last one drops the OS lock."""
    root = Path(work).resolve()
    with _guard:
        held = _held.get(root)
        if held is None:
            return
        held.count -= 1
        if held.count:
            return
        del _held[root]
        try:
            os.ftruncate(held.fd, 0)  # the holder's details are stale from here on
        finally:
            os.close(held.fd)  # drops the flock


@contextmanager
def work_dir_lock(work: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``work``'s lock for the ``with`` block (see the module docstring); raises ``WorkDirBusy``."""
    root = acquire(work, command)
    try:
        yield root
    finally:
        release(root)
