"""Settings and credentials: arguments over environment over ``keys.conf``, validated once.

Settings are one frozen object built at start-up, with every problem reported at once.
Credentials are kept apart from them because they change under a running updater: the
token expires and is rotated in ``keys.conf``, so they are read again on a 401.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from dotenv import dotenv_values

from . import logs
from .errors import ConfigError
from .files import named_errors

log = logging.getLogger(__name__)

DEFAULT_API_URL = "http://127.0.0.1:5000"
DEFAULT_PLAYERS = "players.csv"
DEFAULT_PROFILE = "profile.json"
DEFAULT_KEYS = "keys.conf"
DEFAULT_STATE = "fleet-state.sqlite3"
DEFAULT_WORKERS = 16
MAX_WORKERS = 64
DEFAULT_INTERVAL_MINUTES = 15.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.5
DEFAULT_RETRY_AFTER_MAX = 60.0

# A header value must be visible ASCII; anything else is a typo or a pasted newline.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Credentials:
    """The API credentials. The token never appears in repr, str or logs."""

    client_id: str
    token: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, token=<hidden>)"

    __str__ = __repr__


class CredentialSource:
    """Where credentials come from: the environment, then the keys file.

    ``load()`` reads both afresh every time, so a token rotated in ``keys.conf`` (or in
    the environment of a restarted process) is seen without restarting anything.
    """

    def __init__(self, keys_path: str | Path, environ: Mapping[str, str] | None = None,
                 file_required: bool = False, check_mode: bool = True):
        self.keys_path = Path(keys_path)
        self.environ = os.environ if environ is None else environ
        self.file_required = file_required
        self.check_mode = check_mode  # warn when other users can read the file

    def read_file(self) -> dict[str, str]:
        """The keys file's values; empty when it is absent and not required."""
        path = self.keys_path
        if not path.exists() and not self.file_required:
            return {}
        with named_errors(path, "keys file"):
            with path.open("r", encoding="utf-8-sig") as handle:
                if self.check_mode:
                    _warn_if_shared(path)
                # interpolate=False: a token holding '$' is taken literally, as the API does.
                values = dotenv_values(stream=handle, interpolate=False)
        return {key: value for key, value in values.items() if value is not None}

    def load(self) -> Credentials:
        """Current credentials, or ConfigError saying what is missing (never a value)."""
        values = self.read_file()
        found: dict[str, str] = {}
        origin: dict[str, str] = {}
        for name in ("CLIENT_ID", "AUTH_TOKEN"):
            if self.environ.get(name):
                found[name], origin[name] = self.environ[name].strip(), "environment"
            elif values.get(name):
                found[name], origin[name] = values[name].strip(), f"keys file {self.keys_path}"
        missing = [name for name in ("CLIENT_ID", "AUTH_TOKEN") if not found.get(name)]
        if missing:
            where = ("the environment or " if self.environ else "") + f"keys file {self.keys_path}"
            where += "" if self.keys_path.exists() else " (not found)"
            raise ConfigError(
                f"credentials missing: {' and '.join(missing)} not set in {where}; "
                f"copy keys.conf.example to keys.conf and fill it in"
            )
        bad = [f"{name} from the {origin[name]} has a character not allowed in an HTTP header"
               for name in ("CLIENT_ID", "AUTH_TOKEN") if not _HEADER_VALUE.fullmatch(found[name])]
        if bad:
            raise ConfigError(bad)
        logs.hide(found["AUTH_TOKEN"])
        return Credentials(found["CLIENT_ID"], found["AUTH_TOKEN"])

    def api_url(self) -> str | None:
        """API_URL from the environment, else from the keys file, else None."""
        if self.environ.get("API_URL"):
            return self.environ["API_URL"].strip()
        try:
            value = self.read_file().get("API_URL")
        except ConfigError:
            return None
        return value.strip() if value else None


_warned_shared: set[str] = set()


def _warn_if_shared(path: Path) -> None:
    """On POSIX, say once if other users can read the keys file (it holds the token)."""
    if os.name != "posix" or str(path) in _warned_shared:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        _warned_shared.add(str(path))
        log.warning("keys file %s can be read by other users (mode %o): chmod 600 %s",
                    path, mode & 0o777, path)


class CredentialManager:
    """Thread-safe holder of the current credentials, with reload-on-401.

    Every worker asks ``current()`` for a (generation, credentials) pair. When the API
    answers 401, the worker calls ``rejected(generation)``: the first caller re-reads the
    sources; if the credentials changed, everyone retries with the new ones; if not, the
    credentials are declared dead and every later caller is told to stop, so a fleet
    with a bad token costs a handful of requests, not thousands.
    """

    def __init__(self, source: CredentialSource, initial: Credentials | None = None):
        self._source = source
        self._lock = threading.Lock()
        self._credentials = initial if initial is not None else source.load()
        self._generation = 0
        self._dead = threading.Event()

    def current(self) -> tuple[int, Credentials]:
        with self._lock:
            return self._generation, self._credentials

    @property
    def dead(self) -> bool:
        return self._dead.is_set()

    def rejected(self, generation: int) -> tuple[int, Credentials] | None:
        """Credentials to retry with after a 401, or None: stop, they are rejected."""
        with self._lock:
            if self._dead.is_set():
                return None
            if generation != self._generation:
                return self._generation, self._credentials
            try:
                fresh = self._source.load()
            except ConfigError as exc:
                log.warning("credentials rejected (401), and reading them again failed: %s", exc)
                fresh = None
            if fresh is not None and fresh != self._credentials:
                self._generation += 1
                self._credentials = fresh
                log.info("credentials rejected (401); they changed on disk, retrying with the new ones")
                return self._generation, self._credentials
            self._dead.set()
            log.error("credentials rejected (401) and unchanged after reading them again: stopping")
            return None


def validate_api_url(url: str) -> str | None:
    """A problem with ``url``, or None when it is a usable http(s) base URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"API URL {url!r} is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"API URL {url!r} must start with http:// or https:// and name a host"
    if parts.query or parts.fragment:
        return f"API URL {url!r} must not have a query or fragment"
    if parts.username or parts.password:
        return f"API URL must not carry a user name or password (use {DEFAULT_KEYS})"
    return None


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass(frozen=True)
class Settings:
    """Everything a cycle needs, validated once. Paths are as given (relative to the cwd)."""

    players: Path = Path(DEFAULT_PLAYERS)
    profile: Path = Path(DEFAULT_PROFILE)
    keys: Path = Path(DEFAULT_KEYS)
    keys_required: bool = False  # --keys was given: the file must exist
    api_url: str = DEFAULT_API_URL
    state: Path = Path(DEFAULT_STATE)
    workers: int = DEFAULT_WORKERS
    interval: float = DEFAULT_INTERVAL_MINUTES
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    force: bool = False
    dry_run: bool = False
    report: Path | None = None
    ca_bundle: Path | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    use_environment: bool = True  # False: credentials from the keys file only (the demo)

    def credential_source(self, environ: Mapping[str, str] | None = None) -> CredentialSource:
        if environ is None and not self.use_environment:
            environ = {}
        return CredentialSource(self.keys, environ, file_required=self.keys_required)

    def problems(self) -> list[str]:
        """Every problem with these settings (files are checked when a cycle reads them)."""
        found = []
        if not 1 <= self.workers <= MAX_WORKERS:
            found.append(f"--workers must be from 1 to {MAX_WORKERS}, not {self.workers}")
        if not self.interval > 0:
            found.append(f"--interval must be a positive number of minutes, not {self.interval:g}")
        if not 0 < self.timeout <= 600:
            found.append(f"--timeout must be more than 0 and at most 600 seconds, not {self.timeout:g}")
        if not 0 <= self.retries <= 10:
            found.append(f"--retries must be from 0 to 10, not {self.retries}")
        if not 0 <= self.backoff <= 60:
            found.append(f"--backoff must be from 0 to 60 seconds, not {self.backoff:g}")
        if not 0 <= self.retry_after_max <= 3600:
            found.append(f"--max-retry-after must be from 0 to 3600 seconds, not {self.retry_after_max:g}")
        problem = validate_api_url(self.api_url)
        if problem:
            found.append(problem)
        if self.ca_bundle is not None and not self.ca_bundle.exists():
            found.append(f"--ca-bundle {self.ca_bundle}: not found")
        if self.report is not None and self.report.suffix.lower() not in (".csv", ".json"):
            found.append(f"--report {self.report}: the name must end in .csv or .json")
        return found
