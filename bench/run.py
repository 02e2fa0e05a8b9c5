"""Benchmarks of the updater, side by side with the ideal and with plain clients.

    python bench/run.py                    every benchmark (about three minutes)
    python bench/run.py --quick            smaller samples (about one minute)
    python bench/run.py --json out.json    also write the table as JSON, to compare commits

Everything runs on this machine: a lean loopback API server (bench/apiserver.py, in its
own process, with the latency asked for) and the updater as an operator runs it,
``python main.py --once``, in a fresh temporary folder. Machines here are shared and
noisy, so the figures that matter are ratios measured in the same run. Standard library
and the project's requirements only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENT_ID = "demo-client"
TOKEN = "demo-token-0123456789abcdef"
HEADERS = {"Content-Type": "application/json", "x-client-id": CLIENT_ID,
           "x-authentication-token": TOKEN}


@dataclass
class Row:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: no target, for information
    details: dict = field(default_factory=dict)


def macs(count: int, prefix: int = 0xC0) -> list[str]:
    return [f"{prefix:02x}:{(i >> 32) & 0xff:02x}:{(i >> 24) & 0xff:02x}:{(i >> 16) & 0xff:02x}:"
            f"{(i >> 8) & 0xff:02x}:{i & 0xff:02x}" for i in range(count)]


def write_csv(path: Path, players: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("mac_addresses, id1\n")
        for i, mac in enumerate(players):
            handle.write(f"{mac}, {i}\n")
    return path


class ApiServer:
    """bench/apiserver.py in a child process."""

    def __init__(self, latency_ms: float):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "apiserver.py"), "--port", "0",
             "--latency-ms", str(latency_ms), "--client-id", CLIENT_ID, "--token", TOKEN],
            stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the benchmark server did not start: {line!r}")
        self.url = line.split()[-1]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/_stats", timeout=10) as answer:
            return json.loads(answer.read())

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


class Workspace:
    """A fresh folder with the files an operator would have."""

    def __init__(self, base: Path, name: str):
        self.path = base / name
        self.path.mkdir()
        shutil.copy(ROOT / "profile.json", self.path / "profile.json")
        (self.path / "keys.conf").write_text(f"CLIENT_ID={CLIENT_ID}\nAUTH_TOKEN={TOKEN}\n",
                                             encoding="utf-8")


def child_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("CLIENT_ID", "AUTH_TOKEN", "API_URL")}


@dataclass
class ProcessRun:
    wall: float
    cpu: float | None  # user + system seconds of the child, where the OS tells
    max_rss_mb: float | None
    returncode: int
    stderr: str


def run_process(args: list[str], cwd: Path, timeout: float = 600) -> ProcessRun:
    """Run a child and measure its wall time, CPU time and peak memory (POSIX: wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, encoding="utf-8")
    stderr_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(process.stderr.read()), daemon=True)
    reader.start()
    cpu = rss = None
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        returncode = os.waitstatus_to_exitcode(status)
        process.returncode = returncode
        cpu = usage.ru_utime + usage.ru_stime
        # ru_maxrss is in KiB on Linux, in bytes on macOS.
        rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    else:
        returncode = process.wait(timeout=timeout)
        wall = time.perf_counter() - started
    reader.join(timeout=10)
    return ProcessRun(wall, cpu, rss, returncode, "".join(stderr_chunks))


def updater(workspace: Workspace, *args: str) -> ProcessRun:
    result = run_process([sys.executable, str(ROOT / "main.py"), "-q", *args], workspace.path)
    if result.returncode not in (0,):
        raise RuntimeError(f"main.py {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def interpreter_startup() -> float:
    runs = [run_process([sys.executable, "-c", "pass"], ROOT).wall for _ in range(5)]
    return statistics.median(runs)


def fresh_state(workspace: Workspace) -> str:
    for path in workspace.path.glob("state*"):
        path.unlink()
    return str(workspace.path / "state.sqlite3")


# -- the benchmarks ---------------------------------------------------------------------


def bench_server(server: ApiServer, slow: ApiServer) -> Row:
    """How much the server costs per request, and how close to exact its latency is."""
    import http.client

    connection = http.client.HTTPConnection(slow.url.split("//")[1].split(":")[0],
                                            int(slow.url.rsplit(":", 1)[1]))
    body = (ROOT / "profile.json").read_bytes()
    times = []
    for _ in range(10):
        started = time.perf_counter()
        connection.request("PUT", "/profiles/clientId:c0:00:00:00:00:01", body, HEADERS)
        connection.getresponse().read()
        times.append(time.perf_counter() - started)
    connection.close()
    latency = statistics.median(times) * 1000
    before = server.stats()
    # Drive the fast server with a bare sequential loop to get its CPU per request.
    import requests

    session = requests.Session()
    count = 2000
    for mac in macs(count, 0xD0):
        session.put(f"{server.url}/profiles/clientId:{mac}", data=body, headers=HEADERS, timeout=10)
    after = server.stats()
    per_request = (after["cpu_seconds"] - before["cpu_seconds"]) / count
    capacity = 1 / per_request if per_request > 0 else float("inf")
    return Row("server: CPU per request, capacity on one core; latency of a 100 ms answer",
               f"{per_request * 1e6:.0f} us, {capacity:,.0f}/s; {latency:.1f} ms", "not the bottleneck",
               None, {"server_cpu_us_per_request": per_request * 1e6,
                      "server_capacity_per_second": capacity, "latency_100ms_measured_ms": latency})


def bench_latency_bound(base: Path, server: ApiServer, startup: float, repeats: int) -> Row:
    workspace = Workspace(base, "latency")
    players = write_csv(workspace.path / "players.csv", macs(1000))
    walls = []
    for _ in range(repeats):
        state = fresh_state(workspace)
        run = updater(workspace, "--once", "--players", str(players), "--workers", "50",
                      "--api-url", server.url, "--state", state)
        walls.append(run.wall - startup)
    wall = statistics.median(walls)
    ideal = 1000 * 0.100 / 50
    ratio = wall / ideal
    return Row("1. latency-bound: 1,000 players, 100 ms, --workers 50 (wall less start-up / 2.0 s ideal)",
               f"{wall:.2f} s = {ratio:.3f}x", "<= 1.15x", ratio <= 1.15,
               {"wall_seconds": wall, "ideal_seconds": ideal, "ratio": ratio, "runs": walls})


def bench_cpu_bound(base: Path, server: ApiServer, startup: float, count: int) -> tuple[Row, Row]:
    workspace = Workspace(base, "cpu")
    players_list = macs(count, 0xC1)
    players = write_csv(workspace.path / "players.csv", players_list)
    run = updater(workspace, "--once", "--players", str(players), "--api-url", server.url,
                  "--state", fresh_state(workspace))
    baseline = updater(workspace, "--dry-run", "--players", str(players), "--api-url", server.url,
                       "--state", fresh_state(workspace))
    ours = count / (run.wall - startup)
    bare_run = run_process([sys.executable, str(ROOT / "bench" / "bare_loop.py"), server.url,
                            str(players), str(ROOT / "profile.json")], workspace.path)
    if bare_run.returncode != 0:
        raise RuntimeError(f"bench/bare_loop.py failed:\n{bare_run.stderr}")
    bare = count / (bare_run.wall - startup)
    speedup = ours / bare
    rate_row = Row(f"2. CPU-bound: {count:,} players, no latency, default workers: players/s vs a "
                   "bare sequential requests.Session loop (both processes, less start-up)",
                   f"{ours:,.0f}/s vs {bare:,.0f}/s = {speedup:.2f}x", ">= 1.2x", speedup >= 1.2,
                   {"updater_per_second": ours, "bare_loop_per_second": bare, "ratio": speedup})
    if run.cpu is None:
        return rate_row, Row("2. CPU per player", "n/a (no wait4 here)", "< 1 ms", None)
    total = run.cpu / count * 1000
    net = (run.cpu - baseline.cpu) / count * 1000
    cpu_row = Row("2. updater CPU per player (all of the process / net of a --dry-run of the same CSV)",
                  f"{total:.2f} ms / {net:.2f} ms", "< 1 ms", total < 1.0,
                  {"cpu_ms_per_player": total, "net_cpu_ms_per_player": net,
                   "process_cpu_seconds": run.cpu, "dry_run_cpu_seconds": baseline.cpu})
    return rate_row, cpu_row


def bench_plain_client(base: Path, server: ApiServer, startup: float, ours_wall: float,
                       sample: int) -> Row:
    """One requests.put per player, no session, no concurrency: the first versions' way."""
    workspace = Workspace(base, "plain")
    players = write_csv(workspace.path / "players.csv", macs(sample, 0xC2))
    run = run_process([sys.executable, str(ROOT / "bench" / "bare_loop.py"), server.url,
                       str(players), str(ROOT / "profile.json"), "--naive"], workspace.path)
    if run.returncode != 0:
        raise RuntimeError(f"bench/bare_loop.py --naive failed:\n{run.stderr}")
    elapsed = run.wall - startup
    plain = elapsed * 1000 / sample  # the 1,000-player fleet
    ratio = plain / ours_wall
    extrapolated = "" if sample == 1000 else f" (timed on {sample}, scaled to 1,000)"
    return Row("3. plain client: one requests.put per player, sequential, same 1,000 players at 100 ms",
               f"{plain:.1f} s = {ratio:.0f}x our time{extrapolated}", "for information", None,
               {"plain_seconds": plain, "ours_seconds": ours_wall, "ratio": ratio, "sample": sample})


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of another process (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def bench_idle_daemon(base: Path, server: ApiServer, seconds: float) -> Row:
    workspace = Workspace(base, "idle")
    players = write_csv(workspace.path / "players.csv", macs(1000, 0xC3))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--players", str(players), "--api-url", server.url,
         "--state", fresh_state(workspace), "--interval", "15"],
        cwd=workspace.path, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, encoding="utf-8")
    try:
        deadline = time.monotonic() + 120
        for line in process.stderr:
            if "cycle 1 done" in line or time.monotonic() > deadline:
                break
        threading.Thread(target=process.stderr.read, daemon=True).start()
        start = process_cpu_seconds(process.pid)
        if start is None:
            return Row("4. idle daemon: CPU seconds per minute between cycles", "n/a (no /proc here)",
                       "< 0.1 s/min", None)
        time.sleep(seconds)
        used = process_cpu_seconds(process.pid) - start
    finally:
        process.terminate()
        process.wait(timeout=30)
    per_minute = used * 60 / seconds
    return Row(f"4. idle daemon: CPU seconds per minute between cycles (over {seconds:.0f} s)",
               f"{per_minute:.4f} s/min", "< 0.1 s/min", per_minute < 0.1,
               {"cpu_seconds_per_minute": per_minute, "window_seconds": seconds})


def populate_state(state: Path, players: list[str]) -> None:
    """A state where every player already holds the target profile (as after a cycle)."""
    from fleet_updater.profile import load_profile
    from fleet_updater.results import Outcome, PlayerResult
    from fleet_updater.state import StateStore

    profile = load_profile(ROOT / "profile.json")
    with StateStore.open(state) as store:
        store.load_listing((i + 2, mac) for i, mac in enumerate(players))
        store.sync_roster(time.time())
        store.record((PlayerResult(mac, Outcome.UPDATED, 200) for mac in players),
                     profile.digest, time.time())


def bench_noop_cycle(base: Path, server: ApiServer, count: int) -> Row:
    workspace = Workspace(base, "noop")
    players_list = macs(count, 0xC4)
    players = write_csv(workspace.path / "players.csv", players_list)
    state = Path(fresh_state(workspace))
    populate_state(state, players_list)
    before = server.stats()["requests"]
    run = updater(workspace, "--once", "--players", str(players), "--api-url", server.url,
                  "--state", str(state))
    sent = server.stats()["requests"] - before
    ok = run.wall < 3.0 and sent == 0
    return Row(f"5. no-op cycle: {count:,} players all at the target (whole process)",
               f"{run.wall:.2f} s, {sent} requests", "< 3 s, 0 requests", ok,
               {"wall_seconds": run.wall, "requests_sent": sent, "players": count})


def bench_big_csv_memory(base: Path, count: int) -> Row:
    workspace = Workspace(base, "memory")
    players = write_csv(workspace.path / "players.csv", macs(count, 0xC5))
    run = updater(workspace, "--dry-run", "--players", str(players), "--state", fresh_state(workspace))
    if run.max_rss_mb is None:
        return Row(f"5. peak memory: parse and plan a {count:,}-row CSV", "n/a (no wait4 here)",
                   "< 150 MB", None)
    return Row(f"5. peak memory: parse and plan a {count:,}-row CSV (--dry-run, whole process)",
               f"{run.max_rss_mb:.0f} MB in {run.wall:.1f} s", "< 150 MB", run.max_rss_mb < 150,
               {"peak_rss_mb": run.max_rss_mb, "wall_seconds": run.wall, "rows": count})


def bench_scaling(base: Path, server: ApiServer, startup: float, sizes: list[int]) -> Row:
    """Cycle time against fleet size. Linear means a constant marginal time per player:
    the fixed cost (start-up, imports, set-up) is paid once and does not grow."""
    workspace = Workspace(base, "scaling")
    walls = {}
    for size in sizes:
        players = write_csv(workspace.path / f"players-{size}.csv", macs(size, 0xC6))
        run = updater(workspace, "--once", "--players", str(players), "--workers", "50",
                      "--api-url", server.url, "--state", fresh_state(workspace))
        walls[size] = run.wall - startup
    ideal = {size: size * 0.020 / 50 for size in sizes}
    marginal = {f"{a}-{b}": (walls[b] - walls[a]) / (b - a) * 1e6 for a, b in zip(sizes, sizes[1:])}
    values = list(marginal.values())
    growth = values[-1] / values[0] if len(values) > 1 else 1.0
    text = ", ".join(f"{size:,}: {walls[size]:.2f} s ({walls[size] / ideal[size]:.2f}x ideal)"
                     for size in sizes)
    steps = ", ".join(f"{value:.0f}" for value in values)
    return Row("6. scaling at 20 ms, --workers 50: cycle time, and marginal us per player between sizes",
               f"{text}; marginal {steps} us/player", "linear (marginal within 1.3x)",
               0.77 <= growth <= 1.3,
               {"wall_seconds": walls, "ideal": ideal, "marginal_us_per_player": marginal,
                "marginal_growth": growth})


def machine() -> str:
    return (f"{platform.system()} {platform.release()}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}")


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    print(f"{'benchmark':<{width}}  {'measured':<48}  {'target':<20}  verdict")
    for row in rows:
        verdict = {True: "met", False: "MISSED", None: "-"}[row.ok]
        print(f"{row.name:<{width}}  {row.measured:<48}  {row.target:<20}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="smaller samples: plain client on 100 players, 20 s idle window, "
                             "scaling to 10,000, 200,000-row memory test")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the latency-bound cycle; the median is reported (default 3)")
    args = parser.parse_args(argv)

    rows: list[Row] = []
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        base = Path(tmp)
        fast, slow, medium = ApiServer(0), ApiServer(100), ApiServer(20)
        try:
            startup = interpreter_startup()
            print(f"interpreter start-up (python -c pass, median of 5): {startup * 1000:.0f} ms",
                  flush=True)
            steps = [
                ("server", lambda: [bench_server(fast, slow)]),
                ("latency", lambda: [bench_latency_bound(base, slow, startup, args.repeats)]),
                ("cpu", lambda: list(bench_cpu_bound(base, fast, startup, 3000))),
                ("plain", lambda: [bench_plain_client(base, slow, startup, _wall(rows),
                                                      100 if args.quick else 1000)]),
                ("idle", lambda: [bench_idle_daemon(base, fast, 20 if args.quick else 60)]),
                ("noop", lambda: [bench_noop_cycle(base, fast, 100_000)]),
                ("memory", lambda: [bench_big_csv_memory(base, 200_000 if args.quick else 1_000_000)]),
                ("scaling", lambda: [bench_scaling(base, medium, startup,
                                                   [1000, 5_000, 10_000] if args.quick else [1000, 10_000, 50_000])]),
            ]
            for name, step in steps:
                print(f"running: {name} ...", flush=True)
                rows.extend(step())
        finally:
            for server in (fast, slow, medium):
                server.close()
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                         "rows": [asdict(r) for r in rows]}, indent=2), encoding="utf-8")
        print(f"\nwritten: {args.json}")
    return 0 if all(r.ok is not False for r in rows) else 1


def _wall(rows: list[Row]) -> float:
    for row in rows:
        if row.name.startswith("1."):
            return row.details["wall_seconds"]
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
