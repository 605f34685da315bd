/**
 * Streams and topics (PROTOCOL.md revision 2.2) against a real `pipesvc
 * serve`: its server streaming method `count` ({"n", "every_ms"}), its
 * client streaming method `lines` (strings in, their number out) and its
 * topic `ticks` (the server's uptime in ms, once a second). What a correct
 * server cannot be made to do is scripted in streams.test.ts.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, ErrorCode, RemoteError, type Status, type TopicItem } from "../src/index.js";
import { Server, TempDir, withServer } from "./helpers.js";

/**
 * STATUS again and again (round trips, no timer) until `what` holds: the
 * server counts a stream closed once its last answer is sent, which the
 * client need not wait for (a cancelled stream's ERROR).
 */
async function statusUntil(client: Client, what: (status: Status) => boolean): Promise<Status> {
  let status: Status | undefined;
  for (let i = 0; i < 10_000; i++) {
    status = await client.status();
    if (what(status)) return status;
  }
  assert.fail(`STATUS never matched: ${JSON.stringify(status?.streams)}`);
}

test("STR-1 (pipesvc serve): count's items arrive in order in both encodings, then its result; STATUS counts them", async () => {
  const { client, done } = await withServer();
  try {
    for (const encoding of ["json", "msgpack"] as const) {
      const stream = await client.stream<number, null>("count", { n: 3 }, { encoding });
      const got: number[] = [];
      for await (const n of stream) got.push(n);
      assert.deepEqual(got, [1, 2, 3]);
      assert.equal(await stream.result, null);
    }
    const empty = await client.stream<number, null>("count", { n: 0 });
    for await (const n of empty) assert.fail(`an item ${n} from count of 0`);
    assert.equal(await empty.result, null);
    const status = await client.status();
    assert.equal(status.streams?.open, 0);
    assert.equal(status.streams?.itemsSent, 6);
  } finally {
    await done();
  }
});

test("STR-1 (pipesvc serve): call() of a streaming method discards its items (granting their credit back) and returns its result", async () => {
  const { client, done } = await withServer();
  try {
    // More than a window of items: without CREDIT back the server would wait for ever.
    assert.equal(await client.call("count", { n: 100_000 }), null);
    assert.equal((await client.status()).streams?.itemsSent, 100_000);
    assert.equal(await client.call("echo", "still here"), "still here");
  } finally {
    await done();
  }
});

test("STR-2 (pipesvc serve): a slow reader of 100 000 items gets them all in order and never holds much more than the window", async () => {
  const { client, done } = await withServer();
  try {
    const window = 262_144; // pipesvc's stream window
    const n = 100_000;
    const stream = await client.stream<number, null>("count", { n });
    let expected = 1;
    for await (const item of stream) {
      assert.equal(item, expected);
      expected++;
      // The reader is busy: meanwhile the server fills the window.
      if (item % 10_000 === 1) await client.call("sleep", { ms: 50 });
    }
    assert.equal(expected, n + 1);
    assert.equal(await stream.result, null);
    // The window plus one ITEM sent while the credit was above 0; pipesvc's
    // ITEM batches what its producer queued (up to a window), whatever
    // credit is left: so at most two windows and one entry (5 + 9 bytes).
    assert.ok(stream.peakUnreadBytes > 0 && stream.peakUnreadBytes <= 2 * window + 14, `peak ${stream.peakUnreadBytes}`);
  } finally {
    await done();
  }
});

test("STR-3 (pipesvc serve): lines takes 2000 strings of 500 bytes (about four windows, waiting for CREDIT), then END, and answers their number", async () => {
  const { client, done } = await withServer();
  try {
    const lines = await client.stream<never, number, string>("lines");
    for (let i = 0; i < 2000; i++) await lines.send(String(i).padStart(500, "0"));
    assert.equal(await lines.end(), 2000);
    assert.equal(await client.call("echo", 1), 1);
  } finally {
    await done();
  }
});

test("STR-4 (pipesvc serve): break and cancel() send CANCEL; the server stops count (no stream open) and the connection carries on", async () => {
  const { client, done } = await withServer();
  try {
    const first = await client.stream<number>("count", { n: 2 ** 40, every_ms: 1 });
    for await (const n of first) {
      assert.equal(n, 1);
      break;
    }
    const second = await client.stream<number>("count", { n: 2 ** 40, every_ms: 1 });
    second.cancel();
    await assert.rejects(second.result);
    const status = await statusUntil(client, (s) => s.streams?.open === 0);
    assert.ok((status.requestsCancelled ?? 0) >= 1);
    assert.equal(await client.call("echo", 2), 2);
  } finally {
    await done();
  }
});

test("STR-6 (pipesvc serve): a stream's deadline covers the whole stream: ERROR timed out after the items sent", async () => {
  const { client, done } = await withServer();
  try {
    const stream = await client.stream<number>("count", { n: 1000, every_ms: 50 }, { timeoutMs: 300 });
    const got: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const n of stream) got.push(n);
      })(),
      (e: unknown) => e instanceof RemoteError && e.code === ErrorCode.TimedOut,
    );
    assert.ok(got.length < 1000);
    assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => i + 1));
    await statusUntil(client, (s) => s.streams?.open === 0);
    assert.equal(await client.call("echo", 4), 4);
  } finally {
    await done();
  }
});

test("TOP-1 (pipesvc serve): ticks arrive a second apart; leaving unsubscribes; an unknown topic is unknown method", async () => {
  const { client, done } = await withServer();
  try {
    const ticks = await client.subscribe<number>("ticks");
    assert.equal((await client.status()).streams?.subscribers, 1);
    const got: TopicItem<number>[] = [];
    for await (const item of ticks) {
      got.push(item);
      if (got.length === 2) break;
    }
    const [a, b] = got.map((item) => (item.type === "event" ? item.value : NaN));
    assert.ok(a !== undefined && a % 1000 === 0 && b === a + 1000, JSON.stringify(got));
    await statusUntil(client, (s) => s.streams?.subscribers === 0);
    await assert.rejects(client.subscribe("nope"), (e: unknown) => e instanceof RemoteError && e.code === ErrorCode.UnknownMethod);
    assert.equal(await client.call("echo", 3), 3);
  } finally {
    await done();
  }
});

/** TOP-3: the service stops (`stop`: SIGTERM, GOODBYE; `kill`: SIGKILL) and starts again on the same endpoint. */
async function restartUnderASubscription(how: "stop" | "kill"): Promise<void> {
  const dir = new TempDir();
  let server = await Server.start(dir.socket());
  const client = await Client.connect(server.name, { reconnect: true });
  try {
    const ticks = await client.subscribe<number>("ticks");
    const got: TopicItem<number>[] = [];
    for await (const item of ticks) {
      got.push(item);
      if (got.length === 1) {
        // stop: GOODBYE ends the subscription with shutting down; kill: the connection just ends.
        if (how === "kill") await server.kill();
        else await server.stop();
        server = await Server.start(dir.socket());
      }
      if (got.length === 3) break;
    }
    assert.equal(got[0]?.type, "event");
    assert.deepEqual(got[1], { type: "resubscribed" });
    assert.equal(got[2]?.type, "event");
    assert.ok(client.reconnects >= 1);
  } finally {
    client.close();
    await server.stop();
    dir.remove();
  }
}

test("TOP-3 (pipesvc serve, stop): after a GOODBYE restart the topic is subscribed again, says resubscribed, and the new service's ticks follow", () =>
  restartUnderASubscription("stop"));

test("TOP-3 (pipesvc serve, kill): after a killed server restarts the topic is subscribed again, says resubscribed, and the new service's ticks follow", () =>
  restartUnderASubscription("kill"));
