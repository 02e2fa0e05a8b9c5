"""The API client and update_player, over real HTTP against a server that follows API.md.

The server here is a small stdlib one (support.ScriptedServer), not the bundled mock, so
the client is proven against the contract itself; the mock's catalogue is exercised in
test_catalogue.py.
"""

import email.utils
import io
import json
import logging
import os
import random
import time
import unittest
from unittest import mock

from fleet_updater import logs
from fleet_updater.client import ProfileClient, backoff_delay, update_player, update_player_result
from fleet_updater.config import CredentialManager, CredentialSource
from fleet_updater.errors import ConfigError, InputError
from fleet_updater.profile import profile_from_document
from fleet_updater.results import Outcome

from .support import (
    CLIENT_ID,
    SAMPLE_PROFILE,
    TOKEN,
    FakeSleeper,
    Reply,
    ScriptedServer,
    TempDirTestCase,
    clean_env,
    contract_script,
)

MAC = "a1:bb:cc:dd:ee:ff"
PROFILE = profile_from_document(SAMPLE_PROFILE)
ERROR_404 = {"statusCode": 404, "error": "Not Found", "message": f"profile of client {MAC} does not exist"}
ERROR_409 = {"statusCode": 409, "error": "Conflict",
             "message": 'child "profile" fails because ["profile" is required]'}
ERROR_500 = {"statusCode": 500, "error": "Internal Server Error",
             "message": "An internal server error occurred"}


def sequence(*replies):
    """A script answering with ``replies`` in turn, then the contract's answers."""
    contract = contract_script()

    def script(seen, index):
        return replies[index] if index < len(replies) else contract(seen, index)

    return script


class ClientTestCase(TempDirTestCase):
    def setUp(self):
        super().setUp()
        self.keys = self.write_keys()
        self.sleeper = FakeSleeper()
        env = mock.patch.dict(os.environ, clean_env(), clear=True)
        env.start()
        self.addCleanup(env.stop)

    def client(self, server, retries=3, timeout=5.0, **kwargs):
        manager = CredentialManager(CredentialSource(self.keys, environ={}))
        client = ProfileClient(server.url, manager, retries=retries, timeout=timeout,
                               sleeper=self.sleeper, rng=random.Random(1), **kwargs)
        self.addCleanup(client.close)
        return client

    def put(self, script, **kwargs):
        with ScriptedServer(script) as server:
            result = self.client(server, **kwargs).put_profile(MAC, PROFILE)
            return result, server.seen


class WireTest(ClientTestCase):
    def test_request_on_the_wire_follows_the_contract(self):
        result, seen = self.put(contract_script())
        self.assertEqual(result.outcome, Outcome.UPDATED)
        self.assertEqual(result.status, 200)
        self.assertEqual(len(seen), 1)
        request = seen[0]
        self.assertEqual(request.method, "PUT")
        self.assertEqual(request.path, f"/profiles/clientId:{MAC}")
        self.assertEqual(request.headers["Content-Type"], "application/json")
        self.assertEqual(request.headers["x-client-id"], CLIENT_ID)
        self.assertEqual(request.headers["x-authentication-token"], TOKEN)
        self.assertEqual(json.loads(request.body), SAMPLE_PROFILE)

    def test_api_url_with_a_path_prefix(self):
        with ScriptedServer(contract_script()) as server:
            manager = CredentialManager(CredentialSource(self.keys, environ={}))
            with ProfileClient(server.url + "/api/v2/", manager) as client:
                client.put_profile(MAC, PROFILE)
            self.assertEqual(server.seen[0].path, f"/api/v2/profiles/clientId:{MAC}")

    def test_loopback_never_goes_through_a_proxy(self):
        with mock.patch.dict(os.environ, {"HTTP_PROXY": "http://10.255.255.1:3128",
                                          "http_proxy": "http://10.255.255.1:3128",
                                          "NO_PROXY": "", "no_proxy": ""}):
            result, seen = self.put(contract_script(), timeout=2)
        self.assertEqual(result.outcome, Outcome.UPDATED)
        self.assertEqual(len(seen), 1)

    def test_connections_are_reused(self):
        with ScriptedServer(contract_script()) as server:
            client = self.client(server)
            for _ in range(5):
                client.put_profile(MAC, PROFILE)
            ports = {seen.peer[1] for seen in server.seen}
            self.assertEqual(len(server.seen), 5)
            self.assertEqual(len(ports), 1, "one keep-alive connection for 5 requests")

    def test_non_canonical_mac_never_reaches_a_url(self):
        with ScriptedServer(contract_script()) as server:
            client = self.client(server)
            for bad in ("A1:BB:CC:DD:EE:FF", "../../etc/passwd", "a1:bb:cc:dd:ee:ff/x"):
                with self.assertRaises(InputError):
                    client.put_profile(bad, PROFILE)
            self.assertEqual(server.count(), 0)


class AnswersTest(ClientTestCase):
    def test_final_answers(self):
        cases = [
            ("200 echo", Reply(200, SAMPLE_PROFILE), Outcome.UPDATED, 200, ""),
            ("200 no profile key", Reply(200, {}), Outcome.UPDATED, 200, ""),
            ("204", Reply(204, b""), Outcome.UPDATED, 204, ""),
            ("200 other profile", Reply(200, {"profile": {"applications": [
                {"applicationId": "music_app", "version": "v0.0.1"}]}}), Outcome.MISMATCH, 200, "different profile"),
            ("404", Reply(404, ERROR_404), Outcome.UNKNOWN, 404, "does not exist"),
            ("409", Reply(409, ERROR_409), Outcome.REJECTED, 409, '"profile" is required'),
            ("418", Reply(418, {"statusCode": 418, "error": "I'm a teapot", "message": "short and stout"}),
             Outcome.FAILED, 418, "short and stout"),
            ("400 no message", Reply(400, {"statusCode": 400}), Outcome.FAILED, 400, "unexpected answer 400"),
            ("307 not followed", Reply(307, b"", headers={"Location": "http://evil.example/steal"}),
             Outcome.FAILED, 307, "redirect"),
        ]
        for name, reply, outcome, status, message in cases:
            with self.subTest(name):
                result, seen = self.put(lambda s, i, r=reply: r)
                self.assertEqual(result.outcome, outcome)
                self.assertEqual(result.status, status)
                self.assertIn(message, result.message)
                self.assertEqual(len(seen), 1, "a final answer is not retried")

    def test_server_text_is_made_safe_for_a_terminal(self):
        reply = Reply(418, {"message": "bad\x1b[2J\nthing" + "x" * 500})
        result, _ = self.put(lambda s, i: reply)
        self.assertNotIn("\x1b", result.message)
        self.assertNotIn("\n", result.message)
        self.assertLessEqual(len(result.message), 200)


class RetryTest(ClientTestCase):
    def test_transient_statuses_are_retried_then_succeed(self):
        for status in (429, 500, 502, 503, 504):
            with self.subTest(status=status):
                self.sleeper.calls.clear()
                result, seen = self.put(sequence(Reply(status, ERROR_500), Reply(status, ERROR_500)))
                self.assertEqual(result.outcome, Outcome.UPDATED)
                self.assertEqual(result.attempts, 3)
                self.assertEqual(len(seen), 3)
                self.assertEqual(len(self.sleeper.calls), 2)

    def test_budget_spent_reports_the_last_answer(self):
        result, seen = self.put(lambda s, i: Reply(500, ERROR_500), retries=3)
        self.assertEqual((result.outcome, result.status, result.attempts), (Outcome.FAILED, 500, 4))
        self.assertEqual(len(seen), 4)
        self.assertIn("internal server error", result.message)

    def test_backoff_is_exponential_with_jitter(self):
        self.put(lambda s, i: Reply(503, ERROR_500), retries=4, backoff=0.5)
        calls = self.sleeper.calls
        self.assertEqual(len(calls), 4)
        for n, delay in enumerate(calls, start=1):
            ceiling = 0.5 * 2 ** (n - 1)
            self.assertGreaterEqual(delay, ceiling / 2)
            self.assertLessEqual(delay, ceiling)

    def test_backoff_delay_is_capped(self):
        rng = random.Random(0)
        self.assertEqual(backoff_delay(0, 1.0, 30, rng), 0.0)
        self.assertLessEqual(max(backoff_delay(20, 1.0, 30, rng) for _ in range(50)), 30)

    def test_retry_after_seconds_is_honoured_and_capped(self):
        for header, expected in (("7", 7.0), ("3600", 60.0), ("0", None)):
            with self.subTest(header=header):
                self.sleeper.calls.clear()
                result, _ = self.put(sequence(Reply(429, {"statusCode": 429}, headers={"Retry-After": header})))
                self.assertEqual(result.outcome, Outcome.UPDATED)
                if expected is None:
                    self.assertLessEqual(self.sleeper.calls[0] if self.sleeper.calls else 0, 0.5)
                else:
                    self.assertEqual(self.sleeper.calls, [expected])

    def test_retry_after_http_date(self):
        when = email.utils.formatdate(time.time() + 20, usegmt=True)
        self.put(sequence(Reply(503, ERROR_500, headers={"Retry-After": when})))
        self.assertEqual(len(self.sleeper.calls), 1)
        self.assertTrue(15 <= self.sleeper.calls[0] <= 21, self.sleeper.calls)

    def test_garbled_retry_after_falls_back_to_backoff(self):
        result, _ = self.put(sequence(Reply(503, ERROR_500, headers={"Retry-After": "soon-ish"})))
        self.assertEqual(result.outcome, Outcome.UPDATED)
        self.assertLessEqual(self.sleeper.calls[0], 0.5)

    def test_answers_that_are_not_json_are_transient(self):
        html = Reply(200, "<html><body>Gateway says hi</body></html>", headers={"Content-Type": "text/html"})
        result, seen = self.put(sequence(html, html))
        self.assertEqual((result.outcome, result.attempts, len(seen)), (Outcome.UPDATED, 3, 3))
        self.sleeper.calls.clear()
        result, seen = self.put(lambda s, i: html, retries=2)
        self.assertEqual((result.outcome, result.status, len(seen)), (Outcome.FAILED, 200, 3))
        self.assertIn("not JSON (text/html)", result.message)
        self.assertIn("Gateway says hi", result.message)

    def test_truncated_json_is_transient(self):
        result, seen = self.put(sequence(Reply(200, b'{"profile": {"applic')))
        self.assertEqual((result.outcome, len(seen)), (Outcome.UPDATED, 2))

    def test_html_502_from_a_proxy(self):
        page = Reply(502, "<html>502 Bad Gateway</html>", headers={"Content-Type": "text/html"})
        result, seen = self.put(lambda s, i: page, retries=1)
        self.assertEqual((result.outcome, result.status, len(seen)), (Outcome.FAILED, 502, 2))
        self.assertIn("502 Bad Gateway", result.message)

    def test_connection_reset_is_retried(self):
        result, seen = self.put(sequence(Reply(reset=True), Reply(reset=True)))
        self.assertEqual((result.outcome, result.attempts), (Outcome.UPDATED, 3))
        result, seen = self.put(lambda s, i: Reply(reset=True), retries=2)
        self.assertEqual((result.outcome, result.status, result.attempts, len(seen)),
                         (Outcome.FAILED, None, 3, 3))

    def test_timeout_is_retried_then_reported(self):
        result, seen = self.put(lambda s, i: Reply(200, SAMPLE_PROFILE, delay=0.6), retries=1, timeout=0.2)
        self.assertEqual((result.outcome, result.status), (Outcome.FAILED, None))
        self.assertEqual(result.message, "timed out")
        self.assertEqual(len(seen), 2)

    def test_connection_refused(self):
        with ScriptedServer() as server:
            url = server.url
        manager = CredentialManager(CredentialSource(self.keys, environ={}))
        with ProfileClient(url, manager, retries=2, sleeper=self.sleeper) as client:
            result = client.put_profile(MAC, PROFILE)
        self.assertEqual((result.outcome, result.status, result.message),
                         (Outcome.FAILED, None, "connection refused"))
        self.assertEqual(len(self.sleeper.calls), 2)


class CredentialReloadTest(ClientTestCase):
    def test_401_reads_rotated_credentials_and_retries(self):
        def script(seen, index):
            if seen.headers["x-authentication-token"] != "rotated-token-2":
                # The operator rotates the token in keys.conf while the updater runs.
                self.write_keys(token="rotated-token-2")
                return Reply(401, {"statusCode": 401, "error": "Unauthorized",
                                   "message": "invalid clientId or token supplied"})
            return Reply(200, json.loads(seen.body))

        result, seen = self.put(script)
        self.assertEqual(result.outcome, Outcome.UPDATED)
        self.assertEqual([s.headers["x-authentication-token"] for s in seen], [TOKEN, "rotated-token-2"])

    def test_401_with_unchanged_credentials_stops(self):
        with ScriptedServer(contract_script(token="the-right-one")) as server:
            client = self.client(server)
            result = client.put_profile(MAC, PROFILE)
            self.assertEqual((result.outcome, result.status), (Outcome.UNAUTHORIZED, 401))
            self.assertIn("invalid clientId or token", result.message)
            self.assertTrue(client.credentials.dead)
            later = client.put_profile("a2:bb:cc:dd:ee:ff", PROFILE)
            self.assertEqual(later.outcome, Outcome.SKIPPED)
            self.assertEqual(server.count(), 1, "after the credentials die, nothing more is sent")

    def test_401_is_not_retried_as_transient(self):
        result, seen = self.put(lambda s, i: Reply(401, {"statusCode": 401}))
        self.assertEqual(len(seen), 1)
        self.assertEqual(self.sleeper.calls, [])

    def test_environment_wins_over_keys_file(self):
        source = CredentialSource(self.keys, environ={"AUTH_TOKEN": "from-env-1234"})
        self.assertEqual(source.load().token, "from-env-1234")
        self.assertEqual(source.load().client_id, CLIENT_ID)

    def test_missing_and_bad_credentials_are_named_not_shown(self):
        self.write("keys.conf", "CLIENT_ID=x\n")
        with self.assertRaisesRegex(ConfigError, "AUTH_TOKEN not set"):
            CredentialSource(self.keys, environ={}).load()
        self.write("keys.conf", "CLIENT_ID=x\nAUTH_TOKEN='secret with space'\n")
        with self.assertRaises(ConfigError) as caught:
            CredentialSource(self.keys, environ={}).load()
        self.assertIn("AUTH_TOKEN", str(caught.exception))
        self.assertNotIn("secret with space", str(caught.exception))
        with self.assertRaisesRegex(ConfigError, "not found"):
            CredentialSource(self.tmp / "nope.conf", environ={}, file_required=True).load()

    def test_token_is_taken_literally(self):
        self.write("keys.conf", "CLIENT_ID=c\nAUTH_TOKEN=abc$HOME${USER}x\n")
        self.assertEqual(CredentialSource(self.keys, environ={}).load().token, "abc$HOME${USER}x")

    @unittest.skipUnless(os.name == "posix", "file modes are POSIX")
    def test_a_keys_file_others_can_read_is_warned_about_once(self):
        from fleet_updater import config

        config._warned_shared.discard(str(self.keys))
        self.keys.chmod(0o644)
        with self.assertLogs("fleet_updater.config", level="WARNING") as captured:
            CredentialSource(self.keys, environ={}).load()
            CredentialSource(self.keys, environ={}).load()
        self.assertEqual(len(captured.output), 1)
        self.assertIn("chmod 600", captured.output[0])
        self.assertNotIn(TOKEN, captured.output[0])
        self.keys.chmod(0o600)
        if self.keys.stat().st_mode & 0o077:
            self.skipTest("this file system does not keep file modes")
        config._warned_shared.discard(str(self.keys))
        with self.assertNoLogs("fleet_updater.config", level="WARNING"):
            CredentialSource(self.keys, environ={}).load()

    def test_credentials_repr_hides_the_token(self):
        credentials = CredentialSource(self.keys, environ={}).load()
        self.assertNotIn(TOKEN, repr(credentials))
        self.assertNotIn(TOKEN, str(credentials))


class UpdatePlayerTest(ClientTestCase):
    def test_only_a_mac_uses_the_working_directory(self):
        self.write_profile()
        with ScriptedServer(contract_script()) as server:
            cwd = os.getcwd()
            os.chdir(self.tmp)
            try:
                with mock.patch.dict(os.environ, {"API_URL": server.url}):
                    status = update_player("A1-BB-CC-DD-EE-FF")
            finally:
                os.chdir(cwd)
            self.assertEqual(status, 200)
            self.assertEqual(server.seen[0].path, f"/profiles/clientId:{MAC}")

    def test_returns_status_or_none(self):
        with ScriptedServer(lambda s, i: Reply(404, ERROR_404)) as server:
            self.assertEqual(update_player(MAC, SAMPLE_PROFILE, api_url=server.url, keys=self.keys), 404)
        with ScriptedServer() as server:
            url = server.url
        self.assertIsNone(update_player(MAC, SAMPLE_PROFILE, api_url=url, keys=self.keys, retries=0))

    def test_result_record(self):
        with ScriptedServer(sequence(Reply(500, ERROR_500))) as server:
            client = self.client(server)
            result = update_player_result("a1bb.ccdd.eeff", SAMPLE_PROFILE, client=client)
        self.assertEqual((result.mac, result.outcome, result.status, result.attempts),
                         (MAC, Outcome.UPDATED, 200, 2))
        self.assertGreater(result.duration, 0)

    def test_invalid_mac_raises_and_sends_nothing(self):
        with ScriptedServer(contract_script()) as server:
            for bad in ("../../etc/passwd", "a1:bb:cc:dd:ee:ffXYZ", "", None):
                with self.assertRaises(InputError):
                    update_player(bad, SAMPLE_PROFILE, api_url=server.url, keys=self.keys)
            self.assertEqual(server.count(), 0)

    def test_invalid_profile_raises_and_sends_nothing(self):
        with ScriptedServer(contract_script()) as server:
            with self.assertRaises(ConfigError):
                update_player(MAC, {"profile": {}}, api_url=server.url, keys=self.keys)
            self.assertEqual(server.count(), 0)


class SecretsTest(ClientTestCase):
    def test_token_never_logged_even_at_debug(self):
        stream = io.StringIO()
        logs.configure(verbosity=2, stream=stream)
        self.addCleanup(logs.reset)
        script = sequence(Reply(503, ERROR_500), Reply(reset=True), Reply(401, {"statusCode": 401}))
        self.put(script)
        self.put(contract_script())
        logging.getLogger("test").debug("headers were %s", {"x-authentication-token": TOKEN})
        output = stream.getvalue()
        self.assertIn("PUT", output)
        self.assertIn("<hidden>", output)
        self.assertNotIn(TOKEN, output)


if __name__ == "__main__":
    unittest.main()
