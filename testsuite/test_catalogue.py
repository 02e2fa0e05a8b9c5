"""The updater against the bundled mock, over real HTTP: every catalogue entry, and faults.

``update_player`` is run against every entry of responses.json (through the mock's
``x-mock-response`` header), so an entry added to the catalogue is tested here with no
test change. Then whole cycles run against the mock with its fault injection switched on,
and the test checks what the mock received.
"""

import json
import os
import random
import subprocess
import sys
import unittest
from unittest import mock

from fleet_updater.client import ProfileClient, update_player, update_player_result
from fleet_updater.config import CredentialManager, CredentialSource
from fleet_updater.mock import MockConfig, create_app, load_catalogue, start_mock_server
from fleet_updater.profile import profile_from_document
from fleet_updater.results import Outcome

from .support import ROOT, TOKEN, FakeSleeper, TempDirTestCase, clean_env
from .test_cycle import CycleTestCase

CATALOGUE = load_catalogue(ROOT / "responses.json")
PLAYERS = [f"a1:bb:cc:dd:ee:{i:02x}" for i in range(40)]


def expected_outcome(status: int, entry) -> Outcome:
    """What the API contract says an answer means, independent of the client's code."""
    if 200 <= status < 300:
        return Outcome.UPDATED if entry.profile is not None or status == 204 else Outcome.FAILED
    return {401: Outcome.UNAUTHORIZED, 404: Outcome.UNKNOWN, 409: Outcome.REJECTED}.get(status, Outcome.FAILED)


class CatalogueTest(TempDirTestCase):
    """update_player for every response in responses.json."""

    @classmethod
    def setUpClass(cls):
        cls.app = create_app(MockConfig(players_path=None, registry=PLAYERS,
                                        keys_path=ROOT / "keys.conf.example", quiet=True))
        cls.server = start_mock_server(cls.app)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()

    def setUp(self):
        super().setUp()
        self.server.state.reset()

    def client(self, entry_name: str, sleeper=None):
        manager = CredentialManager(CredentialSource(ROOT / "keys.conf.example", environ={}))
        client = ProfileClient(self.server.url, manager, retries=2, sleeper=sleeper or FakeSleeper(),
                               extra_headers={"x-mock-response": entry_name})
        self.addCleanup(client.close)
        return client

    def test_every_entry(self):
        self.assertGreaterEqual(len(CATALOGUE), 14)
        document = json.loads((ROOT / "profile.json").read_text(encoding="utf-8"))
        for name, entry in CATALOGUE.items():
            with self.subTest(entry=name, status=entry.status):
                self.server.state.reset()
                sleeper = FakeSleeper()
                result = update_player_result(PLAYERS[0], document, client=self.client(name, sleeper))
                status = update_player(PLAYERS[0], document, client=self.client(name))
                self.assertEqual(status, entry.status)
                self.assertEqual(result.status, entry.status)
                self.assertEqual(result.outcome, expected_outcome(entry.status, entry))
                transient = entry.status in (429, 500, 502, 503, 504) or (
                    entry.body is not None and entry.status not in (401,))
                if transient:
                    self.assertEqual(result.attempts, 3, "retried: 2 retries, 3 attempts")
                    retry_after = dict(entry.headers or ()).get("Retry-After")
                    if retry_after and retry_after.isdigit() and int(retry_after) > 0:
                        self.assertIn(float(retry_after), sleeper.calls)
                elif entry.status != 401:
                    self.assertEqual(result.attempts, 1, "a final answer is not retried")
                if entry.message and entry.status >= 400:
                    self.assertIn(entry.message.replace("{mac}", PLAYERS[0])[:40], result.message)

    def test_the_mock_updates_a_known_player(self):
        manager = CredentialManager(CredentialSource(ROOT / "keys.conf.example", environ={}))
        profile = profile_from_document(json.loads((ROOT / "profile.json").read_text(encoding="utf-8")))
        with ProfileClient(self.server.url, manager) as client:
            self.assertEqual(client.put_profile(PLAYERS[1], profile).outcome, Outcome.UPDATED)
            self.assertEqual(client.put_profile("ff:ff:ff:00:00:01", profile).outcome, Outcome.UNKNOWN)
            self.assertEqual(client.get_profile(PLAYERS[1]), json.loads(profile.body))


class MockCycleTest(CycleTestCase):
    """--once cycles against the mock with its bad days switched on."""

    def start_mock(self, **faults):
        keys = self.tmp / "keys.conf"
        app = create_app(MockConfig(players_path=None, registry=PLAYERS, keys_path=keys,
                                    quiet=True, **faults))
        server = start_mock_server(app)
        self.addCleanup(server.shutdown)
        return server

    def test_errors_and_latency_are_ridden_out(self):
        self.write_players(PLAYERS + ["ff:ff:ff:00:00:01"])
        server = self.start_mock(error_rate=0.3, latency_ms=5, jitter_ms=10, seed=11)
        code, _, err = self.main("--once", "--retries", "8", "--workers", "8",
                                 "--api-url", server.url)
        self.assertEqual(code, 1, err)  # one unknown player
        state = server.state
        self.assertEqual(set(state.stored), set(PLAYERS))
        self.assertGreater(state.statuses[500], 0, "faults were injected")
        self.assertLessEqual(state.received["ff:ff:ff:00:00:01"], 9)
        # (A 500 injected before the 404 makes it "after 2 attempts": which request gets
        # the fault depends on thread timing.)
        self.assertRegex(err, r"ff:ff:ff:00:00:01: unknown \(HTTP 404( after \d+ attempts)?\): "
                              r"profile of client ff:ff:ff:00:00:01 does not exist")
        # Only canonical MACs ever reached the server.
        self.assertTrue(all(len(mac) == 17 and mac == mac.lower() for mac in state.received))

    def test_rate_limit_is_honoured_with_retry_after(self):
        """The mock's clock is the updater's sleeper: waiting Retry-After moves the window."""
        from fleet_updater.config import Settings
        from fleet_updater.cycle import run_cycle
        from fleet_updater.state import StateStore

        now = [1000.0]
        waits = []

        def sleeper(seconds):
            waits.append(seconds)
            now[0] += seconds

        self.write_players(PLAYERS)
        server = self.start_mock(rate_limit=15, clock=lambda: now[0])
        settings = Settings(players=self.tmp / "players.csv", profile=self.tmp / "profile.json",
                            keys=self.tmp / "keys.conf", api_url=server.url,
                            state=self.tmp / "state.sqlite3", workers=8, retries=10,
                            use_environment=False)
        with StateStore.open(settings.state) as state:
            report = run_cycle(settings, state, sleeper=sleeper)
        self.assertEqual(report.exit_status, 0)
        self.assertEqual(set(server.state.stored), set(PLAYERS))
        self.assertGreater(server.state.statuses[429], 0)
        self.assertIn(1.0, waits, "Retry-After: 1 was honoured")

    def test_token_expiry_then_rotation(self):
        self.write_players(PLAYERS)
        server = self.start_mock(token_ttl=60)
        code, _, err = self.main("--once", "--api-url", server.url)
        self.assertEqual(code, 0, err)
        # A new profile, and the operator rotated the token: the mock only accepts the new one.
        self.write_keys(token="rotated-token-xyz")
        document = json.loads((self.tmp / "profile.json").read_text(encoding="utf-8"))
        document["profile"]["applications"][0]["version"] = "v2.0.0"
        self.write_profile(document)
        code, _, err = self.main("--once", "--api-url", server.url)
        self.assertEqual(code, 0, err)
        self.assertNotIn("rotated-token-xyz", err)
        self.assertTrue(all(p["applications"][0]["version"] == "v2.0.0"
                            for p in server.state.stored.values()))

    def test_rejected_by_the_mock_exits_3(self):
        self.write_players(PLAYERS)
        server = self.start_mock()
        with mock.patch.dict(os.environ, {"AUTH_TOKEN": "definitely-wrong-token"}):
            code, _, err = self.main("--once", "--workers", "4", "--api-url", server.url)
        self.assertEqual(code, 3, err)
        self.assertLessEqual(server.state.requests, 4)


class DemoTest(TempDirTestCase):
    def test_demo_runs_from_any_directory_and_exits_0(self):
        process = subprocess.run([sys.executable, str(ROOT / "main.py"), "--demo"], cwd=self.tmp,
                                 env=clean_env(AUTH_TOKEN=TOKEN), capture_output=True, text=True,
                                 encoding="utf-8", timeout=120)
        output = process.stdout + process.stderr
        self.assertEqual(process.returncode, 0, output)
        self.assertIn("40 updated, 3 unknown", output)
        self.assertIn("What the mock now holds", output)
        self.assertIn('"version": "v1.4.10"', output)
        self.assertNotIn("Traceback", output)
        demo_token = "demo-token-0123456789abcdef"
        self.assertNotIn(demo_token, output)
        self.assertNotIn(TOKEN, output)
        self.assertEqual(list(self.tmp.iterdir()), [], "the demo writes nothing here")


if __name__ == "__main__":
    unittest.main()
