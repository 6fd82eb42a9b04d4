#!/usr/bin/env python3
"""WebSocket echo client built on Python `websockets` (asyncio API, v15+).

Contract (see README.md in this directory):
  py_echo_client.py URL --compress {on,off}

Connects to URL, then reads standard input line by line. Each line is a JSON
object, {"text": "..."} or {"binary_b64": "..."}; the client sends it as a
text or binary message, waits for the next message from the server and prints
it on stdout in the same JSON form, one object per line. At end of input it
closes with code 1000, waits for the server's close frame and prints
`CLOSED <code> <reason>`. If the server closes first, it prints that line at
once. The code is 1005 for a close frame without a code and 1006 when no close
frame arrived at all. Exits 0 once the connection is closed, 1 if it cannot
connect or an input line is malformed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import threading

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

MAX_MESSAGE_SIZE = 64 * 1024 * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws:// URL of the server")
    parser.add_argument("--compress", choices=("on", "off"), default="off",
                        help="offer permessage-deflate")
    return parser.parse_args()


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[bytes | None]:
    """Queue of stdin lines (without the newline), then None at end of file.

    Reads the raw descriptor on a daemon thread, so the client can exit as soon
    as the server closes even while nothing arrives on stdin.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(item: bytes | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        pending = bytearray()
        try:
            while chunk := os.read(0, 1 << 16):
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    pending += chunk[start:end]
                    put(bytes(pending))
                    pending.clear()
                    start = end + 1
                pending += chunk[start:]
            if pending:
                put(bytes(pending))
            put(None)
        except (OSError, RuntimeError):  # RuntimeError: the loop is closed
            pass

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return queue


def decode_line(line: bytes) -> str | bytes:
    item = json.loads(line)
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"]
    if isinstance(item, dict) and isinstance(item.get("binary_b64"), str):
        return base64.b64decode(item["binary_b64"], validate=True)
    raise ValueError(f'expected {{"text": ...}} or {{"binary_b64": ...}}, got {line[:80]!r}')


def encode_message(message: str | bytes) -> dict[str, str]:
    if isinstance(message, str):
        return {"text": message}
    return {"binary_b64": base64.b64encode(message).decode("ascii")}


def emit(line: str) -> None:
    sys.stdout.buffer.write(line.encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()


def emit_closed(connection: ClientConnection) -> None:
    # close_code is 1006 when no close frame arrived, 1005 when it had no code.
    emit(f"CLOSED {connection.close_code} {connection.close_reason or ''}")


class ServerClosed(Exception):
    """The server closed the connection while the client waited for input."""


async def next_line(
    lines: asyncio.Queue[bytes | None], connection: ClientConnection
) -> bytes | None:
    """The next stdin line, or None at end of input; raises ServerClosed if the
    connection closes first."""
    get = asyncio.ensure_future(lines.get())
    closed = asyncio.ensure_future(connection.wait_closed())
    try:
        await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
    if get.done():
        return get.result()
    get.cancel()
    raise ServerClosed


async def main() -> int:
    args = parse_args()
    lines = stdin_lines(asyncio.get_running_loop())
    try:
        connection = await connect(
            args.url,
            compression="deflate" if args.compress == "on" else None,
            max_size=MAX_MESSAGE_SIZE,
            ping_interval=None,
            proxy=None,
        )
    except Exception as error:  # refused, handshake rejected, invalid URL, ...
        print(f"py_echo_client: cannot connect to {args.url}: {error}", file=sys.stderr)
        return 1

    try:
        while (line := await next_line(lines, connection)) is not None:
            if not line.strip():
                continue
            try:
                message = decode_line(line)
            except ValueError as error:
                print(f"py_echo_client: bad input line: {error}", file=sys.stderr)
                await connection.close(1011, "bad input")
                return 1
            await connection.send(message)
            echo = await connection.recv()
            emit(json.dumps(encode_message(echo), ensure_ascii=False, separators=(",", ":")))
        await connection.close(1000)
    except (ConnectionClosed, ServerClosed):
        pass
    # Let the closing handshake finish (bounded by the library's close_timeout).
    await connection.wait_closed()
    emit_closed(connection)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
