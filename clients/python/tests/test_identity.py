"""Server identity on Unix: the directories on the way to the socket and
the server's uid (SO_PEERCRED) are checked before anything is sent
(SCENARIOS.md TR-4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Server
from pipesvc_client import Client, Endpoint, ServerIdentity, WrongServer
from rogue import Peer, rogue_server


async def refused_before_anything_is_sent(
    directory: Path, *, private: bool = False, identity: ServerIdentity | None = None
) -> str:
    """Runs a rogue server in ``directory`` (as the private directory of a
    bare name with ``private``) that records what it reads; connects;
    returns the refusal's text, and checks that nothing was sent."""
    received: list[bytes] = []

    async def listen(peer: Peer) -> None:
        await peer.hello()
        received.append(await peer.reader.read(1))

    async with rogue_server(directory, listen) as socket:
        endpoint = Endpoint(socket, str(directory) if private else None)
        with pytest.raises(WrongServer) as refused:
            await Client.connect(endpoint, server_identity=identity or ServerIdentity())
    assert received in ([], [b""])
    return str(refused.value)


async def test_a_socket_in_a_world_writable_directory_is_refused(private_dir: Path) -> None:
    """TR-4: a shared directory without the sticky bit."""
    shared = private_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    text = await refused_before_anything_is_sent(shared)
    assert "writable by others" in text and "not sticky" in text


async def test_a_private_directory_of_another_user_is_refused(private_dir: Path) -> None:
    """TR-4: a private directory writable by its group, and (as root) one
    owned by another user; and a server not of the expected uid."""
    private = private_dir / "private"
    private.mkdir()
    private.chmod(0o770)
    text = await refused_before_anything_is_sent(private, private=True)
    assert "writable by others" in text
    private.chmod(0o700)
    if os.getuid() == 0:
        os.chown(private, 65534, 65534)
        text = await refused_before_anything_is_sent(private, private=True)
        assert "owned by uid 65534" in text
        os.chown(private, 0, 0)
    text = await refused_before_anything_is_sent(
        private, private=True, identity=ServerIdentity(uid=4242)
    )
    assert "expected a server running as uid 4242" in text


async def test_a_server_of_the_same_user_connects(server: Server) -> None:
    """TR-4: SO_PEERCRED reports the server process."""
    async with await Client.connect(server.socket) as client:
        assert client.peer is not None and server.process is not None
        assert (client.peer.pid, client.peer.uid) == (server.process.pid, os.getuid())
        assert await client.ping() == b""
