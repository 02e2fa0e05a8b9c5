"""Reading the operator's text files, with every failure turned into one named line."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def read_text(path: str | Path, label: str, error: type[ConfigError] = ConfigError) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped), or ``error`` naming it.

    ``label`` says what the file is, e.g. "profile": "profile x.json: not found".
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{label} {path}: not found") from None
    except IsADirectoryError:
        raise error(f"{label} {path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{label} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{label} {path}: cannot be read: {exc.strerror or exc}") from None
