"""The daemon: a cycle at once, then one every ``interval`` minutes, until stopped.

The loop follows the ``schedule`` library's model: ``Scheduler`` decides when the job is
due and ``idle_seconds`` says how long to sleep, so the loop sleeps until the next cycle
and never spins. Cycles run on the loop's own thread, so they can never overlap; if one
runs long, the next starts ``interval`` minutes after it ends. An exception in a cycle is
logged and the daemon goes on. Stop signals are turned into a ``threading.Event`` here.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any, Callable

import schedule

from .errors import ConfigError, UpdaterError

log = logging.getLogger(__name__)

# Windows does not interrupt a lock wait for Ctrl-C, so there the loop wakes every second
# to let the signal handler run; elsewhere a signal wakes it at once.
MAX_SLEEP = 1.0 if sys.platform == "win32" else 60.0


class StopSignals:
    """Turns SIGINT, SIGTERM (and Ctrl-Break on Windows) into ``stop.set()``.

    The first signal asks for a clean stop: no new requests, in-flight ones finish, the
    summary is printed. A second Ctrl-C raises KeyboardInterrupt to stop at once.
    """

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.interrupted = False  # Ctrl-C (exit 130) rather than SIGTERM (exit 0)
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            if self.stop.is_set() and self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
        self.received = name
        # Setting an Event takes a lock; doing it from another thread means a signal that
        # lands while this thread holds that lock can never deadlock.
        threading.Thread(target=self.stop.set, name="stop", daemon=True).start()

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals can only be handled on the main thread
        names = ["SIGINT", "SIGTERM", "SIGBREAK"]
        for name in names:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except (OSError, ValueError):
                pass
        return self

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous)
            except (OSError, ValueError):
                pass
        self._previous.clear()

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()


class Daemon:
    """Runs ``cycle`` now and then every ``interval_minutes`` until ``stop`` is set."""

    def __init__(self, cycle: Callable[[], Any], interval_minutes: float, stop: threading.Event,
                 *, scheduler: schedule.Scheduler | None = None,
                 wait: Callable[[float], Any] | None = None, max_sleep: float = MAX_SLEEP):
        self.cycle = cycle
        self.interval_minutes = interval_minutes
        self.stop = stop
        self.scheduler = scheduler or schedule.Scheduler()
        self.wait = wait or stop.wait
        self.max_sleep = max_sleep
        self.cycles_run = 0

    def _run_cycle(self) -> None:
        self.cycles_run += 1
        try:
            self.cycle()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("cycle skipped; the next one is in %g minutes", self.interval_minutes)
        except UpdaterError as exc:
            log.error("cycle failed: %s", exc)
        except Exception:  # a bug: keep the traceback, keep the daemon
            log.exception("cycle failed with an unexpected error; the daemon goes on")

    def run(self) -> None:
        self.scheduler.every(self.interval_minutes).minutes.do(self._run_cycle)
        log.info("daemon started: a cycle now, then every %g minutes (Ctrl-C to stop)",
                 self.interval_minutes)
        # run_all() runs the job now and schedules the next run from its end, like every run.
        self.scheduler.run_all()
        while not self.stop.is_set():
            idle = self.scheduler.idle_seconds
            if idle is None:  # no job left (cannot happen, but never spin)
                break
            if idle > 0:
                self.wait(min(idle, self.max_sleep))
                continue
            self.scheduler.run_pending()
        self.scheduler.clear()
        log.info("daemon stopped after %d cycles", self.cycles_run)
