"""A scripted server for the scenarios no correct server plays (SCENARIOS.md
"rogue"): a Unix socket whose every connection runs a test's script."""

from __future__ import annotations

import asyncio
import struct
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

from pipesvc_client.framing import Frame, Kind, encode_frame, read_frame

Script = Callable[["Peer"], Awaitable[None]]


class Peer:
    """One client connection, seen from the rogue server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, kind: int, frame_id: int = 0, payload: bytes = b"") -> None:
        """Queues one frame."""
        self.writer.write(encode_frame(kind, frame_id, payload))

    async def frame(self) -> Frame | None:
        """The client's next frame (None at its end)."""
        return await read_frame(self.reader, 1 << 20)

    async def hello(self, name: bytes = b"rogue", max_len: int = 8 << 20) -> Frame:
        """Sends HELLO and returns the client's HELLO."""
        self.send(Kind.HELLO, 0, b"PSVC" + struct.pack("<HI", 1, max_len) + name)
        frame = await self.frame()
        assert frame is not None and frame.kind == Kind.HELLO
        return frame

    async def handshake_v2(self, name: bytes = b"rogue") -> None:
        """A version 2 handshake offering both encodings."""
        await self.hello(name)
        reply = b"PSVC" + struct.pack("<H", 2) + b"\x01\x02\x00\x02\x01"
        reply += b"\x02\x08\x00" + bytes([1, 2, 5, 7, 9, 10, 11, 12])
        self.send(Kind.HELLO, 0, reply)

    async def handshake_v22(self, window: int) -> Frame:
        """A revision 2.2 handshake (kinds 13 to 16, this stream window);
        returns the client's HELLO."""
        hello = await self.hello()
        kinds = bytes([1, 2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16])
        reply = b"PSVC" + struct.pack("<H", 2) + b"\x01\x02\x00\x02\x01"
        reply += struct.pack("<BH", 2, len(kinds)) + kinds + struct.pack("<BHI", 3, 4, window)
        self.send(Kind.HELLO, 0, reply)
        return hello

    async def until_closed(self) -> None:
        """Reads and discards until the client closes."""
        while await self.reader.read(65536):
            pass


@asynccontextmanager
async def rogue_server(directory: Path, script: Script) -> AsyncIterator[str]:
    """Serves ``script`` on a socket in ``directory``; yields its path. The
    scripts still running at the end are cancelled, the socket removed."""
    path = directory / "rogue.sock"
    tasks: set[asyncio.Task[None]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await script(Peer(reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_unix_server(on_client, str(path))
    try:
        yield str(path)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        path.unlink(missing_ok=True)
