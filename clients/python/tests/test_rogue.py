"""Hostile and broken servers, played by a scripted socket (SCENARIOS.md
HS-3, HS-4, HS-6, HS-7, DL-2, DL-3, CAN-3, ORD-1, NOT-2, LIM-1, LIM-2, ERR-6).
Durations here are deadlines given to the client, never asserted."""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
from pathlib import Path

import pytest

from conftest import GUARD
from helpers import until_in_flight
from pipesvc_client import (
    Client,
    ConnectionState,
    ErrorCode,
    Lagged,
    Message,
    NotificationPolicy,
    ProtocolError,
    RemoteError,
    ServerTooOld,
    Timeout,
)
from pipesvc_client.framing import Frame, Kind
from rogue import Peer, rogue_server


def error(code: int, message: bytes = b"") -> bytes:
    """An ERROR payload."""
    return struct.pack("<H", code) + message


async def test_a_v1_only_server_is_reported_too_old(private_dir: Path) -> None:
    """HS-3."""

    async def v1_only(peer: Peer) -> None:
        await peer.hello()
        peer.send(Kind.ERROR, 0, error(3, b"unsupported version 2"))
        await peer.writer.drain()

    async with rogue_server(private_dir, v1_only) as socket:
        with pytest.raises(ServerTooOld, match="version 1"):
            await Client.connect(socket)


async def test_a_hello_reply_that_does_not_parse_fails_the_connect(private_dir: Path) -> None:
    """HS-4: field 1 announces 10 bytes and carries 2."""

    async def bad_reply(peer: Peer) -> None:
        await peer.hello()
        peer.send(Kind.HELLO, 0, b"PSVC\x02\x00\x01\x0a\x00\x02\x01")
        await peer.until_closed()

    async with rogue_server(private_dir, bad_reply) as socket:
        with pytest.raises(ProtocolError, match="runs past"):
            await Client.connect(socket)


async def test_a_silent_server_fails_the_connect_at_the_handshake_timeout(
    private_dir: Path,
) -> None:
    """HS-6: silent from the start, and silent after its HELLO."""

    async def silent(peer: Peer) -> None:
        await peer.until_closed()

    async def no_reply(peer: Peer) -> None:
        await peer.hello()
        await peer.until_closed()

    for script in (silent, no_reply):
        async with rogue_server(private_dir, script) as socket:
            with pytest.raises(Timeout, match="handshake"):
                await Client.connect(socket, handshake_timeout=0.2)


async def test_a_server_that_speaks_garbage_fails_the_connect_clearly(private_dir: Path) -> None:
    """HS-7: an HTTP answer, a HELLO without the magic, random bytes."""
    garbage = [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        struct.pack("<IBBI", 16, 1, 0, 0) + b"JUNK\x01\x00\x00\x00\x80\x00",
        bytes(range(7, 47)),
    ]
    for data in garbage:

        async def speak(peer: Peer, data: bytes = data) -> None:
            peer.writer.write(data)
            await peer.until_closed()

        async with rogue_server(private_dir, speak) as socket:
            with pytest.raises(ProtocolError, match="not a pipesvc server"):
                await Client.connect(socket, handshake_timeout=GUARD)


async def test_a_silent_server_fails_each_call_at_its_deadline(private_dir: Path) -> None:
    """DL-2: silence after the handshake, then half an answer."""

    async def half_an_answer(peer: Peer) -> None:
        await peer.handshake_v2()
        first = await peer.frame()
        assert first is not None
        peer.writer.write(struct.pack("<IBB", 20, Kind.RESPONSE, 0))
        await peer.until_closed()

    async with rogue_server(private_dir, half_an_answer) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            with pytest.raises(Timeout):
                await client.request(b"x", timeout=0.2)
            with pytest.raises(Timeout):
                await client.call("echo", 1, timeout=0.1)
            with pytest.raises(Timeout):
                await client.ping(timeout=0.1)
            with pytest.raises(Timeout):
                await client.status(timeout=0.1)


async def recorded(peer: Peer, frames: asyncio.Queue[Frame], answer_pings: bytes) -> None:
    """Handshakes, then records every frame; answers PINGs whose payload
    is ``answer_pings``."""
    await peer.handshake_v2()
    while (frame := await peer.frame()) is not None:
        await frames.put(frame)
        if frame.kind == Kind.PING and frame.payload == answer_pings:
            peer.send(Kind.PONG, frame.id, frame.payload)


async def test_a_call_past_its_deadline_sends_cancel(private_dir: Path) -> None:
    """DL-3: the CALL carries 100 ms; past it and the grace, CANCEL."""
    frames: asyncio.Queue[Frame] = asyncio.Queue()
    async with rogue_server(private_dir, lambda p: recorded(p, frames, b"")) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            with pytest.raises(Timeout):
                await client.call("echo", 1, timeout=0.1)
            call = await asyncio.wait_for(frames.get(), GUARD)
            assert call.kind == Kind.CALL
            assert call.payload[:6] == b"\x02\x04echo" and call.payload[6:10] == struct.pack("<I", 100)
            cancel = await asyncio.wait_for(frames.get(), GUARD)
            assert (cancel.kind, cancel.id, cancel.payload) == (Kind.CANCEL, call.id, b"")


async def test_a_cancelled_byte_request_sends_cancel_and_a_ping_does_not(private_dir: Path) -> None:
    """CAN-3."""
    frames: asyncio.Queue[Frame] = asyncio.Queue()
    async with rogue_server(private_dir, lambda p: recorded(p, frames, b"last")) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            for work in (client.request(b"bytes"), client.ping(b"first")):
                task = asyncio.create_task(work)
                await until_in_flight(client, client.in_flight + 1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert await client.ping(b"last") == b"last"
            seen = [await asyncio.wait_for(frames.get(), GUARD) for _ in range(4)]
            kinds = [(f.kind, f.id) for f in seen]
            request_id, ping_id = seen[0].id, seen[2].id
            assert kinds == [
                (Kind.REQUEST, request_id),
                (Kind.CANCEL, request_id),
                (Kind.PING, ping_id),
                (Kind.PING, seen[3].id),
            ]
            assert seen[3].id not in (request_id, ping_id)


async def test_notifies_sent_before_an_answer_are_delivered_first_in_order(
    private_dir: Path,
) -> None:
    """ORD-1."""

    async def notify_then_answer(peer: Peer) -> None:
        await peer.handshake_v2()
        request = await peer.frame()
        assert request is not None
        for i in range(5):
            peer.send(Kind.NOTIFY, 0, b"n%d" % i)
        peer.send(Kind.RESPONSE, request.id, b"done")
        await peer.until_closed()

    async with rogue_server(private_dir, notify_then_answer) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            notifications = client.notifications()
            assert await client.request(b"go") == b"done"
            got = [notifications.try_recv() for _ in range(6)]
            assert got == [Message(b"n%d" % i) for i in range(5)] + [None]


FLOOD = 20_000
FLOOD_PAYLOAD = 1024


async def flood(peer: Peer) -> None:
    """Answers the first request only after ``FLOOD`` NOTIFYs of 1 KiB."""
    await peer.handshake_v2()
    request = await peer.frame()
    assert request is not None
    for i in range(FLOOD):
        peer.send(Kind.NOTIFY, 0, i.to_bytes(4, "little") * (FLOOD_PAYLOAD // 4))
        if i % 256 == 0:
            await peer.writer.drain()
    peer.send(Kind.RESPONSE, request.id, b"after the flood")
    await peer.until_closed()


async def test_a_notify_flood_is_bounded_and_marked_lagged(private_dir: Path) -> None:
    """NOT-2: 20,000 NOTIFYs of 1 KiB (20 MiB) to a client that reads none:
    with the dropping policy the queue holds at most its 64 KiB bound, what
    was lost is counted by ``Lagged`` items, and the answer behind the
    flood arrives; with the default (backpressure) the call keeps its
    deadline. Memory is measured with tracemalloc and printed."""
    async with rogue_server(private_dir, flood) as socket:
        tracemalloc.start()
        try:
            client = await Client.connect(
                socket,
                notification_policy=NotificationPolicy.DROP_NEWEST,
                notification_buffer_bytes=64 * 1024,
                close_timeout=0,
            )
            notifications = client.notifications()
            tracemalloc.reset_peak()
            assert await client.request(b"go", timeout=GUARD) == b"after the flood"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        queue = client.notification_queue
        print(f"\nNOTIFY flood: {FLOOD * FLOOD_PAYLOAD} B sent, queue peak {queue.peak_bytes} B,"
              f" allocation peak {peak} B")
        assert queue.peak_bytes <= 64 * 1024
        assert peak < 4 * 1024 * 1024
        messages = lagged = 0
        while (item := notifications.try_recv()) is not None:
            if isinstance(item, Lagged):
                lagged += item.count
            else:
                messages += 1
        assert messages == 64 and messages + lagged == FLOOD
        await client.close()

        async with await Client.connect(socket, close_timeout=0) as waiting:
            waiting.notifications()
            with pytest.raises(Timeout):
                await waiting.request(b"go", timeout=0.3)


async def test_a_frame_over_the_clients_limit_ends_the_connection(private_dir: Path) -> None:
    """LIM-1: the length alone (1 GiB) ends it; nothing is allocated for it."""

    async def huge(peer: Peer) -> None:
        await peer.handshake_v2()
        request = await peer.frame()
        assert request is not None
        peer.writer.write(struct.pack("<IBBI", 1 << 30, Kind.RESPONSE, 0, request.id))
        await peer.until_closed()

    async with rogue_server(private_dir, huge) as socket:
        async with await Client.connect(socket, max_frame_len=1 << 20) as client:
            with pytest.raises(ProtocolError, match="over this client's limit"):
                await client.request(b"x", timeout=GUARD)
            with pytest.raises(ProtocolError):
                await client.ping()


async def test_server_text_is_kept_and_shown_escaped(private_dir: Path) -> None:
    """LIM-2: a name and an ERROR message with terminal escapes and
    invalid UTF-8."""

    async def evil(peer: Peer) -> None:
        await peer.handshake_v2(name=b"\x1b[31mevil\nname")
        request = await peer.frame()
        assert request is not None
        peer.send(Kind.ERROR, request.id, error(1001, b"\x1b]0;pwned\x07 bad \xff end"))
        await peer.until_closed()

    async with rogue_server(private_dir, evil) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            assert client.server.name == "\x1b[31mevil\nname"
            with pytest.raises(RemoteError) as failed:
                await client.request(b"x")
            assert failed.value.message == "\x1b]0;pwned\x07 bad \ufffd end"
            shown = str(failed.value)
            assert "\x1b" not in shown and "\x07" not in shown and "\\x1b" in shown
            assert failed.value.name == "service error 1001"


async def test_request_errors_fail_one_call_and_a_connection_error_fails_all(
    private_dir: Path,
) -> None:
    """ERR-6."""

    async def errors(peer: Peer) -> None:
        await peer.handshake_v2()
        ids = []
        for _ in range(4):
            frame = await peer.frame()
            assert frame is not None
            ids.append(frame.id)
        peer.send(Kind.ERROR, ids[0], error(5, b"it broke"))
        peer.send(Kind.ERROR, ids[1], error(1001, b"service says no"))
        peer.send(Kind.ERROR, 0, error(6, b"overloaded"))
        await peer.writer.drain()

    async with rogue_server(private_dir, errors) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            calls = [asyncio.create_task(client.request(b"%d" % i)) for i in range(4)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, RemoteError) for r in results)
            codes = [(r.code, r.connection) for r in results if isinstance(r, RemoteError)]
            assert codes == [
                (ErrorCode.HANDLER_FAILED, False),
                (1001, False),
                (ErrorCode.OVERLOADED, True),
                (ErrorCode.OVERLOADED, True),
            ]
            with pytest.raises(RemoteError):
                await client.ping()
            assert isinstance(results[0], RemoteError) and results[0].name == "handler failed"


async def test_a_goodbye_and_the_close_read_together_are_both_seen(private_dir: Path) -> None:
    """BYE-1: a waiter for GOODBYE sees it even when the server's close
    arrives in the same read (a loaded machine delivers both at once), and
    the client has moved on to LOST before the waiter runs."""

    async def goodbye_then_close(peer: Peer) -> None:
        await peer.handshake_v2()
        peer.send(Kind.GOODBYE, 0, b"stopping")
        await peer.writer.drain()
        peer.writer.close()

    async with rogue_server(private_dir, goodbye_then_close) as socket:
        client = await Client.connect(socket, reconnect=False)
        try:
            seen = await client.wait_for_state(ConnectionState.GOODBYE, timeout=5)
            assert seen is ConnectionState.GOODBYE
            await client.wait_for_state(ConnectionState.LOST, timeout=GUARD)
        finally:
            await client.close()
