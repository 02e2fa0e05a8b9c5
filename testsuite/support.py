"""Shared test helpers: a scripted stdlib HTTP server, temp files, fake clocks."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import unittest
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "test-client"
TOKEN = "tok-SECRET-5f2a9c0d7e"
SAMPLE_PROFILE = {
    "profile": {
        "applications": [
            {"applicationId": "music_app", "version": "v1.4.10"},
            {"applicationId": "diagnostic_app", "version": "v1.2.6"},
            {"applicationId": "settings_app", "version": "v1.1.5"},
        ]
    }
}


@dataclass
class Reply:
    """What the scripted server does with one request."""

    status: int = 200
    body: bytes | str | dict | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # close the connection without answering

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict):
            return json.dumps(self.body).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), self.headers.get("Content-Type", "text/html")
        return (self.body or b""), self.headers.get("Content-Type", "application/json")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes
    peer: tuple = ()


class ScriptedServer:
    """A small HTTP/1.1 server on 127.0.0.1:0 whose answers a test scripts.

    ``script(seen, n)`` returns a Reply for the n-th request (0-based) it receives; the
    default follows the API contract for the credentials CLIENT_ID/TOKEN.
    """

    def __init__(self, script: Callable[[Seen, int], Reply] | None = None):
        self.script = script or contract_script()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, dict(self.headers), body, self.client_address)
                with outer.lock:
                    index = len(outer.seen)
                    outer.seen.append(seen)
                reply = outer.script(seen, index)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.close_connection = True
                    try:
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    except OSError:
                        pass
                    self.connection.close()
                    return
                payload, ctype = reply.encoded()
                self.send_response(reply.status)
                headers = {"Content-Type": ctype, **reply.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_PUT = do_GET = do_POST = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the default, 5, drops a burst of connects

            def handle_error(self, request, client_address):
                pass  # a client that gave up (timeout tests) is expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def contract_script(client_id: str = CLIENT_ID, token: str = TOKEN,
                    known: set[str] | None = None) -> Callable[[Seen, int], Reply]:
    """Answers as API.md says: 401 bad credentials, 404 unknown, 200 echoing the profile."""

    def script(seen: Seen, index: int) -> Reply:
        if seen.headers.get("x-client-id") != client_id or \
                seen.headers.get("x-authentication-token") != token:
            return Reply(401, {"statusCode": 401, "error": "Unauthorized",
                               "message": "invalid clientId or token supplied"})
        mac = seen.path.rsplit("clientId:", 1)[-1]
        if known is not None and mac not in known:
            return Reply(404, {"statusCode": 404, "error": "Not Found",
                               "message": f"profile of client {mac} does not exist"})
        return Reply(200, json.loads(seen.body))

    return script


class TempDirTestCase(unittest.TestCase):
    """A test case with its own temporary directory, removed afterwards."""

    def setUp(self) -> None:
        super().setUp()
        self._tmp = tempfile.TemporaryDirectory(prefix="fleet-test-")
        self.tmp = Path(self._tmp.name)
        self.addCleanup(self._tmp.cleanup)

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", newline="")
        return path

    def write_keys(self, client_id: str = CLIENT_ID, token: str = TOKEN, name: str = "keys.conf",
                   extra: str = "") -> Path:
        return self.write(name, f"CLIENT_ID={client_id}\nAUTH_TOKEN={token}\n{extra}")

    def write_profile(self, document: dict | None = None, name: str = "profile.json") -> Path:
        return self.write(name, json.dumps(document or SAMPLE_PROFILE, indent=2))


class FakeSleeper:
    """Records the waits asked for instead of waiting."""

    def __init__(self):
        self.calls: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.calls.append(seconds)


def clean_env(**extra: str) -> dict:
    """The process environment without credentials, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLIENT_ID", "AUTH_TOKEN", "API_URL")}
    env.update(extra)
    return env
