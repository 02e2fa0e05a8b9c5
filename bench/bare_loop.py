"""The baseline client of bench/run.py: a bare sequential requests.Session loop.

    python bench/bare_loop.py URL PLAYERS.csv PROFILE.json [--naive]

One PUT per player of the CSV (canonical MACs, one per line after the header), in order,
on one keep-alive session; with ``--naive``, one ``requests.put`` per player and no session,
as the first versions of the tool did. It runs as its own process, like the updater, so
both pay the same interpreter start-up and imports.
"""

import sys

import requests


def main() -> int:
    url, players, profile = sys.argv[1:4]
    naive = "--naive" in sys.argv[4:]
    body = open(profile, "rb").read()
    headers = {"Content-Type": "application/json", "x-client-id": "demo-client",
               "x-authentication-token": "demo-token-0123456789abcdef"}
    with open(players, encoding="utf-8") as handle:
        macs = [line.split(",")[0].strip() for line in handle.readlines()[1:] if line.strip()]
    put = requests.put if naive else requests.Session().put
    failed = 0
    for mac in macs:
        answer = put(f"{url}/profiles/clientId:{mac}", data=body, headers=headers, timeout=10)
        answer.json()
        failed += answer.status_code != 200
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
