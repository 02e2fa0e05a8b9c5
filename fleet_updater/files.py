"""Reading the operator's files, with every failure turned into one line naming the file."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .errors import ConfigError


@contextlib.contextmanager
def named_errors(path: Path, label: str, error: type[ConfigError] = ConfigError) -> Iterator[None]:
    """Turn the OS's and the decoder's exceptions inside the block into ``error``.

    ``label`` says what the file is: "profile x.json: not found".
    """
    try:
        yield
    except FileNotFoundError:
        raise error(f"{label} {path}: not found") from None
    except IsADirectoryError:
        raise error(f"{label} {path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{label} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{label} {path}: cannot be read: {exc.strerror or exc}") from None


def read_text(path: str | Path, label: str, error: type[ConfigError] = ConfigError) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped), or ``error`` naming it."""
    path = Path(path)
    with named_errors(path, label, error):
        return path.read_text(encoding="utf-8-sig")
