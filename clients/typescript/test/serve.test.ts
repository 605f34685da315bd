/** The client against a real `pipesvc serve` started by the test. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { setMaxListeners } from "node:events";
import { Client, PipesvcError, RemoteError, ErrorCode } from "../src/index.js";
import { Server, TempDir, withServer } from "./helpers.js";

const isRemote = (code: number) => (e: unknown) => e instanceof RemoteError && e.code === code;
const isReason = (reason: string) => (e: unknown) => e instanceof PipesvcError && e.reason === reason;

test("HS-1: the version 2 handshake reports the server's name, maximum, encodings and kinds", async () => {
  const { client, done } = await withServer(["--server-name", "ts-test", "--max-frame-len", "65536"]);
  try {
    assert.equal(client.protocolVersion, 2);
    assert.equal(client.serverName, "ts-test");
    assert.equal(client.serverMaxFrameLength, 65536);
    assert.deepEqual(client.encodings, ["msgpack", "json"]);
    // Revision 2.2: ITEM, CREDIT, END and SUBSCRIBE too, and the stream window.
    assert.deepEqual(client.kinds, [1, 2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16]);
  } finally {
    await done();
  }
});

test("HS-2: a version 1 connection makes REQUESTs, PING and STATUS; CALL and DESCRIBE are refused by the client", async () => {
  const { client, done } = await withServer([], { protocolVersion: 1 });
  try {
    assert.equal(client.protocolVersion, 1);
    assert.deepEqual(client.kinds, []);
    assert.equal(Buffer.from(await client.request(Buffer.from("hello"))).toString(), "hello");
    assert.ok((await client.ping()) >= 0);
    const before = (await client.status()).requestsServed;
    await assert.rejects(client.call("echo", 1), isReason("unsupported"));
    await assert.rejects(client.describe(), isReason("unsupported"));
    assert.equal((await client.status()).requestsServed, before, "nothing was sent");
  } finally {
    await done();
  }
});

test("HS-5: a server at its connection limit refuses with overloaded, at once", async () => {
  const dir = new TempDir();
  const server = await Server.start(dir.socket(), ["--max-connections", "1"]);
  let first: Client | undefined;
  try {
    // The start-up probe's departure may not be noticed yet: bounded retries, each a round trip.
    for (let round = 0; round < 1000 && first === undefined; round++) {
      first = await Client.connect(server.name).catch((e: unknown) => {
        if (isRemote(ErrorCode.Overloaded)(e)) return undefined;
        throw e;
      });
    }
    assert.ok(first !== undefined);
    await assert.rejects(Client.connect(server.name), (e: unknown) => isRemote(ErrorCode.Overloaded)(e) && isReason("refused")(e));
  } finally {
    first?.close();
    await server.stop();
    dir.remove();
  }
});

test("TR-2: connecting to nothing fails at the connect timeout, naming the endpoint", async () => {
  const dir = new TempDir();
  try {
    const name = dir.socket("absent");
    await assert.rejects(
      Client.connect(name, { connectTimeoutMs: 200 }),
      (e: unknown) => isReason("connect")(e) && (e as Error).message.includes(name),
    );
  } finally {
    dir.remove();
  }
});

test("TR-3: a client started before its service connects once the service is up", async () => {
  const dir = new TempDir();
  const name = dir.socket();
  const connecting = Client.connect(name, { connectTimeoutMs: 60_000 });
  const server = await Server.start(name);
  try {
    const client = await connecting;
    assert.deepEqual(await client.call("echo", "up"), "up");
    client.close();
  } finally {
    await server.stop();
    dir.remove();
  }
});

test("CALL-1: JSON-model values round-trip in both encodings; the default is one the server offers", async () => {
  const { client, done } = await withServer();
  try {
    const values = [null, true, false, 0, -1, 2 ** 40, 1.5, "", "héllo ✓", [], [1, "a", null], { a: { b: [1, 2] }, c: "" }];
    for (const encoding of ["json", "msgpack"] as const) {
      for (const value of values) assert.deepEqual(await client.call("echo", value, { encoding }), value, `${encoding} ${JSON.stringify(value)}`);
    }
    assert.deepEqual(await client.call("echo", { x: 1 }), { x: 1 });
  } finally {
    await done();
  }
});

test("CALL-2: byte requests come back from the byte echo, with a deadline and metadata", async () => {
  const { client, done } = await withServer();
  try {
    const bytes = Buffer.from([0, 1, 2, 255]);
    assert.deepEqual(Buffer.from(await client.request(bytes)), bytes);
    assert.deepEqual(Buffer.from(await client.request(bytes, { timeoutMs: 5000, metadata: { traceparent: "00-1" } })), bytes);
  } finally {
    await done();
  }
});

test("CALL-4: 64 calls in flight, answered out of order, each matched to its caller", async () => {
  const { client, done } = await withServer();
  try {
    const order: number[] = [];
    const calls = Array.from({ length: 64 }, (_, i) =>
      client.call("sleep", { ms: (64 - i) * 3 }).then(() => order.push(i)),
    );
    const echoes = Array.from({ length: 64 }, (_, i) => client.call("echo", { i }, { encoding: i % 2 ? "json" : "msgpack" }));
    assert.deepEqual(await Promise.all(echoes), Array.from({ length: 64 }, (_, i) => ({ i })));
    await Promise.all(calls);
    assert.equal(order.length, 64);
    assert.notDeepEqual(order, [...order].sort((a, b) => a - b), "answers came in another order than sent");
  } finally {
    await done();
  }
});

test("CALL-5: PING returns its payload unchanged", async () => {
  const { client, done } = await withServer();
  try {
    assert.ok((await client.ping({ payload: Buffer.from("payload ✓") })) >= 0);
  } finally {
    await done();
  }
});

test("CALL-6: STATUS is parsed with its error counts and the version 2 counts", async () => {
  const { client, done } = await withServer();
  try {
    await assert.rejects(client.call("nope"), isRemote(ErrorCode.UnknownMethod));
    await client.call("echo", 1);
    const status = await client.status();
    assert.ok(status.uptimeMs >= 0);
    assert.ok(status.connectionsOpen >= 1);
    assert.ok(status.requestsServed >= 2);
    assert.equal(status.errors.get(ErrorCode.UnknownMethod), 1);
    assert.ok(status.bytesIn > 0 && status.bytesOut > 0);
    assert.equal(status.requestsCancelled, 0);
    assert.equal(status.requestsTimedOut, 0);
  } finally {
    await done();
  }
});

test("CALL-7: DESCRIBE lists the service's methods with their schemas", async () => {
  const { client, done } = await withServer();
  try {
    const description = await client.describe();
    assert.equal(description.service, "pipesvc");
    assert.equal(description.protocol, 2);
    assert.deepEqual(description.encodings, ["msgpack", "json"]);
    const sleep = description.methods.find((m) => m.name === "sleep");
    assert.ok(sleep !== undefined);
    assert.deepEqual((sleep.request as { required: string[] }).required, ["ms"]);
    assert.deepEqual(description.methods.map((m) => m.name).sort(), ["count", "echo", "lines", "sleep", "whoami"]);
    // Revision 2.2: streaming methods say which way they stream and their items' schemas; topics their events'.
    const count = description.methods.find((m) => m.name === "count");
    const lines = description.methods.find((m) => m.name === "lines");
    assert.ok(count?.streams === "server" && count.serverItem !== undefined && count.clientItem === undefined, JSON.stringify(count));
    assert.ok(lines?.streams === "client" && lines.clientItem !== undefined && lines.serverItem === undefined, JSON.stringify(lines));
    assert.deepEqual(
      description.topics.map((t) => [t.name, t.policy, t.queue]),
      [["ticks", "drop_oldest", 256]],
    );
  } finally {
    await done();
  }
});

test("ERR-2: unknown method and bad request fail only that call, in both encodings", async () => {
  const { client, done } = await withServer();
  try {
    await assert.rejects(client.call("nope"), (e: unknown) => isRemote(12)(e) && (e as RemoteError).serverMessage.includes("nope"));
    for (const encoding of ["json", "msgpack"] as const) {
      await assert.rejects(
        client.call("sleep", { ms: "x" }, { encoding }),
        (e: unknown) => isRemote(13)(e) && (e as RemoteError).serverMessage.includes("params.ms"),
      );
    }
    assert.equal(await client.call("echo", "still here"), "still here");
  } finally {
    await done();
  }
});

test("ERR-3: a method the policy reserves is not allowed, for that call only", async () => {
  const { client, done } = await withServer(["--allow", "same-user", "--allow", "admin", "--allow", "sleep=user:65534"]);
  try {
    await assert.rejects(client.call("sleep", { ms: 1 }), isRemote(ErrorCode.NotAllowed));
    assert.equal(await client.call("echo", 1), 1);
  } finally {
    await done();
  }
});

test("ERR-4: a probe of an unknown kind is answered unknown kind; the connection carries on", async () => {
  const { client, done } = await withServer();
  try {
    await assert.rejects(client.probe(200), (e: unknown) => isRemote(ErrorCode.UnknownKind)(e) && /200/.test((e as Error).message));
    assert.equal(await client.call("echo", 2), 2);
  } finally {
    await done();
  }
});

test("ERR-5: a request over the server's maximum is refused before anything is sent", async () => {
  const { client, done } = await withServer(["--max-frame-len", "4096"]);
  try {
    const before = await client.status();
    await assert.rejects(client.request(Buffer.alloc(5000)), isReason("too-large"));
    await assert.rejects(client.call("echo", "x".repeat(5000)), isReason("too-large"));
    const after = await client.status();
    assert.equal(after.bytesIn - before.bytesIn, 10, "only the first STATUS frame (length 6, plus 4) was read in between");
    assert.equal(await client.call("echo", "ok"), "ok");
  } finally {
    await done();
  }
});

test("DL-1: the server stops a call at its deadline and the client gets its timed out", async () => {
  const { client, done } = await withServer();
  try {
    await assert.rejects(client.call("sleep", { ms: 60_000 }, { timeoutMs: 100 }), isRemote(ErrorCode.TimedOut));
    assert.equal((await client.status()).requestsTimedOut, 1);
  } finally {
    await done();
  }
});

test("CAN-1: an aborted signal sends CANCEL; the server answers cancelled and counts it", async () => {
  const { client, done } = await withServer();
  try {
    const controller = new AbortController();
    const call = client.call("sleep", { ms: 60_000 }, { signal: controller.signal, timeoutMs: null });
    await client.ping(); // the CALL is on its way (written before the PING's answer came)
    controller.abort(new Error("user gave up"));
    await assert.rejects(call, /user gave up/);
    // The server answers `cancelled` (the client drops that answer, its caller is gone) and counts it;
    // each round trip gives it the chance (bounded: the test's own timeout is the hang guard).
    let cancelled: number | undefined = 0;
    for (let round = 0; round < 10_000 && cancelled !== 1; round++) cancelled = (await client.status()).requestsCancelled;
    assert.equal(cancelled, 1);
    await assert.rejects(client.call("echo", 1, { signal: AbortSignal.abort(new Error("before")) }), /before/);
  } finally {
    await done();
  }
});

test("CAN-2: 64 abandoned calls leave the connection usable", async () => {
  const { client, done } = await withServer();
  try {
    const controller = new AbortController();
    setMaxListeners(64, controller.signal); // one listener per call: not a leak
    const calls = Array.from({ length: 64 }, () => client.call("sleep", { ms: 60_000 }, { signal: controller.signal }));
    controller.abort(new Error("abandoned"));
    for (const call of calls) await assert.rejects(call, /abandoned/);
    assert.equal(await client.call("echo", "free"), "free");
  } finally {
    await done();
  }
});

test("NOT-1: serve's greeting NOTIFY arrives; the client's NOTIFY is sent", async () => {
  const { client, done } = await withServer();
  try {
    const notifications = client.notifications();
    const first = await notifications.next();
    assert.ok(first.value?.type === "message");
    assert.equal(Buffer.from(first.value.payload).toString(), "Hello Pipe World");
    const before = await client.status();
    await client.notify(Buffer.from("hi"));
    await client.ping();
    const after = await client.status();
    // Between the two STATUS: the first STATUS (10), the NOTIFY (12) and the PING (10).
    assert.equal(after.bytesIn - before.bytesIn, 10 + 12 + 10);
    await notifications.return?.();
  } finally {
    await done();
  }
});

test("BYE-1: SIGTERM gives GOODBYE; a call in flight is answered; new calls are refused; the connection ends", async () => {
  const { server, client, dir } = await withServer();
  try {
    const inFlight = client.call("sleep", { ms: 300 });
    await client.ping(); // the CALL was read before the signal
    const goodbye = client.waitForState((s) => s.state === "lost");
    server.child.kill("SIGTERM");
    const state = await goodbye;
    assert.ok(state.state === "lost" && /GOODBYE/.test(state.error.message) && !state.reconnecting);
    await assert.rejects(client.call("echo", 1), isReason("lost"));
    assert.equal(await inFlight, null);
    await server.stop();
  } finally {
    client.close();
    dir.remove();
  }
});
