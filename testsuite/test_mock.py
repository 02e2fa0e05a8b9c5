"""Tests of the mock API (fleet_updater/mock.py, mock_api.py and responses.json).

Most run through Flask's test client; a few serve it over real HTTP on an ephemeral
loopback port, and a few run ``mock_api.py`` as a subprocess. Time-dependent behaviour
(token TTL, rate limit, latency) runs on a fake clock and a fake sleep.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import requests

from fleet_updater import mock as mock_module
from fleet_updater.errors import ConfigError
from fleet_updater.mock import (DEFAULT_RESPONSES, MAX_BODY_BYTES, REQUIRED_ENTRIES, MockConfig,
                                create_app, load_catalogue, mock_state, start_mock_server,
                                validation_detail)
from fleet_updater.profile import profile_problems

ROOT = Path(__file__).resolve().parent.parent
MOCK_API = ROOT / "mock_api.py"
CLIENT_ID = "demo-client"
TOKEN = "demo-token-0123456789abcdef"
MACS = ["a1:bb:cc:dd:ee:01", "a1:bb:cc:dd:ee:02", "a1:bb:cc:dd:ee:03"]
MAC = MACS[0]
PROFILE = json.loads((ROOT / "profile.json").read_text(encoding="utf-8"))
UNAUTHORIZED = {"statusCode": 401, "error": "Unauthorized",
                "message": "invalid clientId or token supplied"}


def auth(client_id: str = CLIENT_ID, token: str = TOKEN) -> dict[str, str]:
    return {"x-client-id": client_id, "x-authentication-token": token}


def path_of(mac: str = MAC) -> str:
    return f"/profiles/clientId:{mac}"


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MockTestCase(unittest.TestCase):
    """A temp dir with a keys file, and helpers to build a mock app on it."""

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.keys = self.tmp / "keys.conf"
        self.write_keys(TOKEN)
        self.clock = FakeClock()
        self.sleeps: list[float] = []

    def write_keys(self, token: str, client_id: str = CLIENT_ID) -> None:
        """Write the keys file and move its mtime on, so the change is seen at once
        whatever the file system's timestamp granularity."""
        previous = self.keys.stat().st_mtime_ns if self.keys.exists() else time.time_ns()
        self.keys.write_text(f"# test keys\nCLIENT_ID={client_id}\nAUTH_TOKEN={token}\n",
                             encoding="utf-8")
        later = previous + 2_000_000_000
        os.utime(self.keys, ns=(later, later))

    def config(self, **overrides) -> MockConfig:
        settings = dict(registry=MACS, keys_path=self.keys, quiet=True, clock=self.clock,
                        sleep=self.sleeps.append)
        settings.update(overrides)
        return MockConfig(**settings)

    def make_app(self, **overrides):
        self.app = create_app(self.config(**overrides))
        self.state = mock_state(self.app)
        self.client = self.app.test_client()
        return self.app

    def put(self, mac: str = MAC, body=PROFILE, headers=None, **kwargs):
        all_headers = auth()
        all_headers.update(headers or {})
        if "data" not in kwargs:
            kwargs["json"] = body
        return self.client.put(path_of(mac), headers=all_headers, **kwargs)


# -------------------------------------------------------------------------- catalogue


class CatalogueTest(MockTestCase):
    def write_catalogue(self, document, name: str = "responses.json") -> Path:
        path = self.tmp / name
        text = document if isinstance(document, str) else json.dumps(document)
        path.write_text(text, encoding="utf-8")
        return path

    def shipped(self) -> dict:
        return json.loads(DEFAULT_RESPONSES.read_text(encoding="utf-8"))

    def test_shipped_catalogue_holds_every_name_the_mock_relies_on(self):
        catalogue = load_catalogue(DEFAULT_RESPONSES)
        for name, status in REQUIRED_ENTRIES.items():
            with self.subTest(name=name):
                self.assertEqual(catalogue[name].status, status)
        for name, status in (("service_unavailable", 503), ("bad_gateway_html", 502),
                             ("gateway_timeout", 504)):
            with self.subTest(name=name):
                self.assertEqual(catalogue[name].status, status)
        self.assertEqual(dict(catalogue["service_unavailable"].headers), {"Retry-After": "1"})
        self.assertEqual(catalogue["bad_gateway_html"].content_type, "text/html")

    def test_ok_entry_is_the_sample_profile(self):
        self.assertEqual(load_catalogue(DEFAULT_RESPONSES)["ok"].profile, PROFILE["profile"])

    def test_contract_messages(self):
        raw = self.shipped()
        self.assertEqual(raw["unauthorized"]["message"], UNAUTHORIZED["message"])
        self.assertEqual(raw["server_error"]["message"], "An internal server error occurred")
        self.assertEqual(raw["not_found"]["message"], "profile of client {mac} does not exist")

    def test_broken_catalogue_is_refused_naming_entry_and_problem(self):
        def broken(change):
            document = self.shipped()
            change(document)
            return document

        cases = [
            (broken(lambda d: d["rate_limited"].update(statusCode="429")),
             "responses.json: entry 'rate_limited': statusCode must be an integer from 100 to 599"),
            (broken(lambda d: d["rate_limited"].update(statusCode=600)),
             "responses.json: entry 'rate_limited': statusCode must be an integer from 100 to 599"),
            (broken(lambda d: d["gateway_timeout"].pop("statusCode")),
             "entry 'gateway_timeout': statusCode is missing"),
            (broken(lambda d: d["gateway_timeout"].pop("message")),
             "entry 'gateway_timeout': message is required for a non-2xx entry"),
            (broken(lambda d: d["ok"].pop("profile")),
             "entry 'ok': profile is required for a 2xx entry"),
            (broken(lambda d: d["ok"].update(profile=[1])),
             "entry 'ok': profile must be an object"),
            (broken(lambda d: d["service_unavailable"].update(headers={"Retry-After": 1})),
             "entry 'service_unavailable': headers: Retry-After must be a string"),
            (broken(lambda d: d["service_unavailable"].update(headers=["Retry-After"])),
             "entry 'service_unavailable': headers must be an object"),
            (broken(lambda d: d["gateway_timeout"].update(statuscode=504)),
             "entry 'gateway_timeout': unknown field 'statuscode'"),
            (broken(lambda d: d["bad_gateway_html"].update(message="x")),
             "entry 'bad_gateway_html': body replaces the JSON answer: drop message"),
            (broken(lambda d: d.pop("conflict")), "entry 'conflict' is missing"),
            (broken(lambda d: d["not_found"].update(statusCode=410)),
             "entry 'not_found': statusCode must be 404"),
            (broken(lambda d: d.update({"bad name": {"statusCode": 500}})),
             "entry 'bad name': the name may hold only"),
            (broken(lambda d: d.update(extra="nope")), "entry 'extra': must be an object"),
            ('{"ok": {"statusCode": 200,}}', "responses.json: not valid JSON"),
            ("[]", "responses.json: must be a JSON object"),
            ('{"ok": {"statusCode": 200}, "ok": {"statusCode": 200}}',
             "responses.json: 'ok' appears twice"),
        ]
        for document, expected in cases:
            with self.subTest(expected=expected):
                path = self.write_catalogue(document)
                with self.assertRaises(ConfigError) as caught:
                    load_catalogue(path)
                self.assertIn(expected, str(caught.exception))
                with self.assertRaises(ConfigError):
                    create_app(self.config(responses_path=path))

    def test_every_problem_is_reported_at_once(self):
        document = self.shipped()
        document["ok"]["statusCode"] = "200"
        document["gateway_timeout"].pop("error")
        with self.assertRaises(ConfigError) as caught:
            load_catalogue(self.write_catalogue(document))
        problems = caught.exception.problems
        self.assertTrue(any("'ok'" in p for p in problems), problems)
        self.assertTrue(any("'gateway_timeout'" in p for p in problems), problems)

    def test_missing_catalogue_is_refused(self):
        with self.assertRaises(ConfigError) as caught:
            load_catalogue(self.tmp / "nope.json")
        self.assertIn("not found", str(caught.exception))

    def test_a_new_entry_is_served_with_no_code_change(self):
        document = self.shipped()
        document["teapot"] = {"statusCode": 418, "error": "I'm a teapot",
                              "message": "player {mac} is a teapot",
                              "headers": {"X-Brew": "earl grey"}}
        self.make_app(responses_path=self.write_catalogue(document))
        response = self.put(headers={"x-mock-response": "teapot"})
        self.assertEqual(response.status_code, 418)
        self.assertEqual(response.headers["X-Brew"], "earl grey")
        self.assertEqual(response.get_json()["message"], f"player {MAC} is a teapot")


class EveryEntryTest(MockTestCase):
    """Every catalogue entry, served on request exactly as written: a new entry is tested
    here with no change to this file."""

    def test_every_entry_through_x_mock_response(self):
        self.make_app()
        raw = json.loads(DEFAULT_RESPONSES.read_text(encoding="utf-8"))
        catalogue = load_catalogue(DEFAULT_RESPONSES)
        self.assertEqual(set(catalogue), set(raw))
        for name in catalogue:
            entry = raw[name]
            for method in ("PUT", "GET"):
                with self.subTest(name=name, method=method):
                    response = self.client.open(
                        path_of(), method=method, json=PROFILE,
                        # No credentials: the header is checked before everything else.
                        headers={"x-mock-response": name},
                    )
                    self.assertEqual(response.status_code, entry["statusCode"])
                    for header, value in entry.get("headers", {}).items():
                        self.assertEqual(response.headers.get(header), value)
                    if "body" in entry:
                        self.assertEqual(response.get_data(as_text=True), entry["body"])
                        self.assertEqual(response.mimetype,
                                         entry.get("contentType", "text/plain").split(";")[0])
                    elif 200 <= entry["statusCode"] < 300:
                        self.assertEqual(response.mimetype, "application/json")
                        self.assertEqual(response.get_json(), {"profile": entry["profile"]})
                    else:
                        self.assertEqual(response.mimetype, "application/json")
                        self.assertEqual(response.get_json(), {
                            "statusCode": entry["statusCode"], "error": entry["error"],
                            "message": entry["message"].replace("{mac}", MAC),
                        })
        self.assertEqual(self.state.stored, {}, "x-mock-response must not store anything")

    def test_unknown_entry_name_is_a_400_naming_it(self):
        self.make_app()
        response = self.put(headers={"x-mock-response": "no_such_entry"})
        self.assertEqual(response.status_code, 400)
        body = response.get_json()
        self.assertEqual(body["error"], "Bad Request")
        self.assertIn("no_such_entry", body["message"])

    def test_latency_applies_before_x_mock_response(self):
        self.make_app(latency_ms=250)
        self.put(headers={"x-mock-response": "gateway_timeout"})
        self.assertEqual(self.sleeps, [0.25])


# ------------------------------------------------------------------------ credentials


class CredentialsTest(MockTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_app()

    def test_valid_credentials_store_the_profile(self):
        response = self.put()
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.mimetype, "application/json")
        self.assertEqual(response.get_json(), PROFILE)
        self.assertEqual(self.state.stored, {MAC: PROFILE["profile"]})

    def test_missing_or_wrong_credentials_are_401_with_the_contract_body(self):
        cases = {
            "missing id": {"x-authentication-token": TOKEN},
            "missing token": {"x-client-id": CLIENT_ID},
            "missing both": {},
            "wrong id": auth(client_id="someone-else"),
            "wrong token": auth(token=TOKEN[:-1] + "0"),
            "token prefix": auth(token=TOKEN[:-1]),
            "empty token": auth(token=""),
        }
        for case, headers in cases.items():
            with self.subTest(case=case):
                response = self.client.put(path_of(), json=PROFILE, headers=headers)
                self.assertEqual(response.status_code, 401)
                self.assertEqual(response.get_json(), UNAUTHORIZED)
        self.assertEqual(self.state.stored, {})

    def test_comparison_is_constant_time_and_never_short_circuits(self):
        with mock.patch.object(mock_module.hmac, "compare_digest",
                               wraps=hmac.compare_digest) as compare:
            self.assertEqual(self.put().status_code, 200)
            compare.assert_any_call(TOKEN.encode("utf-8"), TOKEN.encode("utf-8"))
            compare.assert_any_call(CLIENT_ID.encode("utf-8"), CLIENT_ID.encode("utf-8"))
            compare.reset_mock()
            # A wrong client id still compares the token.
            response = self.client.put(path_of(), json=PROFILE,
                                       headers=auth(client_id="intruder"))
            self.assertEqual(response.status_code, 401)
            self.assertEqual(compare.call_count, 2)
            compare.assert_any_call(TOKEN.encode("utf-8"), TOKEN.encode("utf-8"))

    def test_rotating_the_token_in_the_keys_file_takes_effect_at_once(self):
        self.assertEqual(self.put().status_code, 200)
        self.write_keys("rotated-token-000000000000000")  # same length as the old one
        self.assertEqual(self.put().status_code, 401)
        self.assertEqual(self.put(headers=auth(token="rotated-token-000000000000000"))
                         .status_code, 200)

    def test_rotating_the_client_id_takes_effect_at_once(self):
        self.write_keys(TOKEN, client_id="new-client")
        self.assertEqual(self.put().status_code, 401)
        self.assertEqual(self.put(headers=auth(client_id="new-client")).status_code, 200)

    def test_a_keys_file_gone_or_half_written_keeps_the_last_good_credentials(self):
        self.keys.unlink()
        with self.assertLogs("fleet_updater.mock", "WARNING"):
            self.assertEqual(self.put().status_code, 200)
        self.keys.write_text("CLIENT_ID=demo-client\n", encoding="utf-8")
        with self.assertLogs("fleet_updater.mock", "WARNING") as logs:
            self.assertEqual(self.put().status_code, 200)
        self.assertIn("AUTH_TOKEN", logs.output[0])
        self.assertNotIn(TOKEN, "".join(logs.output))

    def test_keys_file_problems_refuse_to_start(self):
        missing = self.tmp / "missing.conf"
        with self.assertRaises(ConfigError) as caught:
            create_app(self.config(keys_path=missing))
        self.assertIn("not found", str(caught.exception))
        partial = self.tmp / "partial.conf"
        partial.write_text("CLIENT_ID=demo-client\nAUTH_TOKEN=\n", encoding="utf-8")
        with self.assertRaises(ConfigError) as caught:
            create_app(self.config(keys_path=partial))
        self.assertIn("AUTH_TOKEN", str(caught.exception))

    def test_keys_file_with_a_byte_order_mark_and_dollar_sign(self):
        self.keys.write_text("\ufeffCLIENT_ID=demo-client\nAUTH_TOKEN=abc$HOME\n",
                             encoding="utf-8")
        self.make_app()
        self.assertEqual(self.put(headers=auth(token="abc$HOME")).status_code, 200)


class TokenTtlTest(MockTestCase):
    def test_token_expires_ttl_seconds_after_first_use_until_rotated(self):
        self.make_app(token_ttl=60)
        self.clock.advance(500)  # the TTL counts from first use, not from start-up
        self.assertEqual(self.put().status_code, 200)
        self.clock.advance(59.9)
        self.assertEqual(self.put().status_code, 200)
        self.clock.advance(0.1)
        response = self.put()
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.get_json(), UNAUTHORIZED)
        self.clock.advance(3600)
        self.assertEqual(self.put().status_code, 401, "still refused until a new token")
        self.write_keys("second-token")
        self.clock.advance(10)
        self.assertEqual(self.put(headers=auth(token="second-token")).status_code, 200)
        self.clock.advance(59)
        self.assertEqual(self.put(headers=auth(token="second-token")).status_code, 200)
        self.clock.advance(1)
        self.assertEqual(self.put(headers=auth(token="second-token")).status_code, 401)

    def test_wrong_tokens_do_not_start_a_ttl(self):
        self.make_app(token_ttl=10)
        self.put(headers=auth(token="wrong"))
        self.clock.advance(20)
        self.assertEqual(self.put().status_code, 200)


# --------------------------------------------------------------------- registry & routes


class RegistryTest(MockTestCase):
    CSV = ("\ufeffmac_addresses, id1\r\n"
           "a1:bb:cc:dd:ee:ff, 1\r\n"
           "A2-BB-CC-DD-EE-FF, 2\r\n"
           "\r\n"
           "a3bb.ccdd.eeff, 3\r\n"
           "A4BBCCDDEEFF, 4\r\n"
           "not-a-mac, 5\r\n"
           "a1:bb:cc:dd:ee:ff, 6\r\n")
    KNOWN = ["a1:bb:cc:dd:ee:ff", "a2:bb:cc:dd:ee:ff", "a3:bb:cc:dd:ee:ff",
             "a4:bb:cc:dd:ee:ff"]

    def make_players(self, text: str = CSV) -> Path:
        path = self.tmp / "players.csv"
        path.write_bytes(text.encode("utf-8"))
        return path

    def test_players_of_any_spelling_are_known_in_canonical_form(self):
        with self.assertLogs("fleet_updater.mock", "WARNING") as logs:
            self.make_app(registry=None, players_path=self.make_players())
        self.assertIn("1 rows skipped", logs.output[0])
        self.assertEqual(self.state.registry, frozenset(self.KNOWN))
        for mac in self.KNOWN:
            with self.subTest(mac=mac):
                self.assertEqual(self.put(mac).status_code, 200)

    def test_non_canonical_or_unknown_mac_is_404_naming_it(self):
        with self.assertLogs("fleet_updater.mock", "WARNING"):
            self.make_app(registry=None, players_path=self.make_players())
        for mac in ("A1:BB:CC:DD:EE:FF", "a1-bb-cc-dd-ee-ff", "a1bb.ccdd.eeff", "a1bbccddeeff",
                    "a9:bb:cc:dd:ee:ff", "823f3161ae4f4495bf0a90c00a7dfbff", " a1:bb:cc:dd:ee:ff"):
            with self.subTest(mac=mac):
                response = self.put(mac)
                self.assertEqual(response.status_code, 404)
                self.assertEqual(response.get_json(), {
                    "statusCode": 404, "error": "Not Found",
                    "message": f"profile of client {mac} does not exist"})
        self.assertEqual(self.state.stored, {})

    def test_the_sample_players_file_loads(self):
        self.make_app(registry=None, players_path=ROOT / "players.csv")
        self.assertEqual(len(self.state.registry), 40)
        self.assertIn("a5:05:cc:dd:ee:23", self.state.registry)

    def test_no_players_refuses_to_start(self):
        for players in (self.tmp / "missing.csv", self.make_players("mac\nnope\n")):
            with self.subTest(players=players):
                with self.assertRaises(ConfigError) as caught:
                    create_app(self.config(registry=None, players_path=players))
                self.assertIn("players file", str(caught.exception))

    def test_explicit_registry_is_canonicalised_and_checked(self):
        self.make_app(registry=["A1-BB-CC-DD-EE-01"])
        self.assertEqual(self.state.registry, frozenset({MAC}))
        with self.assertRaises(ConfigError):
            MockConfig(registry=["nope"])


class RoutesTest(MockTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.make_app()

    def test_unknown_path_is_a_json_404(self):
        for path in ("/", "/profiles", f"/profiles/{MAC}", f"/profiles/clientId:{MAC}/x"):
            with self.subTest(path=path):
                response = self.client.put(path, json=PROFILE, headers=auth())
                self.assertEqual(response.status_code, 404)
                self.assertEqual(response.mimetype, "application/json")
                self.assertEqual(response.get_json(), {"statusCode": 404, "error": "Not Found",
                                                       "message": "Not Found"})

    def test_other_methods_are_a_json_405(self):
        for method in ("POST", "DELETE", "PATCH"):
            with self.subTest(method=method):
                response = self.client.open(path_of(), method=method, headers=auth())
                self.assertEqual(response.status_code, 405)
                self.assertEqual(response.mimetype, "application/json")
                self.assertEqual(response.get_json()["error"], "Method Not Allowed")
                self.assertIn("PUT", response.headers["Allow"])

    def test_get_returns_the_stored_profile_or_null(self):
        response = self.client.get(path_of(), headers=auth())
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_json(), {"profile": None})
        self.put()
        self.assertEqual(self.client.get(path_of(), headers=auth()).get_json(), PROFILE)
        self.assertEqual(self.client.get(path_of("a9:bb:cc:dd:ee:ff"), headers=auth())
                         .status_code, 404)
        self.assertEqual(self.client.get(path_of()).status_code, 401)

    def test_state_counts_what_was_received_and_answered(self):
        self.put()
        self.put()
        self.put("A1:BB:CC:DD:EE:01")
        self.put(MACS[1], headers=auth(token="wrong"))
        self.client.get(path_of(), headers=auth())
        self.assertEqual(self.state.received, Counter({MAC: 2, "A1:BB:CC:DD:EE:01": 1,
                                                       MACS[1]: 1}))
        self.assertEqual(self.state.statuses, Counter({200: 3, 404: 1, 401: 1}))
        self.assertEqual(self.state.requests, 5)
        self.assertIs(self.app.extensions["fleet_mock"], self.state)
        self.state.reset()
        self.assertEqual((self.state.requests, self.state.stored), (0, {}))


# -------------------------------------------------------------------------- validation


class ValidationTest(MockTestCase):
    JOI_CASES = [
        ({}, 'child "profile" fails because ["profile" is required]'),
        ({"profile": {}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" is required]]'),
        ({"profile": {"applications": []}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" must contain at least 1 items]]'),
        ({"profile": {"applications": [{"applicationId": "music_app"}]}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" at position 0 fails because [child "version" fails because '
         '["version" is required]]]]'),
        ({"profile": {"applications": [{"applicationId": "a", "version": "1"},
                                       {"version": "1"}]}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" at position 1 fails because [child "applicationId" fails because '
         '["applicationId" is required]]]]'),
        ({"profile": {"applications": [{"applicationId": "a", "version": ""}]}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" at position 0 fails because [child "version" fails because '
         '["version" is not allowed to be empty]]]]'),
        ({"profile": {"applications": [{"applicationId": "a", "version": 1}]}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" at position 0 fails because [child "version" fails because '
         '["version" must be a string]]]]'),
        ({"profile": {"applications": ["music_app"]}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" at position 0 fails because ["0" must be an object]]]'),
        ({"profile": {"applications": {"applicationId": "a", "version": "1"}}},
         'child "profile" fails because [child "applications" fails because '
         '["applications" must be an array]]'),
        ({"profile": None}, 'child "profile" fails because ["profile" must be an object]'),
        ([PROFILE], '"value" must be an object'),
        ({"profile": PROFILE["profile"], "extra": 1}, '"extra" is not allowed'),
    ]

    def setUp(self) -> None:
        super().setUp()
        self.make_app()

    def test_invalid_bodies_are_409_with_the_joi_detail(self):
        for body, message in self.JOI_CASES:
            with self.subTest(message=message):
                response = self.put(body=body)
                self.assertEqual(response.status_code, 409)
                self.assertEqual(response.get_json(), {"statusCode": 409, "error": "Conflict",
                                                       "message": message})
        self.assertEqual(self.state.stored, {})

    def test_the_mock_and_the_updater_agree_on_what_is_valid(self):
        documents = [body for body, _ in self.JOI_CASES] + [
            PROFILE, 7, "x", None,
            {"profile": {"applications": [{"applicationId": " a", "version": "1"}]}},
            {"profile": {"applications": [{"applicationId": "a", "version": "  "}]}},
            {"profile": {"applications": [{"applicationId": "a", "version": "1"},
                                          {"applicationId": "a", "version": "2"}]}},
            {"profile": {"applications": [{"applicationId": "a", "version": "1", "x": 1}]}},
            {"profile": {"applications": [{"applicationId": "a", "version": "1"}], "x": 1}},
        ]
        for document in documents:
            with self.subTest(document=document):
                self.assertEqual(validation_detail(document) is None,
                                 not profile_problems(document))

    def test_malformed_json_is_400_in_json(self):
        for data in (b"{", b"", b"\xff\xfe{", b'{"profile": NaN}', b"[" * 5000):
            with self.subTest(data=data[:10]):
                response = self.put(data=data, content_type="application/json")
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response.get_json()["error"], "Bad Request")

    def test_wrong_or_missing_content_type_is_415_in_json(self):
        data = json.dumps(PROFILE)
        for content_type in (None, "text/plain", "application/x-www-form-urlencoded",
                             "application/jsonx"):
            with self.subTest(content_type=content_type):
                response = self.put(data=data, content_type=content_type)
                self.assertEqual(response.status_code, 415)
                self.assertEqual(response.get_json()["error"], "Unsupported Media Type")

    def test_charset_parameter_is_accepted(self):
        response = self.put(data=json.dumps(PROFILE),
                            content_type="application/json; charset=utf-8")
        self.assertEqual(response.status_code, 200)

    def test_body_over_64_kib_is_413_in_json(self):
        big = {"profile": {"applications": [
            {"applicationId": "a", "version": "x" * MAX_BODY_BYTES}]}}
        response = self.put(body=big)
        self.assertEqual(response.status_code, 413)
        self.assertEqual(response.mimetype, "application/json")
        self.assertEqual(response.get_json()["statusCode"], 413)

    def test_order_of_checks(self):
        unknown = "a9:bb:cc:dd:ee:ff"
        self.assertEqual(self.put(unknown, data="{", headers=auth(token="x"),
                                  content_type="text/plain").status_code, 401)
        self.assertEqual(self.put(unknown, data="{", content_type="text/plain").status_code, 415)
        self.assertEqual(self.put(unknown, data="{", content_type="application/json")
                         .status_code, 400)
        self.assertEqual(self.put(unknown, body={}).status_code, 404)
        self.assertEqual(self.put(MAC, body={}).status_code, 409)


# ------------------------------------------------------------------------------ faults


class FaultsTest(MockTestCase):
    def statuses(self, count: int, **overrides) -> list[int]:
        self.make_app(**overrides)
        return [self.put(MACS[i % len(MACS)]).status_code for i in range(count)]

    def test_error_rate_is_repeatable_with_a_seed(self):
        first = self.statuses(200, error_rate=0.3, seed=42)
        second = self.statuses(200, error_rate=0.3, seed=42)
        self.assertEqual(first, second)
        errors = first.count(500)
        self.assertTrue(30 <= errors <= 90, errors)
        self.assertEqual(set(first), {200, 500})
        self.assertNotEqual(first, self.statuses(200, error_rate=0.3, seed=43))

    def test_error_rate_extremes_and_the_contract_body(self):
        self.assertEqual(set(self.statuses(20, error_rate=1)), {500})
        self.assertEqual(self.put().get_json(), {
            "statusCode": 500, "error": "Internal Server Error",
            "message": "An internal server error occurred"})
        self.assertEqual(set(self.statuses(20, error_rate=0)), {200})

    def test_error_rate_applies_to_puts_only(self):
        self.make_app(error_rate=1)
        self.assertEqual(self.client.get(path_of(), headers=auth()).status_code, 200)

    def test_latency_and_jitter_use_the_injected_sleep(self):
        self.make_app(latency_ms=100, jitter_ms=50, seed=1)
        for _ in range(20):
            self.put()
        self.assertEqual(len(self.sleeps), 20)
        self.assertTrue(all(0.1 <= s <= 0.15 for s in self.sleeps), self.sleeps)
        self.assertGreater(len(set(self.sleeps)), 1)

    def test_rate_limit_answers_429_with_retry_after_per_one_second_window(self):
        self.make_app(rate_limit=3)
        self.clock.now = 2000.25
        self.assertEqual([self.put().status_code for _ in range(3)], [200] * 3)
        response = self.put()
        self.assertEqual(response.status_code, 429)
        self.assertEqual(response.headers["Retry-After"], "1")
        self.assertEqual(response.get_json()["statusCode"], 429)
        self.clock.advance(0.7)  # still the same window
        self.assertEqual(self.put().status_code, 429)
        self.clock.advance(0.1)  # next window
        self.assertEqual([self.put().status_code for _ in range(3)], [200] * 3)
        self.assertEqual(self.put().status_code, 429)

    def test_rate_limit_comes_before_credentials(self):
        self.make_app(rate_limit=1)
        self.assertEqual(self.put(headers=auth(token="wrong")).status_code, 401)
        self.assertEqual(self.put().status_code, 429)

    def test_fault_checks_come_in_order(self):
        # x-mock-response before the rate limit, the rate limit before the error rate, the
        # error rate before the credentials.
        self.make_app(rate_limit=1, error_rate=1)
        self.clock.now = 3000.5
        self.assertEqual(self.put(headers={"x-mock-response": "ok"}).status_code, 200)
        self.assertEqual(self.put(headers=auth(token="wrong")).status_code, 500)
        self.assertEqual(self.put(headers={"x-mock-response": "gateway_timeout"}).status_code,
                         504)
        self.assertEqual(self.put(headers=auth(token="wrong")).status_code, 429)

    def test_faults_change_at_run_time(self):
        self.make_app()
        self.assertEqual(self.put().status_code, 200)
        self.state.set_fault(error_rate=1.0, latency_ms=5)
        self.assertEqual(self.put().status_code, 500)
        self.assertEqual(self.sleeps, [0.005])
        self.state.set_fault(error_rate=0.0)
        self.assertEqual(self.put().status_code, 200)
        with self.assertRaises(ConfigError):
            self.state.set_fault(error_rate=2)
        with self.assertRaises(ConfigError):
            self.state.set_fault(colour="red")

    def test_bad_fault_values_are_refused_all_at_once(self):
        with self.assertRaises(ConfigError) as caught:
            MockConfig(error_rate=1.5, latency_ms=-1, jitter_ms=-1, token_ttl=0, rate_limit=0)
        self.assertEqual(len(caught.exception.problems), 5, caught.exception.problems)


class SummaryLogTest(MockTestCase):
    def test_one_summary_line_at_most_every_five_seconds(self):
        self.make_app(quiet=False)
        with self.assertLogs("fleet_updater.mock", "INFO") as logs:
            self.put()
            self.clock.advance(5)
            self.put("a9:bb:cc:dd:ee:ff")
            self.put()
        self.assertEqual(len(logs.output), 1, logs.output)
        self.assertIn("2 requests", logs.output[0])
        self.assertIn("200: 1, 404: 1", logs.output[0])

    def test_quiet_logs_nothing(self):
        self.make_app(quiet=True)
        with self.assertNoLogs("fleet_updater.mock", "INFO"):
            for _ in range(3):
                self.put()
                self.clock.advance(10)


# -------------------------------------------------------------------------- real HTTP


class HttpTest(MockTestCase):
    def serve(self, **overrides):
        self.make_app(**overrides)
        running = start_mock_server(self.app)
        self.addCleanup(running.shutdown)
        return running

    def http_put(self, url: str, session=requests, mac: str = MAC, token: str = TOKEN):
        return session.put(f"{url}{path_of(mac)}", json=PROFILE,
                           headers=auth(token=token), timeout=10)

    def test_3000_puts_at_64_in_flight_all_answered(self):
        running = self.serve(registry=[f"a1:bb:cc:dd:{n >> 8:02x}:{n & 0xff:02x}"
                                       for n in range(500)])
        self.assertTrue(running.url.startswith("http://127.0.0.1:"))
        macs = sorted(running.state.registry)
        local = threading.local()
        sessions = []

        def put(index: int):
            if not hasattr(local, "session"):
                local.session = requests.Session()
                sessions.append(local.session)
            try:
                mac = macs[index % len(macs)]
                return self.http_put(running.url, local.session, mac).status_code
            except requests.RequestException as exc:
                return type(exc).__name__

        with ThreadPoolExecutor(max_workers=64) as pool:
            results = Counter(pool.map(put, range(3000)))
        for session in sessions:
            session.close()
        self.assertEqual(results, Counter({200: 3000}))
        self.assertEqual(sum(running.state.received.values()), 3000)
        self.assertEqual(len(running.state.stored), 500)

    def test_token_ttl_and_rotation_over_http(self):
        running = self.serve(token_ttl=30)
        self.assertEqual(self.http_put(running.url).status_code, 200)
        self.clock.advance(30)
        response = self.http_put(running.url)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.json(), UNAUTHORIZED)
        self.write_keys("fresh-token")
        self.assertEqual(self.http_put(running.url, token="fresh-token").status_code, 200)

    def test_rate_limit_over_http(self):
        running = self.serve(rate_limit=2)
        with requests.Session() as session:
            statuses = [self.http_put(running.url, session) for _ in range(3)]
        self.assertEqual([r.status_code for r in statuses], [200, 200, 429])
        self.assertEqual(statuses[2].headers["Retry-After"], "1")
        self.clock.advance(1)
        self.assertEqual(self.http_put(running.url).status_code, 200)

    def test_json_errors_and_oversized_bodies_over_http(self):
        running = self.serve()
        response = requests.put(f"{running.url}{path_of()}", data=b"x" * (MAX_BODY_BYTES + 1),
                                headers={**auth(), "Content-Type": "application/json"},
                                timeout=10)
        self.assertEqual(response.status_code, 413)
        self.assertEqual(response.json()["statusCode"], 413)
        response = requests.post(f"{running.url}/nowhere", timeout=10)
        self.assertEqual((response.status_code, response.json()["statusCode"]), (404, 404))

    def test_context_manager_and_busy_port(self):
        self.make_app()
        with start_mock_server(self.app) as running:
            self.assertEqual(self.http_put(running.url).status_code, 200)
            with self.assertRaises(ConfigError):
                start_mock_server(self.app, port=running.port)
        with self.assertRaises(requests.ConnectionError):
            self.http_put(running.url)


# ------------------------------------------------------------------ mock_api.py process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MockApiScriptTest(MockTestCase):
    def run_script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(MOCK_API), *args], cwd=self.tmp,
                              capture_output=True, text=True, timeout=30)

    def assert_one_line_exit_2(self, result: subprocess.CompletedProcess, expected: str) -> None:
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn(expected, result.stderr)

    def test_missing_players_file_is_one_line_and_exit_2(self):
        result = self.run_script("--players", "nope.csv", "--keys", "keys.conf")
        self.assert_one_line_exit_2(result, "nope.csv")

    def test_bad_flags_are_one_line_and_exit_2(self):
        for args, expected in ((["--error-rate", "1.5"], "--error-rate"),
                               (["--port", "70000"], "--port"),
                               (["--rate-limit", "many"], "--rate-limit"),
                               (["--token-ttl", "-3"], "--token-ttl")):
            with self.subTest(args=args):
                self.assert_one_line_exit_2(self.run_script(*args), expected)

    def test_help_teaches(self):
        result = self.run_script("--help")
        self.assertEqual(result.returncode, 0)
        for flag in ("--players", "--keys", "--error-rate", "--latency-ms", "--jitter-ms",
                     "--token-ttl", "--rate-limit", "--seed", "--quiet", "example"):
            self.assertIn(flag, result.stdout)

    def test_serves_a_put_on_the_given_port(self):
        (self.tmp / "players.csv").write_text("mac\n" + "\n".join(MACS) + "\n", encoding="utf-8")
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, str(MOCK_API), "--port", str(port), "--players", "players.csv",
             "--keys", "keys.conf", "--quiet"],
            cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.addCleanup(process.stderr.close)
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.kill)
        url = f"http://127.0.0.1:{port}{path_of()}"
        deadline = time.monotonic() + 15
        response = None
        while response is None:
            if process.poll() is not None:
                self.fail(f"mock_api.py exited {process.returncode}: {process.stderr.read()}")
            try:
                response = requests.put(url, json=PROFILE, headers=auth(), timeout=2)
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    self.fail("mock_api.py did not answer within 15 s")
                time.sleep(0.05)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), PROFILE)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    unittest.main()
