"""Throughput of this client beside pipesvc's Rust client, same machine,
same run, same ``pipesvc serve``: one connection, 64 calls in flight, echo
of a 64-byte string, typed (MessagePack, JSON) and as byte requests; the
Rust client is ``pipesvc bench`` on the same workloads (typed with
``--method echo``, MessagePack). Prints a Markdown table for BENCHMARKS.md.

    python bench.py --pipesvc target/release/pipesvc --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

from pipesvc_client import Client, Encoding


async def load(call: Callable[[], Awaitable[object]], inflight: int, seconds: float) -> float:
    """Calls per second with ``inflight`` callers looping for ``seconds``."""
    done = 0
    stop = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await call()
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(inflight)))
    return done / (time.monotonic() - start)


async def python_rows(socket: str, inflight: int, size: int, seconds: float) -> dict[str, float]:
    """The Python client's three workloads on one connection."""
    text, payload = "x" * size, b"x" * size
    rows = {}
    async with await Client.connect(socket) as client:
        rows["Python, typed msgpack"] = await load(
            lambda: client.call("echo", text, encoding=Encoding.MSGPACK), inflight, seconds)
        rows["Python, typed json"] = await load(
            lambda: client.call("echo", text, encoding=Encoding.JSON), inflight, seconds)
        rows["Python, byte request"] = await load(lambda: client.request(payload), inflight, seconds)
    return rows


def rust_row(
    binary: str, socket: str, inflight: int, size: int, seconds: float, typed: bool
) -> float:
    """``pipesvc bench`` (the Rust client) on the same workload: calls/s."""
    command = [binary, "bench", "--name", socket, "--clients", "1", "--inflight", str(inflight),
               "--size", str(size), "--duration", str(seconds), "--json"]
    if typed:
        command += ["--method", "echo", "--params", json.dumps("x" * size)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["requests_per_sec"])


async def main() -> None:
    """Starts a server, measures, prints the table, stops the server."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipesvc", required=True, help="the pipesvc binary (release)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="psvc-bench-", dir="/tmp"))
    socket = str(directory / "s.sock")
    server = await asyncio.create_subprocess_exec(
        args.pipesvc, "serve", "--name", socket, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        await asyncio.wait_for(server.stdout.readline(), 60)
        rust_typed = rust_row(args.pipesvc, socket, args.inflight, args.size, args.seconds, True)
        rust_bytes = rust_row(args.pipesvc, socket, args.inflight, args.size, args.seconds, False)
        rows = await python_rows(socket, args.inflight, args.size, args.seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"| workload (1 connection, {args.inflight} in flight, {args.size} B) | Rust calls/s"
          " | Python calls/s | Python / Rust |")
    print("|---|---:|---:|---:|")
    for name, python, rust in [
        ("typed echo, MessagePack", rows["Python, typed msgpack"], rust_typed),
        ("typed echo, JSON (Rust: MessagePack)", rows["Python, typed json"], rust_typed),
        ("byte request", rows["Python, byte request"], rust_bytes),
    ]:
        print(f"| {name} | {rust:,.0f} | {python:,.0f} | {python / rust:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
