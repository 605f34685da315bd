/**
 * Streams and topics (PROTOCOL.md revision 2.2), against a server played
 * by the test from a socket that follows the revision's text: no pipesvc
 * server with streams existed when these were written (see the README).
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

test("STR-3: a client stream sends its items within the server's credit, then END, and gets the one answer", () =>
  scenario(async (dir) => {
    const seen: string[] = [];
    let received = 0;
    const { server } = await streamServer(dir, (socket, kind, id, payload) => {
      if (kind === 13) {
        received += payload.length;
        seen.push(`ITEM ${payload.length}`);
        // Grants only once a whole window was received: the client must wait for it.
        if (received >= WINDOW) {
          socket.write(frame(14, id, u32(received)));
          seen.push(`CREDIT ${received}`);
          received = 0;
        }
      }
      if (kind === 15) {
        seen.push("END");
        socket.write(frame(3, id, json("stored")));
      }
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json" });
      const upload = await client.stream<never, string, string>("upload");
      for (let i = 0; i < 25; i++) await upload.send("y".repeat(98));
      assert.equal(await upload.end(), "stored");
      // Ten ITEMs of 105 bytes use up the window of 1000 (the tenth goes below 0), then the client waited for CREDIT.
      const firstCredit = seen.indexOf("CREDIT 1050");
      assert.equal(firstCredit, 10, seen.join(", "));
      assert.equal(seen.at(-1), "END");
      assert.equal(seen.filter((s) => s.startsWith("ITEM")).length, 25);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("STR-4: stopping a stream's iteration, or cancel(), sends CANCEL; the server ends it", () =>
  scenario(async (dir) => {
    const cancels: number[] = [];
    let cancelled!: () => void;
    let twice = new Promise<void>((resolve) => (cancelled = resolve));
    const { server } = await streamServer(dir, (socket, kind, id) => {
      if (kind === 10) socket.write(frame(13, id, entries([0, json(1)], [0, json(2)])));
      if (kind === 11) {
        cancels.push(id);
        socket.write(frame(4, id, Buffer.concat([Buffer.from([14, 0]), Buffer.from("cancelled")])));
        if (cancels.length === 2) cancelled();
      }
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json" });
      const first = await client.stream<number>("endless");
      for await (const n of first) {
        assert.equal(n, 1);
        break;
      }
      const second = await client.stream<number>("endless");
      second.cancel();
      await assert.rejects(second.result, (e: unknown) => e instanceof PipesvcError && e.reason === "closed");
      await twice;
      assert.deepEqual(cancels, [first.id, second.id]);
      twice = Promise.resolve();
      client.close();
    } finally {
      await server.close();
    }
  }));

test("TOP-1 and TOP-2: a subscription delivers events and lagged counts; unsubscribing sends CANCEL", () =>
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

test("TOP-3: across a lost connection (reconnect on), the topic is subscribed again and says resubscribed", () =>
  scenario(async (dir) => {
    let connection = 0;
    const { server } = await streamServer(dir, (socket, kind, id) => {
      if (kind !== 16) return;
      connection++;
      const tick = connection * 10;
      socket.write(frame(13, id, entries([2, Buffer.alloc(0)], [0, json(tick)])));
      if (connection === 1) socket.destroy(); // the server restarts
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json", reconnect: true });
      const ticks = await client.subscribe<number>("ticks");
      const items: TopicItem<number>[] = [];
      for await (const item of ticks) {
        items.push(item);
        if (items.length === 3) break;
      }
      assert.deepEqual(items, [{ type: "event", value: 10 }, { type: "resubscribed" }, { type: "event", value: 20 }]);
      assert.equal(client.reconnects, 1);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("streams: a server without revision 2.2 is told apart; malformed ITEMs close the connection", () =>
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
