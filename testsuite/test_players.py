"""The players CSV: canonical MACs, every messy spelling, and every kind of bad row."""

import codecs
import unittest

from fleet_updater.errors import InputError
from fleet_updater.players import (
    ScanReport,
    canonical_mac,
    iter_rows,
    read_players,
    scan_players,
)

from .support import TempDirTestCase

CANONICAL = "a1:bb:cc:dd:ee:ff"


class CanonicalMacTest(unittest.TestCase):
    ACCEPTED = [
        ("a1:bb:cc:dd:ee:ff", CANONICAL),
        ("A1:BB:CC:DD:EE:FF", CANONICAL),
        ("a1-bb-cc-dd-ee-ff", CANONICAL),
        ("A1-BB-cc-DD-ee-FF", CANONICAL),
        ("a1bb.ccdd.eeff", CANONICAL),
        ("A1BB.CCDD.EEFF", CANONICAL),
        ("a1bbccddeeff", CANONICAL),
        ("A1BBCCDDEEFF", CANONICAL),
        ("  a1:bb:cc:dd:ee:ff  ", CANONICAL),
        ("\ta1:bb:cc:dd:ee:ff\u00a0", CANONICAL),  # tab, and a spreadsheet's no-break space
        ("00:00:00:00:00:00", "00:00:00:00:00:00"),
    ]
    REJECTED = [
        "", " ", "a1:bb:cc:dd:ee:ffXYZ", "../../etc/passwd", "a1:bb:cc:dd:ee",
        "a1:bb:cc:dd:ee:ff:00", "a1:bb-cc:dd:ee:ff", "a1:bb:cc:dd:ee:fg", "a1.bb.cc.dd.ee.ff",
        "a1bbccddeef", "a1bbccddeeff0", "a1bb.ccdd.eef", "a1:bb:cc:dd:ee:f", "g1bbccddeeff",
        "a1:bb:cc:dd:ee:ff/../x", "a1%3Abb%3Acc%3Add%3Aee%3Aff", "a1:bb:cc:dd:ee:ff\x00",
        "１１:bb:cc:dd:ee:ff", "mac_addresses", "a1 bb cc dd ee ff",
    ]

    def test_accepted_spellings_become_canonical(self):
        for text, expected in self.ACCEPTED:
            with self.subTest(text=text):
                self.assertEqual(canonical_mac(text), expected)

    def test_everything_else_is_rejected(self):
        for text in self.REJECTED:
            with self.subTest(text=text):
                self.assertIsNone(canonical_mac(text))


def scan(text: str):
    report = ScanReport()
    rows = list(iter_rows(text.splitlines(keepends=True), report))
    return rows, report


class RowsTest(unittest.TestCase):
    """Table-driven: CSV text in, (line, mac) rows and named problems out."""

    CASES = [
        # name, text, expected rows, expected problems as (line, value), header
        ("contract sample", "mac_addresses, id1, id2, id3\na1:bb:cc:dd:ee:ff, 1, 2, 3\n"
         "a2:bb:cc:dd:ee:ff, 1, 2, 3\n",
         [(2, CANONICAL), (3, "a2:bb:cc:dd:ee:ff")], [], "mac_addresses"),
        ("no header", "a1:bb:cc:dd:ee:ff,1\n", [(1, CANONICAL)], [], None),
        ("crlf and blank lines", "mac\r\n\r\na1:bb:cc:dd:ee:ff\r\n  \r\n,\r\n", [(3, CANONICAL)], [], "mac"),
        ("spaces after commas", "  a1:bb:cc:dd:ee:ff ,  x\n", [(1, CANONICAL)], [], None),
        ("upper, dash, cisco, bare", "A1:BB:CC:DD:EE:FF\na1-bb-cc-dd-ee-ff\na1bb.ccdd.eeff\nA1BBCCDDEEFF\n",
         [(1, CANONICAL), (2, CANONICAL), (3, CANONICAL), (4, CANONICAL)], [], None),
        ("trailing garbage", "a1:bb:cc:dd:ee:ffXYZ,1\n", [], [(1, "a1:bb:cc:dd:ee:ffXYZ")], None),
        ("path traversal", "../../etc/passwd\n", [], [(1, "../../etc/passwd")], None),
        ("empty first cell", "mac\n,1,2\n", [], [(2, "")], "mac"),
        ("ragged rows", "mac,a,b,c\na1:bb:cc:dd:ee:ff\na2:bb:cc:dd:ee:ff,1,2,3,4,5,6\n",
         [(2, CANONICAL), (3, "a2:bb:cc:dd:ee:ff")], [], "mac"),
        ("quoted cells", '"mac address","x"\n"a1:bb:cc:dd:ee:ff","a, b"\n" A2-BB-CC-DD-EE-FF ",""\n',
         [(2, CANONICAL), (3, "a2:bb:cc:dd:ee:ff")], [], "mac address"),
        ("quoted newline spans lines", 'a1:bb:cc:dd:ee:ff,"two\nlines"\na2:bb:cc:dd:ee:ff\n',
         [(2, CANONICAL), (3, "a2:bb:cc:dd:ee:ff")], [], None),
        ("empty file", "", [], [], None),
        ("header only", "mac_addresses, id1\n", [], [], "mac_addresses"),
        ("a later header-like row is a bad row", "a1:bb:cc:dd:ee:ff\nmac\n", [(1, CANONICAL)], [(2, "mac")], None),
        ("first row garbage is not a header", "zz:zz\na1:bb:cc:dd:ee:ff\n", [(2, CANONICAL)], [(1, "zz:zz")], None),
        ("truncated bare MAC is not a header", "deadbeef12\na1:bb:cc:dd:ee:ff\n", [(2, CANONICAL)],
         [(1, "deadbeef12")], None),
        ("all zeros and broadcast are not players", "00:00:00:00:00:00\nFF-FF-FF-FF-FF-FF\n", [],
         [(1, "00:00:00:00:00:00"), (2, "FF-FF-FF-FF-FF-FF")], None),
        ("duplicates are kept here", "a1:bb:cc:dd:ee:ff\nA1-BB-CC-DD-EE-FF\n", [(1, CANONICAL), (2, CANONICAL)], [], None),
    ]

    def test_cases(self):
        for name, text, rows, problems, header in self.CASES:
            with self.subTest(name):
                got_rows, report = scan(text)
                self.assertEqual(got_rows, rows)
                self.assertEqual([(p.line, p.value) for p in report.invalid], problems)
                self.assertEqual(report.invalid_count, len(problems))
                self.assertEqual(report.header, header)

    def test_problem_names_line_value_and_reason(self):
        _, report = scan("mac\n../../etc/passwd,1\n")
        self.assertEqual(str(report.invalid[0]), "line 2: '../../etc/passwd': not a MAC address")

    def test_long_and_control_values_are_shown_safely(self):
        _, report = scan("x" * 100 + "\x1b[31m\n" + "\x1b[2Jboom\n")
        text = "\n".join(str(p) for p in report.invalid)
        self.assertNotIn("\x1b", text)
        self.assertIn("...", text)

    def test_problems_are_counted_past_the_kept_limit(self):
        report = ScanReport(keep_at_most=5)
        list(iter_rows(["mac\n"] + [f"bad{i}\n" for i in range(20)], report))
        self.assertEqual(report.invalid_count, 20)
        self.assertEqual(len(report.invalid), 5)


class FileTest(TempDirTestCase):
    def test_utf8_bom_crlf_and_duplicates(self):
        path = self.write("p.csv", codecs.BOM_UTF8 + b"mac_addresses, id1\r\nA1-BB-CC-DD-EE-FF, 1\r\n"
                          b"a1:bb:cc:dd:ee:ff, 2\r\n\r\na2bb.ccdd.eeff,3\r\n")
        macs, report = read_players(path)
        self.assertEqual(macs, [CANONICAL, "a2:bb:cc:dd:ee:ff"])
        self.assertEqual(report.header, "mac_addresses")
        self.assertEqual([(d.line, d.mac) for d in report.duplicates], [(3, CANONICAL)])
        self.assertEqual(report.duplicate_count, 1)

    def test_utf16_from_a_spreadsheet(self):
        path = self.write("p.csv", "mac\r\na1:bb:cc:dd:ee:ff\r\n".encode("utf-16"))
        self.assertEqual(read_players(path)[0], [CANONICAL])

    def test_old_mac_line_ends(self):
        path = self.write("p.csv", b"mac\ra1:bb:cc:dd:ee:ff\ra2:bb:cc:dd:ee:ff\r")
        macs, report = read_players(path)
        self.assertEqual(macs, [CANONICAL, "a2:bb:cc:dd:ee:ff"])

    def test_latin1_bytes_are_a_bad_row_not_a_crash(self):
        path = self.write("p.csv", b"mac\n\xe9t\xe9\na1:bb:cc:dd:ee:ff\n")
        macs, report = read_players(path)
        self.assertEqual(macs, [CANONICAL])
        self.assertEqual(report.invalid_count, 1)

    def test_nul_byte_is_a_bad_row(self):
        path = self.write("p.csv", b"a1:bb:cc:dd:ee:ff\nab\x00cd\na2:bb:cc:dd:ee:ff\n")
        macs, report = read_players(path)
        self.assertIn(CANONICAL, macs)
        self.assertGreaterEqual(report.invalid_count, 1)

    def test_missing_file_and_directory(self):
        with self.assertRaisesRegex(InputError, r"players file .*nope\.csv: not found"):
            list(scan_players(self.tmp / "nope.csv"))
        with self.assertRaisesRegex(InputError, "is a directory"):
            list(scan_players(self.tmp))

    def test_empty_and_header_only_files(self):
        for text in ("", "mac_addresses, id1, id2\n", "\n\n\r\n"):
            with self.subTest(text=text):
                macs, report = read_players(self.write("p.csv", text))
                self.assertEqual(macs, [])
                self.assertEqual(report.invalid_count, 0)

    def test_sample_players_file_is_clean(self):
        from .support import ROOT
        macs, report = read_players(ROOT / "players.csv")
        self.assertGreaterEqual(len(macs), 24)
        self.assertEqual(report.invalid_count, 0)
        self.assertTrue(all(canonical_mac(m) == m for m in macs))


if __name__ == "__main__":
    unittest.main()
