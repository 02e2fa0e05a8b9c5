"""profile.json: the API's request body, checked before anything is sent."""

import json
import unittest

from fleet_updater.errors import InputError
from fleet_updater.profile import load_profile, profile_from_document, profile_problems

from .support import ROOT, SAMPLE_PROFILE, TempDirTestCase


def apps(*pairs):
    return {"profile": {"applications": [{"applicationId": a, "version": v} for a, v in pairs]}}


class ProfileValidationTest(unittest.TestCase):
    INVALID = [
        ("not an object", [], "must be a JSON object"),
        ("no profile", {}, '"profile" is missing'),
        ("profile not object", {"profile": []}, '"profile" must be an object'),
        ("no applications", {"profile": {}}, '"profile.applications" is missing'),
        ("applications not list", {"profile": {"applications": {}}}, "must be a list"),
        ("empty applications", {"profile": {"applications": []}}, "is empty"),
        ("item not object", {"profile": {"applications": ["x"]}}, r"\[0\] must be an object"),
        ("missing version", {"profile": {"applications": [{"applicationId": "a"}]}}, "'version' is missing"),
        ("missing id", {"profile": {"applications": [{"version": "1"}]}}, "'applicationId' is missing"),
        ("empty id", apps(("", "v1")), "'applicationId' is empty"),
        ("blank version", apps(("a", "  ")), "'version' is empty"),
        ("number version", {"profile": {"applications": [{"applicationId": "a", "version": 1}]}},
         "'version' must be a string"),
        ("padded version", apps(("a", " v1")), "leading or trailing spaces"),
        ("twice", apps(("a", "v1"), ("b", "v1"), ("a", "v2")), "listed twice"),
        ("typo key", {"profile": {"applications": [{"applicationId": "a", "version": "1"}]}, "x": 1},
         "unknown key 'x'"),
        ("typo inner key", {"profile": {"aplications": [], "applications": [{"applicationId": "a", "version": "1"}]}},
         "unknown key 'aplications'"),
    ]

    def test_invalid_documents_are_named(self):
        for name, document, pattern in self.INVALID:
            with self.subTest(name):
                with self.assertRaisesRegex(InputError, pattern):
                    profile_from_document(document)

    def test_every_problem_reported_at_once(self):
        document = {"profile": {"applications": [{"applicationId": ""}, {"version": 3}]}}
        self.assertEqual(len(profile_problems(document)), 4)

    def test_sample_profile_is_valid_and_body_is_exact(self):
        profile = load_profile(ROOT / "profile.json")
        self.assertEqual(json.loads(profile.body), SAMPLE_PROFILE)
        self.assertEqual(profile.versions["music_app"], "v1.4.10")

    def test_digest_ignores_order_but_not_versions(self):
        a = profile_from_document(apps(("x", "1"), ("y", "2")))
        b = profile_from_document(apps(("y", "2"), ("x", "1")))
        c = profile_from_document(apps(("x", "1"), ("y", "3")))
        self.assertEqual(a.digest, b.digest)
        self.assertNotEqual(a.digest, c.digest)

    def test_matches_answer(self):
        profile = profile_from_document(apps(("x", "1"), ("y", "2")))
        self.assertTrue(profile.matches(apps(("y", "2"), ("x", "1"))))
        self.assertFalse(profile.matches(apps(("x", "1"), ("y", "9"))))
        self.assertFalse(profile.matches(apps(("x", "1"))))
        self.assertFalse(profile.matches(apps(("x", "1"), ("y", "2"), ("z", "3"))))
        self.assertFalse(profile.matches({"profile": None}))


class ProfileFileTest(TempDirTestCase):
    def test_file_problems_name_the_file(self):
        cases = [
            (None, "not found"),
            ("{not json", "not valid JSON: .* at line 1 column 2"),
            (b"\xff\xfe\x00bad", "not UTF-8 text"),
            ('{"profile": {"applications": []}}', ".*is empty"),
        ]
        for content, pattern in cases:
            with self.subTest(pattern):
                path = self.tmp / "profile.json"
                path.unlink(missing_ok=True)
                if content is not None:
                    self.write("profile.json", content)
                with self.assertRaisesRegex(InputError, "profile .*profile.json: " + pattern):
                    load_profile(path)

    def test_bom_is_accepted(self):
        path = self.write("profile.json", b"\xef\xbb\xbf" + json.dumps(SAMPLE_PROFILE).encode())
        self.assertEqual(len(load_profile(path).applications), 3)


if __name__ == "__main__":
    unittest.main()
