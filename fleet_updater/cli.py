"""The command line: the argument parser, and ``main()`` mapping every failure to an exit status.

``main.py`` only calls :func:`main`. Known failures become one clear line and an exit
status (see :class:`ExitStatus`); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from . import __version__, logs
from .config import (
    DEFAULT_API_URL,
    DEFAULT_BACKOFF,
    DEFAULT_INTERVAL_MINUTES,
    DEFAULT_KEYS,
    DEFAULT_PLAYERS,
    DEFAULT_PROFILE,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_AFTER_MAX,
    DEFAULT_STATE,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS,
    MAX_WORKERS,
    CredentialSource,
    Settings,
    is_loopback_url,
)
from .errors import ConfigError, UpdaterError
from .report import ExitStatus

log = logging.getLogger("fleet_updater")

DESCRIPTION = """\
Put the target software profile on every music player listed in a CSV, through the
players' profile API, and keep it there.

Run without --once it is a daemon: a cycle at once, then one every --interval minutes,
until Ctrl-C or SIGTERM. Each cycle reads the CSV and the profile afresh and sends the
profile only to the players not already at it (the state file remembers who is).
"""

EPILOG = f"""\
commands:
  python main.py                 the daemon (a cycle now, then every --interval minutes)
  python main.py --once          one cycle, then exit with its status (cron, CI, scripts)
  python main.py --dry-run       check every input and show the plan; send nothing
  python main.py --demo          see it work against the bundled mock, on this machine
  python main.py status [--json] what the state file knows of the fleet (no requests)

examples:
  python main.py --once --players fleet.csv --api-url https://profiles.example.com
  python main.py --dry-run -v
  python main.py --once --force --report cycle.csv
  python main.py --interval 30 --log-file updater.log

settings: flags win over the environment (CLIENT_ID, AUTH_TOKEN, API_URL), which wins
over the keys file. Credentials are never taken from the command line, and the token is
never printed. On a 401 the keys file and environment are read again: a rotated token is
picked up without a restart.

exit status (--once; --dry-run uses the same codes for what it can know):
  0    every player listed is at the target profile
  1    the cycle ran, but some rows or players were not updated (each is named)
  2    nothing was sent: the set-up is wrong (a file, an option, the credentials)
  3    stopped: the API rejects the credentials, even after reading them again
  130  interrupted by Ctrl-C (SIGTERM stops the daemon cleanly with 0)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_argument_group("what to do (default: run as a daemon)")
    exclusive = mode.add_mutually_exclusive_group()
    exclusive.add_argument("--once", action="store_true",
                           help="run one cycle, then exit with its status")
    exclusive.add_argument("--dry-run", action="store_true",
                           help="read and check everything, print what would be sent to how many "
                                "players, send nothing")
    exclusive.add_argument("--demo", action="store_true",
                           help="start the bundled mock API on a free local port and run one "
                                "cycle against it (needs nothing but this folder)")
    mode.add_argument("--force", action="store_true",
                      help="send to every player, even those the state says are at the target")

    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--players", metavar="PATH", default=DEFAULT_PLAYERS,
                        help="CSV of players, MAC address in the first column "
                             f"(default: {DEFAULT_PLAYERS})")
    inputs.add_argument("--profile", metavar="PATH", default=DEFAULT_PROFILE,
                        help="the target profile: exactly the API's request body "
                             f"(default: {DEFAULT_PROFILE})")
    inputs.add_argument("--keys", metavar="PATH", default=None,
                        help="credentials file, dotenv format: CLIENT_ID, AUTH_TOKEN, optionally "
                             f"API_URL (default: {DEFAULT_KEYS}, optional if the environment "
                             "has them)")
    inputs.add_argument("--api-url", metavar="URL", default=None,
                        help=f"the API's base URL (default: $API_URL, else API_URL in the keys "
                             f"file, else {DEFAULT_API_URL})")
    inputs.add_argument("--ca-bundle", metavar="PATH", type=Path, default=None,
                        help="CA certificates to verify the API's TLS certificate with "
                             "(verification is always on)")

    tuning = parser.add_argument_group("how")
    tuning.add_argument("--state", metavar="PATH", type=Path, default=Path(DEFAULT_STATE),
                        help=f"state file: what has been done, per player (default: {DEFAULT_STATE})")
    tuning.add_argument("--workers", metavar="N", type=int, default=DEFAULT_WORKERS,
                        help=f"requests in flight at most, 1 to {MAX_WORKERS} "
                             f"(default: {DEFAULT_WORKERS})")
    tuning.add_argument("--interval", metavar="MINUTES", type=float,
                        default=DEFAULT_INTERVAL_MINUTES,
                        help=f"time between cycles in daemon mode (default: {DEFAULT_INTERVAL_MINUTES:g})")
    tuning.add_argument("--timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
                        help=f"per-request timeout, to connect and to read (default: {DEFAULT_TIMEOUT:g})")
    tuning.add_argument("--retries", metavar="N", type=int, default=DEFAULT_RETRIES,
                        help="retries of a transient failure (429, 5xx, timeout, reset, an answer "
                             f"that is not JSON), with exponential backoff (default: {DEFAULT_RETRIES})")
    tuning.add_argument("--backoff", metavar="SECONDS", type=float, default=DEFAULT_BACKOFF,
                        help=f"first backoff; doubles at each retry, with jitter (default: {DEFAULT_BACKOFF:g})")
    tuning.add_argument("--max-retry-after", metavar="SECONDS", type=float,
                        default=DEFAULT_RETRY_AFTER_MAX,
                        help="longest Retry-After honoured; longer ones are capped "
                             f"(default: {DEFAULT_RETRY_AFTER_MAX:g})")
    tuning.add_argument("--report", metavar="PATH", type=Path, default=None,
                        help="write each cycle's per-player results to PATH (.csv or .json)")

    output = parser.add_argument_group("output")
    verbosity = output.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0,
                           help="more detail: -v one line per request and retry, -vv the HTTP "
                                "libraries too")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="only warnings and errors")
    output.add_argument("--log-file", metavar="PATH", type=Path, default=None,
                        help="also log to PATH, rotated at 5 MB (5 files kept)")
    output.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def build_status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py status",
        description="Show the fleet as the state file knows it: players at the target, "
                    "pending, failing (with reason and since when), unknown, removed, and "
                    "the last cycles. Reads the state only; sends nothing.")
    parser.add_argument("--state", metavar="PATH", type=Path, default=Path(DEFAULT_STATE),
                        help=f"state file (default: {DEFAULT_STATE})")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--limit", metavar="N", type=int, default=20,
                        help="how many failing players and cycles to list (default: 20)")
    return parser


def settings_from_args(args: argparse.Namespace, environ=None) -> Settings:
    """Flags over environment over keys file, into one validated Settings."""
    environ = os.environ if environ is None else environ
    keys = Path(args.keys) if args.keys else Path(DEFAULT_KEYS)
    source = CredentialSource(keys, environ, file_required=args.keys is not None)
    api_url = args.api_url or source.api_url() or DEFAULT_API_URL
    settings = Settings(
        players=Path(args.players), profile=Path(args.profile), keys=keys,
        keys_required=args.keys is not None, api_url=api_url, state=args.state,
        workers=args.workers, interval=args.interval, timeout=args.timeout,
        retries=args.retries, backoff=args.backoff, retry_after_max=args.max_retry_after,
        force=args.force, dry_run=args.dry_run, report=args.report, ca_bundle=args.ca_bundle,
    )
    problems = settings.problems()
    if problems:
        raise ConfigError(problems)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    args = build_parser().parse_args(argv)
    daemon_mode = not (args.once or args.dry_run or args.demo)
    try:
        logs.configure(-1 if args.quiet else args.verbose, args.log_file, timestamps=daemon_mode)
    except OSError as exc:
        print(f"error: log file {args.log_file}: {exc.strerror or exc}", file=sys.stderr)
        return ExitStatus.SETUP
    try:
        if args.demo:
            from .demo import run_demo

            return int(run_demo(verbosity=args.verbose, workers=args.workers))
        settings = settings_from_args(args)
        return int(run(settings, once=args.once))
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return ExitStatus.SETUP
    except KeyboardInterrupt:
        log.warning("interrupted")
        return ExitStatus.INTERRUPTED
    except UpdaterError as exc:
        log.error("%s", exc)
        return ExitStatus.INCOMPLETE


def run(settings: Settings, *, once: bool) -> ExitStatus:
    """Run the dry run, one cycle, or the daemon, with the state locked and signals handled."""
    from .cycle import run_cycle
    from .daemon import Daemon, StopSignals
    from .lock import InstanceLock
    from .state import StateStore

    if not is_loopback_url(settings.api_url) and settings.api_url.startswith("http://"):
        log.warning("the API URL %s is plain http: the token would cross the network "
                    "unencrypted; use https://", settings.api_url)
    stop = threading.Event()
    with StopSignals(stop) as signals:
        if settings.dry_run:
            with StateStore.open(settings.state, readonly=True) as state:
                return run_cycle(settings, state, stop=stop).exit_status
        with InstanceLock(settings.state), StateStore.open(settings.state) as state:
            if once:
                report = run_cycle(settings, state, stop=stop)
                if signals.interrupted:
                    return ExitStatus.INTERRUPTED
                return report.exit_status

            def cycle() -> None:
                report = run_cycle(settings, state, stop=stop)
                if report.credentials_rejected:
                    log.error("the API rejects the credentials: fix %s (or the environment); "
                              "the next cycle tries again", settings.keys)

            Daemon(cycle, settings.interval, stop).run()
            if signals.interrupted:
                return ExitStatus.INTERRUPTED
            return ExitStatus.OK


def status_main(argv: Sequence[str]) -> int:
    from .report import render_status
    from .state import StateStore

    args = build_status_parser().parse_args(argv)
    logs.configure(0)
    try:
        if not args.state.exists():
            raise ConfigError(f"state file {args.state}: not found (no cycle has run with this "
                              f"--state yet)")
        with StateStore.open(args.state, readonly=True) as state:
            cycles = state.cycles(args.limit)
            target = cycles[0]["profile_digest"] if cycles else None
            fleet = state.fleet(target, args.limit)
            profile = state.profile_body(target) if target else None
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return ExitStatus.SETUP
    data = {"state": str(args.state), "target": target, "profile": profile, **fleet,
            "cycles": cycles, "generated": time.time()}
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(render_status(data))
    return ExitStatus.OK
