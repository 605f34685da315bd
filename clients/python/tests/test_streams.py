"""Streams and topics (PROTOCOL.md revision 2.2; SCENARIOS.md STR-*,
TOP-*) against a real ``pipesvc serve`` (its ``count``, ``lines`` and
``ticks``), and against a scripted server for what a correct server cannot
be made to do on cue: the exact bytes of PROTOCOL.md's exchange, an ITEM
past the credit, a ``lagged`` entry, a server of revision 2.1."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Callable

import pytest

from conftest import GUARD, Server, ServeFactory
from pipesvc_client import (
    Client,
    Encoding,
    ErrorCode,
    EventsLagged,
    NotSupported,
    ProtocolError,
    RemoteError,
    Resubscribed,
    Status,
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


async def test_a_stream_call_is_the_bytes_of_protocol_md(private_dir: Path) -> None:
    """STR-1's bytes: the client's HELLO kinds and CALL are those of "A
    complete exchange, revision 2.2" (a scripted server shows them)."""
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


async def test_the_client_grants_half_windows_and_refuses_an_item_past_its_credit(
    private_dir: Path,
) -> None:
    """STR-2's client side, seen by a scripted server: CREDIT grants of at
    least half the window, at most a window plus one ITEM held unread; an
    ITEM past the credit (which a correct server never sends) is a
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


async def test_a_subscription_yields_events_and_lagged_then_unsubscribes(private_dir: Path) -> None:
    """TOP-2 (and TOP-1's bytes), scripted: a ``lagged`` entry needs a
    subscriber 256 events behind, which ``ticks`` (one a second) makes
    only after minutes."""
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


async def test_streams_need_a_server_of_revision_2_2(private_dir: Path) -> None:
    """A server of revision 2.1 (no kinds 13 to 16, no window): refused by
    the client, nothing sent; the connection carries on."""

    async def v21(peer: Peer) -> None:
        await peer.handshake_v2()
        while (frame := await peer.frame()) is not None:
            assert frame.kind == Kind.CALL, "the client sent a stream's frame"
            peer.send(Kind.RESPONSE, frame.id, b"\x01")

    async with rogue_server(private_dir, v21) as socket:
        async with await Client.connect(socket, close_timeout=0) as client:
            assert not client.server.streams
            with pytest.raises(NotSupported):
                await client.stream("count", {"n": 3})
            with pytest.raises(NotSupported):
                await client.subscribe("ticks")
            assert await client.call("echo", 1) == 1


# -- against a real ``pipesvc serve`` ----------------------------------------


async def status_until(client: Client, what: Callable[[Status], bool]) -> Status:
    """STATUS again and again (round trips, no timer) until ``what`` holds:
    the server counts a stream closed once its last answer is sent, which
    the client need not wait for (a cancelled stream's ERROR)."""
    for _ in range(10_000):
        status = await client.status()
        if what(status):
            return status
    raise AssertionError(f"STATUS never matched: {status}")


async def test_a_server_stream_delivers_its_items_in_order_then_its_end(server: Server) -> None:
    """STR-1: ``count`` in both encodings; STATUS counts the items sent
    and no stream left open."""
    async with await Client.connect(server.socket) as client:
        assert client.server.streams and client.server.stream_window == 262144
        for encoding in (Encoding.JSON, Encoding.MSGPACK):
            stream = await client.stream("count", {"n": 3}, encoding=encoding)
            assert [item async for item in stream] == [1, 2, 3]
            assert await stream.result() is None
        empty = await client.stream("count", {"n": 0})
        assert [item async for item in empty] == [] and await empty.result() is None
        status = await client.status()
        assert (status.streams_open, status.items_sent) == (0, 6)
        # call() discards a streaming method's items (granting their
        # credit back, so more than a window passes) and returns its result.
        assert await client.call("count", {"n": 100_000}) is None
        assert (await client.status()).items_sent == 100_006


async def test_flow_control_bounds_what_a_slow_reader_holds(server: Server) -> None:
    """STR-2: 100 000 items to a reader that stops for a call after each
    10 000: every item arrives in order, and the client never holds more
    than the window plus one ITEM unread (the server waits for CREDIT; an
    ITEM past it would end the connection as a protocol error)."""
    n = 100_000
    async with await Client.connect(server.socket) as client:
        window = client.server.stream_window
        assert window is not None
        stream = await client.stream("count", {"n": n})
        expected = 1
        async for item in stream:
            assert item == expected
            expected += 1
            if item % 10_000 == 1:
                # The reader is busy: meanwhile the server fills the window.
                await client.call("sleep", {"ms": 50})
        assert expected == n + 1 and await stream.result() is None
        # The window, plus one ITEM sent while the credit was above 0.
        # pipesvc's ITEM batches what its producer queued (the queue stops
        # the producer at the window), whatever credit is left: so that
        # ITEM is at most a window and one entry (u64: 5 + 9 bytes).
        assert 0 < stream.peak_unread_bytes <= 2 * window + 14


async def test_a_client_stream_waits_for_credit_then_ends(server: Server) -> None:
    """STR-3: ``lines`` takes 2 000 strings of 500 bytes (about 4 windows:
    the client waits for the server's CREDIT, else the server would end
    the connection with ``flow control``), END, then the one answer."""
    async with await Client.connect(server.socket) as client:
        stream = await client.stream("lines")
        for i in range(2_000):
            await asyncio.wait_for(stream.send("%0500d" % i), GUARD)
        await stream.end()
        assert await stream.result() == 2_000
        assert await client.call("echo", "still here") == "still here"


async def test_leaving_a_stream_sends_cancel(server: Server) -> None:
    """STR-4: leaving an endless ``count`` sends CANCEL: the server stops
    the method (STATUS: no stream open) and the connection carries on."""
    async with await Client.connect(server.socket) as client:
        async with await client.stream("count", {"n": 1 << 40, "every_ms": 1}) as stream:
            async for item in stream:
                assert item == 1
                break
        await status_until(client, lambda s: s.streams_open == 0)
        assert await client.call("echo", 2) == 2


async def test_a_subscription_yields_ticks_then_unsubscribes(server: Server) -> None:
    """TOP-1: ``ticks`` (once a second, the server's uptime in ms): events
    in order; leaving unsubscribes (STATUS: no subscriber)."""
    async with await Client.connect(server.socket) as client:
        async with await client.subscribe("ticks") as ticks:
            assert (await client.status()).subscribers == 1
            got: list[object] = []
            async for event in ticks:
                got.append(event)
                if len(got) == 2:
                    break
        assert all(isinstance(t, int) and t % 1000 == 0 for t in got), got
        assert got[1] == got[0] + 1000  # type: ignore[operator]
        await status_until(client, lambda s: s.subscribers == 0)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_a_subscription_is_made_again_after_a_restart(serve: ServeFactory, how: str) -> None:
    """TOP-3: the service stops (``stop``: GOODBYE ends the subscription
    with ``shutting down``; ``kill``: the connection just ends) and starts
    again on the same endpoint; the client reconnects, subscribes again,
    says so with Resubscribed, and the new service's ticks follow."""
    first = await serve()
    async with await Client.connect(first.socket, reconnect=True) as client:
        subscription = await client.subscribe("ticks")
        got: list[object] = []
        async for event in subscription:
            got.append(event)
            if len(got) == 1:
                if how == "kill":
                    first.kill()
                await first.stop()
                await serve()
            if len(got) == 3:
                break
        subscription.close()
        # The new service's tick (its uptime: 1000 unless the reconnect
        # took longer than a second).
        assert got[1] == Resubscribed() and isinstance(got[2], int), got
        assert subscription.subscriptions == 2


async def test_a_topic_the_service_lacks_is_unknown(server: Server) -> None:
    """TOP-1's refusal: ERROR ``unknown method`` with the SUBSCRIBE's id;
    the connection carries on."""
    async with await Client.connect(server.socket) as client:
        with pytest.raises(RemoteError) as unknown:
            await client.subscribe("nope")
        assert unknown.value.code == ErrorCode.UNKNOWN_METHOD
        assert await client.call("echo", 3) == 3


async def test_a_streams_deadline_covers_the_whole_stream(server: Server) -> None:
    """STR-6: ``timeout=`` is sent in the CALL and bounds the whole stream
    (``count`` of 1000 items 50 ms apart, 0.3 s given): the server ends it
    with ERROR ``timed out`` after the items it sent; the connection
    carries on."""
    async with await Client.connect(server.socket) as client:
        stream = await client.stream("count", {"n": 1000, "every_ms": 50}, timeout=0.3)
        got: list[int] = []
        with pytest.raises(RemoteError) as late:
            async for item in stream:
                got.append(item)
        assert late.value.code == ErrorCode.TIMED_OUT
        assert got == list(range(1, len(got) + 1)) and len(got) < 1000
        await status_until(client, lambda s: s.streams_open == 0)
        assert await client.call("echo", 4) == 4
