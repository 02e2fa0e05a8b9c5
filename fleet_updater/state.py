"""What the updater has done, in SQLite: one row per player, one row per cycle.

The state is what lets the daemon act as a controller: a cycle sends only to players whose
last applied profile differs from the target. It is written in batched transactions in
WAL mode, so a crash (even SIGKILL) loses at most the last uncommitted batch, and a player
recorded as updated is never sent the same profile again. The schema is versioned with
``PRAGMA user_version`` so later releases can migrate it.

The players listed in the CSV for the current cycle go to a temporary table, so planning
a fleet of a million rows is a join in SQLite rather than a million objects in Python.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StateError
from .results import Outcome, PlayerResult

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS players (
    mac                  TEXT PRIMARY KEY,      -- canonical form, a1:bb:cc:dd:ee:ff
    applied_digest       TEXT,                  -- profile last applied successfully
    last_outcome         TEXT,
    last_status          INTEGER,
    last_message         TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since        REAL,
    first_seen           REAL NOT NULL,
    last_attempt         REAL,
    last_success         REAL,
    removed_at           REAL                   -- no longer in the CSV (kept, not forgotten)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cycles (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    started        REAL NOT NULL,
    ended          REAL,
    status         TEXT NOT NULL,               -- running, done, stopped, rejected, crashed
    exit_status    INTEGER,
    profile_digest TEXT,
    csv_digest     TEXT,
    listed         INTEGER,
    invalid        INTEGER,
    duplicates     INTEGER,
    counts         TEXT                         -- JSON: {outcome: count}
);
CREATE TABLE IF NOT EXISTS profiles (
    digest     TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    first_used REAL NOT NULL
);
"""

_TEMP_SCHEMA = """
CREATE TEMP TABLE IF NOT EXISTS listed (
    line INTEGER PRIMARY KEY,
    mac  TEXT NOT NULL UNIQUE
);
CREATE TEMP TABLE IF NOT EXISTS results (
    mac      TEXT PRIMARY KEY,
    outcome  TEXT NOT NULL,
    status   INTEGER,
    message  TEXT,
    attempts INTEGER,
    duration REAL
) WITHOUT ROWID;
"""

_RECORD_PLAYER = """
INSERT INTO players (mac, applied_digest, last_outcome, last_status, last_message,
                     consecutive_failures, failing_since, first_seen, last_attempt, last_success)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)  -- mac, applied digest, outcome, status, message,
                                      -- failed (0/1), failing since, first seen, attempt, success
ON CONFLICT(mac) DO UPDATE SET
    applied_digest       = COALESCE(excluded.applied_digest, players.applied_digest),
    last_outcome         = excluded.last_outcome,
    last_status          = excluded.last_status,
    last_message         = excluded.last_message,
    consecutive_failures = CASE WHEN excluded.consecutive_failures = 0 THEN 0
                                ELSE players.consecutive_failures + 1 END,
    failing_since        = CASE WHEN excluded.consecutive_failures = 0 THEN NULL
                                ELSE COALESCE(players.failing_since, excluded.failing_since) END,
    last_attempt         = excluded.last_attempt,
    last_success         = COALESCE(excluded.last_success, players.last_success)
"""

_RECORD_RESULT = """
INSERT OR REPLACE INTO temp.results (mac, outcome, status, message, attempts, duration)
VALUES (?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True)
class ReportRow:
    """One line of a cycle's per-player report."""

    line: int | None
    mac: str
    outcome: str
    status: int | None
    message: str
    attempts: int
    duration: float


class StateStore:
    """The SQLite state file. One connection, used from one thread (the cycle's)."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None, readonly: bool):
        self.db = connection
        self.path = path
        self.readonly = readonly
        self.db.executescript(_TEMP_SCHEMA)

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False) -> "StateStore":
        """Open (or create) the state file; read-only opens of a missing file are empty."""
        path = Path(path)
        try:
            if readonly:
                if not path.exists():
                    connection = sqlite3.connect(":memory:")
                    _create(connection)
                    return cls(connection, None, True)
                connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            else:
                if path.parent and not path.parent.exists():
                    raise StateError(f"state file {path}: folder {path.parent} does not exist")
                connection = sqlite3.connect(str(path))
                connection.execute("PRAGMA journal_mode=WAL")
                # NORMAL is safe against crashes of the process in WAL mode; only a power
                # cut may lose the last commits, never corrupt the file.
                connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=5000")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state file {path}: made by a newer release (schema {version}, "
                    f"this release knows {SCHEMA_VERSION}); upgrade, or use another --state"
                )
            if not readonly:
                _migrate(connection, version)
            elif version == 0:
                connection.close()
                connection = sqlite3.connect(":memory:")
                _create(connection)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {path}: cannot be used: {exc} "
                             f"(move it away to start over)") from None
        return cls(connection, path, readonly)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the listing of this cycle ----------------------------------------------------

    def load_listing(self, rows: Iterable[tuple[int, str]]) -> int:
        """Replace the temporary listing with ``rows`` of unique (line, mac); return the count."""
        with self.db:
            self.db.execute("DELETE FROM temp.listed")
            self.db.execute("DELETE FROM temp.results")
            self.db.executemany("INSERT INTO temp.listed (line, mac) VALUES (?, ?)", rows)
        return self.db.execute("SELECT COUNT(*) FROM temp.listed").fetchone()[0]

    def first_lines(self, macs: Iterable[str]) -> dict[str, int]:
        found = {}
        for mac in set(macs):
            row = self.db.execute("SELECT line FROM temp.listed WHERE mac = ?", (mac,)).fetchone()
            if row:
                found[mac] = row[0]
        return found

    def sync_roster(self, now: float) -> dict[str, int]:
        """Add new players, bring back returning ones, mark the unlisted ones removed."""
        with self.db:
            new = self.db.execute(
                "INSERT OR IGNORE INTO players (mac, first_seen) SELECT mac, ? FROM temp.listed",
                (now,)).rowcount
            returned = self.db.execute(
                "UPDATE players SET removed_at = NULL WHERE removed_at IS NOT NULL "
                "AND mac IN (SELECT mac FROM temp.listed)").rowcount
            removed = self.db.execute(
                "UPDATE players SET removed_at = ? WHERE removed_at IS NULL "
                "AND mac NOT IN (SELECT mac FROM temp.listed)", (now,)).rowcount
        return {"new": max(new, 0), "returned": max(returned, 0), "removed": max(removed, 0)}

    def count_at_target(self, digest: str) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM temp.listed l JOIN players p ON p.mac = l.mac "
            "WHERE p.applied_digest = ?", (digest,)).fetchone()[0]

    def iter_pending(self, digest: str, force: bool = False,
                     batch: int = 2000) -> Iterator[tuple[int, str]]:
        """The listed players not at ``digest`` (all of them with ``force``), in file order.

        Read page by page (keyset on the line number), so nothing large is held and the
        results written meanwhile never disturb an open cursor.
        """
        last = 0
        if force:
            query = "SELECT line, mac FROM temp.listed WHERE line > ? ORDER BY line LIMIT ?"
        else:
            query = ("SELECT l.line, l.mac FROM temp.listed l LEFT JOIN players p ON p.mac = l.mac "
                     "WHERE l.line > ? AND p.applied_digest IS NOT ? ORDER BY l.line LIMIT ?")
        while True:
            params = (last, batch) if force else (last, digest, batch)
            rows = self.db.execute(query, params).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    # -- results ----------------------------------------------------------------------

    def record(self, results: Iterable[PlayerResult], digest: str, now: float,
               keep_for_report: bool = True) -> None:
        """Write a batch of results in one transaction (and keep them for the cycle's report)."""
        player_rows = []
        result_rows = []
        updated = Outcome.UPDATED
        for result in results:
            outcome = result.outcome
            if keep_for_report:
                result_rows.append((result.mac, outcome.value, result.status, result.message,
                                    result.attempts, round(result.duration, 4)))
            if outcome is Outcome.SKIPPED or outcome is Outcome.UP_TO_DATE:
                continue  # nothing was attempted
            if outcome is updated:
                player_rows.append((result.mac, digest, outcome.value, result.status,
                                    result.message, 0, None, now, now, now))
            else:
                player_rows.append((result.mac, None, outcome.value, result.status,
                                    result.message, 1, now, now, now, None))
        if self.readonly:
            return
        with self.db:
            if player_rows:
                self.db.executemany(_RECORD_PLAYER, player_rows)
            if result_rows:
                self.db.executemany(_RECORD_RESULT, result_rows)

    # -- cycles -----------------------------------------------------------------------

    def remember_profile(self, digest: str, body: bytes, now: float) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO profiles (digest, body, first_used) VALUES (?, ?, ?)",
                            (digest, body.decode("utf-8"), now))

    def begin_cycle(self, now: float, profile_digest: str, csv_digest: str,
                    listed: int, invalid: int, duplicates: int) -> int:
        with self.db:
            # Only one updater holds the state (see lock.py): a cycle still "running" is
            # one whose process died.
            self.db.execute("UPDATE cycles SET status = 'crashed' WHERE status = 'running'")
            cursor = self.db.execute(
                "INSERT INTO cycles (started, status, profile_digest, csv_digest, listed, invalid, "
                "duplicates) VALUES (?, 'running', ?, ?, ?, ?, ?)",
                (now, profile_digest, csv_digest, listed, invalid, duplicates))
        return int(cursor.lastrowid)

    def last_cycle_status(self) -> str | None:
        """How the last finished cycle ended (done, stopped, rejected, crashed), if any."""
        row = self.db.execute("SELECT status FROM cycles WHERE status != 'running' "
                              "ORDER BY id DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def end_cycle(self, cycle_id: int, now: float, status: str, exit_status: int,
                  counts: dict[str, int]) -> None:
        with self.db:
            self.db.execute(
                "UPDATE cycles SET ended = ?, status = ?, exit_status = ?, counts = ? WHERE id = ?",
                (now, status, exit_status, json.dumps(counts, sort_keys=True), cycle_id))

    # -- reading back -----------------------------------------------------------------

    def report_rows(self, digest: str) -> Iterator[ReportRow]:
        """This cycle's per-player results, in file order, for every listed player."""
        cursor = self.db.execute(
            "SELECT l.line, l.mac, r.outcome, r.status, r.message, r.attempts, r.duration, "
            "p.applied_digest "
            "FROM temp.listed l LEFT JOIN temp.results r ON r.mac = l.mac "
            "LEFT JOIN players p ON p.mac = l.mac ORDER BY l.line")
        for line, mac, outcome, status, message, attempts, duration, applied in cursor:
            if outcome is None:
                outcome = Outcome.UP_TO_DATE.value if applied == digest else Outcome.SKIPPED.value
            yield ReportRow(line, mac, outcome, status, message or "", attempts or 0, duration or 0.0)

    def cycles(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, started, ended, status, exit_status, profile_digest, listed, invalid, "
            "duplicates, counts FROM cycles ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        keys = ("id", "started", "ended", "status", "exit_status", "profile_digest", "listed",
                "invalid", "duplicates", "counts")
        out = []
        for row in rows:
            item = dict(zip(keys, row))
            item["counts"] = json.loads(item["counts"]) if item["counts"] else {}
            out.append(item)
        return out

    def profile_body(self, digest: str) -> Any:
        row = self.db.execute("SELECT body FROM profiles WHERE digest = ?", (digest,)).fetchone()
        return json.loads(row[0]) if row else None

    def fleet(self, target: str | None, limit: int = 20) -> dict[str, Any]:
        """Counts of players by state against ``target``, and the worst failing ones."""
        def count(where: str, *params: Any) -> int:
            return self.db.execute(f"SELECT COUNT(*) FROM players WHERE {where}", params).fetchone()[0]

        active = "removed_at IS NULL"
        off_target = f"{active} AND applied_digest IS NOT ?"
        counts = {
            "at_target": count(f"{active} AND applied_digest = ?", target),
            "unknown": count(f"{off_target} AND last_outcome = 'unknown'", target),
            "failing": count(f"{off_target} AND consecutive_failures > 0 "
                             f"AND last_outcome != 'unknown'", target),
            "pending": count(f"{off_target} AND consecutive_failures = 0", target),
            "removed": count("removed_at IS NOT NULL"),
        }
        columns = ("mac", "last_outcome", "last_status", "last_message", "consecutive_failures",
                   "failing_since", "last_attempt")
        failing = [dict(zip(columns, row)) for row in self.db.execute(
            f"SELECT {', '.join(columns)} FROM players WHERE {off_target} "
            f"AND consecutive_failures > 0 ORDER BY failing_since, mac LIMIT ?", (target, limit))]
        removed = [dict(zip(("mac", "removed_at"), row)) for row in self.db.execute(
            "SELECT mac, removed_at FROM players WHERE removed_at IS NOT NULL "
            "ORDER BY removed_at DESC, mac LIMIT ?", (limit,))]
        return {"counts": counts, "failing": failing, "removed": removed}


def _create(connection: sqlite3.Connection) -> None:
    connection.executescript(_SCHEMA_V1)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate(connection: sqlite3.Connection, version: int) -> None:
    """Bring an older schema up to date, one version at a time."""
    if version == 0:
        with connection:
            _create(connection)
    # Future: `if version == 1: ...; version = 2` and so on.
