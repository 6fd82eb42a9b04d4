#!/usr/bin/env python3
"""Self-test of the peer scripts: each client against the other language's server.

Runs py_echo_client.py against node_echo_server.js and node_echo_client.js
against py_echo_server.py, with compression on and off, and checks that every
message comes back unchanged and the close is reported as `CLOSED 1000 `.

Run it with the Python that has `websockets` installed and NODE_PATH pointing
at a node_modules directory that has `ws` (`cargo xtask test` does both):
  NODE_PATH=target/xtask/node/node_modules target/xtask/venv/bin/python tests/peers/selftest.py
Exits 0 when every combination passes, 1 otherwise. Every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 30.0  # seconds, for each process step

SERVERS = {
    "python": [sys.executable, str(HERE / "py_echo_server.py")],
    "node": ["node", str(HERE / "node_echo_server.js")],
}
CLIENTS = {
    "python": [sys.executable, str(HERE / "py_echo_client.py")],
    "node": ["node", str(HERE / "node_echo_client.js")],
}


def messages() -> list[dict[str, str]]:
    rng = random.Random(6455)
    blob = bytes(rng.getrandbits(8) for _ in range(300_000))
    return [
        {"text": "hello"},
        {"text": ""},
        {"text": "h\u00e9llo w\u00f6rld \u2603 \U0001F600 \u2028 \"quoted\" \\ \t"},
        {"binary_b64": base64.b64encode(b"\x00\x01\x02\xff\n\r").decode()},
        {"binary_b64": ""},
        {"text": "x" * 200_000},
        {"binary_b64": base64.b64encode(blob).decode()},
    ]


def read_line(stream, timeout: float) -> str | None:
    """One line from a pipe, or None if it does not arrive in time."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].decode() if result else None


def run_pair(server: str, client: str, compress: str) -> list[str]:
    """Run one client/server combination; return the problems found."""
    problems: list[str] = []
    srv = subprocess.Popen(
        [*SERVERS[server], "--port", "0", "--compress", compress],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        line = read_line(srv.stdout, TIMEOUT)
        if not line or not line.startswith("LISTENING "):
            return [f"server printed {line!r} instead of LISTENING <port>"]
        port = int(line.split()[1])
        sent = messages()
        stdin = "".join(json.dumps(m) + "\n" for m in sent)
        try:
            done = subprocess.run(
                [*CLIENTS[client], f"ws://127.0.0.1:{port}/echo", "--compress", compress],
                input=stdin.encode(),
                capture_output=True,
                timeout=TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return [f"client did not finish within {TIMEOUT:.0f} s"]
        if done.returncode != 0:
            problems.append(f"client exited {done.returncode}: {done.stderr.decode()[-500:]}")
        # Split on "\n" only: str.splitlines() would also split at U+2028.
        out = done.stdout.decode().split("\n")
        if out and out[-1] == "":
            out.pop()
        if len(out) != len(sent) + 1:
            problems.append(f"client printed {len(out)} lines, expected {len(sent) + 1}")
        for i, (want, got) in enumerate(zip(sent, out)):
            try:
                echoed = json.loads(got)
            except ValueError:
                echoed = None
            if echoed != want:
                problems.append(f"message {i}: sent {str(want)[:60]}, got {got[:60]}")
        if out and out[-1] != "CLOSED 1000 ":
            problems.append(f"last line {out[-1]!r}, expected 'CLOSED 1000 '")
    finally:
        srv.stdin.close()  # tells the server to exit
        try:
            code = srv.wait(TIMEOUT)
            if code != 0:
                problems.append(f"server exited {code} after stdin closed")
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
            problems.append("server did not exit after stdin closed")
    return problems


def main() -> int:
    failed = 0
    for server, client in (("node", "python"), ("python", "node")):
        for compress in ("off", "on"):
            problems = run_pair(server, client, compress)
            status = "ok" if not problems else "FAILED"
            print(f"peers: {client} client -> {server} server, compress {compress}: {status}")
            for problem in problems:
                print(f"    {problem}")
            failed += bool(problems)
    print(f"peers: {4 - failed} of 4 combinations passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
