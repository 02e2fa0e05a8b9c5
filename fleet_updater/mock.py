"""The mock player-profile API: a Flask app that behaves like the contract in API.md.

It serves ``PUT /profiles/clientId:<mac>`` (and, for tests and demos only,
``GET /profiles/clientId:<mac>``) for the players of a CSV file, checks the credentials of a
dotenv keys file (re-read as soon as it changes), validates bodies with Joi-style messages,
and stores what it was sent. Every answer it gives is an entry of the catalogue
``responses.json``; a request header ``x-mock-response: <name>`` asks for any entry by name,
so a new failure mode is one JSON entry, not code.

Bad days are opt-in faults: latency with jitter, a share of 500s, tokens that expire, and a
rate limit answering 429 with ``Retry-After``. Time is read from an injectable clock and
waited on with an injectable sleep, so tests of expiry and rate limits never wait.

Use :func:`create_app` to build the app (Flask's factory pattern), :func:`start_mock_server`
to serve it on a free loopback port in a background thread (tests, ``--demo``), and
``mock_api.py`` to run it from the command line. The live state of a running mock
(profiles stored, requests received, statuses answered) is ``app.extensions["fleet_mock"]``.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from .errors import ConfigError
from .config import Credentials, CredentialSource
from .files import named_errors, read_text
from .players import canonical_mac, read_players
from .profile import profile_problems

__all__ = [
    "DEFAULT_RESPONSES", "MAX_BODY_BYTES", "REQUIRED_ENTRIES", "CannedResponse", "Faults",
    "MockConfig", "MockState", "RunningMock", "create_app", "load_catalogue",
    "make_mock_server", "mock_state", "start_mock_server", "validation_detail",
]

logger = logging.getLogger(__name__)

DEFAULT_RESPONSES = Path(__file__).resolve().parent.parent / "responses.json"
MAX_BODY_BYTES = 64 * 1024
SUMMARY_EVERY_SECONDS = 5.0
EXTENSION_KEY = "fleet_mock"
MOCK_RESPONSE_HEADER = "x-mock-response"

# The entries the mock answers with by itself, with the status each must have.
REQUIRED_ENTRIES: Mapping[str, int] = {
    "ok": 200,
    "unauthorized": 401,
    "not_found": 404,
    "conflict": 409,
    "server_error": 500,
    "rate_limited": 429,
    "bad_request": 400,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "no_such_route": 404,
    "method_not_allowed": 405,
}
# Werkzeug raises these for requests that never reach a view; each answers from its entry.
_HTTP_EXCEPTION_ENTRIES = {
    400: "bad_request",
    404: "no_such_route",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "server_error",
}

_ENTRY_FIELDS = ("statusCode", "error", "message", "profile", "headers", "body",
                 "contentType", "description")
_ENTRY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the server computes itself; an entry setting them would corrupt the response.
_RESERVED_HEADERS = {"content-type", "content-length", "transfer-encoding", "connection"}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Faults:
    """The bad-day settings of a running mock; all off by default."""

    error_rate: float = 0.0  # share of PUTs answered 500, 0..1
    latency_ms: float = 0.0  # added to every profile request
    jitter_ms: float = 0.0  # plus a uniform 0..jitter_ms
    token_ttl: float | None = None  # seconds a token works after its first use
    rate_limit: int | None = None  # requests per one-second window

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        problems = []
        if not _is_number(self.error_rate) or not 0 <= self.error_rate <= 1:
            problems.append(f"error rate (--error-rate) must be a number from 0 to 1, "
                            f"not {self.error_rate!r}")
        for name, flag in (("latency", "--latency-ms"), ("jitter", "--jitter-ms")):
            value = getattr(self, f"{name}_ms")
            if not _is_number(value) or not 0 <= value < math.inf:
                problems.append(f"{name} ({flag}) must be a number of milliseconds >= 0, "
                                f"not {value!r}")
        if self.token_ttl is not None and (
            not _is_number(self.token_ttl) or not 0 < self.token_ttl < math.inf
        ):
            problems.append(f"token TTL (--token-ttl) must be a number of seconds > 0, "
                            f"not {self.token_ttl!r}")
        if self.rate_limit is not None and (
            not isinstance(self.rate_limit, int) or isinstance(self.rate_limit, bool)
            or self.rate_limit < 1
        ):
            problems.append(f"rate limit (--rate-limit) must be a whole number >= 1, "
                            f"not {self.rate_limit!r}")
        return problems

    def describe(self) -> str:
        parts = []
        if self.latency_ms or self.jitter_ms:
            jitter = f" + 0..{self.jitter_ms:g} ms" if self.jitter_ms else ""
            parts.append(f"latency {self.latency_ms:g} ms{jitter}")
        if self.error_rate:
            parts.append(f"{self.error_rate * 100:g}% of PUTs answer 500")
        if self.token_ttl is not None:
            parts.append(f"tokens expire {self.token_ttl:g} s after first use")
        if self.rate_limit is not None:
            parts.append(f"rate limit {self.rate_limit}/s")
        return ", ".join(parts) or "none"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


@dataclass(frozen=True)
class MockConfig:
    """Everything a mock app is built from, validated on construction (ConfigError)."""

    players_path: Path | None = Path("players.csv")
    keys_path: Path = Path("keys.conf")
    responses_path: Path = DEFAULT_RESPONSES
    # An explicit list of MACs (any spelling) that replaces players_path: for tests.
    registry: Iterable[str] | None = None
    error_rate: float = 0.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    token_ttl: float | None = None
    rate_limit: int | None = None
    seed: int | None = None
    quiet: bool = False
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems = []
        if self.players_path is not None:
            object.__setattr__(self, "players_path", Path(self.players_path))
        object.__setattr__(self, "keys_path", Path(self.keys_path))
        object.__setattr__(self, "responses_path", Path(self.responses_path))
        if self.registry is not None:
            if isinstance(self.registry, str):
                problems.append("registry must be a list of MAC addresses, not one string")
            else:
                macs = []
                for value in self.registry:
                    mac = canonical_mac(value) if isinstance(value, str) else None
                    if mac is None:
                        problems.append(f"registry: {value!r} is not a MAC address")
                    elif mac not in macs:
                        macs.append(mac)
                object.__setattr__(self, "registry", tuple(macs))
        try:
            self.faults()
        except ConfigError as exc:
            problems += exc.problems
        if self.seed is not None and (not isinstance(self.seed, int)
                                      or isinstance(self.seed, bool)):
            problems.append(f"seed must be a whole number, not {self.seed!r}")
        if problems:
            raise ConfigError(problems)

    def faults(self) -> Faults:
        return Faults(self.error_rate, self.latency_ms, self.jitter_ms, self.token_ttl,
                      self.rate_limit)


# ------------------------------------------------------------------------------ catalogue


@dataclass(frozen=True)
class CannedResponse:
    """One catalogue entry: an answer the mock can give, by name."""

    name: str
    status: int
    error: str | None = None
    message: str | None = None
    profile: Any = field(default=None, compare=False)
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    content_type: str | None = None
    description: str | None = None

    def render(self, mac: str | None = None, message: str | None = None,
               headers: Mapping[str, str] | None = None) -> Response:
        """The Flask response; ``{mac}`` in the message becomes ``mac``."""
        if self.body is not None:
            payload = self.body.encode("utf-8")
            content_type = self.content_type or "text/plain; charset=utf-8"
        else:
            if self.profile is not None:
                document: dict[str, Any] = {"profile": self.profile}
            else:
                text = self.message if message is None else message
                if mac is not None and text is not None:
                    text = text.replace("{mac}", mac)
                document = {"statusCode": self.status, "error": self.error, "message": text}
            payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
            content_type = "application/json"
        response = Response(payload, status=_status_line(self.status),
                            content_type=content_type)
        for name, value in self.headers:
            response.headers[name] = value
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response


def load_catalogue(path: str | Path = DEFAULT_RESPONSES) -> dict[str, CannedResponse]:
    """Read and check ``responses.json``; ConfigError lists every problem, entry by entry."""
    path = Path(path)
    label = path.name
    text = read_text(path, "responses file")

    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        document = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{label}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(f"{label}: must be a JSON object of entries by name")
    problems = [f"{label}: {key!r} appears twice in an object" for key in dict.fromkeys(duplicates)]
    catalogue: dict[str, CannedResponse] = {}
    for name, raw in document.items():
        entry_problems, entry = _check_entry(name, raw)
        problems += [f"{label}: entry {name!r}: {problem}" for problem in entry_problems]
        if entry is not None:
            catalogue[name] = entry
    for name, status in REQUIRED_ENTRIES.items():
        if name not in document:
            problems.append(f"{label}: entry {name!r} is missing "
                            f"(the mock answers {status} with it)")
        elif name in catalogue and catalogue[name].status != status:
            problems.append(f"{label}: entry {name!r}: statusCode must be {status} "
                            f"(the mock answers {status} with it), not {catalogue[name].status}")
    if problems:
        raise ConfigError(problems)
    return catalogue


def _check_entry(name: str, raw: Any) -> tuple[list[str], CannedResponse | None]:
    if not _ENTRY_NAME.fullmatch(name):
        return ["the name may hold only letters, digits, '_', '.' and '-' "
                f"(it is sent in the {MOCK_RESPONSE_HEADER} header)"], None
    if not isinstance(raw, dict):
        return ["must be an object with at least a statusCode"], None
    problems = [f"unknown field {key!r} (allowed: {', '.join(_ENTRY_FIELDS)})"
                for key in raw if key not in _ENTRY_FIELDS]
    status = raw.get("statusCode")
    if "statusCode" not in raw:
        problems.append("statusCode is missing")
    elif not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        problems.append("statusCode must be an integer from 100 to 599")
        status = None
    for key in ("error", "message", "body", "contentType", "description"):
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{key} must be a string")
    has_body = "body" in raw
    success = status is not None and 200 <= status <= 299
    if has_body:
        mixed = [key for key in ("error", "message", "profile") if key in raw]
        if mixed:
            problems.append(f"body replaces the JSON answer: drop {', '.join(mixed)}")
        content_type = raw.get("contentType")
        if isinstance(content_type, str) and (not content_type.strip()
                                              or any(c in content_type for c in "\r\n\0")):
            problems.append("contentType must be a media type such as 'text/html'")
    else:
        if "contentType" in raw:
            problems.append("contentType is only for entries with a body (JSON entries are "
                            "application/json)")
        if success:
            profile = raw.get("profile")
            if "profile" not in raw:
                problems.append("profile is required for a 2xx entry (or give a body)")
            elif not isinstance(profile, dict) or not isinstance(profile.get("applications"), list):
                problems.append('profile must be an object {"applications": [...]}')
            extra = [key for key in ("error", "message") if key in raw]
            if extra:
                problems.append(f"{', '.join(extra)}: a 2xx entry answers with its profile")
        elif status is not None:
            problems += [f"{key} is required for a non-2xx entry (or give a body)"
                         for key in ("error", "message") if key not in raw]
            if "profile" in raw:
                problems.append("profile is only for 2xx entries")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict):
        problems.append("headers must be an object of header name to string value")
        headers = {}
    for header, value in headers.items():
        if not _HEADER_NAME.fullmatch(header):
            problems.append(f"headers: {header!r} is not a valid header name")
        elif header.lower() in _RESERVED_HEADERS:
            problems.append(f"headers: {header} is set by the server"
                            + (" (use contentType with a body)" if header.lower() == "content-type"
                               else ""))
        if not isinstance(value, str):
            problems.append(f"headers: {header} must be a string, not {type(value).__name__}")
        elif any(c in value for c in "\r\n\0"):
            problems.append(f"headers: {header} must be one line")
    if problems:
        return problems, None
    return [], CannedResponse(
        name=name,
        status=status,
        error=raw.get("error"),
        message=raw.get("message"),
        profile=raw.get("profile"),
        headers=tuple(headers.items()),
        body=raw.get("body"),
        content_type=raw.get("contentType"),
        description=raw.get("description"),
    )


# ----------------------------------------------------------------------------- validation


def validation_detail(document: Any) -> str | None:
    """Why ``document`` is not a valid request body, worded as the API's Joi does; None if valid.

    Like Joi with ``abortEarly``, only the first failure is told. It accepts exactly what
    :func:`fleet_updater.profile.profile_problems` accepts, so the mock and the updater
    agree on what a valid profile is.
    """
    if not isinstance(document, dict):
        return '"value" must be an object'
    if "profile" not in document:
        return _child("profile", '"profile" is required')
    detail = _profile_detail(document["profile"])
    if detail:
        return _child("profile", detail)
    return _unknown_key(document, ("profile",))


def _child(key: str, detail: str) -> str:
    return f'child "{key}" fails because [{detail}]'


def _unknown_key(mapping: dict, allowed: tuple[str, ...]) -> str | None:
    for key in mapping:
        if key not in allowed:
            return f'"{key}" is not allowed'
    return None


def _profile_detail(profile: Any) -> str | None:
    if not isinstance(profile, dict):
        return '"profile" must be an object'
    if "applications" not in profile:
        return _child("applications", '"applications" is required')
    applications = profile["applications"]
    if not isinstance(applications, list):
        return _child("applications", '"applications" must be an array')
    if not applications:
        return _child("applications", '"applications" must contain at least 1 items')
    seen: set[str] = set()
    for index, app in enumerate(applications):
        detail = _application_detail(index, app)
        if detail:
            return _child("applications", f'"applications" at position {index} fails because '
                                          f"[{detail}]")
        if app["applicationId"] in seen:
            return _child("applications",
                          f'"applications" position {index} contains a duplicate value')
        seen.add(app["applicationId"])
    return _unknown_key(profile, ("applications",))


def _application_detail(index: int, app: Any) -> str | None:
    if not isinstance(app, dict):
        return f'"{index}" must be an object'
    for key in ("applicationId", "version"):
        if key not in app:
            return _child(key, f'"{key}" is required')
        value = app[key]
        if not isinstance(value, str):
            return _child(key, f'"{key}" must be a string')
        if not value.strip():
            return _child(key, f'"{key}" is not allowed to be empty')
        if value != value.strip():
            return _child(key, f'"{key}" must not have leading or trailing whitespace')
    return _unknown_key(app, ("applicationId", "version"))


# ---------------------------------------------------------------------------- credentials


class KeysFile:
    """The credentials of a dotenv keys file, read again whenever the file changes.

    A change is seen by ``(inode, mtime_ns, size)`` from one ``stat`` per request. While the
    file is missing or incomplete (an editor halfway through a rotation), the last good
    credentials stay in force and a warning is logged once.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        # (signature, credentials), replaced as one: a thread that sees the new signature
        # must also see the new credentials, or a request racing a rotation gets a 401.
        self._published = self._read()

    def _signature_now(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _read(self) -> tuple[tuple[int, int, int], Credentials]:
        # The same reading as the updater's (dotenv, UTF-8 with or without a byte-order
        # mark, values taken literally), from the file alone: the mock ignores the environment.
        with named_errors(self.path, "keys file"):
            signature = self._signature_now()
        source = CredentialSource(self.path, environ={}, file_required=True, check_mode=False)
        return signature, source.load()

    def current(self) -> Credentials:
        """The credentials in force now, reading the file again if it changed."""
        try:
            signature = self._signature_now()
        except OSError:
            signature = None
        published = self._published
        if signature == published[0]:
            return published[1]
        with self._lock:
            published = self._published
            if signature != published[0]:
                try:
                    _, credentials = self._read()
                except ConfigError as exc:
                    # Reported once: the bad file's signature is published with the old keys.
                    logger.warning("%s; keeping the previous credentials", exc)
                    credentials = published[1]
                else:
                    logger.info("keys file %s changed: credentials read again", self.path)
                self._published = published = (signature, credentials)
            return published[1]


# ----------------------------------------------------------------------------------- state


class MockState:
    """The live state of one mock app: what it stored, received and answered.

    ``stored`` (mac -> profile), ``received`` (Counter of the MACs PUT requests named),
    ``statuses`` (Counter of statuses answered) and ``requests`` (total answered) are
    updated under ``lock``; read them under it too while a server is running.
    """

    def __init__(self, config: MockConfig, catalogue: dict[str, CannedResponse],
                 registry: frozenset[str], keys: KeysFile):
        self.config = config
        self.catalogue = catalogue
        self.registry = registry
        self.keys = keys
        self.lock = threading.Lock()
        self.stored: dict[str, Any] = {}
        self.received: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.requests = 0
        self._faults = config.faults()
        self._random = random.Random(config.seed)
        self._random_lock = threading.Lock()
        self._token_first_use: dict[str, float] = {}
        self._window = -1
        self._window_count = 0
        self._since_summary: Counter[int] = Counter()
        self._summary_at = config.clock()

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_fault(self, **changes: Any) -> Faults:
        """Change faults at run time, e.g. ``set_fault(error_rate=0.5, latency_ms=20)``.

        Takes the fields of :class:`Faults`; ConfigError for bad values or unknown names.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Faults)})
        if unknown:
            raise ConfigError(f"unknown fault {', '.join(unknown)}")
        with self.lock:
            self._faults = dataclasses.replace(self._faults, **changes)
            if "rate_limit" in changes:
                self._window, self._window_count = -1, 0
            return self._faults

    def reset(self) -> None:
        """Forget stored profiles and counts (faults and token ages stay)."""
        with self.lock:
            self.stored.clear()
            self.received.clear()
            self.statuses.clear()
            self.requests = 0

    def random(self) -> float:
        with self._random_lock:
            return self._random.random()

    def delay_seconds(self) -> float:
        faults = self._faults
        extra = self.random() * faults.jitter_ms if faults.jitter_ms else 0.0
        return (faults.latency_ms + extra) / 1000.0

    def over_rate_limit(self) -> int | None:
        """Count this request; the Retry-After seconds when it is over the limit, else None."""
        limit = self._faults.rate_limit
        if limit is None:
            return None
        now = self.config.clock()
        window = math.floor(now)
        with self.lock:
            if window != self._window:
                self._window, self._window_count = window, 0
            self._window_count += 1
            if self._window_count <= limit:
                return None
        return max(1, math.ceil(window + 1 - now))

    def token_expired(self, token: str) -> bool:
        """Whether a valid token is past its TTL, counted from its first use."""
        ttl = self._faults.token_ttl
        if ttl is None:
            return False
        now = self.config.clock()
        with self.lock:
            first = self._token_first_use.setdefault(token, now)
        return now - first >= ttl

    def record_answer(self, status: int) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[status] += 1
            self._since_summary[status] += 1
        if not self.config.quiet:
            self.log_summary()

    def log_summary(self, force: bool = False) -> None:
        """Log the counts since the last summary, at most every few seconds (always if forced)."""
        now = self.config.clock()
        with self.lock:
            if not self._since_summary:
                return
            if not force and now - self._summary_at < SUMMARY_EVERY_SECONDS:
                return
            counts, self._since_summary = self._since_summary, Counter()
            elapsed, self._summary_at = now - self._summary_at, now
        total = sum(counts.values())
        by_status = ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
        logger.info("%d requests in %.1f s (%s); %d players updated so far",
                    total, elapsed, by_status, len(self.stored))


# ------------------------------------------------------------------------------------ app


def _load_registry(config: MockConfig) -> frozenset[str]:
    if config.registry is not None:
        return frozenset(config.registry)
    if config.players_path is None:
        raise ConfigError("no players: give a players file (--players)")
    macs, report = read_players(config.players_path)
    if not macs:
        raise ConfigError(f"players file {config.players_path}: no players in it "
                          f"({report.invalid_count} rows are not MAC addresses)")
    if report.invalid_count:
        first = report.invalid[0] if report.invalid else ""
        logger.warning("players file %s: %d rows skipped (first: %s)",
                       config.players_path, report.invalid_count, first)
    return frozenset(macs)


def create_app(config: MockConfig | None = None) -> Flask:
    """Build the mock API app; ConfigError lists every problem with its files."""
    config = config if config is not None else MockConfig()
    problems: list[str] = []
    registry: frozenset[str] = frozenset()
    catalogue: dict[str, CannedResponse] = {}
    keys: KeysFile | None = None
    try:
        registry = _load_registry(config)
    except ConfigError as exc:
        problems += exc.problems
    try:
        keys = KeysFile(config.keys_path)
    except ConfigError as exc:
        problems += exc.problems
    try:
        catalogue = load_catalogue(config.responses_path)
    except ConfigError as exc:
        problems += exc.problems
    if problems or keys is None:
        raise ConfigError(problems)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    state = MockState(config, catalogue, registry, keys)
    app.extensions[EXTENSION_KEY] = state

    def answer(name: str, mac: str | None = None, message: str | None = None,
               headers: Mapping[str, str] | None = None) -> Response:
        return catalogue[name].render(mac=mac, message=message, headers=headers)

    def preamble(mac: str) -> Response | None:
        """Latency, x-mock-response and the rate limit: the checks every profile request gets."""
        delay = state.delay_seconds()
        if delay > 0:
            config.sleep(delay)
        wanted = request.headers.get(MOCK_RESPONSE_HEADER)
        if wanted is not None:
            entry = catalogue.get(wanted.strip())
            if entry is None:
                return answer("bad_request", message=f"{MOCK_RESPONSE_HEADER} names no "
                                                     f"catalogue entry: {wanted!r}")
            return entry.render(mac=mac)
        retry_after = state.over_rate_limit()
        if retry_after is not None:
            return answer("rate_limited", mac, headers={"Retry-After": str(retry_after)})
        return None

    def authorized() -> bool:
        expected = keys.current()
        given_id = request.headers.get("x-client-id", "")
        given_token = request.headers.get("x-authentication-token", "")
        # Both comparisons always run, in constant time: the answer's timing must not tell
        # which half was wrong, nor how much of it.
        id_ok = hmac.compare_digest(given_id.encode("utf-8"), expected.client_id.encode("utf-8"))
        token_ok = hmac.compare_digest(given_token.encode("utf-8"),
                                       expected.token.encode("utf-8"))
        if not (id_ok & token_ok):
            return False
        return not state.token_expired(expected.token)

    @app.put("/profiles/clientId:<mac>")
    def put_profile(mac: str) -> Response:
        with state.lock:
            state.received[mac] += 1
        early = preamble(mac)
        if early is not None:
            return early
        if state.faults.error_rate and state.random() < state.faults.error_rate:
            return answer("server_error", mac)
        if not authorized():
            return answer("unauthorized", mac)
        if request.mimetype != "application/json":
            return answer("unsupported_media_type", mac)
        data = request.get_data()  # over MAX_CONTENT_LENGTH: 413 via the error handler
        try:
            document = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return answer("bad_request", mac)
        # The registry holds canonical MACs only, so any other spelling is not found either.
        if mac not in registry:
            return answer("not_found", mac)
        detail = validation_detail(document)
        if detail is None and profile_problems(document):
            detail = '"value" is not a valid profile'  # unreachable while both agree
        if detail is not None:
            return answer("conflict", mac, message=detail)
        profile = document["profile"]
        with state.lock:
            state.stored[mac] = profile
        return _json_response({"profile": profile})

    @app.get("/profiles/clientId:<mac>")
    def get_profile(mac: str) -> Response:
        early = preamble(mac)
        if early is not None:
            return early
        if not authorized():
            return answer("unauthorized", mac)
        if mac not in registry:
            return answer("not_found", mac)
        with state.lock:
            profile = state.stored.get(mac)
        return _json_response({"profile": profile})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """Requests werkzeug refuses (no route, wrong method, too large) answer JSON too."""
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        name = _HTTP_EXCEPTION_ENTRIES.get(exc.code or 500)
        if name is not None:
            return answer(name, headers=headers)
        document = {"statusCode": exc.code, "error": exc.name, "message": exc.name}
        response = _json_response(document, status=exc.code or 500)
        response.headers.update(headers)
        return response

    @app.after_request
    def count(response: Response) -> Response:
        state.record_answer(response.status_code)
        return response

    logger.debug("mock app built: %d players, faults: %s", len(registry), state.faults.describe())
    return app


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_response(document: Any, status: int = 200) -> Response:
    payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return Response(payload, status=_status_line(status), content_type="application/json")


def _status_line(status: int) -> str:
    # Werkzeug would write the reason in capitals ("404 NOT FOUND"); servers don't.
    return f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}"


def mock_state(app: Flask) -> MockState:
    """The live state of a mock app (``app.extensions["fleet_mock"]``)."""
    return app.extensions[EXTENSION_KEY]


# --------------------------------------------------------------------------------- server


class _QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without its per-request log line (the app logs summaries)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class _MockServer(ThreadedWSGIServer):
    """Werkzeug's threaded server, reporting a busy port as ConfigError instead of exiting."""

    # On Windows SO_REUSEADDR lets a second server bind a port already in use.
    allow_reuse_address = os.name != "nt"

    def server_bind(self) -> None:
        try:
            super().server_bind()
        except OSError as exc:
            host, port = self.server_address[:2]
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def server_activate(self) -> None:
        try:
            super().server_activate()
        except OSError as exc:
            raise ConfigError(f"cannot listen: {exc.strerror or exc}") from None


def make_mock_server(app: Flask, host: str = "127.0.0.1", port: int = 0) -> ThreadedWSGIServer:
    """Bind werkzeug's threaded WSGI server for ``app`` (not yet serving); ConfigError if busy.

    Call ``serve_forever()`` on the result; ``server.port`` is the bound port.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be a whole number from 0 to 65535, not {port!r}")
    try:
        return _MockServer(host, port, app, handler=_QuietRequestHandler)
    except (OSError, UnicodeError) as exc:  # e.g. a host name that does not resolve
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None


class RunningMock:
    """A mock served in a daemon thread; ``shutdown()`` (or leaving ``with``) stops it."""

    def __init__(self, app: Flask, server: ThreadedWSGIServer, thread: threading.Thread):
        self.app = app
        self.state = mock_state(app)
        self._server = server
        self._thread = thread
        self.host = server.server_address[0]
        self.port: int = server.port
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}"

    def shutdown(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        if not self.state.config.quiet:
            self.state.log_summary(force=True)

    def __enter__(self) -> RunningMock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"RunningMock({self.url})"


def start_mock_server(app: Flask, host: str = "127.0.0.1", port: int = 0) -> RunningMock:
    """Serve ``app`` in a daemon thread (port 0: a free one); returns at once, ready to answer."""
    server = make_mock_server(app, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"mock-api-{server.port}", daemon=True)
    thread.start()
    return RunningMock(app, server, thread)
