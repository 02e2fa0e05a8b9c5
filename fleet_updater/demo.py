"""``python main.py --demo``: the whole product on this machine, in one command.

It starts the bundled mock API in-process on a free loopback port, with the sample
``players.csv`` as its registry, the credentials of ``keys.conf.example`` and a little
fault injection (some 500s, some latency), then runs one real cycle against it with a
CSV that also lists a few players the API does not know, and shows what the mock now
holds. Everything it writes goes to a temporary folder; nothing in the project changes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from pathlib import Path

from .config import DEFAULT_WORKERS, CredentialManager, Settings
from .errors import ConfigError
from .report import ExitStatus
from .results import Outcome

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parent.parent
UNKNOWN_PLAYERS = ["de:ad:be:ef:00:01", "DE-AD-BE-EF-00-02", "deadbeef0003"]
ERROR_RATE = 0.1
LATENCY_MS = 20
JITTER_MS = 30
SEED = 7


def _project_file(name: str) -> Path:
    path = PROJECT / name
    if not path.exists():
        raise ConfigError(f"demo: {path} is missing (the demo uses the project's sample files)")
    return path


def run_demo(verbosity: int = 0, workers: int = DEFAULT_WORKERS) -> ExitStatus:
    """Run the demo; ExitStatus.OK when the cycle did what the demo expects."""
    from .cycle import run_cycle
    from .daemon import StopSignals
    from .mock import MockConfig, create_app, start_mock_server
    from .players import canonical_mac, read_players
    from .state import StateStore

    players_csv = _project_file("players.csv")
    sample_keys = _project_file("keys.conf.example")
    profile = _project_file("profile.json")
    known, _ = read_players(players_csv)

    with tempfile.TemporaryDirectory(prefix="fleet-demo-") as tmp:
        folder = Path(tmp)
        keys = folder / "keys.conf"  # the sample credentials, private like a real keys file
        keys.write_text(sample_keys.read_text(encoding="utf-8"), encoding="utf-8")
        keys.chmod(0o600)
        demo_csv = folder / "players.csv"
        text = players_csv.read_text(encoding="utf-8-sig")
        if not text.endswith("\n"):
            text += "\n"
        demo_csv.write_text(text + "".join(f"{mac}, unknown\n" for mac in UNKNOWN_PLAYERS),
                            encoding="utf-8")

        app = create_app(MockConfig(players_path=players_csv, keys_path=keys,
                                    error_rate=ERROR_RATE, latency_ms=LATENCY_MS,
                                    jitter_ms=JITTER_MS, seed=SEED, quiet=verbosity < 1))
        with start_mock_server(app) as mock:
            log.info("demo: mock API on %s: %d players known, %.0f%% of PUTs answer 500, "
                     "%d-%d ms latency", mock.url, len(known), ERROR_RATE * 100, LATENCY_MS,
                     LATENCY_MS + JITTER_MS)
            log.info("demo: updating the %d players of %s, plus %d the API does not know",
                     len(known), players_csv.name, len(UNKNOWN_PLAYERS))
            settings = Settings(players=demo_csv, profile=profile, keys=keys, keys_required=True,
                                api_url=mock.url, state=folder / "state.sqlite3",
                                workers=workers, backoff=0.05, retry_after_max=1.0, retries=4,
                                use_environment=False)
            if settings.problems():
                raise ConfigError(settings.problems())
            stop = threading.Event()
            with StopSignals(stop) as signals, StateStore.open(settings.state) as state:
                report = run_cycle(settings, state, stop=stop)
            if signals.interrupted:
                return ExitStatus.INTERRUPTED

            served = mock.state.statuses
            print()
            print(f"The mock answered {sum(served.values())} requests: "
                  + ", ".join(f"{count} x {status}" for status, count in sorted(served.items()))
                  + " (the 500s were retried).")
            print("What the mock now holds for a few players "
                  "(GET /profiles/clientId:<mac>, a mock-only route):")
            from .client import ProfileClient
            from .config import CredentialSource

            manager = CredentialManager(CredentialSource(keys, environ={}))
            with ProfileClient(mock.url, manager) as client:
                for mac in known[:3] + [canonical_mac(UNKNOWN_PLAYERS[0])]:
                    answer = client.get_profile(mac)
                    print(f"  {mac}: {json.dumps(answer, separators=(', ', ': '))}")
            print()
            print("Next: python main.py --help, and the README's quick start against your own API.")

    updated = report.counts.get(Outcome.UPDATED.value, 0)
    unknown = report.counts.get(Outcome.UNKNOWN.value, 0)
    if updated == len(known) and unknown == len(UNKNOWN_PLAYERS):
        log.info("demo: as expected, all %d known players hold the target profile, and the %d "
                 "unknown ones are named above", updated, unknown)
        return ExitStatus.OK
    log.error("demo: expected %d players updated and %d unknown, got %d and %d",
              len(known), len(UNKNOWN_PLAYERS), updated, unknown)
    return ExitStatus.INCOMPLETE
