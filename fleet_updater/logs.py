"""Logging set-up for the entry points, and the guarantee that secrets are never written.

Modules only ever call ``logging.getLogger(__name__)``; the handlers are installed here,
by ``configure()``, which ``main.py`` calls. Every handler's formatter replaces the
registered secrets (the tokens in use) with ``<hidden>``, so even a library that logs a
header at debug level cannot leak one.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from pathlib import Path
from typing import TextIO

HIDDEN = "<hidden>"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def hide(secret: str) -> None:
    """Register a secret: from now on it is written as <hidden> in every log line."""
    if secret and len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    with _secrets_lock:
        secrets = tuple(_secrets)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, HIDDEN)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that clears the in-place progress line before writing a record."""

    def __init__(self, stream: TextIO, progress_line: "LiveLine | None" = None):
        super().__init__(stream)
        self.progress_line = progress_line

    def emit(self, record: logging.LogRecord) -> None:
        line = self.progress_line
        if line is not None and line.shown:
            with line.lock:
                line.clear()
                super().emit(record)
                line.redraw()
        else:
            super().emit(record)


class LiveLine:
    """One line of a terminal rewritten in place (the progress line)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lock = threading.RLock()
        self.text = ""
        self.shown = False

    def show(self, text: str) -> None:
        with self.lock:
            pad = max(0, len(self.text) - len(text))
            self.text = text
            self.shown = True
            self._write("\r" + text + " " * pad)

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                self._write("\r" + " " * len(self.text) + "\r")

    def redraw(self) -> None:
        with self.lock:
            if self.shown:
                self._write("\r" + self.text)

    def finish(self) -> None:
        with self.lock:
            self.clear()
            self.shown = False
            self.text = ""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass


_live_line: LiveLine | None = None


def live_line() -> LiveLine | None:
    """The console's progress line, when the console is a terminal."""
    return _live_line


def configure(verbosity: int = 0, log_file: str | Path | None = None,
              stream: TextIO | None = None, timestamps: bool = False) -> None:
    """Install the handlers: console on stderr, and an optional rotating log file.

    ``verbosity``: -1 quiet (warnings and errors), 0 normal, 1 debug for the updater,
    2 debug for the HTTP libraries too.
    """
    global _live_line
    stream = stream if stream is not None else sys.stderr
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    _live_line = LiveLine(stream) if is_tty else None
    console = ConsoleHandler(stream, _live_line)
    console.setLevel(level)
    fmt = "%(asctime)s %(levelname)-7s %(message)s" if timestamps else "%(levelname)-7s %(message)s"
    console.setFormatter(RedactingFormatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    root.addHandler(console)
    root.setLevel(logging.DEBUG if log_file else level)
    if log_file:
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8", delay=True
        )
        file_handler.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
        file_handler.setFormatter(RedactingFormatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    # The HTTP libraries speak only at -vv: urllib3 logs every retry as a WARNING, which
    # would flood the console when an API is down; the updater logs its own retries at
    # debug level and names every failure in the cycle's summary.
    library_level = logging.DEBUG if verbosity >= 2 else logging.ERROR
    for name in ("urllib3", "requests", "werkzeug"):
        logging.getLogger(name).setLevel(library_level)


def reset() -> None:
    """Remove the handlers ``configure()`` installed (tests call this to stay quiet)."""
    global _live_line
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(logging.NullHandler())
    root.setLevel(logging.WARNING)
    _live_line = None
