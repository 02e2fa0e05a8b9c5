"""The players CSV: rows in, canonical MAC addresses and named problems out.

Pure parsing, no I/O beyond opening the file. The MAC is always the first column, whatever
the header says, or with no header at all. Files come from people and spreadsheets, so this
accepts a UTF-8 (or UTF-16) byte-order mark, CRLF or CR line ends, spaces after commas,
blank lines, upper case, ``-`` separators, Cisco's dotted form and bare hex; everything is
written in canonical form (``a1:bb:cc:dd:ee:ff``) before use. Anything else in the first
cell is a problem, named with its line number and its value, and is never sent anywhere.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from .errors import InputError
from .files import named_errors

_COLON_OR_DASH = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}")
_CISCO_DOTTED = re.compile(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}")
_BARE_HEX = re.compile(r"[0-9a-f]{12}")
# A header cell starts with a letter and holds words, never ':' (which would make it a
# mangled MAC rather than a column name), and has a letter that is not a hex digit (so a
# truncated bare MAC such as "deadbeef12" is a bad row, not a header).
_HEADER_CELL = re.compile(r"(?=.*[g-zG-Z])[^\W\d_][\w .#()/-]*")
# Syntactically MACs, but never a player's: reported as bad rows.
_NOT_A_DEVICE = {"00:00:00:00:00:00": "all zeros", "ff:ff:ff:ff:ff:ff": "the broadcast address"}

DISPLAY_WIDTH = 40


def canonical_mac(text: str) -> str | None:
    """Return ``text`` as a canonical MAC (``a1:bb:cc:dd:ee:ff``), or None if it is not one.

    Accepted: six hex pairs joined by ``:`` or ``-`` (one separator throughout), Cisco's
    ``a1bb.ccdd.eeff`` and twelve bare hex digits; any case; surrounding white space.
    """
    value = text.strip().lower()
    size = len(value)
    if size == 17:
        if _COLON_OR_DASH.fullmatch(value):
            return value.replace("-", ":")
        return None
    if size == 14:
        if not _CISCO_DOTTED.fullmatch(value):
            return None
        digits = value.replace(".", "")
    elif size == 12:
        if not _BARE_HEX.fullmatch(value):
            return None
        digits = value
    else:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def mac_number(mac: str) -> int:
    """The 48-bit number of a canonical MAC: a compact key for sets of millions."""
    return int(mac.replace(":", ""), 16)


def display_value(value: str, width: int = DISPLAY_WIDTH) -> str:
    """A cell shown safely in one line: quoted, control characters escaped, truncated."""
    if len(value) > width:
        return repr(value[:width]) + "..."
    return repr(value)


@dataclass(frozen=True)
class RowProblem:
    """A row that is not used: its line number, the offending first cell and why."""

    line: int
    value: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {display_value(self.value)}: {self.reason}"


@dataclass(frozen=True)
class Duplicate:
    """A player listed again; it is updated once. ``first_line`` is where it first appears."""

    line: int
    mac: str
    first_line: int | None = None

    def __str__(self) -> str:
        first = f" (first at line {self.first_line})" if self.first_line else ""
        return f"line {self.line}: {self.mac} is listed again{first}; it is updated once"


@dataclass
class ScanReport:
    """What one pass over a players file found, besides the players themselves."""

    path: str = ""
    rows: int = 0
    blank: int = 0
    players: int = 0
    header: str | None = None
    invalid: list[RowProblem] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    invalid_count: int = 0
    duplicate_count: int = 0
    # Past this many, problems are counted but not kept: a garbage file of a million rows
    # must not hold a million records in memory.
    keep_at_most: int = 10_000

    def add_invalid(self, problem: RowProblem) -> None:
        self.invalid_count += 1
        if len(self.invalid) < self.keep_at_most:
            self.invalid.append(problem)

    def add_duplicate(self, duplicate: Duplicate) -> None:
        self.duplicate_count += 1
        if len(self.duplicates) < self.keep_at_most:
            self.duplicates.append(duplicate)


def _is_blank(row: list[str]) -> bool:
    return not row or all(not cell.strip() for cell in row)


def iter_rows(lines: Iterable[str], report: ScanReport) -> Iterator[tuple[int, str]]:
    """Yield ``(line, canonical_mac)`` for every usable row, duplicates included.

    Blank rows are skipped; a first non-blank row that reads like column names is taken as
    the header; every other row whose first cell is not a MAC goes to ``report.invalid``.
    """
    reader = csv.reader(lines, skipinitialspace=True)
    first_content_row = True
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rows += 1
            report.add_invalid(RowProblem(reader.line_num, "", f"unreadable row: {exc}"))
            continue
        report.rows += 1
        if _is_blank(row):
            report.blank += 1
            continue
        line = reader.line_num
        cell = row[0]
        mac = canonical_mac(cell)
        if mac is not None:
            first_content_row = False
            if mac in _NOT_A_DEVICE:
                report.add_invalid(RowProblem(line, cell, f"not a player's MAC address "
                                                          f"({_NOT_A_DEVICE[mac]})"))
                continue
            yield line, mac
            continue
        stripped = cell.strip()
        if first_content_row and _HEADER_CELL.fullmatch(stripped):
            report.header = stripped
            first_content_row = False
            continue
        first_content_row = False
        if not stripped:
            report.add_invalid(RowProblem(line, cell, "empty first cell (expected a MAC address)"))
        else:
            report.add_invalid(RowProblem(line, cell, "not a MAC address"))


def iter_unique(rows: Iterable[tuple[int, str]], report: ScanReport) -> Iterator[tuple[int, str]]:
    """Drop players already seen, recording each repeat in ``report.duplicates``."""
    seen: set[int] = set()
    for line, mac in rows:
        key = mac_number(mac)
        if key in seen:
            report.add_duplicate(Duplicate(line, mac))
            continue
        seen.add(key)
        report.players += 1
        yield line, mac


def _sniff_encoding(path: Path) -> str:
    with path.open("rb") as raw:
        start = raw.read(4)
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Excel's "Unicode text"; the codec reads the BOM itself.
    return "utf-8-sig"


@contextlib.contextmanager
def open_players(path: str | Path) -> Iterator[TextIO]:
    """Open a players CSV for streaming, or raise InputError naming the file and problem."""
    path = Path(path)
    with named_errors(path, "players file", InputError):
        encoding = _sniff_encoding(path)
        # newline="" lets csv see CR, LF and CRLF line ends itself; undecodable bytes
        # become U+FFFD so a stray Latin-1 cell is one bad row, not a crash.
        handle = path.open("r", encoding=encoding, errors="replace", newline="")
    with handle:
        yield handle


def scan_players(path: str | Path, report: ScanReport | None = None) -> Iterator[tuple[int, str]]:
    """Stream the unique players of a CSV file as ``(line, mac)``; problems go to ``report``."""
    report = report if report is not None else ScanReport()
    report.path = str(path)
    with open_players(path) as handle:
        try:
            yield from iter_unique(iter_rows(handle, report), report)
        except OSError as exc:
            raise InputError(f"players file {path}: read failed: {exc.strerror or exc}") from None


def read_players(path: str | Path) -> tuple[list[str], ScanReport]:
    """The unique players of a file, in file order, with the scan report (small files)."""
    report = ScanReport()
    macs = [mac for _, mac in scan_players(path, report)]
    return macs, report
