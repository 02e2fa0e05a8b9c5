"""The package's one exception tree.

Library exceptions (OSError, json, sqlite3, requests) are converted into these at the
boundary where they occur, so the entry points only have to map an exception class to an
exit status and print its one-line message.
"""

from __future__ import annotations


class UpdaterError(Exception):
    """Base class of every failure the updater knows how to explain."""


class ConfigError(UpdaterError):
    """The set-up is wrong: an option, a file, the credentials. Nothing was sent."""

    def __init__(self, problems: str | list[str]):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class InputError(ConfigError):
    """An input file (the players CSV or the profile) cannot be used."""


class StateError(ConfigError):
    """The state file cannot be opened, is locked by another updater, or is damaged."""


class AuthRejected(UpdaterError):
    """The API rejected the credentials, even after reading them again."""


class Interrupted(UpdaterError):
    """Work stopped because a stop was requested (Ctrl-C, SIGTERM)."""
