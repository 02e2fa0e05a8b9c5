"""Measure which WSGI server should serve the mock API under the updater's load.

    python bench/mock_servers.py                      # every server installed, all scenarios
    python bench/mock_servers.py --servers werkzeug --requests 1000

For each server (werkzeug's threaded server always; waitress and cheroot when installed;
they are not project dependencies) and each scenario, a child process serves the mock app
and this process sends PUTs from a pool of threads, each with its own ``requests.Session``
(keep-alive where the server allows it). It prints a Markdown table: requests per second,
latency percentiles, answers other than 200, client-side errors (refused, reset, timed out)
and how many answers closed their connection (``Connection: close``: no keep-alive).

Scenarios: 3,000 PUTs at 32 and at 64 in flight with no latency, and at 50 in flight with
``--latency-ms 100``. Client and server run in separate processes so they do not share a GIL.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

CLIENT_ID = "bench-client"
TOKEN = "bench-token-0123456789abcdef"
PLAYERS = 1000
SERVER_THREADS = 64  # waitress and cheroot: enough workers for the updater's maximum
SCENARIOS = ((32, 0.0), (64, 0.0), (50, 100.0))  # (in flight, latency ms)


def player_macs(count: int = PLAYERS) -> list[str]:
    return [":".join(f"{(0xa0_00_00_00_00_00 + n) >> shift & 0xff:02x}"
                     for shift in range(40, -8, -8)) for n in range(count)]


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------------- server (child)


def serve(server_name: str, latency_ms: float, keys_path: Path) -> None:
    import logging

    from fleet_updater.mock import MockConfig, create_app, make_mock_server

    logging.basicConfig(level=logging.ERROR)
    app = create_app(MockConfig(registry=player_macs(), keys_path=keys_path,
                                latency_ms=latency_ms, quiet=True))
    if server_name == "werkzeug":
        server = make_mock_server(app, "127.0.0.1", 0)
        print(server.port, flush=True)
        server.serve_forever()
    elif server_name == "waitress":
        import waitress

        server = waitress.create_server(app, host="127.0.0.1", port=0, threads=SERVER_THREADS)
        print(server.effective_port, flush=True)
        server.run()
    elif server_name == "cheroot":
        from cheroot import wsgi

        server = wsgi.Server(("127.0.0.1", 0), app, numthreads=SERVER_THREADS,
                             request_queue_size=128)
        server.prepare()
        print(server.bind_addr[1], flush=True)
        server.serve()
    else:
        raise SystemExit(f"unknown server {server_name}")


# ------------------------------------------------------------------------- client (parent)


@dataclass
class Result:
    server: str
    in_flight: int
    latency_ms: float
    requests: int
    seconds: float
    statuses: Counter
    errors: Counter
    closed: int  # answers that carried "Connection: close" (no keep-alive)
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def row(self) -> str:
        not_ok = sum(n for status, n in self.statuses.items() if status != 200)
        errors = ", ".join(f"{n} {kind}" for kind, n in self.errors.items()) or "0"
        return (f"| {self.server} | {self.in_flight} | {self.latency_ms:g} | {self.requests} "
                f"| {self.per_second:,.0f} | {self.p50_ms:.0f} / {self.p99_ms:.0f} "
                f"| {not_ok} | {errors} | {self.closed} |")


def load(server: str, url: str, total: int, in_flight: int, latency_ms: float) -> Result:
    macs = player_macs()
    body = json.dumps({"profile": {"applications": [
        {"applicationId": "music_app", "version": "v1.4.10"}]}})
    headers = {"Content-Type": "application/json", "x-client-id": CLIENT_ID,
               "x-authentication-token": TOKEN}
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()
    statuses: Counter = Counter()
    errors: Counter = Counter()
    durations: list[float] = []
    closed = 0

    def put(index: int) -> None:
        nonlocal closed
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                sessions.append(session)
        started = time.perf_counter()
        try:
            response = session.put(f"{url}/profiles/clientId:{macs[index % len(macs)]}",
                                   data=body, headers=headers, timeout=30)
            outcome, kind = response.status_code, None
            if response.headers.get("Connection", "").lower() == "close":
                with lock:
                    closed += 1
        except requests.RequestException as exc:
            outcome, kind = None, type(exc).__name__
        elapsed = time.perf_counter() - started
        with lock:
            durations.append(elapsed)
            if kind is None:
                statuses[outcome] += 1
            else:
                errors[kind] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(put, range(total)))
    seconds = time.perf_counter() - started
    for session in sessions:
        session.close()
    durations.sort()
    return Result(server, in_flight, latency_ms, total, seconds, statuses, errors, closed,
                  statistics.median(durations) * 1000,
                  durations[min(len(durations) - 1, int(len(durations) * 0.99))] * 1000)


def run(server: str, in_flight: int, latency_ms: float, total: int, keys_path: Path) -> Result:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", server, "--latency-ms", str(latency_ms),
         "--keys", str(keys_path)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        port = int(child.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        load(server, url, 50, 10, latency_ms)  # warm up
        return load(server, url, total, in_flight, latency_ms)
    finally:
        child.terminate()
        child.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="werkzeug,waitress,cheroot",
                        help="comma-separated: werkzeug, waitress, cheroot")
    parser.add_argument("--requests", type=int, default=3000, help="PUTs per scenario")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--latency-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.latency_ms, args.keys)
        return 0
    servers = []
    for name in args.servers.split(","):
        if name == "werkzeug" or installed(name):
            servers.append(name)
        else:
            print(f"skipping {name}: not installed", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        keys_path = Path(tmp) / "keys.conf"
        keys_path.write_text(f"CLIENT_ID={CLIENT_ID}\nAUTH_TOKEN={TOKEN}\n", encoding="utf-8")
        print("| server | in flight | latency ms | PUTs | requests/s | p50 / p99 ms "
              "| non-200 | client errors | answers with Connection: close |")
        print("|---|---|---|---|---|---|---|---|---|")
        for in_flight, latency_ms in SCENARIOS:
            for server in servers:
                result = run(server, in_flight, latency_ms, args.requests, keys_path)
                print(result.row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
