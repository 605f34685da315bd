"""Streams and topics (PROTOCOL.md revision 2.2) against a scripted server
that follows the revision 2.2 text, since no ``pipesvc serve`` with
streams exists on main yet (SCENARIOS.md STR-*, TOP-*). Each script checks
the client's side of the contract (credit respected, CANCEL and END sent)
as well as the client checks the server's."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest

from conftest import GUARD, Server
from pipesvc_client import (
    Client,
    Encoding,
    ErrorCode,
    EventsLagged,
    NotSupported,
    ProtocolError,
    RemoteError,
    Resubscribed,
)
from pipesvc_client.framing import Frame, Kind, encode_frame
from pipesvc_client.messages import parse_entries
from rogue import Peer, rogue_server


def entries(*values: bytes, kind: int = 0) -> bytes:
    """An ITEM payload of entries of one type."""
    return b"".join(struct.pack("<BI", kind, len(v)) + v for v in values)


def credit_of(frame: Frame) -> int:
    """The u32 a CREDIT grants."""
    assert frame.kind == Kind.CREDIT
    return int(struct.unpack("<I", frame.payload[:4])[0])


async def test_a_server_stream_delivers_its_items_in_order_then_its_end(private_dir: Path) -> None:
    """STR-1, with the bytes of "A complete exchange, revision 2.2"."""
    calls: asyncio.Queue[Frame] = asyncio.Queue()

    async def count(peer: Peer) -> None:
        hello = await peer.handshake_v22(262144)
        assert hello.payload[6:] == bytes.fromhex("02 08 00 01 03 04 05 06 08 0d 0e")
        call = await peer.frame()
        assert call is not None
        await calls.put(call)
        peer.send(Kind.ITEM, call.id, entries(b"1", b"2"))
        peer.send(Kind.ITEM, call.id, entries(b"3"))
        peer.send(Kind.RESPONSE, call.id, b"null")
        await peer.until_closed()

    async with rogue_server(private_dir, count) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            assert client.server.streams and client.server.stream_window == 262144
            stream = await client.stream("count", {"n": 3, "every_ms": 0}, encoding=Encoding.JSON)
            assert [item async for item in stream] == [1, 2, 3]
            assert await stream.result() is None
            call = calls.get_nowait()
            assert encode_frame(call.kind, call.id, call.payload) == bytes.fromhex(
                "26 00 00 00 0a 00 01 00 00 00 01 05 63 6f 75 6e 74 00 00 00 00 00 7b 22 6e 22 3a 33"
                " 2c 22 65 76 65 72 79 5f 6d 73 22 3a 30 7d"
            )


WINDOW = 64
VALUE = b'"01234567"'  # each entry: 5 + 10 = 15 bytes of credit


async def test_flow_control_bounds_what_a_slow_reader_holds(private_dir: Path) -> None:
    """STR-2: the server sends only within the credit the client grants
    (the script checks it), the client holds at most a window plus one
    ITEM unread, and nothing is lost; an ITEM past the credit is a
    protocol error."""
    granted: list[int] = []

    async def producer(peer: Peer) -> None:
        await peer.handshake_v22(WINDOW)
        call = await peer.frame()
        assert call is not None
        credit = WINDOW
        for i in range(100):
            while credit <= 0:
                frame = await peer.frame()
                assert frame is not None and frame.id == call.id
                granted.append(credit_of(frame))
                credit += granted[-1]
            payload = entries(b'"%08d"' % i)
            peer.send(Kind.ITEM, call.id, payload)
            credit -= len(payload)
        peer.send(Kind.RESPONSE, call.id, b"null")
        await peer.until_closed()

    async with rogue_server(private_dir, producer) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            stream = await client.stream("numbers", encoding=Encoding.JSON)
            got = [item async for item in stream]
            assert got == ["%08d" % i for i in range(100)]
            assert stream.peak_unread_bytes <= WINDOW + 15
            assert granted and all(g * 2 >= WINDOW for g in granted)

    async def greedy(peer: Peer) -> None:
        await peer.handshake_v22(WINDOW)
        call = await peer.frame()
        assert call is not None
        for _ in range(10):
            peer.send(Kind.ITEM, call.id, entries(VALUE))
        await peer.until_closed()

    async with rogue_server(private_dir, greedy) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            stream = await client.stream("numbers", encoding=Encoding.JSON)
            with pytest.raises(ProtocolError, match="flow control"):
                async for _ in stream:
                    pass


async def test_a_client_stream_waits_for_credit_then_ends(private_dir: Path) -> None:
    """STR-3: items within the server's credit (the script checks), END,
    then the one answer."""

    async def lines(peer: Peer) -> None:
        await peer.handshake_v22(16)
        call = await peer.frame()
        assert call is not None
        credit, taken = 16, []
        while (frame := await peer.frame()) is not None and frame.kind != Kind.END:
            assert frame.kind == Kind.ITEM and frame.id == call.id
            assert credit > 0, "the client sent past its credit"
            credit -= len(frame.payload)
            taken += [json.loads(v) for _, v in parse_entries(frame.payload)]
            if credit <= 0:
                peer.send(Kind.CREDIT, call.id, struct.pack("<I", 16))
                credit += 16
        peer.send(Kind.RESPONSE, call.id, str(len(taken)).encode())
        await peer.until_closed()

    async with rogue_server(private_dir, lines) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            stream = await client.stream("lines", encoding=Encoding.JSON)
            for line in ("a", "bb", "ccc", "dddd", "e"):
                await asyncio.wait_for(stream.send(line), GUARD)
            await stream.end()
            assert await stream.result() == 5


async def test_leaving_a_stream_sends_cancel(private_dir: Path) -> None:
    """STR-4."""
    seen: asyncio.Queue[Frame] = asyncio.Queue()

    async def endless(peer: Peer) -> None:
        await peer.handshake_v22(1 << 20)
        call = await peer.frame()
        assert call is not None
        peer.send(Kind.ITEM, call.id, entries(b"1", b"2"))
        cancel = await peer.frame()
        assert cancel is not None
        await seen.put(cancel)
        peer.send(Kind.ERROR, call.id, struct.pack("<H", 14) + b"cancelled")
        await peer.until_closed()

    async with rogue_server(private_dir, endless) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            async with await client.stream("ticker", encoding=Encoding.JSON) as stream:
                async for item in stream:
                    assert item == 1
                    break
            cancel = await asyncio.wait_for(seen.get(), GUARD)
            assert (cancel.kind, cancel.id) == (Kind.CANCEL, stream.id)


async def test_a_subscription_yields_events_and_lagged_then_unsubscribes(private_dir: Path) -> None:
    """TOP-1 and TOP-2, with the bytes of the revision 2.2 example."""
    seen: asyncio.Queue[Frame] = asyncio.Queue()

    async def ticks(peer: Peer) -> None:
        await peer.handshake_v22(262144)
        subscribe = await peer.frame()
        assert subscribe is not None and subscribe.kind == Kind.SUBSCRIBE
        assert subscribe.payload == b"\x01\x05ticks"
        peer.send(Kind.ITEM, subscribe.id, entries(b"", kind=2))
        peer.send(Kind.ITEM, subscribe.id, entries(b"1000"))
        peer.send(Kind.ITEM, subscribe.id, entries(struct.pack("<Q", 2), kind=1) + entries(b"4000"))
        while (frame := await peer.frame()) is not None:
            await seen.put(frame)
            if frame.kind == Kind.CANCEL:
                peer.send(Kind.ERROR, subscribe.id, struct.pack("<H", 14) + b"cancelled")

    async with rogue_server(private_dir, ticks) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            async with await client.subscribe("ticks", encoding=Encoding.JSON) as ticks_sub:
                got = []
                async for event in ticks_sub:
                    got.append(event)
                    if len(got) == 3:
                        break
            assert got == [1000, EventsLagged(2), 4000]
            frame = await asyncio.wait_for(seen.get(), GUARD)
            assert frame.kind == Kind.CANCEL


async def test_a_subscription_is_made_again_after_a_restart(private_dir: Path) -> None:
    """TOP-3: the first connection ends (the server went away); the client
    reconnects, subscribes again and says so with Resubscribed."""
    connections = 0

    async def restarting(peer: Peer) -> None:
        nonlocal connections
        connections += 1
        number = connections
        await peer.handshake_v22(262144)
        subscribe = await peer.frame()
        assert subscribe is not None and subscribe.kind == Kind.SUBSCRIBE
        peer.send(Kind.ITEM, subscribe.id, entries(b"", kind=2))
        peer.send(Kind.ITEM, subscribe.id, entries(b"%d" % number))
        if number == 1:
            await peer.writer.drain()
            return  # the connection is dropped: a restart, seen from the client
        await peer.until_closed()

    async with rogue_server(private_dir, restarting) as socket:
        async with await Client.connect(socket, reconnect=True, close_timeout=0) as client:
            subscription = await client.subscribe("ticks", encoding=Encoding.JSON)
            got: list[object] = []
            async for event in subscription:
                got.append(event)
                if len(got) == 3:
                    break
            subscription.close()
            assert got == [1, Resubscribed(), 2]
            assert subscription.subscriptions == 2


async def test_a_topic_the_service_lacks_is_unknown(private_dir: Path) -> None:
    """TOP-1's refusal: ERROR ``unknown method`` with the SUBSCRIBE's id."""

    async def no_topic(peer: Peer) -> None:
        await peer.handshake_v22(1024)
        subscribe = await peer.frame()
        assert subscribe is not None
        peer.send(Kind.ERROR, subscribe.id, struct.pack("<H", 12) + b"unknown topic nope")
        await peer.until_closed()

    async with rogue_server(private_dir, no_topic) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            with pytest.raises(RemoteError) as unknown:
                await client.subscribe("nope")
            assert unknown.value.code == ErrorCode.UNKNOWN_METHOD


async def test_streams_need_a_server_of_revision_2_2(server: Server) -> None:
    """Against today's ``pipesvc serve`` (revision 2.1): refused by the
    client, nothing sent; the connection carries on."""
    async with await Client.connect(server.socket) as client:
        assert not client.server.streams
        with pytest.raises(NotSupported):
            await client.stream("count", {"n": 3})
        with pytest.raises(NotSupported):
            await client.subscribe("ticks")
        assert await client.call("echo", 1) == 1
