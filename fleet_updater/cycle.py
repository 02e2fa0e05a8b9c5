"""One update cycle: read the inputs afresh, plan against the state, send, report.

A cycle reads the CSV and the profile, loads the listed players into the state's
temporary table, and sends the profile only to the players not already at it. Requests
run on a thread pool with at most ``workers`` in flight; results come back to this thread,
which writes them to the state in batches and feeds the progress line.

A 401 makes the client read the credentials again; if they are unchanged the cycle stops
sending at once, so a rejected fleet costs at most one wave (``workers`` requests). After
a cycle that ended that way, the next one sends a single request first (a canary) and
waits for its answer, so a daemon with a dead token costs one request per cycle.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .client import ProfileClient, Sleeper, stop_aware_sleeper
from .config import CredentialManager, Settings
from .errors import ConfigError, InputError
from .files import named_errors
from .logs import live_line
from .players import ScanReport, open_players, scan_players
from .profile import Profile, load_profile
from .report import ExitStatus, Progress, log_plan, log_summary, write_report
from .results import Outcome, PlayerResult
from .state import StateStore

log = logging.getLogger(__name__)

FLUSH_EVERY_RESULTS = 500
FLUSH_EVERY_SECONDS = 0.5
# Results held in memory for the console summary; the full record is in the state.
FAILURES_KEPT = 1000
# How long the main thread waits for a result before looking at the stop flag again:
# short, so Ctrl-C is handled promptly on Windows, where lock waits are not interrupted.
POLL_SECONDS = 0.25


@dataclass
class CycleReport:
    """What a cycle did; counts and exit status derive from the per-player results."""

    profile: Profile
    scan: ScanReport
    dry_run: bool = False
    forced: bool = False
    cycle_id: int | None = None
    listed: int = 0
    up_to_date: int = 0
    planned: int = 0
    sent: int = 0
    counts: Counter = field(default_factory=Counter)
    failures: list[PlayerResult] = field(default_factory=list)
    failures_total: int = 0
    stopped: str | None = None  # why it ended early: "stop requested", "credentials rejected", ...
    credentials_rejected: bool = False
    roster: dict = field(default_factory=dict)
    duration: float = 0.0
    report_path: Path | None = None

    @property
    def exit_status(self) -> ExitStatus:
        if self.credentials_rejected:
            return ExitStatus.CREDENTIALS
        if self.scan.invalid_count:
            return ExitStatus.INCOMPLETE
        if self.dry_run:
            return ExitStatus.OK
        at_target = self.counts.get(Outcome.UPDATED.value, 0) + self.counts.get(Outcome.UP_TO_DATE.value, 0)
        return ExitStatus.OK if at_target == self.listed else ExitStatus.INCOMPLETE


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with named_errors(path, "players file", InputError), path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


class _ResultSink:
    """Collects results on the cycle's thread: counts, failures, batched state writes."""

    def __init__(self, report: CycleReport, state: StateStore, digest: str,
                 wall: Callable[[], float], clock: Callable[[], float], progress: Progress,
                 keep_for_report: bool):
        self.report = report
        self.state = state
        self.digest = digest
        self.wall = wall
        self.clock = clock
        self.progress = progress
        self.keep_for_report = keep_for_report
        self.pending: list[PlayerResult] = []
        self.last_flush = clock()

    def add(self, result: PlayerResult) -> None:
        report = self.report
        report.counts[result.outcome.value] += 1
        if not result.outcome.at_target and result.outcome is not Outcome.SKIPPED:
            report.failures_total += 1
            if len(report.failures) < FAILURES_KEPT:
                report.failures.append(result)
        self.pending.append(result)
        self.progress.advance()
        if len(self.pending) >= FLUSH_EVERY_RESULTS:
            self.flush()

    def maybe_flush(self) -> None:
        if self.pending and self.clock() - self.last_flush >= FLUSH_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self.state.record(batch, self.digest, self.wall(), self.keep_for_report)
        self.last_flush = self.clock()


def run_cycle(settings: Settings, state: StateStore, *, stop: threading.Event | None = None,
              sleeper: Sleeper | None = None, wall: Callable[[], float] = time.time,
              clock: Callable[[], float] = time.monotonic,
              client_factory: Callable[..., ProfileClient] = ProfileClient) -> CycleReport:
    """Run one cycle (or plan it, with ``settings.dry_run``) and return its report.

    Set-up problems raise ConfigError before anything is sent. ``stop`` ends the cycle
    early: nothing new is sent, requests in flight finish, the report says so.
    """
    stop = stop if stop is not None else threading.Event()
    started = clock()
    profile, credentials = _check_setup(settings)

    scan = ScanReport()
    listed = state.load_listing(scan_players(settings.players, scan))
    csv_digest = file_digest(settings.players)
    if scan.duplicates:
        first = state.first_lines(d.mac for d in scan.duplicates)
        scan.duplicates = [type(d)(d.line, d.mac, first.get(d.mac)) for d in scan.duplicates]
    if listed == 0:
        log.warning("%s: no players listed (%d rows read)", settings.players, scan.rows)

    report = CycleReport(profile=profile, scan=scan, dry_run=settings.dry_run,
                         forced=settings.force, listed=listed)
    report.up_to_date = 0 if settings.force else state.count_at_target(profile.digest)
    report.planned = listed - report.up_to_date

    if settings.dry_run:
        report.duration = clock() - started
        log_plan(report)
        return report

    now = wall()
    report.roster = state.sync_roster(now)
    state.remember_profile(profile.digest, profile.body, now)
    report.cycle_id = state.begin_cycle(now, profile.digest, csv_digest, listed,
                                        scan.invalid_count, scan.duplicate_count)
    log.info("cycle %d: %d players listed, %d to update, %d already at the target (profile %s)",
             report.cycle_id, listed, report.planned, report.up_to_date, profile.digest)
    if report.roster.get("removed"):
        log.info("cycle %d: %d players no longer listed are marked removed",
                 report.cycle_id, report.roster["removed"])

    progress = Progress(report.planned, live_line(), clock=clock)
    sink = _ResultSink(report, state, profile.digest, wall, clock, progress,
                       keep_for_report=settings.report is not None)
    client = client_factory(
        settings.api_url, credentials, timeout=settings.timeout, retries=settings.retries,
        backoff=settings.backoff, retry_after_cap=settings.retry_after_max,
        sleeper=sleeper or stop_aware_sleeper(stop),
        verify=str(settings.ca_bundle) if settings.ca_bundle else True,
        extra_headers=dict(settings.extra_headers), pool_size=settings.workers,
    )
    status = "done"
    try:
        canary = state.last_cycle_status() == "rejected"
        report.sent = _send_all(state.iter_pending(profile.digest, settings.force), client,
                                profile, settings.workers, stop, credentials, sink, canary)
    except BaseException:
        status = "interrupted"
        raise
    finally:
        client.close()
        sink.flush()
        progress.finish()
        report.counts[Outcome.UP_TO_DATE.value] = report.up_to_date
        not_sent = report.planned - report.sent
        if not_sent:
            report.counts[Outcome.SKIPPED.value] += not_sent
        if credentials.dead:
            report.credentials_rejected = True
            report.stopped = "credentials rejected"
            status = "rejected"
        elif stop.is_set() and report.counts.get(Outcome.SKIPPED.value):
            report.stopped = "stop requested"
            status = "stopped" if status == "done" else status
        elif report.stopped:  # the API was unreachable
            status = "unreachable" if status == "done" else status
        report.duration = clock() - started
        state.end_cycle(report.cycle_id, wall(), status, int(report.exit_status),
                        {k: v for k, v in report.counts.items() if v})
    if settings.report is not None:
        count = write_report(settings.report, state.report_rows(profile.digest), report)
        report.report_path = settings.report
        log.info("report: %d rows written to %s", count, settings.report)
    log_summary(report)
    return report


def _check_setup(settings: Settings) -> tuple[Profile, CredentialManager]:
    """Load the profile and credentials and check the CSV is there: every problem at once."""
    problems: list[str] = []
    profile = credentials = None
    try:
        profile = load_profile(settings.profile)
    except ConfigError as exc:
        problems += exc.problems
    source = settings.credential_source()
    try:
        credentials = CredentialManager(source, source.load())
    except ConfigError as exc:
        problems += exc.problems
    try:
        with open_players(settings.players):
            pass
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return profile, credentials


def _send_all(pending: Iterator[tuple[int, str]], client: ProfileClient, profile: Profile,
              workers: int, stop: threading.Event, credentials: CredentialManager,
              sink: _ResultSink, canary: bool = False) -> int:
    """Send to every pending player, at most ``workers`` in flight; return how many were sent.

    ``workers`` threads take players from a short job queue and put results on another;
    this thread keeps the job queue topped up and drains the results, so a worker that
    finishes goes straight to its next player. With ``canary``, only one job is queued
    until the first answer is in: a token that is still rejected then costs one request.
    """
    jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    results: queue.SimpleQueue[PlayerResult] = queue.SimpleQueue()

    halt = threading.Event()  # this cycle only: the API is unreachable

    def worker() -> None:
        go.wait()
        while True:
            mac = jobs.get()
            if mac is None:
                return
            if stop.is_set() or halt.is_set():
                results.put(PlayerResult(mac, Outcome.SKIPPED, None, "not sent: cycle stopped"))
                continue
            try:
                result = client.put_profile(mac, profile)
            except Exception as exc:  # a bug: one player fails, the batch goes on
                log.exception("unexpected error updating %s", mac)
                result = PlayerResult(mac, Outcome.FAILED, None, f"internal error: {exc!r}")
            results.put(result)

    sent = 0
    outstanding = 0  # queued or in flight
    # Players in a row with no HTTP answer at all (refused, reset, timed out, after every
    # retry) before the cycle gives up on an API that is down, instead of spending every
    # player's retries on it.
    silent = 0
    unreachable_after = max(2 * workers, 20)
    canary_answered = not canary
    exhausted = False
    stop_noted = False
    ahead = workers * 2  # enough queued that no worker waits for this thread
    # Every worker thread is started, and the first jobs queued, before any of them runs:
    # otherwise each start and each job would be a GIL hand-over fought against busy
    # workers (measured: the first wave took 120 ms to leave instead of a few).
    go = threading.Event()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="put")
    try:
        for _ in range(workers):
            executor.submit(worker)
        while True:
            limit = ahead if canary_answered else 1
            while (not exhausted and outstanding < limit and not stop.is_set()
                   and not halt.is_set() and not credentials.dead):
                try:
                    _, mac = next(pending)
                except StopIteration:
                    exhausted = True
                    break
                jobs.put(mac)
                outstanding += 1
                sent += 1
            go.set()
            if stop.is_set() and not stop_noted and not exhausted:
                stop_noted = True
                log.warning("stop requested: no new requests; waiting for the ones in flight")
            if outstanding == 0:
                break
            try:
                result = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                sink.maybe_flush()
                sink.progress.tick()
                continue
            while True:
                outstanding -= 1
                sink.add(result)
                canary_answered = True
                if result.status is None and result.outcome is Outcome.FAILED:
                    silent += 1
                    if silent >= unreachable_after and not halt.is_set():
                        halt.set()
                        sink.report.stopped = f"API unreachable ({result.message})"
                        log.error("the API at %s gave no answer to %d players in a row (%s): "
                                  "stopping this cycle", client.api_url, silent, result.message)
                elif result.status is not None:
                    silent = 0
                try:
                    result = results.get_nowait()
                except queue.Empty:
                    break
            sink.maybe_flush()
    except BaseException:
        # A second Ctrl-C: whatever is queued is skipped by the workers; keep what is done.
        stop.set()
        raise
    finally:
        go.set()
        for _ in range(workers):
            jobs.put(None)
        executor.shutdown(wait=True)
    return sent
