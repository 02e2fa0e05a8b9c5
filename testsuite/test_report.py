"""What the operator sees: the progress line, the summary line, exit statuses."""

import io
import logging
import unittest
from collections import Counter

from fleet_updater import logs
from fleet_updater.cycle import CycleReport
from fleet_updater.logs import LiveLine
from fleet_updater.players import RowProblem, ScanReport
from fleet_updater.profile import profile_from_document
from fleet_updater.report import ExitStatus, Progress, format_duration, summary_line
from fleet_updater.results import Outcome, PlayerResult

from .support import SAMPLE_PROFILE

PROFILE = profile_from_document(SAMPLE_PROFILE)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class ProgressTest(unittest.TestCase):
    def test_terminal_line_is_redrawn_in_place_with_rate_and_eta(self):
        stream, clock = io.StringIO(), FakeClock()
        progress = Progress(1000, LiveLine(stream), clock=clock)
        clock.now += 2.0
        progress.advance(400)
        self.assertIn("\r400/1000 players (40%), 200/s, ETA 3.00 s", stream.getvalue())
        clock.now += 0.01
        progress.advance(1)  # within 0.1 s of the last redraw: not drawn again
        self.assertNotIn("401/1000", stream.getvalue())
        progress.finish()
        self.assertTrue(stream.getvalue().endswith("\r"))

    def test_without_a_terminal_a_log_line_every_10_s(self):
        clock = FakeClock()
        progress = Progress(100, None, clock=clock)
        with self.assertLogs("fleet_updater.report", level="INFO") as captured:
            progress.advance(10)  # too soon: nothing
            clock.now += 10.5
            progress.advance(10)
            clock.now += 1
            progress.advance(10)  # too soon again
            logging.getLogger("fleet_updater.report").info("end")
        lines = [line for line in captured.output if "progress" in line]
        self.assertEqual(len(lines), 1)
        self.assertIn("20/100 players (20%)", lines[0])

    def test_log_lines_clear_and_redraw_the_progress_line(self):
        stream = io.StringIO()
        line = LiveLine(stream)
        handler = logs.ConsoleHandler(stream, line)
        handler.setFormatter(logging.Formatter("%(message)s"))
        line.show("5/10 players")
        handler.emit(logging.LogRecord("x", logging.WARNING, "", 0, "a warning", (), None))
        text = stream.getvalue()
        self.assertIn("\r" + " " * len("5/10 players") + "\ra warning\n\r5/10 players", text)


class SummaryTest(unittest.TestCase):
    def report(self, **counts):
        report = CycleReport(profile=PROFILE, scan=ScanReport(), listed=sum(counts.values()))
        report.cycle_id = 4
        report.counts = Counter(counts)
        report.duration = 1.5
        return report

    def test_exit_status_derives_from_the_counts(self):
        self.assertEqual(self.report(updated=3, up_to_date=2).exit_status, ExitStatus.OK)
        self.assertEqual(self.report(updated=3, unknown=1).exit_status, ExitStatus.INCOMPLETE)
        self.assertEqual(self.report(updated=3, skipped=1).exit_status, ExitStatus.INCOMPLETE)
        rejected = self.report(updated=1, unauthorized=1)
        rejected.credentials_rejected = True
        self.assertEqual(rejected.exit_status, ExitStatus.CREDENTIALS)
        bad_row = self.report(updated=3)
        bad_row.scan.add_invalid(RowProblem(3, "x", "not a MAC address"))
        self.assertEqual(bad_row.exit_status, ExitStatus.INCOMPLETE)

    def test_summary_line(self):
        report = self.report(updated=3, up_to_date=2, failed=1)
        report.scan.duplicate_count = 2
        self.assertEqual(summary_line(report), "cycle 4 done in 1.50 s: 6 players listed: 3 updated, "
                                               "2 up to date, 1 failed; 2 duplicates")

    def test_reason_of_a_result(self):
        result = PlayerResult("a1:bb:cc:dd:ee:ff", Outcome.FAILED, 503, "busy", attempts=4)
        self.assertEqual(result.reason, "failed (HTTP 503 after 4 attempts): busy")
        self.assertEqual(PlayerResult("m", Outcome.FAILED, None, "timed out", 1).reason,
                         "failed (no answer): timed out")

    def test_durations(self):
        self.assertEqual(format_duration(2.5), "2.50 s")
        self.assertEqual(format_duration(75), "75 s")
        self.assertEqual(format_duration(3725), "1 h 02 min")


if __name__ == "__main__":
    unittest.main()
