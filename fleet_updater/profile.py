"""The target profile: load ``profile.json``, check it against the API contract, digest it.

The file holds exactly the API's request body::

    {"profile": {"applications": [{"applicationId": "music_app", "version": "v1.4.10"}]}}

It is checked before anything is sent, and every problem is reported at once, because an
operator fixing a file wants the whole list, not one error per run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import read_text

_TOP_KEYS = {"profile"}
_PROFILE_KEYS = {"applications"}
_APPLICATION_KEYS = {"applicationId", "version"}


@dataclass(frozen=True)
class Profile:
    """A validated target profile, ready to send."""

    applications: tuple[tuple[str, str], ...]  # (applicationId, version), in file order
    body: bytes  # the exact request body sent to every player
    digest: str  # stable across key order and application order

    @property
    def versions(self) -> dict[str, str]:
        return dict(self.applications)

    def document(self) -> dict[str, Any]:
        return {
            "profile": {
                "applications": [
                    {"applicationId": app, "version": version}
                    for app, version in self.applications
                ]
            }
        }

    def describe(self) -> str:
        return ", ".join(f"{app} {version}" for app, version in self.applications)

    def matches(self, answer: Any) -> bool:
        """True when an API answer holds this same profile (application order ignored)."""
        try:
            apps = answer["profile"]["applications"]
            found = {item["applicationId"]: item["version"] for item in apps}
        except (KeyError, TypeError, AttributeError):
            return False
        return len(found) == len(apps) and found == self.versions


def profile_problems(document: Any) -> list[str]:
    """Every way ``document`` falls short of the API's request body; empty when valid."""
    if not isinstance(document, dict):
        return [f"must be a JSON object with a \"profile\" key, not {_kind(document)}"]
    problems = [f"unknown key {key!r} (only \"profile\" is allowed)"
                for key in document if key not in _TOP_KEYS]
    if "profile" not in document:
        return problems + ['"profile" is missing']
    profile = document["profile"]
    if not isinstance(profile, dict):
        return problems + [f'"profile" must be an object, not {_kind(profile)}']
    problems += [f"unknown key {key!r} in \"profile\" (only \"applications\" is allowed)"
                 for key in profile if key not in _PROFILE_KEYS]
    if "applications" not in profile:
        return problems + ['"profile.applications" is missing']
    applications = profile["applications"]
    if not isinstance(applications, list):
        return problems + [f'"profile.applications" must be a list, not {_kind(applications)}']
    if not applications:
        return problems + ['"profile.applications" is empty: list at least one application']
    seen: dict[str, int] = {}
    for index, app in enumerate(applications):
        where = f"profile.applications[{index}]"
        if not isinstance(app, dict):
            problems.append(f"{where} must be an object, not {_kind(app)}")
            continue
        problems += [f"{where}: unknown key {key!r}" for key in app if key not in _APPLICATION_KEYS]
        for key in ("applicationId", "version"):
            value = app.get(key)
            if key not in app:
                problems.append(f"{where}: {key!r} is missing")
            elif not isinstance(value, str):
                problems.append(f"{where}: {key!r} must be a string, not {_kind(value)}")
            elif not value.strip():
                problems.append(f"{where}: {key!r} is empty")
            elif value != value.strip():
                problems.append(f"{where}: {key!r} has leading or trailing spaces: {value!r}")
        app_id = app.get("applicationId")
        if isinstance(app_id, str) and app_id.strip():
            if app_id in seen:
                problems.append(
                    f"{where}: application {app_id!r} is listed twice "
                    f"(also at profile.applications[{seen[app_id]}])"
                )
            else:
                seen[app_id] = index
    return problems


def _kind(value: Any) -> str:
    return {
        dict: "an object", list: "a list", str: "a string", bool: "true/false",
        int: "a number", float: "a number", type(None): "null",
    }.get(type(value), type(value).__name__)


def profile_from_document(document: Any, source: str = "profile") -> Profile:
    """Validate a parsed document into a Profile, or raise InputError listing every problem."""
    problems = profile_problems(document)
    if problems:
        raise InputError([f"{source}: {problem}" for problem in problems])
    applications = tuple(
        (app["applicationId"], app["version"]) for app in document["profile"]["applications"]
    )
    body = json.dumps(
        {"profile": {"applications": [
            {"applicationId": app, "version": version} for app, version in applications
        ]}},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    canonical = json.dumps(sorted(applications), separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    return Profile(applications=applications, body=body, digest=digest)


def load_profile(path: str | Path) -> Profile:
    """Read and validate ``profile.json``; InputError names the file and every problem."""
    path = Path(path)
    text = read_text(path, "profile", InputError)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"profile {path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return profile_from_document(document, source=f"profile {path}")
