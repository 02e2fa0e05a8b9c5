"""One result record per player, with one outcome enum; counts and exit status derive from them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(str, enum.Enum):
    """What happened to one player in one cycle."""

    UPDATED = "updated"            # 200, and the answer holds the profile we sent
    UP_TO_DATE = "up_to_date"      # already at the target: nothing sent (state)
    UNKNOWN = "unknown"            # 404: the API has no such player
    REJECTED = "rejected"          # 409: the API refuses the profile
    MISMATCH = "mismatch"          # 200, but the answer holds another profile
    UNAUTHORIZED = "unauthorized"  # 401, even with credentials read again
    FAILED = "failed"              # still failing after retries, or an unexpected answer
    SKIPPED = "skipped"            # not attempted: the cycle stopped first

    @property
    def at_target(self) -> bool:
        return self in (Outcome.UPDATED, Outcome.UP_TO_DATE)

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class PlayerResult:
    """The final word on one player in one cycle."""

    mac: str
    outcome: Outcome
    status: int | None = None  # the last HTTP status; None when no answer came
    message: str = ""
    attempts: int = 0
    duration: float = 0.0  # seconds, all attempts and waits included

    @property
    def reason(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no answer"
        detail = f": {self.message}" if self.message else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.outcome.label} ({status}{tries}){detail}"
