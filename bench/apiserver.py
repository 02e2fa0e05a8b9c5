"""A lean loopback API server for benchmarks: asyncio protocol, keep-alive, exact latency.

It follows the API contract closely enough for the updater (credentials compared in
constant time, canonical MAC path, 200 echoing the profile, 401, 404) while spending as
little CPU as it can, so that the client is what a benchmark measures. The added latency
is a timer per request, not a sleeping thread, so 50 or 500 requests in flight cost the
same. Run it in its own process::

    python bench/apiserver.py --port 0 --latency-ms 100

It prints ``listening on http://127.0.0.1:PORT`` and serves until killed. ``GET /_stats``
answers its request count and CPU seconds, so a benchmark can show it is not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import re
import selectors
import sys
import time

MAC_PATH = re.compile(rb"/profiles/clientId:[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
UNAUTHORIZED = (b'{"statusCode":401,"error":"Unauthorized",'
                b'"message":"invalid clientId or token supplied"}')
NOT_FOUND = b'{"statusCode":404,"error":"Not Found","message":"profile of client does not exist"}'
BAD_REQUEST = b'{"statusCode":400,"error":"Bad Request","message":"malformed request"}'


def response(status: int, reason: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (status, reason, len(body))) + body


class Api:
    """The server's settings and counters, shared by every connection."""

    def __init__(self, client_id: str, token: str, latency: float):
        self.client_id = client_id.encode()
        self.token = token.encode()
        self.latency = latency
        self.requests = 0


class Connection(asyncio.Protocol):
    """One keep-alive connection: parse each request as its bytes arrive, answer it."""

    def __init__(self, api: Api, loop: asyncio.AbstractEventLoop):
        self.api = api
        self.loop = loop
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers.get(b"content-length", b"0"))
                method, path, _ = lines[0].split(b" ", 2)
            except ValueError:
                self.transport.write(response(400, b"Bad Request", BAD_REQUEST))
                self.transport.close()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4:total]
            self.buffer = self.buffer[total:]
            self.answer(method, path, headers, body)

    def answer(self, method: bytes, path: bytes, headers: dict, body: bytes) -> None:
        api = self.api
        if path == b"/_stats":  # for the benchmark: how much this server has worked
            stats = json.dumps({"requests": api.requests, "cpu_seconds": time.process_time()})
            self.write(response(200, b"OK", stats.encode()))
            return
        api.requests += 1
        ok = hmac.compare_digest(headers.get(b"x-client-id", b""), api.client_id)
        ok &= hmac.compare_digest(headers.get(b"x-authentication-token", b""), api.token)
        if not ok:
            out = response(401, b"Unauthorized", UNAUTHORIZED)
        elif method != b"PUT" or not MAC_PATH.fullmatch(path):
            out = response(404, b"Not Found", NOT_FOUND)
        else:
            out = response(200, b"OK", body)
        if api.latency:
            self.loop.call_later(api.latency, self.write, out)
        else:
            self.write(out)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, api: Api) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(api, loop), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A lean loopback API server for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument("--client-id", default="demo-client")
    parser.add_argument("--token", default="demo-token-0123456789abcdef")
    args = parser.parse_args(argv)
    api = Api(args.client_id, args.token, args.latency_ms / 1000.0)
    # select() takes microsecond timeouts, where epoll rounds them up to whole milliseconds.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(serve(args.host, args.port, api))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
