"""Whole cycles through main(): exit statuses, what the server received, state, reports."""

import contextlib
import csv
import io
import json
import os
import re
import sqlite3
import threading
import unittest
from unittest import mock

from fleet_updater import cli, logs

from .support import (
    SAMPLE_PROFILE,
    TOKEN,
    Reply,
    ScriptedServer,
    TempDirTestCase,
    clean_env,
    contract_script,
)

MACS = [f"a1:bb:cc:dd:ee:{i:02x}" for i in range(30)]


def put_paths(server):
    return [s.path.rsplit("clientId:", 1)[-1] for s in server.seen if s.method == "PUT"]


class CycleTestCase(TempDirTestCase):
    def setUp(self):
        super().setUp()
        self.write_keys()
        self.write_profile()
        self.write_players(MACS)
        env = mock.patch.dict(os.environ, clean_env(), clear=True)
        env.start()
        self.addCleanup(env.stop)
        self.addCleanup(logs.reset)

    def write_players(self, macs, extra=""):
        return self.write("players.csv", "mac_addresses, id1\r\n"
                          + "".join(f"{m}, {i}\r\n" for i, m in enumerate(macs)) + extra)

    def main(self, *argv, server=None):
        """Run main() in the temp dir; return (exit status, stdout, stderr)."""
        args = list(argv)
        if server is not None:
            args += ["--api-url", server.url]
        args += ["--backoff", "0", "--max-retry-after", "0"]
        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.tmp)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(args)
        finally:
            os.chdir(cwd)
        self.assertNotIn(TOKEN, out.getvalue() + err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())
        return code, out.getvalue(), err.getvalue()

    def db(self):
        connection = sqlite3.connect(self.tmp / "fleet-state.sqlite3")
        self.addCleanup(connection.close)
        return connection


class OnceTest(CycleTestCase):
    def test_clean_fleet_exits_0_and_every_player_received_the_profile_once(self):
        with ScriptedServer() as server:
            code, _, err = self.main("--once", server=server)
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(put_paths(server)), sorted(MACS))
        self.assertTrue(all(json.loads(s.body) == SAMPLE_PROFILE for s in server.seen))
        self.assertIn("30 updated", err)

    def test_messy_csv_bad_rows_named_duplicates_once_exit_1(self):
        self.write("players.csv", "\ufeffmac_addresses, id1\r\n"
                   "A1-BB-CC-DD-EE-00, 1\r\n"
                   "a1bb.ccdd.ee01,2\r\n"
                   "\r\n"
                   "a1:bb:cc:dd:ee:00, 3\r\n"
                   "a1:bb:cc:dd:ee:ffXYZ, 4\r\n"
                   "../../etc/passwd,5\r\n"
                   ", 6\r\n")
        with ScriptedServer() as server:
            code, _, err = self.main("--once", server=server)
        self.assertEqual(code, 1)
        self.assertEqual(sorted(put_paths(server)), ["a1:bb:cc:dd:ee:00", "a1:bb:cc:dd:ee:01"])
        self.assertIn("line 6: 'a1:bb:cc:dd:ee:ffXYZ': not a MAC address", err)
        self.assertIn("line 7: '../../etc/passwd': not a MAC address", err)
        self.assertIn("line 8: '': empty first cell", err)
        self.assertIn("line 5: a1:bb:cc:dd:ee:00 is listed again (first at line 2)", err)

    def test_unknown_rejected_and_failing_players_are_named(self):
        def script(seen, index):
            mac = seen.path.rsplit(":", 6)
            mac = seen.path.rsplit("clientId:", 1)[-1]
            if mac == MACS[3]:
                return Reply(404, {"statusCode": 404, "error": "Not Found",
                                   "message": f"profile of client {mac} does not exist"})
            if mac == MACS[4]:
                return Reply(409, {"statusCode": 409, "error": "Conflict", "message": "nope, says the API"})
            if mac == MACS[5]:
                return Reply(503, {"statusCode": 503, "error": "Service Unavailable", "message": "busy"})
            return contract_script()(seen, index)

        with ScriptedServer(script) as server:
            code, _, err = self.main("--once", "--retries", "2", server=server)
        self.assertEqual(code, 1)
        self.assertIn(f"{MACS[3]}: unknown (HTTP 404): profile of client {MACS[3]} does not exist", err)
        self.assertIn(f"{MACS[4]}: rejected (HTTP 409): nope, says the API", err)
        self.assertIn(f"{MACS[5]}: failed (HTTP 503 after 3 attempts): busy", err)
        self.assertEqual(put_paths(server).count(MACS[5]), 3)
        self.assertEqual(put_paths(server).count(MACS[3]), 1, "a 404 is not retried in the cycle")
        self.assertIn("27 updated", err)

    def test_transient_faults_are_ridden_out(self):
        import random
        rng = random.Random(3)
        lock = threading.Lock()

        def script(seen, index):
            with lock:
                roll = rng.random()
            if roll < 0.15:
                return Reply(500, {"statusCode": 500})
            if roll < 0.25:
                return Reply(reset=True)
            if roll < 0.3:
                return Reply(502, "<html>bad gateway</html>", headers={"Content-Type": "text/html"})
            return contract_script()(seen, index)

        with ScriptedServer(script) as server:
            code, _, err = self.main("--once", "--retries", "8", server=server)
        self.assertEqual(code, 0, err)
        self.assertGreater(len(server.seen), len(MACS))

    def test_rejected_credentials_cost_one_wave_then_one_request_per_cycle(self):
        self.write_players(MACS * 1 + [f"c1:bb:cc:dd:{i // 256:02x}:{i % 256:02x}" for i in range(500)])
        with ScriptedServer(contract_script(token="another-token")) as server:
            code, _, err = self.main("--once", "--workers", "8", server=server)
            self.assertEqual(code, 3)
            self.assertLessEqual(len(server.seen), 8, "at most one wave of a 530-player fleet")
            self.assertIn("credentials rejected", err)
            self.assertIn("skipped", err)
            # After a rejected cycle, the next one sends a canary first: one request.
            before = server.count()
            code, _, _ = self.main("--once", "--workers", "8", server=server)
            self.assertEqual(code, 3)
            self.assertEqual(server.count() - before, 1)

    def test_canary_answered_then_the_fleet_goes(self):
        with ScriptedServer(contract_script(token="another-token")) as server:
            self.main("--once", server=server)
        with ScriptedServer() as server:
            code, _, err = self.main("--once", server=server)
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(put_paths(server)), sorted(MACS))

    def test_rotated_token_is_picked_up_mid_cycle(self):
        rotated = "rotated-token-9"
        seen_tokens = []
        rotation = threading.Lock()
        done = []

        def script(seen, index):
            seen_tokens.append(seen.headers["x-authentication-token"])
            with rotation:
                # The operator rotates the token at the 6th request; from then on the old one
                # is refused. (Under the lock: no request is judged by the new token before
                # the keys file holds it, which a real rotation guarantees too.)
                if index >= 5 and not done:
                    self.write_keys(token=rotated)
                    done.append(True)
                current = rotated if done else TOKEN
            return contract_script(token=current)(seen, index)

        with ScriptedServer(script) as server:
            code, _, err = self.main("--once", "--workers", "4", server=server)
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(set(put_paths(server))), sorted(MACS))
        self.assertIn(rotated, seen_tokens)
        self.assertNotIn(rotated, err)

    def test_api_that_stops_accepting_mid_cycle_stops_the_cycle(self):
        def script(seen, index):
            token = TOKEN if index < 10 else "revoked"
            return contract_script(token=token)(seen, index)

        with ScriptedServer(script) as server:
            code, _, err = self.main("--once", "--workers", "4", server=server)
        self.assertEqual(code, 3)
        # At most the 4 in flight, and one more per worker that was past its check when
        # the credentials died: never the other 15 players.
        self.assertLessEqual(len(server.seen), 10 + 2 * 4)
        self.assertIn("skipped", err)


class UnreachableTest(CycleTestCase):
    def test_an_api_that_is_down_stops_the_cycle_early(self):
        self.write_players([f"c1:bb:cc:dd:{i // 256:02x}:{i % 256:02x}" for i in range(600)])
        with ScriptedServer() as server:
            url = server.url  # closed again: connections are refused
        code, _, err = self.main("--once", "--workers", "4", "--retries", "1", "--api-url", url)
        self.assertEqual(code, 1)
        self.assertIn("gave no answer to 20 players in a row", err)
        self.assertIn("stopped: API unreachable (connection refused)", err)
        failed = int(re.search(r"(\d+) failed, (\d+) skipped", err).group(1))
        self.assertLess(failed, 40, "the cycle did not spend every player's retries")
        self.assertNotIn("Retrying", err, "urllib3's own retry warnings stay quiet")


class SetupErrorTest(CycleTestCase):
    def test_each_setup_problem_exits_2_naming_it_and_sends_nothing(self):
        cases = [
            (["--players", "missing.csv"], "players file missing.csv: not found"),
            (["--profile", "missing.json"], "profile missing.json: not found"),
            (["--keys", "missing.conf"], "keys file missing.conf: not found"),
            (["--workers", "0"], "--workers must be from 1 to 64"),
            (["--timeout", "-1"], "--timeout must be more than 0"),
            (["--api-url", "ftp://x"], "must start with http:// or https://"),
            (["--report", "out.txt"], "must end in .csv or .json"),
        ]
        with ScriptedServer() as server:
            for args, message in cases:
                with self.subTest(args=args):
                    argv = ["--once", *args]
                    if "--api-url" not in args:
                        argv += ["--api-url", server.url]
                    code, _, err = self.main(*argv)
                    self.assertEqual(code, 2)
                    self.assertIn(message, err)
            self.assertEqual(server.count(), 0)

    def test_invalid_profile_and_missing_credentials_reported_together(self):
        self.write("profile.json", '{"profile": {"applications": [{"applicationId": "a"}]}}')
        (self.tmp / "keys.conf").unlink()
        code, _, err = self.main("--once")
        self.assertEqual(code, 2)
        self.assertIn("'version' is missing", err)
        self.assertIn("credentials missing", err)

    def test_bad_option_is_exit_2_from_argparse(self):
        with self.assertRaises(SystemExit) as caught:
            self.main("--workers", "many")
        self.assertEqual(caught.exception.code, 2)

    def test_credentials_from_environment(self):
        (self.tmp / "keys.conf").unlink()
        with ScriptedServer() as server, mock.patch.dict(
                os.environ, {"CLIENT_ID": "test-client", "AUTH_TOKEN": TOKEN, "API_URL": server.url}):
            code, _, err = self.main("--once")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(server.seen), len(MACS))


class DryRunTest(CycleTestCase):
    def test_dry_run_sends_nothing_and_writes_no_state(self):
        self.write_players(MACS, extra="bogus-row\r\n")
        with ScriptedServer() as server:
            code, _, err = self.main("--dry-run", server=server)
        self.assertEqual(code, 1)
        self.assertEqual(server.count(), 0)
        self.assertIn(f"would send the profile to {len(MACS)} of {len(MACS)} players", err)
        self.assertIn("'bogus-row': not a MAC address", err)
        self.assertFalse((self.tmp / "fleet-state.sqlite3").exists())

    def test_dry_run_knows_who_is_up_to_date(self):
        with ScriptedServer() as server:
            self.assertEqual(self.main("--once", server=server)[0], 0)
            code, _, err = self.main("--dry-run", server=server)
        self.assertEqual(code, 0)
        self.assertIn(f"would send the profile to 0 of {len(MACS)} players listed ({len(MACS)} already", err)

    def test_dry_run_setup_errors_exit_2(self):
        (self.tmp / "keys.conf").unlink()
        self.assertEqual(self.main("--dry-run")[0], 2)


class DesiredStateTest(CycleTestCase):
    def test_second_cycle_sends_nothing_and_exits_0(self):
        with ScriptedServer() as server:
            self.assertEqual(self.main("--once", server=server)[0], 0)
            first = server.count()
            code, _, err = self.main("--once", server=server)
            self.assertEqual(code, 0)
            self.assertEqual(server.count(), first, "players at the target get no request")
            self.assertIn(f"{len(MACS)} up to date", err)

    def test_failed_player_is_retried_next_cycle(self):
        broken = {MACS[7]}

        def script(seen, index):
            if seen.path.endswith(tuple(broken)):
                return Reply(500, {"statusCode": 500})
            return contract_script()(seen, index)

        with ScriptedServer(script) as server:
            self.assertEqual(self.main("--once", "--retries", "0", server=server)[0], 1)
            broken.clear()
            before = server.count()
            code, _, _ = self.main("--once", server=server)
            self.assertEqual(code, 0)
            self.assertEqual(put_paths(server)[before:], [MACS[7]])

    def test_new_profile_version_goes_to_every_player(self):
        with ScriptedServer() as server:
            self.main("--once", server=server)
            newer = json.loads(json.dumps(SAMPLE_PROFILE))
            newer["profile"]["applications"][0]["version"] = "v1.5.0"
            self.write_profile(newer)
            before = server.count()
            code, _, _ = self.main("--once", server=server)
            self.assertEqual(code, 0)
            self.assertEqual(sorted(put_paths(server)[before:]), sorted(MACS))
            self.assertTrue(all(json.loads(s.body) == newer for s in server.seen[before:]))

    def test_force_sends_to_everyone(self):
        with ScriptedServer() as server:
            self.main("--once", server=server)
            before = server.count()
            self.assertEqual(self.main("--once", "--force", server=server)[0], 0)
            self.assertEqual(server.count() - before, len(MACS))

    def test_new_player_only_is_sent(self):
        with ScriptedServer() as server:
            self.main("--once", server=server)
            before = server.count()
            self.write_players(MACS + ["b2:bb:cc:dd:ee:ff"])
            self.assertEqual(self.main("--once", server=server)[0], 0)
            self.assertEqual(put_paths(server)[before:], ["b2:bb:cc:dd:ee:ff"])

    def test_removed_player_is_marked_not_forgotten(self):
        with ScriptedServer() as server:
            self.main("--once", server=server)
            self.write_players(MACS[1:])
            self.main("--once", server=server)
        row = self.db().execute("SELECT applied_digest, removed_at FROM players WHERE mac = ?",
                                (MACS[0],)).fetchone()
        self.assertIsNotNone(row[0])
        self.assertIsNotNone(row[1])
        self.write_players(MACS)
        with ScriptedServer() as server:
            self.assertEqual(self.main("--once", server=server)[0], 0)
            self.assertEqual(server.count(), 0, "a returning player at the target needs nothing")
        self.assertIsNone(self.db().execute("SELECT removed_at FROM players WHERE mac = ?",
                                            (MACS[0],)).fetchone()[0])

    def test_state_records_players_and_cycles(self):
        with ScriptedServer() as server:
            self.main("--once", server=server)
        db = self.db()
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 1)
        self.assertEqual(db.execute("SELECT COUNT(*) FROM players WHERE last_outcome = 'updated' "
                                    "AND last_status = 200 AND last_success IS NOT NULL").fetchone()[0],
                         len(MACS))
        status, counts, profile_digest, csv_digest = db.execute(
            "SELECT status, counts, profile_digest, csv_digest FROM cycles").fetchone()
        self.assertEqual(status, "done")
        self.assertEqual(json.loads(counts), {"updated": len(MACS)})
        self.assertTrue(profile_digest and csv_digest)


class ReportFileTest(CycleTestCase):
    def test_csv_and_json_reports(self):
        self.write_players(MACS[:3], extra="junk\r\n")

        def script(seen, index):
            if seen.path.endswith(MACS[1]):
                return Reply(404, {"statusCode": 404, "message": "gone"})
            return contract_script()(seen, index)

        with ScriptedServer(script) as server:
            self.main("--once", "--report", "out.csv", server=server)
            self.main("--once", "--report", "out.json", server=server)
        with open(self.tmp / "out.csv", encoding="utf-8", newline="") as handle:
            rows = {row["mac"] or row["line"]: row for row in csv.DictReader(handle)}
        self.assertEqual(rows[MACS[0]]["outcome"], "updated")
        self.assertEqual(rows[MACS[1]]["outcome"], "unknown")
        self.assertEqual(rows[MACS[1]]["status"], "404")
        self.assertEqual(rows["5"]["outcome"], "invalid_row")
        document = json.loads((self.tmp / "out.json").read_text(encoding="utf-8"))
        outcomes = {p["mac"]: p["outcome"] for p in document["players"] if p["mac"]}
        self.assertEqual(outcomes, {MACS[0]: "up_to_date", MACS[1]: "unknown", MACS[2]: "up_to_date"})


if __name__ == "__main__":
    unittest.main()
