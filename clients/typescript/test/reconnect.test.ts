/** Connection states and reconnects against a real `pipesvc serve` that stops and starts again. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { PipesvcError, type ConnectionState } from "../src/index.js";
import { Server, withServer } from "./helpers.js";

const isReason = (reason: string) => (e: unknown) => e instanceof PipesvcError && e.reason === reason;

test("REC-1: with reconnect on, a server restart is survived and the notification stream carries on", async () => {
  const { server, client, dir } = await withServer([], { reconnect: true });
  let restarted: Server | undefined;
  try {
    const states: string[] = [];
    client.on("state", (s: ConnectionState) => states.push(s.state === "lost" ? `lost${s.reconnecting ? " (reconnecting)" : ""}` : s.state));
    const notifications = client.notifications();
    const greetings = async (): Promise<string> => {
      const item = await notifications.next();
      return item.value?.type === "message" ? Buffer.from(item.value.payload).toString() : JSON.stringify(item.value);
    };
    assert.equal(await greetings(), "Hello Pipe World");
    const reconnected = client.waitForState((s) => s.state === "connected" && s.reconnects === 1);
    await server.stop();
    restarted = await Server.start(server.name);
    await reconnected;
    assert.equal(await client.call("echo", "after"), "after");
    assert.equal(await greetings(), "Hello Pipe World");
    assert.equal(client.reconnects, 1);
    assert.deepEqual(states.slice(0, 1), ["lost (reconnecting)"]);
    assert.equal(states.at(-1), "connected");
  } finally {
    client.close();
    await restarted?.stop();
    await server.stop();
    dir.remove();
  }
});

test("REC-2: without reconnect, a lost connection stays lost", async () => {
  const { server, client, dir } = await withServer();
  try {
    const lost = client.waitForState((s) => s.state === "lost");
    await server.kill();
    const state = await lost;
    assert.ok(state.state === "lost" && !state.reconnecting);
    await assert.rejects(client.call("echo", 1), isReason("lost"));
    await assert.rejects(client.ping(), isReason("lost"));
  } finally {
    client.close();
    dir.remove();
  }
});

test("REC-3: calls in flight at a loss fail and are not sent again", async () => {
  const { server, client, dir } = await withServer([], { reconnect: true });
  let restarted: Server | undefined;
  try {
    const inFlight = assert.rejects(client.call("sleep", { ms: 60_000 }, { timeoutMs: null }), isReason("lost"));
    await client.ping();
    await server.kill();
    await inFlight;
    restarted = await Server.start(server.name);
    await client.waitForState((s) => s.state === "connected" && s.reconnects === 1);
    const status = await client.status();
    assert.equal(status.requestsServed, 0, "the restarted server got nothing resent");
  } finally {
    client.close();
    await restarted?.stop();
    dir.remove();
  }
});

test("REC-4: close with a long call in flight is immediate; the call fails as closed", async () => {
  const { client, done } = await withServer();
  try {
    const inFlight = assert.rejects(client.call("sleep", { ms: 60_000 }, { timeoutMs: null }), isReason("closed"));
    await client.ping();
    client.close();
    await inFlight;
    assert.equal(client.state.state, "closed");
    await assert.rejects(client.call("echo", 1), isReason("closed"));
  } finally {
    await done();
  }
});
