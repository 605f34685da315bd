"""Fixtures: a real ``pipesvc serve`` per test (unique socket in a private
temporary directory, stopped with SIGTERM and removed afterwards), and a
scripted rogue server for the scenarios no correct server can play."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
#: A hang guard for waits in the fixtures, not a measured duration.
GUARD = 60.0

_binary: Path | None = None


def pipesvc_binary() -> Path:
    """``$PIPESVC_BIN``, else the repository's ``cargo build`` output
    (built once per test session)."""
    global _binary
    if _binary is None:
        given = os.environ.get("PIPESVC_BIN")
        if given:
            _binary = Path(given)
        else:
            subprocess.run(
                ["cargo", "build", "--quiet", "--bin", "pipesvc"], cwd=REPO, check=True
            )
            target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
            _binary = target / "debug" / "pipesvc"
    if not _binary.is_file():
        raise FileNotFoundError(f"no pipesvc binary at {_binary}")
    return _binary


class Server:
    """A running ``pipesvc serve`` on a socket of its own."""

    def __init__(self, directory: Path, args: tuple[str, ...]) -> None:
        self.directory = directory
        self.socket = str(directory / "s.sock")
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> "Server":
        """Starts the service and waits for it to say it listens."""
        log = open(self.directory / "serve.log", "ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                str(pipesvc_binary()), "serve", "--name", self.socket, *self.args,
                stdout=asyncio.subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), GUARD)
        if b"listening" not in line:
            raise RuntimeError(f"pipesvc serve did not start: {line!r}; see {self.log()}")
        return self

    def log(self) -> str:
        """What the service logged so far."""
        return (self.directory / "serve.log").read_text(errors="replace")

    async def stop(self) -> int:
        """SIGTERM (a graceful stop: GOODBYE to every client), then waits
        for the exit (killed past the guard); returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), GUARD)
        except asyncio.TimeoutError:
            process.kill()
            return await process.wait()

    def kill(self) -> None:
        """SIGKILL: the service vanishes without GOODBYE."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


ServeFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A fresh 0700 directory under /tmp (short paths: sockets allow 107
    bytes), removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="psvc-py-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def serve(private_dir: Path) -> AsyncIterator[ServeFactory]:
    """``await serve(*flags)`` starts a ``pipesvc serve`` with those flags;
    every server started is stopped at the end of the test."""
    servers: list[Server] = []

    async def start(*args: str) -> Server:
        server = Server(private_dir, args)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(serve: ServeFactory) -> Server:
    """One ``pipesvc serve`` with its default settings."""
    return await serve()

