"""What the operator sees: the progress line, the cycle summary, report files, exit status.

Printing lives here, not in the work loop: the cycle hands over counts and results, and
this module turns them into log lines (one INFO summary, one WARNING per player or row
not updated) and files.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import itertools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from .errors import ConfigError
from .logs import LiveLine
from .players import display_value

if TYPE_CHECKING:  # pragma: no cover
    from .cycle import CycleReport
    from .state import ReportRow

log = logging.getLogger(__name__)

# Past this many, the console summary stops naming players and points at the full record.
NAMED_AT_MOST = 1000


class ExitStatus(enum.IntEnum):
    """Exit statuses of ``main.py`` (documented in --help and the README)."""

    OK = 0               # every player listed is at the target profile
    INCOMPLETE = 1       # the cycle ran; some rows or players were not updated
    SETUP = 2            # nothing sent: the set-up is wrong (files, options, credentials)
    CREDENTIALS = 3      # stopped: the API rejects the credentials, even reloaded
    INTERRUPTED = 130    # Ctrl-C


def format_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """done/total, rate and ETA: redrawn in place on a terminal, else logged every ~10 s."""

    def __init__(self, total: int, line: LiveLine | None, *, label: str = "players",
                 clock: Callable[[], float] = time.monotonic, log_every: float = 10.0,
                 redraw_every: float = 0.1):
        self.total = total
        self.line = line
        self.label = label
        self.clock = clock
        self.log_every = log_every
        self.redraw_every = redraw_every
        self.done = 0
        self.started = clock()
        self._last_draw = float("-inf")
        self._last_log = self.started

    def text(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        percent = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        eta_text = format_duration(eta) if eta is not None else "?"
        return (f"{self.done}/{self.total} {self.label} ({percent:.0f}%), "
                f"{rate:.0f}/s, ETA {eta_text}")

    def advance(self, count: int = 1) -> None:
        self.done += count
        self.tick()

    def tick(self) -> None:
        now = self.clock()
        if self.line is not None:
            if now - self._last_draw >= self.redraw_every:
                self._last_draw = now
                self.line.show(self.text())
        elif now - self._last_log >= self.log_every:
            self._last_log = now
            log.info("progress: %s", self.text())

    def finish(self) -> None:
        if self.line is not None:
            self.line.finish()


def summary_line(report: "CycleReport") -> str:
    """The one INFO line that sums up a cycle."""
    parts = [f"{report.counts.get(name, 0)} {label}" for name, label in (
        ("updated", "updated"), ("up_to_date", "up to date"), ("unknown", "unknown"),
        ("rejected", "rejected"), ("mismatch", "mismatched"), ("unauthorized", "unauthorized"),
        ("failed", "failed"), ("skipped", "skipped")) if report.counts.get(name) or name == "updated"]
    rows = []
    if report.scan.invalid_count:
        rows.append(f"{report.scan.invalid_count} invalid row{'s' if report.scan.invalid_count != 1 else ''}")
    if report.scan.duplicate_count:
        rows.append(f"{report.scan.duplicate_count} duplicate{'s' if report.scan.duplicate_count != 1 else ''}")
    head = "dry run" if report.dry_run else f"cycle {report.cycle_id}"
    stopped = f" (stopped: {report.stopped})" if report.stopped else ""
    return (f"{head} done in {format_duration(report.duration)}{stopped}: "
            f"{report.listed} players listed: {', '.join(parts)}"
            + (f"; {', '.join(rows)}" if rows else ""))


def log_problems(report: "CycleReport") -> None:
    """Name every row that was not used, and every duplicate (a warning, not a failure)."""
    scan = report.scan
    for problem in scan.invalid[:NAMED_AT_MOST]:
        log.warning("%s: invalid row, not sent: %s", scan.path, problem)
    _more(scan.invalid_count - min(len(scan.invalid), NAMED_AT_MOST), "invalid rows")
    for duplicate in scan.duplicates[:NAMED_AT_MOST]:
        log.warning("%s: %s", scan.path, duplicate)
    _more(scan.duplicate_count - min(len(scan.duplicates), NAMED_AT_MOST), "duplicates")


def log_summary(report: "CycleReport") -> None:
    """After a cycle: every player not updated, one WARNING line each, then the summary."""
    log_problems(report)
    for result in report.failures[:NAMED_AT_MOST]:
        log.warning("%s: %s", result.mac, result.reason)
    _more(report.failures_total - min(len(report.failures), NAMED_AT_MOST), "players not updated")
    skipped = report.counts.get("skipped", 0)
    if skipped:
        log.warning("%d player%s not attempted because the cycle stopped (%s); "
                    "they are sent next cycle", skipped, "s" if skipped != 1 else "",
                    report.stopped or "stopped")
    level = logging.INFO if report.exit_status == ExitStatus.OK else logging.WARNING
    log.log(level, "%s", summary_line(report))


def _more(count: int, what: str) -> None:
    if count > 0:
        log.warning("... and %d more %s (all of them: --report PATH, or `python main.py status`)",
                    count, what)


def log_plan(report: "CycleReport") -> None:
    """What a dry run would do."""
    log_problems(report)
    profile = report.profile
    log.info("profile %s: %s", profile.digest, profile.describe())
    log.info("would send the profile to %d of %d players listed (%d already at the target%s)",
             report.planned, report.listed, report.up_to_date,
             ", --force sends to all" if report.forced else "")
    if report.scan.header:
        log.info("%s: header row %s (skipped)", report.scan.path, display_value(report.scan.header))


def write_report(path: Path, rows: Iterable["ReportRow"], report: "CycleReport") -> int:
    """Write the cycle's per-player results, CSV or JSON by the extension; return the row count."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(f"report {path}: the name must end in .csv or .json")
    fields = ("line", "mac", "outcome", "status", "message", "attempts", "duration")
    records: list[dict] = []
    for problem in report.scan.invalid:
        records.append({"line": problem.line, "mac": "", "outcome": "invalid_row", "status": None,
                        "message": f"{problem.reason}: {display_value(problem.value)}",
                        "attempts": 0, "duration": 0.0})
    for duplicate in report.scan.duplicates:
        records.append({"line": duplicate.line, "mac": duplicate.mac, "outcome": "duplicate",
                        "status": None, "message": str(duplicate), "attempts": 0, "duration": 0.0})
    tmp = path.with_name(path.name + ".part")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            if suffix == ".csv":
                writer = csv.writer(handle)
                writer.writerow(fields)
                for record in records:
                    writer.writerow([record[f] if record[f] is not None else "" for f in fields])
                    count += 1
                for row in rows:
                    writer.writerow([row.line, row.mac, row.outcome,
                                     "" if row.status is None else row.status,
                                     row.message, row.attempts, f"{row.duration:.3f}"])
                    count += 1
            else:
                handle.write('{"cycle": %s, "profile_digest": %s, "players": [\n' % (
                    json.dumps(report.cycle_id), json.dumps(report.profile.digest)))
                first = True
                for record in itertools.chain(records, (dataclasses.asdict(row) for row in rows)):
                    handle.write(("" if first else ",\n") + json.dumps(record, ensure_ascii=False))
                    first = False
                    count += 1
                handle.write("\n]}\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"report {path}: cannot be written: {exc.strerror or exc}") from None
    return count


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def render_status(data: dict) -> str:
    """The fleet report of ``main.py status``, as text."""
    counts = data["counts"]
    lines = [f"state: {data['state']}"]
    if data.get("target"):
        apps = ""
        profile = data.get("profile") or {}
        try:
            apps = ", ".join(f"{a['applicationId']} {a['version']}"
                             for a in profile["profile"]["applications"])
        except (KeyError, TypeError):
            pass
        lines.append(f"target profile: {data['target']}" + (f" ({apps})" if apps else ""))
    else:
        lines.append("target profile: none yet (no cycle has run)")
    lines.append("")
    lines.append("players")
    for key, label in (("at_target", "at the target"), ("pending", "pending"),
                       ("failing", "failing"), ("unknown", "unknown to the API (404)"),
                       ("removed", "removed from the CSV")):
        lines.append(f"  {label:<26}{counts.get(key, 0):>9}")
    if data["failing"]:
        lines.append("")
        lines.append("failing or unknown players (oldest failure first)")
        for player in data["failing"]:
            status = player["last_status"] if player["last_status"] is not None else "no answer"
            lines.append(f"  {player['mac']}  {player['last_outcome']} ({status}) since "
                         f"{_when(player['failing_since'])}, {player['consecutive_failures']} "
                         f"failed cycle(s): {player['last_message'] or '-'}")
    if data["removed"]:
        lines.append("")
        lines.append("removed (no longer in the CSV; kept in the state)")
        for player in data["removed"]:
            lines.append(f"  {player['mac']}  since {_when(player['removed_at'])}")
    lines.append("")
    lines.append("last cycles")
    if not data["cycles"]:
        lines.append("  none")
    for cycle in data["cycles"]:
        duration = (format_duration(cycle["ended"] - cycle["started"])
                    if cycle["ended"] else "-")
        shown = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(cycle["counts"].items()))
        exit_text = "" if cycle["exit_status"] is None else f", exit {cycle['exit_status']}"
        lines.append(f"  #{cycle['id']:<5} {_when(cycle['started'])}  {duration:>10}  "
                     f"{cycle['status']}{exit_text}: {cycle['listed'] or 0} listed"
                     + (f", {shown}" if shown else "")
                     + (f", {cycle['invalid']} invalid rows" if cycle["invalid"] else ""))
    return "\n".join(lines)
