/** Hostile servers, played by the test from a socket: what no correct server does. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync } from "node:fs";
import { Client, PipesvcError, RemoteError } from "../src/index.js";
import { fakeServer, frame, helloReply, readFrames, scenario, serverHello, v2Server } from "./helpers.js";

const isReason = (reason: string) => (e: unknown) => e instanceof PipesvcError && e.reason === reason;

function errorPayload(code: number, message: string): Buffer {
  const out = Buffer.alloc(2 + Buffer.byteLength(message));
  out.writeUInt16LE(code, 0);
  out.write(message, 2);
  return out;
}

/** A version 2 fake server: HELLO, reply, then `onFrame` for each client frame after its HELLO. */
test("HS-3: a version 1 server's unsupported version is reported as too old", () =>
  scenario(async (dir) => {
    const server = await fakeServer(dir.socket(), (socket) => {
      socket.write(serverHello());
      readFrames(socket, () => socket.end(frame(4, 0, errorPayload(3, "unsupported version 2"))));
    });
    try {
      await assert.rejects(Client.connect(dir.socket()), (e: unknown) => e instanceof RemoteError && e.code === 3 && e.reason === "unsupported");
    } finally {
      await server.close();
    }
  }));

test("HS-4: a HELLO reply that does not parse fails the connect", () =>
  scenario(async (dir) => {
    const server = await fakeServer(dir.socket(), (socket) => {
      socket.write(serverHello());
      readFrames(socket, () => socket.write(frame(1, 0, Buffer.from([...Buffer.from("PSVC"), 2, 0, 1, 9, 0, 2]))));
    });
    try {
      await assert.rejects(Client.connect(dir.socket()), (e: unknown) => isReason("protocol")(e) && /runs past the end/.test((e as Error).message));
    } finally {
      await server.close();
    }
  }));

test("HS-6: a silent server fails the connect at the handshake timeout", () =>
  scenario(async (dir) => {
    const server = await fakeServer(dir.socket(), () => undefined);
    try {
      await assert.rejects(Client.connect(dir.socket(), { handshakeTimeoutMs: 200 }), isReason("timeout"));
      // And one that withholds its HELLO reply.
      const withholding = await fakeServer(dir.socket("b"), (socket) => socket.write(serverHello()));
      await assert.rejects(Client.connect(dir.socket("b"), { handshakeTimeoutMs: 200 }), isReason("timeout"));
      await withholding.close();
    } finally {
      await server.close();
    }
  }));

test("HS-7: a server that speaks garbage fails the connect clearly, at once", () =>
  scenario(async (dir) => {
    const server = await fakeServer(dir.socket(), (socket) => socket.write(Buffer.from("HTTP/1.1 400 Bad Request\r\n\r\n")));
    const notPsvc = await fakeServer(dir.socket("b"), (socket) => socket.write(frame(1, 0, Buffer.from("XXXX\x01\x00\x00\x00\x80\x00"))));
    try {
      await assert.rejects(Client.connect(dir.socket()), (e: unknown) => isReason("too-large")(e) || isReason("protocol")(e));
      await assert.rejects(Client.connect(dir.socket("b")), (e: unknown) => isReason("protocol")(e) && /not a pipesvc server/.test((e as Error).message));
    } finally {
      await server.close();
      await notPsvc.close();
    }
  }));

test("ERR-6: request errors fail one call; an ERROR with id 0 fails every call in flight", () =>
  scenario(async (dir) => {
    let held: number[] = [];
    const server = await v2Server(dir, (socket, kind, id, payload) => {
      if (kind !== 10) return;
      const method = payload.subarray(2, 2 + (payload[1] ?? 0)).toString();
      if (method === "fail") socket.write(frame(4, id, errorPayload(5, "boom")));
      else if (method === "service") socket.write(frame(4, id, errorPayload(1042, "quota")));
      else held.push(id);
      if (held.length === 2) socket.end(frame(4, 0, errorPayload(6, "going")));
    });
    try {
      const client = await Client.connect(dir.socket());
      await assert.rejects(client.call("fail"), (e: unknown) => e instanceof RemoteError && e.code === 5 && e.serverMessage === "boom");
      await assert.rejects(client.call("service"), (e: unknown) => e instanceof RemoteError && e.code === 1042 && /service error 1042/.test(e.message));
      const both = [client.call("hold"), client.call("hold")];
      for (const call of both) await assert.rejects(call, (e: unknown) => e instanceof RemoteError && e.code === 6 && e.reason === "lost");
      client.close();
      held = [];
    } finally {
      await server.close();
    }
  }));

test("DL-2: a silent server fails each call at its own deadline", () =>
  scenario(async (dir) => {
    const server = await v2Server(dir, (socket, kind, id) => {
      // Half an answer to the second call; nothing to the first.
      if (kind === 10 && id === 2) socket.write(frame(3, id, Buffer.from("12345678")).subarray(0, 12));
    });
    try {
      const client = await Client.connect(dir.socket(), { deadlineGraceMs: 50 });
      await assert.rejects(client.call("x", null, { timeoutMs: 100 }), isReason("timeout"));
      await assert.rejects(client.call("y", null, { timeoutMs: 100 }), isReason("timeout"));
      await assert.rejects(client.ping({ timeoutMs: 100 }), isReason("timeout"));
      client.close();
    } finally {
      await server.close();
    }
  }));

test("DL-3: a call whose time is up sends its deadline, then CANCEL", () =>
  scenario(async (dir) => {
    const seen: string[] = [];
    let cancelled!: () => void;
    const gotCancel = new Promise<void>((resolve) => (cancelled = resolve));
    const server = await v2Server(dir, (_socket, kind, id, payload) => {
      if (kind === 10) seen.push(`CALL ${id} timeout ${payload.readUInt32LE(2 + (payload[1] ?? 0))}`);
      if (kind === 11) {
        seen.push(`CANCEL ${id}`);
        cancelled();
      }
    });
    try {
      const client = await Client.connect(dir.socket(), { deadlineGraceMs: 50 });
      await assert.rejects(client.call("slow", null, { timeoutMs: 100 }), isReason("timeout"));
      await gotCancel;
      assert.deepEqual(seen, ["CALL 1 timeout 100", "CANCEL 1"]);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("CAN-3: a cancelled byte request sends CANCEL; a cancelled PING does not", () =>
  scenario(async (dir) => {
    const seen: string[] = [];
    let marker!: () => void;
    const done = new Promise<void>((resolve) => (marker = resolve));
    const server = await v2Server(dir, (socket, kind, id) => {
      seen.push(`${kind}:${id}`);
      if (kind === 9) {
        marker();
        socket.write(frame(4, id, errorPayload(4, "no status here")));
      }
    });
    try {
      const client = await Client.connect(dir.socket());
      const controller = new AbortController();
      const request = client.request(Buffer.from("x"), { signal: controller.signal });
      const ping = client.ping({ signal: controller.signal });
      controller.abort(new Error("stop"));
      await assert.rejects(request, /stop/);
      await assert.rejects(ping, /stop/);
      await assert.rejects(client.status()); // a marker after them, answered
      await done;
      assert.deepEqual(seen, ["10:1", "7:2", "11:1", "9:3"]);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("ORD-1: NOTIFYs sent before an answer are delivered, in order, before the call returns", () =>
  scenario(async (dir) => {
    const server = await v2Server(dir, (socket, kind, id) => {
      if (kind !== 10) return;
      socket.write(Buffer.concat([frame(5, 0, Buffer.from("one")), frame(5, 0, Buffer.from("two")), frame(3, id, Buffer.from("null"))]));
    });
    try {
      const client = await Client.connect(dir.socket(), { encoding: "json" });
      const notifications = client.notifications();
      assert.equal(await client.call("x"), null);
      const texts: string[] = [];
      for (let i = 0; i < 2; i++) {
        const item = await notifications.next();
        if (item.value?.type === "message") texts.push(Buffer.from(item.value.payload).toString());
      }
      assert.deepEqual(texts, ["one", "two"]);
      client.close();
    } finally {
      await server.close();
    }
  }));

test("NOT-2: a NOTIFY flood is bounded in memory, marked lagged, and calls keep their deadlines", () =>
  scenario(async (dir) => {
    const chunk = frame(5, 0, Buffer.alloc(60_000, 0x61));
    const total = 4000; // 240 MB of notifications
    const server = await v2Server(dir, (socket, kind, id, payload) => {
      if (kind !== 10 || payload.subarray(2, 2 + (payload[1] ?? 0)).toString() !== "flood") return;
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          sent++;
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
        socket.write(frame(3, id, Buffer.from("\"done\"")));
      };
      pump();
    });
    try {
      const client = await Client.connect(dir.socket(), {
        encoding: "json",
        notificationBuffer: 64,
        notificationBufferBytes: 1 << 20,
        deadlineGraceMs: 50,
      });
      global.gc?.();
      const before = process.memoryUsage();
      let peak = 0;
      const sample = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 5);
      const silent = assert.rejects(client.call("silent", null, { timeoutMs: 100 }), isReason("timeout")); // never answered
      const answer = await client.call("flood", null, { timeoutMs: 60_000 });
      await silent;
      clearInterval(sample);
      peak = Math.max(peak, process.memoryUsage().arrayBuffers);
      assert.equal(answer, "done");
      const notifications = client.notifications();
      let messages = 0;
      let lagged = 0;
      client.close();
      for await (const item of notifications) {
        if (item.type === "message") messages++;
        else lagged += item.count;
      }
      assert.equal(messages + lagged, total);
      assert.ok(messages <= 64);
      assert.ok(lagged > 0);
      assert.equal(client.droppedNotifications, lagged);
      const grewMiB = (peak - before.arrayBuffers) / 2 ** 20;
      console.log(`NOT-2 measured: ${(total * chunk.length) / 2 ** 20} MiB flooded, ${messages} kept, ${lagged} marked lagged, peak arrayBuffers growth ${grewMiB.toFixed(1)} MiB`);
      // Bounded: the 1 MiB queue plus Node's read buffers, far below the 229 MiB sent.
      assert.ok(grewMiB < 64, `arrayBuffers grew ${grewMiB} MiB`);
    } finally {
      await server.close();
    }
  }));

test("LIM-1: a frame over the client's maximum ends the connection at once, failing every call", () =>
  scenario(async (dir) => {
    const server = await v2Server(dir, (socket, kind) => {
      if (kind === 10) socket.write(Buffer.from([0xff, 0xff, 0xff, 0x7f]));
    });
    try {
      const client = await Client.connect(dir.socket(), { maxFrameLength: 1 << 20 });
      const states: string[] = [];
      client.on("state", (s) => states.push(s.state));
      await assert.rejects(client.call("x"), (e: unknown) => isReason("too-large")(e) && /2147483647/.test((e as Error).message));
      assert.deepEqual(states, ["lost"]);
      await assert.rejects(client.call("y"), isReason("too-large"));
    } finally {
      await server.close();
    }
  }));

test("LIM-2: server text is kept safe: control characters escaped, invalid UTF-8 replaced", () =>
  scenario(async (dir) => {
    const hostile = Buffer.concat([Buffer.from("evil\x1b[2J\n"), Buffer.from([0xff, 0xfe])]);
    const name = serverHello(8 << 20, "");
    const hello = Buffer.concat([name, hostile]);
    hello.writeUInt32LE(hello.length - 4, 0);
    const server = await v2Server(
      dir,
      (socket, kind, id) => {
        if (kind === 10) socket.write(frame(4, id, Buffer.concat([Buffer.from([5, 0]), hostile])));
      },
      { hello },
    );
    try {
      const client = await Client.connect(dir.socket());
      assert.equal(client.serverName, "evil\ufffd[2J\ufffd\ufffd\ufffd");
      await assert.rejects(client.call("x"), (e: unknown) => e instanceof RemoteError && !/[\x00-\x1f]/.test(e.message) && e.serverMessage.startsWith("evil\ufffd"));
      client.close();
    } finally {
      await server.close();
    }
  }));

test("TR-4: the server's directories are checked before anything is sent", () =>
  scenario(async (dir) => {
    let received = 0;
    const open = `${dir.path}/open`;
    mkdirSync(open);
    chmodSync(open, 0o777); // writable by others, not sticky
    const server = await fakeServer(`${open}/svc.sock`, (socket) => {
      socket.on("data", () => received++);
      socket.write(serverHello());
    });
    try {
      await assert.rejects(Client.connect(`${open}/svc.sock`), (e: unknown) => isReason("wrong-server")(e) && /writable by others/.test((e as Error).message));
      const accepted = await Client.connect(`${open}/svc.sock`, { serverIdentity: "any", handshakeTimeoutMs: 100 }).catch((e: unknown) => e);
      assert.ok(isReason("timeout")(accepted), "with `any` the check is skipped (then the fake's handshake times out)");
      assert.ok(received > 0);
      received = 0;
      if (process.getuid?.() === 0) {
        // Root can make a directory of another user; the client refuses it.
        const other = `${dir.path}/other`;
        mkdirSync(other, { mode: 0o700 });
        chownSync(other, 65534, 65534);
        const theirs = await fakeServer(`${other}/svc.sock`, (socket) => {
          socket.on("data", () => received++);
          socket.write(serverHello());
        });
        await assert.rejects(Client.connect(`${other}/svc.sock`), (e: unknown) => isReason("wrong-server")(e) && /uid 65534/.test((e as Error).message));
        await theirs.close();
        await assert.rejects(Client.connect(`${other}/svc.sock`, { serverIdentity: { uid: 65534 }, connectTimeoutMs: 50 }), isReason("connect"));
      }
      assert.equal(received, 0, "nothing was sent to a refused server");
    } finally {
      await server.close();
    }
  }));

test("notifications: the backpressure policy loses nothing; the answer behind them waits until they are read", () =>
  scenario(async (dir) => {
    const server = await v2Server(dir, (socket, kind, id) => {
      if (kind !== 10) return;
      const frames = Array.from({ length: 2000 }, (_, i) => frame(5, 0, Buffer.alloc(1000, i % 256)));
      socket.write(Buffer.concat([...frames, frame(3, id, Buffer.from("1"))]));
    });
    try {
      const client = await Client.connect(dir.socket(), {
        encoding: "json",
        notificationPolicy: "backpressure",
        notificationBuffer: 10,
      });
      const notifications = client.notifications();
      let answered = false;
      const call = client.call("x", null).then((v) => {
        answered = true;
        return v;
      });
      let received = 0;
      for await (const item of notifications) {
        assert.equal(item.type, "message");
        if (item.type === "message") assert.equal(item.payload[0], received % 256, "in order");
        received++;
        if (received === 5) assert.equal(answered, false, "the answer waits behind unread notifications");
        if (received === 2000) break;
      }
      assert.equal(await call, 1);
      assert.equal(client.droppedNotifications, 0);
      client.close();
    } finally {
      await server.close();
    }
  }));
