"""One updater per state file: an operating-system lock on ``<state>.lock``.

The lock is held by the operating system on an open file, so it disappears with the
process, however it dies: a stale lock after a crash never blocks the next start. The
file also says who holds it (pid, host, start time), for the message a second instance
prints when it refuses to start.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO

from .errors import StateError

# On Windows the lock covers one byte far past the holder's note, so the note stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 20


def _try_lock(handle: IO[str]) -> bool:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            handle.seek(0)
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(handle: IO[str]) -> None:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class InstanceLock:
    """Exclusive, non-blocking lock for one state file. Use as a context manager."""

    def __init__(self, state_path: str | Path):
        state_path = Path(state_path)
        self.path = state_path.with_name(state_path.name + ".lock")
        self._handle: IO[str] | None = None

    def holder(self) -> str:
        try:
            note = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return "another process"
        if not isinstance(note, dict):
            return "another process"
        since = note.get("since")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
        return f"pid {note.get('pid', '?')} on {note.get('host', '?')} since {when}"

    def acquire(self) -> "InstanceLock":
        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise StateError(f"lock file {self.path}: cannot be opened: {exc.strerror or exc}") from None
        if not _try_lock(handle):
            handle.close()
            raise StateError(
                f"state file is in use by another updater ({self.holder()}); "
                f"lock file {self.path}. Stop it first, or use another --state"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
            _unlock(handle)
        finally:
            handle.close()

    def __enter__(self) -> "InstanceLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
