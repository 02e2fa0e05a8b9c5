"""Run the mock player-profile API: ``python mock_api.py --help``.

Thin on purpose: parse the flags, configure logging, build the app with
:func:`fleet_updater.mock.create_app`, serve it. Every start-up problem is one line on
stderr and exit status 2; Ctrl-C stops it (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from fleet_updater.errors import ConfigError
from fleet_updater.mock import (DEFAULT_RESPONSES, MAX_BODY_BYTES, MockConfig, create_app,
                                make_mock_server, mock_state)

EXIT_OK = 0
EXIT_CONFIG = 2

DESCRIPTION = """\
Serve the player-profile API of API.md on your machine, for trying the updater out.

  PUT /profiles/clientId:<mac>   store a profile (the API's one call)
  GET /profiles/clientId:<mac>   show what was stored (mock only)

It knows the players of --players, accepts the credentials of --keys (re-read as soon as
the file changes, so rotating AUTH_TOKEN there takes effect at once) and answers from the
catalogue --responses. A profile request carrying the header `x-mock-response: <name>` gets
that catalogue entry instead (e.g. service_unavailable, bad_gateway_html).
"""

EPILOG = """\
bad days (all off by default):
  --latency-ms 100 --jitter-ms 50   every request takes 100..150 ms
  --error-rate 0.1                  one PUT in ten answers 500
  --token-ttl 60                    a token works for 60 s after its first use, then 401
                                    until a new AUTH_TOKEN is written to the keys file
  --rate-limit 200                  over 200 requests in a second: 429 with Retry-After
  --seed 7                          the same random faults on every run

examples:
  python mock_api.py --keys keys.conf.example       the demo credentials, port 5000
  python mock_api.py --port 0 --players my_players.csv --keys keys.conf
  python mock_api.py --port 8080 --latency-ms 100 --jitter-ms 50 --error-rate 0.05 --seed 7
  curl -X PUT http://127.0.0.1:5000/profiles/clientId:a1:01:cc:dd:ee:07 \\
       -H 'Content-Type: application/json' -H 'x-client-id: demo-client' \\
       -H 'x-authentication-token: demo-token-0123456789abcdef' -d @profile.json
  curl -i -X PUT http://127.0.0.1:5000/profiles/clientId:a1:01:cc:dd:ee:07 \\
       -H 'x-mock-response: bad_gateway_html'
"""


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors become ConfigError, so they print as one line like every other."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="mock_api.py", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=5000,
                        help="port to listen on, 0 for any free one (default: %(default)s)")
    parser.add_argument("--players", type=Path, default=Path("players.csv"), metavar="CSV",
                        help="the players it knows: MACs in the first column, any spelling "
                             "(default: %(default)s)")
    parser.add_argument("--keys", type=Path, default=Path("keys.conf"), metavar="FILE",
                        help="dotenv file with the CLIENT_ID and AUTH_TOKEN it accepts "
                             "(default: %(default)s; keys.conf.example holds demo values)")
    parser.add_argument("--responses", type=Path, default=DEFAULT_RESPONSES, metavar="JSON",
                        help="the catalogue of answers (default: responses.json of this project)")
    faults = parser.add_argument_group("faults")
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="P",
                        help="share of PUTs answered 500, from 0 to 1 (default: 0)")
    faults.add_argument("--latency-ms", type=float, default=0.0, metavar="L",
                        help="delay every request by L milliseconds (default: 0)")
    faults.add_argument("--jitter-ms", type=float, default=0.0, metavar="J",
                        help="plus a random 0..J milliseconds (default: 0)")
    faults.add_argument("--token-ttl", type=float, default=None, metavar="SECONDS",
                        help="a token is refused (401) this long after its first use")
    faults.add_argument("--rate-limit", type=int, default=None, metavar="N",
                        help="answer 429 with Retry-After beyond N requests per second")
    faults.add_argument("--seed", type=int, default=None,
                        help="seed the random faults, for repeatable runs")
    parser.add_argument("--quiet", action="store_true",
                        help="log warnings only: no start-up line, no traffic summary "
                             "(otherwise one line every 5 s at most, when there was traffic)")
    return parser


def _stop_on_sigterm() -> None:
    # SIGTERM stops it like Ctrl-C: werkzeug's serve_forever ends on KeyboardInterrupt.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.WARNING if args.quiet else logging.INFO,
            format="%(asctime)s %(levelname)s %(message)s",
            stream=sys.stderr,
        )
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be from 0 to 65535, not {args.port}")
        config = MockConfig(
            players_path=args.players, keys_path=args.keys, responses_path=args.responses,
            error_rate=args.error_rate, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
            token_ttl=args.token_ttl, rate_limit=args.rate_limit, seed=args.seed,
            quiet=args.quiet,
        )
        app = create_app(config)
        server = make_mock_server(app, args.host, args.port)
    except ConfigError as exc:
        print(f"mock_api.py: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    state = mock_state(app)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    logging.getLogger("mock_api").info(
        "mock API on http://%s:%d: %d players, keys from %s, bodies up to %d KiB, faults: %s "
        "(Ctrl-C stops it)", shown, server.port, len(state.registry), args.keys,
        MAX_BODY_BYTES // 1024, state.faults.describe(),
    )
    _stop_on_sigterm()
    try:
        server.serve_forever()  # returns on Ctrl-C: werkzeug catches KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if not args.quiet:
            state.log_summary(force=True)
    logging.getLogger("mock_api").info("stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
