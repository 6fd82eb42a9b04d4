#!/usr/bin/env python3
"""Autobahn fuzzingserver driver built on Python `websockets`: a stand-in for
the `autobahn-client` example, to check the xtask harness without it.

  py_autobahn_client.py URL [--agent NAME]

Follows the Autobahn testee protocol against the fuzzingserver at URL
(e.g. ws://127.0.0.1:9001): `/getCaseCount`, then `/runCase?case=N&agent=NAME`
for every case, echoing each message back until the server closes, then
`/updateReports?agent=NAME`. Exits 0 once every case has run.

  DUPLEX_AUTOBAHN_CLIENT_CMD='{python} tests/peers/py_autobahn_client.py {url}' \
    cargo xtask autobahn client
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

CASE_TIMEOUT = 120.0  # seconds; the slowest Autobahn cases take well under this


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws:// URL of the fuzzingserver")
    parser.add_argument("--agent", default="python-websockets", help="agent name in reports")
    return parser.parse_args()


def options() -> dict:
    return {"proxy": None, "max_size": None, "ping_interval": None, "open_timeout": 30}


async def run_case(url: str) -> None:
    try:
        async with connect(url, compression="deflate", **options()) as connection:
            async for message in connection:
                await connection.send(message)
    except (ConnectionClosed, WebSocketException, OSError):
        pass  # the fuzzingserver judges the case; errors are part of the test


async def main() -> int:
    args = parse_args()
    base = args.url.rstrip("/")
    async with connect(f"{base}/getCaseCount", **options()) as connection:
        count = int(await connection.recv())
    print(f"py_autobahn_client: running {count} cases as agent {args.agent!r}", flush=True)
    for case in range(1, count + 1):
        try:
            await asyncio.wait_for(
                run_case(f"{base}/runCase?case={case}&agent={args.agent}"), CASE_TIMEOUT
            )
        except asyncio.TimeoutError:
            print(f"py_autobahn_client: case {case} timed out", file=sys.stderr)
    # The fuzzingserver completes the handshake, then drops the connection
    # without a close frame and writes its reports.
    try:
        async with connect(f"{base}/updateReports?agent={args.agent}", **options()):
            pass
    except (ConnectionClosed, WebSocketException, OSError):
        pass
    print("py_autobahn_client: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
