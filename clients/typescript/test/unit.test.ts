/** Unit tests of the pure parts: frames, CALL bytes, names, errors, ids, STATUS, HELLO reply. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { FrameDecoder, encodeFrame } from "../src/frame.js";
import { encodeCall } from "../src/codec.js";
import { resolveEndpoint } from "../src/endpoint.js";
import { errorCodeName, untrustedText, PipesvcError } from "../src/errors.js";
import { nextFreeId } from "../src/connection.js";
import { parseStatus } from "../src/status.js";
import { parseHelloReply } from "../src/hello.js";
import { isRetryableConnectError } from "../src/transport.js";

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");

test("CALL-3: a CALL is encoded as in PROTOCOL.md's version 2 example", () => {
  const echo = encodeFrame(10, 1, encodeCall({ encoding: 1, method: "echo", timeoutMs: 5000, metadata: [] }, Buffer.from('{"a":1}')));
  assert.deepEqual(echo, hex("18 00 00 00 0a 00 01 00 00 00 01 04 65 63 68 6f 88 13 00 00 00 7b 22 61 22 3a 31 7d"));
  const sleep = encodeFrame(
    10,
    2,
    encodeCall({ encoding: 1, method: "sleep", timeoutMs: 0, metadata: [["trace", "ab"]] }, Buffer.from('{"ms":60000}')),
  );
  assert.deepEqual(
    sleep,
    hex(`28 00 00 00 0a 00 02 00 00 00 01 05 73 6c 65 65 70 00 00 00 00 01 05 74 72 61 63 65 02 00 61 62
         7b 22 6d 73 22 3a 36 30 30 30 30 7d`),
  );
  assert.throws(
    () => encodeCall({ encoding: 1, method: "echo", timeoutMs: 0, metadata: [["pipesvc-x", "1"]] }, Buffer.alloc(0)),
    (e: unknown) => e instanceof PipesvcError && e.reason === "invalid" && /reserved/.test(e.message),
  );
  assert.throws(() => encodeCall({ encoding: 1, method: "x".repeat(256), timeoutMs: 0, metadata: [] }, Buffer.alloc(0)), /255 bytes/);
});

test("frames are reassembled by their length whatever the reads", () => {
  const bytes = Buffer.concat([encodeFrame(3, 7, Buffer.from("hello")), encodeFrame(5, 0), encodeFrame(8, 9, Buffer.from("x"))]);
  for (const step of [1, 3, 10, bytes.length]) {
    const decoder = new FrameDecoder(1024);
    const frames = [];
    for (let at = 0; at < bytes.length; at += step) frames.push(...decoder.push(bytes.subarray(at, at + step)));
    assert.deepEqual(
      frames.map((f) => [f.kind, f.id, Buffer.from(f.payload).toString()]),
      [[3, 7, "hello"], [5, 0, ""], [8, 9, "x"]],
    );
    assert.equal(decoder.bufferedBytes, 0);
  }
});

test("LIM-1: a frame over the client's maximum is refused from its 4 length bytes", () => {
  const decoder = new FrameDecoder(1024);
  assert.throws(() => decoder.push(hex("01 04 00 00")), (e: unknown) => e instanceof PipesvcError && e.reason === "too-large");
  assert.throws(() => new FrameDecoder(1024).push(hex("05 00 00 00")), /malformed frame/);
  assert.throws(() => new FrameDecoder(1024).push(hex("06 00 00 00 03 01 00 00 00 00")), /flags 1/);
});

test("TR-1: bare names map as the Rust client maps them", () => {
  const unix = { platform: "linux", xdgRuntimeDir: "/run/user/1000", uid: 1000 };
  assert.equal(resolveEndpoint("svc", unix).path, "/run/user/1000/pipesvc/svc.sock");
  assert.equal(resolveEndpoint("svc.sock", unix).path, "/run/user/1000/pipesvc/svc.sock");
  assert.equal(resolveEndpoint(".sock", unix).path, "/run/user/1000/pipesvc/.sock.sock");
  assert.equal(resolveEndpoint("svc", { platform: "linux", uid: 7 }).path, "/tmp/pipesvc-7/svc.sock");
  assert.equal(resolveEndpoint("svc", { platform: "linux", xdgRuntimeDir: "relative", uid: 7 }).path, "/tmp/pipesvc-7/svc.sock");
  assert.equal(resolveEndpoint("./a/b.sock", unix).path, "./a/b.sock");
  assert.equal(resolveEndpoint("./a/b.sock", unix).privateDir, undefined);
  assert.throws(() => resolveEndpoint("", unix), /empty/);
  assert.throws(() => resolveEndpoint("..", unix), /not names/);
  assert.throws(() => resolveEndpoint("a\\b", unix), /backslash/);
  assert.throws(() => resolveEndpoint("x".repeat(120), unix), /107/);
  const win = { platform: "win32" };
  assert.deepEqual(resolveEndpoint("svc", win), { path: "\\\\.\\pipe\\svc", transport: "pipe", privateDir: undefined });
  assert.equal(resolveEndpoint("\\\\.\\PIPE\\Svc", win).path, "\\\\.\\PIPE\\Svc");
  assert.throws(() => resolveEndpoint("\\\\.\\pipe\\", win), /after/);
  assert.throws(() => resolveEndpoint("x".repeat(250), win), /256/);
});

test("TR-2: which connect errors are retried, per transport (Windows paths unit-tested here)", () => {
  for (const code of ["ENOENT", "ECONNREFUSED", "EAGAIN"]) assert.ok(isRetryableConnectError(code, "unix"));
  assert.ok(isRetryableConnectError("EBUSY", "pipe"));
  assert.ok(isRetryableConnectError("ENOENT", "pipe"));
  assert.ok(!isRetryableConnectError("EBUSY", "unix"));
  assert.ok(!isRetryableConnectError("EACCES", "unix"));
  assert.ok(!isRetryableConnectError("EACCES", "pipe"));
});

test("ERR-1: codes have their names and unknown codes stay numbers; server text is shown escaped", () => {
  const names = Array.from({ length: 16 }, (_, i) => errorCodeName(i + 1));
  assert.deepEqual(names, [
    "malformed frame", "frame too large", "unsupported version", "unknown kind", "handler failed", "overloaded",
    "shutting down", "timed out", "unexpected frame", "duplicate id", "not allowed", "unknown method", "bad request", "cancelled",
    "too slow", "flow control",
  ]);
  assert.equal(errorCodeName(17), "error 17");
  assert.equal(errorCodeName(1234), "service error 1234");
  assert.equal(untrustedText(Buffer.from("a\x1b[31mred\nb\u202e")), "a\ufffd[31mred\ufffdb\ufffd");
  assert.equal(untrustedText(Buffer.from([0x61, 0xff, 0x62])), "a\ufffdb");
  const long = untrustedText(Buffer.alloc(100_000, 0x61));
  assert.equal(long.length, 1025);
});

test("ERR-8: ids skip 0 and ids in flight, and wrap around", () => {
  assert.equal(nextFreeId(0, new Set()), 1);
  assert.equal(nextFreeId(5, new Set([5, 6])), 7);
  assert.equal(nextFreeId(0xffff_ffff, new Set([0xffff_ffff, 1])), 2);
});

test("CALL-6: STATUS is parsed, bytes after the known fields ignored, other formats refused", () => {
  const payload = Buffer.alloc(52 + 2 * 10 + 16 + 5);
  payload.writeUInt16LE(1, 0);
  payload.writeBigUInt64LE(11n, 2);
  payload.writeBigUInt64LE(2n, 10);
  payload.writeBigUInt64LE(3n, 18);
  payload.writeBigUInt64LE(4n, 26);
  payload.writeBigUInt64LE(5n, 34);
  payload.writeBigUInt64LE(6n, 42);
  payload.writeUInt16LE(2, 50);
  payload.writeUInt16LE(8, 52);
  payload.writeBigUInt64LE(9n, 54);
  payload.writeUInt16LE(14, 62);
  payload.writeBigUInt64LE(10n, 64);
  payload.writeBigUInt64LE(12n, 72);
  payload.writeBigUInt64LE(13n, 80);
  const status = parseStatus(payload);
  assert.deepEqual(
    [status.uptimeMs, status.connectionsOpen, status.connectionsTotal, status.requestsServed, status.bytesIn, status.bytesOut],
    [11, 2, 3, 4, 5, 6],
  );
  assert.deepEqual([...status.errors], [[8, 9], [14, 10]]);
  assert.equal(status.requestsCancelled, 12);
  assert.equal(status.requestsTimedOut, 13);
  const v1 = parseStatus(payload.subarray(0, 72));
  assert.equal(v1.requestsCancelled, undefined);
  payload.writeUInt16LE(2, 0);
  assert.throws(() => parseStatus(payload), /format 2/);
  assert.throws(() => parseStatus(Buffer.alloc(20)), /cut short/);
});

test("HS-4: a HELLO reply is parsed, unknown tags skipped, a field past the end refused", () => {
  const reply = parseHelloReply(hex("50 53 56 43 02 00 09 01 00 ff 01 02 00 02 01 02 03 00 01 0a 0b"));
  assert.deepEqual(reply, { version: 2, encodings: [2, 1], kinds: [1, 10, 11], streamWindow: undefined });
  const streaming = parseHelloReply(hex("50 53 56 43 02 00 03 04 00 00 00 04 00"));
  assert.equal(streaming.streamWindow, 262144);
  assert.throws(() => parseHelloReply(hex("50 53 56 43 02 00 01 05 00 02")), /runs past the end/);
});

test("clients/SCENARIOS.md's TypeScript column names only tests that exist, and every scenario has one", async () => {
  const { readFileSync } = await import("node:fs");
  const { REPO_ROOT } = await import("./helpers.js");
  const dir = `${REPO_ROOT}/clients/typescript`;
  const rows = readFileSync(`${REPO_ROOT}/clients/SCENARIOS.md`, "utf8")
    .split("\n")
    .map((line) => line.trim().replace(/^\||\|$/g, "").split("|").map((cell) => cell.trim()))
    .filter((cells) => cells.length >= 5 && /^[A-Z]+-\d+$/.test(cells[0] ?? ""));
  assert.ok(rows.length >= 50);
  let named = 0;
  for (const cells of rows) {
    const column = cells[4] ?? "";
    assert.notEqual(column, "", `${cells[0]} has no TypeScript entry`);
    for (const [, file, name] of column.matchAll(/`([a-z-]+\.test\.ts)::([^`]+)`/g)) {
      const source = readFileSync(`${dir}/test/${file}`, "utf8");
      assert.ok(source.includes(`test(${JSON.stringify(name)}`), `${cells[0]}: ${file}::${name}`);
      named++;
    }
  }
  assert.ok(named >= 50);
});
