#!/usr/bin/env python3
"""WebSocket echo server built on Python `websockets` (asyncio API, v15+).

Contract (see README.md in this directory):
  py_echo_server.py --port PORT --compress {on,off}

Binds 127.0.0.1:PORT (0 picks an ephemeral port), prints exactly one line
`LISTENING <port>` to stdout once it accepts connections, echoes every message
back with the same type (text as text, binary as binary; messages up to
64 MiB), and exits 0 when its standard input reaches end of file, closing
open connections with 1001 (going away).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MAX_MESSAGE_SIZE = 64 * 1024 * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: ephemeral)")
    parser.add_argument("--compress", choices=("on", "off"), default="off",
                        help="offer permessage-deflate")
    return parser.parse_args()


def stdin_closed(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """A future that completes when standard input reaches end of file.

    Reads the raw descriptor on a daemon thread, so it works whatever stdin is
    (pipe, file, terminal, /dev/null) and never blocks interpreter exit.
    """
    done: asyncio.Future[None] = loop.create_future()

    def pump() -> None:
        try:
            while os.read(0, 1 << 16):
                pass
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
        except RuntimeError:  # the loop is already closed
            pass

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return done


async def echo(connection: ServerConnection) -> None:
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass


async def main() -> None:
    args = parse_args()
    eof = stdin_closed(asyncio.get_running_loop())
    async with serve(
        echo,
        "127.0.0.1",
        args.port,
        compression="deflate" if args.compress == "on" else None,
        max_size=MAX_MESSAGE_SIZE,
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"LISTENING {port}", flush=True)
        await eof


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
