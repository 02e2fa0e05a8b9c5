"""The daemon loop with a fake clock, and the real process: signals, lock, crash safety."""

import contextlib
import datetime
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
import unittest
from unittest import mock

import schedule

from fleet_updater import cli, logs
from fleet_updater.daemon import Daemon
from fleet_updater.errors import ConfigError
from fleet_updater.lock import InstanceLock

from .support import ROOT, TOKEN, Reply, ScriptedServer, TempDirTestCase, clean_env, contract_script

START = datetime.datetime(2026, 12, 4, 12, 0, 0)


class FakeClock:
    """Stands in for datetime.datetime.now() inside the schedule library."""

    def __init__(self):
        self.now = START
        clock = self

        class FakeDatetime(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return clock.now

        module = types.SimpleNamespace(**{name: getattr(datetime, name) for name in dir(datetime)
                                          if not name.startswith("__")})
        module.datetime = FakeDatetime
        self.patch = mock.patch.object(schedule, "datetime", module)

    def advance(self, seconds):
        self.now += datetime.timedelta(seconds=seconds)

    def minutes(self):
        return (self.now - START).total_seconds() / 60


class DaemonLoopTest(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.clock.patch.start()
        self.addCleanup(self.clock.patch.stop)
        self.stop = threading.Event()
        self.starts = []
        self.waits = []

    def wait(self, seconds):
        self.waits.append(seconds)
        self.clock.advance(seconds)

    def run_daemon(self, cycle, cycles_wanted, interval=15, max_sleep=3600):
        def counted():
            self.starts.append(self.clock.minutes())
            try:
                cycle()
            finally:
                if len(self.starts) >= cycles_wanted:
                    self.stop.set()

        daemon = Daemon(counted, interval, self.stop, wait=self.wait, max_sleep=max_sleep)
        daemon.run()
        return daemon

    def test_cycle_at_once_then_every_interval_sleeping_between(self):
        self.run_daemon(lambda: None, 4)
        self.assertEqual(self.starts, [0, 15, 30, 45])
        # It sleeps until the next cycle: one wait per interval, never a spin.
        self.assertEqual(len(self.waits), 3)
        self.assertTrue(all(abs(w - 900) < 1 for w in self.waits), self.waits)

    def test_long_sleeps_are_chunked_for_signal_delivery(self):
        self.run_daemon(lambda: None, 2, max_sleep=60)
        self.assertEqual(self.starts, [0, 15])
        self.assertEqual(len(self.waits), 15)

    def test_cycles_never_overlap(self):
        def slow_cycle():
            self.clock.advance(20 * 60)  # runs longer than the interval

        self.run_daemon(slow_cycle, 3)
        self.assertEqual(self.starts, [0, 35, 70])

    def test_a_failing_cycle_is_logged_and_the_daemon_goes_on(self):
        failures = iter([RuntimeError("boom"), ConfigError("profile x: is broken"), None])

        def cycle():
            error = next(failures)
            if error:
                raise error

        with self.assertLogs("fleet_updater.daemon", level="ERROR") as captured:
            self.run_daemon(cycle, 3)
        self.assertEqual(len(self.starts), 3)
        text = "\n".join(captured.output)
        self.assertIn("boom", text)
        self.assertIn("profile x: is broken", text)
        self.assertIn("cycle skipped", text)

    def test_stop_during_a_cycle_ends_the_loop(self):
        def cycle():
            self.stop.set()

        daemon = Daemon(cycle, 15, self.stop, wait=self.wait)
        daemon.run()
        self.assertEqual(daemon.cycles_run, 1)
        self.assertEqual(self.waits, [])


def read_until(stream, needle, timeout=30.0):
    """Read lines from a pipe until one holds ``needle``; return all that was read."""
    lines = []
    result = {}

    def reader():
        for line in stream:
            lines.append(line)
            if needle in line:
                result["found"] = True
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return "".join(lines), result.get("found", False)


class ProcessTestCase(TempDirTestCase):
    def setUp(self):
        super().setUp()
        self.write_keys()
        self.write_profile()
        self.macs = [f"b1:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(400)]
        self.write("players.csv", "mac\n" + "\n".join(self.macs) + "\n")

    def spawn(self, *args, log_file=None):
        command = [sys.executable, str(ROOT / "main.py"), *args]
        if log_file:
            command += ["--log-file", str(log_file)]
        process = subprocess.Popen(command, cwd=self.tmp, env=clean_env(PYTHONUNBUFFERED="1"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   encoding="utf-8")
        self.addCleanup(self._reap, process)
        return process

    def _reap(self, process):
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)

    def updated_in_state(self):
        path = self.tmp / "fleet-state.sqlite3"
        if not path.exists():
            return set()
        try:
            connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                return {row[0] for row in connection.execute(
                    "SELECT mac FROM players WHERE applied_digest IS NOT NULL")}
            finally:
                connection.close()
        except sqlite3.Error:
            return set()


@unittest.skipIf(sys.platform == "win32", "POSIX signals")
class SignalTest(ProcessTestCase):
    def test_sigterm_stops_the_daemon_cleanly_with_0(self):
        with ScriptedServer() as server:
            log_file = self.tmp / "updater.log"
            process = self.spawn("--interval", "15", "--api-url", server.url, "-v", log_file=log_file)
            seen, found = read_until(process.stderr, "cycle 1 done")
            self.assertTrue(found, seen)
            process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=30)
            stderr = seen + process.stderr.read() if not process.stderr.closed else seen
        self.assertEqual(process.returncode, 0, stderr)
        log_text = log_file.read_text(encoding="utf-8")
        self.assertIn("daemon stopped", log_text)
        for text in (stderr, rest, log_text):
            self.assertNotIn(TOKEN, text)
        self.assertIn("PUT", log_text)  # -v logged every request, and still no token

    def test_sigint_mid_cycle_finishes_in_flight_and_exits_130(self):
        slow = lambda seen, index: Reply(200, json.loads(seen.body), delay=0.05)  # noqa: E731
        with ScriptedServer(slow) as server:
            process = self.spawn("--once", "--workers", "4", "--api-url", server.url)
            deadline = time.monotonic() + 30
            while server.count() < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
            sent = server.count()
        self.assertEqual(process.returncode, 130, stderr)
        self.assertLess(sent, len(self.macs), "no new requests after Ctrl-C")
        self.assertIn("skipped", stderr)
        self.assertNotIn("Traceback", stderr)
        # Everything answered before the stop is recorded.
        self.assertGreaterEqual(len(self.updated_in_state()), sent - 4)


@unittest.skipIf(sys.platform == "win32", "SIGKILL is POSIX")
class CrashTest(ProcessTestCase):
    def test_sigkill_mid_cycle_loses_nothing_and_resends_nothing_recorded(self):
        # Slow enough (400 x 50 ms / 4 workers = 5 s) that even a loaded machine kills the
        # cycle in its middle; the restarted cycle gets fast answers.
        delay = [0.05]
        slow = lambda seen, index: Reply(200, json.loads(seen.body), delay=delay[0])  # noqa: E731
        with ScriptedServer(slow) as server:
            process = self.spawn("--once", "--workers", "4", "--api-url", server.url)
            deadline = time.monotonic() + 60
            while len(self.updated_in_state()) < 60 and time.monotonic() < deadline:
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
            self.assertEqual(process.returncode, -signal.SIGKILL)
            recorded = self.updated_in_state()
            self.assertGreaterEqual(len(recorded), 60)
            self.assertLess(len(recorded), len(self.macs), "killed mid-cycle")

            connection = sqlite3.connect(self.tmp / "fleet-state.sqlite3")
            self.assertEqual(connection.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            connection.close()

            before = server.count()
            delay[0] = 0.0
            restarted = self.spawn("--once", "--workers", "8", "--api-url", server.url)
            _, stderr = restarted.communicate(timeout=60)
            self.assertEqual(restarted.returncode, 0, stderr)
            resent = [s.path.rsplit("clientId:", 1)[-1] for s in server.seen[before:]]
        self.assertFalse(recorded & set(resent), "a player recorded as updated was sent again")
        self.assertEqual(self.updated_in_state(), set(self.macs))
        connection = sqlite3.connect(self.tmp / "fleet-state.sqlite3")
        statuses = [row[0] for row in connection.execute("SELECT status FROM cycles ORDER BY id")]
        connection.close()
        self.assertEqual(statuses, ["crashed", "done"])


class LockTest(ProcessTestCase):
    def run_main(self, *argv):
        err = io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.tmp)
        self.addCleanup(logs.reset)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(list(argv))
        finally:
            os.chdir(cwd)
        return code, err.getvalue()

    def test_second_instance_refuses_naming_the_holder(self):
        with ScriptedServer() as server:
            process = self.spawn("--interval", "15", "--api-url", server.url)
            seen, found = read_until(process.stderr, "cycle 1 done")
            self.assertTrue(found, seen)
            code, err = self.run_main("--once", "--api-url", server.url)
            process.terminate()
            process.communicate(timeout=30)
        self.assertEqual(code, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(f"in use by another updater (pid {process.pid}", err)

    def test_stale_lock_file_does_not_block(self):
        (self.tmp / "fleet-state.sqlite3.lock").write_text('{"pid": 999999, "host": "gone"}', encoding="utf-8")
        with ScriptedServer() as server:
            code, err = self.run_main("--once", "--api-url", server.url)
        self.assertEqual(code, 0, err)

    def test_lock_is_exclusive_within_a_process_too(self):
        state = self.tmp / "s.sqlite3"
        with InstanceLock(state):
            with self.assertRaises(ConfigError):
                InstanceLock(state).acquire()
        with InstanceLock(state):
            pass


class StatusCommandTest(LockTest):
    def test_status_from_the_state_alone(self):
        def script(seen, index):
            if seen.path.endswith(self.macs[0]):
                return Reply(404, {"statusCode": 404, "message": "profile of client x does not exist"})
            if seen.path.endswith(self.macs[1]):
                return Reply(409, {"statusCode": 409, "message": "profile refused"})
            return contract_script()(seen, index)

        with ScriptedServer(script) as server:
            self.run_main("--once", "--api-url", server.url)
            self.write("players.csv", "mac\n" + "\n".join(self.macs[:-1]) + "\n")
            self.run_main("--once", "--api-url", server.url)
            sent = server.count()
            out = io.StringIO()
            cwd = os.getcwd()
            os.chdir(self.tmp)
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                    self.assertEqual(cli.main(["status"]), 0)
                    self.assertEqual(cli.main(["status", "--json"]), 0)
            finally:
                os.chdir(cwd)
            self.assertEqual(server.count(), sent, "status sends nothing")
        text, _, json_text = out.getvalue().partition("{")
        data = json.loads("{" + json_text)
        self.assertEqual(data["counts"], {"at_target": 397, "pending": 0, "failing": 1,
                                          "unknown": 1, "removed": 1})
        self.assertEqual(len(data["cycles"]), 2)
        self.assertIn("profile refused", text)
        self.assertIn("at the target", text)
        self.assertIn(self.macs[-1], text)  # named as removed

    def test_status_without_a_state_file(self):
        code, err = self.run_main("status", "--state", "nothing.sqlite3")
        self.assertEqual(code, 2)
        self.assertIn("not found", err)


if __name__ == "__main__":
    unittest.main()
