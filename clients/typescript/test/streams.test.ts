/**
 * Streams and topics (PROTOCOL.md revision 2.2) against a server played by
 * the test from a socket, for what a correct server cannot be made to do on
 * cue or what only the bytes show: the client's HELLO and CREDIT grants, a
 * service error after items, `lagged` at a chosen moment, an ITEM past the
 * credit, malformed ITEMs, a server of revision 2.1. Everything else runs
 * against a real `pipesvc serve` in streams-serve.test.ts.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import type * as net from "node:net";
import { Client, PipesvcError, RemoteError, type TopicItem } from "../src/index.js";
import { TempDir, entries, fakeServer, frame, helloReply, readFrames, scenario, serverHello, v2Server } from "./helpers.js";

const WINDOW = 1000;
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const u32 = (n: number): Buffer => {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(n, 0);
  return out;
};
const u64 = (n: number): Buffer => {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt(n), 0);
  return out;
};

/** The method (or topic) named in a CALL (or SUBSCRIBE) payload. */
const named = (payload: Buffer): string => payload.subarray(2, 2 + (payload[1] ?? 0)).toString();

/** A revision 2.2 fake server (stream window {@link WINDOW}). */
async function streamServer(dir: TempDir, onFrame: (socket: net.Socket, kind: number, id: number, payload: Buffer) => void) {
  const server = await v2Server(dir, onFrame, { streamWindow: WINDOW, pings: true });
  return { server, hellos: server.hellos };
}

test("STR-1: a server stream delivers its items in order, then its result; an error mid-stream comes after the items", () =>
  scenario(async (dir) => {
    const { server, hellos } = await streamServer(dir, (socket, kind, id, payload) => {
      if (kind !== 10) return;
      const items = [1, 2, 3].map((n) => [0, json(n)] as [number, Buffer]);
      socket.write(frame(13, id, entries(items[0]!, items[1]!)));
      socket.write(frame(13, id, entries(items[2]!, [9, Buffer.from("a later type")])));
      if (named(payload) === "count") socket.write(frame(3, id, json("done")));
      else socket.write(frame(4, id, Buffer.concat([u32(1042).subarray(0, 2), Buffer.from("disk full")])));
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json" });
      // The client's HELLO lists the kinds it accepts (revision 2.2).
      assert.deepEqual([...hellos[0]!.subarray(6)], [2, 8, 0, 1, 3, 4, 5, 6, 8, 13, 14]);
      const stream = await client.stream<number, string>("count", { to: 3 });
      const got: number[] = [];
      for await (const n of stream) got.push(n);
      assert.deepEqual(got, [1, 2, 3]);
      assert.equal(await stream.result, "done");

      const failing = await client.stream<number>("fail");
      const before: number[] = [];
      await assert.rejects(
        (async () => {
          for await (const n of failing) before.push(n);
        })(),
        (e: unknown) => e instanceof RemoteError && e.code === 1042,
      );
      assert.deepEqual(before, [1, 2, 3]);
      await assert.rejects(failing.result, (e: unknown) => e instanceof RemoteError && e.code === 1042);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("STR-2: flow control: the client grants credit as it consumes, so a slow consumer holds at most the window", () =>
  scenario(async (dir) => {
    let credit = WINDOW;
    let sent = 0;
    const grants: number[] = [];
    let pump: (() => void) | undefined;
    const total = 40;
    const item = json("x".repeat(98)); // 100 bytes; an entry takes 105
    const { server } = await streamServer(dir, (socket, kind, id, payload) => {
      if (kind === 10) {
        pump = () => {
          while (credit > 0 && sent < total) {
            socket.write(frame(13, id, entries([0, item])));
            credit -= 105;
            sent++;
          }
          if (sent === total) socket.write(frame(3, id, json(null)));
        };
        pump();
      }
      if (kind === 14) {
        grants.push(payload.readUInt32LE(0));
        credit += payload.readUInt32LE(0);
        pump?.();
      }
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json" });
      const stream = await client.stream<string>("flood");
      const iterator = stream[Symbol.asyncIterator]();
      await iterator.next();
      await client.ping(); // a round trip: any CREDIT sent by now has arrived
      assert.equal(sent, Math.ceil(WINDOW / 105), "the server stopped at the window");
      assert.deepEqual(grants, [], "nothing granted before half the window was consumed");
      let received = 1;
      while (!(await iterator.next()).done) received++;
      assert.equal(received, total);
      assert.ok(grants.length > 0 && grants.every((g) => g >= WINDOW / 2), `grants ${grants.join()}`);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("TOP-2: a subscription delivers events and lagged counts; unsubscribing sends CANCEL", () =>
  scenario(async (dir) => {
    let unsubscribed!: (id: number) => void;
    const cancel = new Promise<number>((resolve) => (unsubscribed = resolve));
    let subscribe = "";
    const { server } = await streamServer(dir, (socket, kind, id, payload) => {
      if (kind === 16) {
        subscribe = `${payload[0]} ${named(payload)}`;
        socket.write(frame(13, id, entries([2, Buffer.alloc(0)], [0, json({ tick: 1 })])));
        socket.write(frame(13, id, entries([1, u64(7)], [0, json({ tick: 9 })])));
      }
      if (kind === 11) unsubscribed(id);
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json" });
      const ticks = await client.subscribe<{ tick: number }>("ticks");
      const items: TopicItem<{ tick: number }>[] = [];
      for await (const item of ticks) {
        items.push(item);
        if (items.length === 3) break;
      }
      assert.equal(subscribe, "1 ticks");
      assert.deepEqual(items, [
        { type: "event", value: { tick: 1 } },
        { type: "lagged", count: 7 },
        { type: "event", value: { tick: 9 } },
      ]);
      assert.ok((await cancel) > 0);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("STR-5: a server without revision 2.2 is told apart; malformed ITEMs close the connection", () =>
  scenario(async (dir) => {
    const old = await fakeServer(dir.socket("old"), (socket) => {
      socket.write(serverHello());
      readFrames(socket, (kind) => kind === 1 && socket.write(helloReply()));
    });
    const { server } = await streamServer(dir, (socket, kind, id) => {
      if (kind === 10) socket.write(frame(13, id, Buffer.from([0, 9, 0, 0, 0, 1])));
    });
    try {
      const client = await Client.connect(dir.socket("old"));
      await assert.rejects(client.stream("count"), (e: unknown) => e instanceof PipesvcError && e.reason === "unsupported");
      await assert.rejects(client.subscribe("ticks"), (e: unknown) => e instanceof PipesvcError && e.reason === "unsupported");
      client.close();
      const streaming = await Client.connect(dir.socket());
      const stream = await streaming.stream("count");
      await assert.rejects(stream.result, (e: unknown) => e instanceof PipesvcError && e.reason === "protocol" && /past the end/.test(e.message));
      assert.equal(streaming.state.state, "lost");
      streaming.close();
    } finally {
      await old.close();
      await server.close();
    }
  }));

test("STR-2: an ITEM past the credit the client granted is a protocol error: the connection is closed", () =>
  scenario(async (dir) => {
    const item = json("x".repeat(98)); // an entry of 105 bytes
    const { server } = await streamServer(dir, (socket, kind, id) => {
      // Ten ITEMs take the window of 1000 to -50; the eleventh is past it.
      if (kind === 10) for (let i = 0; i < 11; i++) socket.write(frame(13, id, entries([0, item])));
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json" });
      const stream = await client.stream<string>("flood");
      await assert.rejects(stream.result, (e: unknown) => e instanceof PipesvcError && e.reason === "protocol" && /credit/.test(e.message));
      assert.equal(client.state.state, "lost");
      client.close();
    } finally {
      await server.close();
    }
  }));
