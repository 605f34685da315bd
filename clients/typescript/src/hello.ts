/**
 * The handshake's payloads: the server's HELLO, the client's HELLO and the
 * version 2 HELLO reply (PROTOCOL.md "Handshake", "HELLO reply").
 *
 * @module
 */

import { PipesvcError, untrustedText } from "./errors.js";

/** ASCII `PSVC`. */
export const MAGIC = Buffer.from("PSVC", "ascii");

/** What the server's first HELLO says. */
export interface ServerHello {
  /** Always 1, whatever the server speaks (PROTOCOL.md "Handshake" step 1). */
  readonly version: number;
  /** The largest frame `length` the server accepts (and sends). */
  readonly maxFrameLength: number;
  /** The server's name, made safe by {@link untrustedText}. */
  readonly serverName: string;
}

/** What a version 2 server's HELLO reply says. */
export interface HelloReply {
  /** The connection's version: 2. */
  readonly version: number;
  /** Encoding bytes the server accepts for CALL params, in its order of preference. */
  readonly encodings: readonly number[];
  /** Frame kinds the server accepts from a client. */
  readonly kinds: readonly number[];
  /** Initial credit in bytes of each direction of every stream (revision 2.2), if the server streams. */
  readonly streamWindow: number | undefined;
}

/** Tag of the encodings field of the HELLO reply. */
const TAG_ENCODINGS = 1;
/** Tag of the kinds field of the HELLO reply (and of the client's HELLO, revision 2.2). */
const TAG_KINDS = 2;
/** Tag of the stream window field of the HELLO reply (revision 2.2). */
const TAG_STREAM_WINDOW = 3;
/**
 * The kinds this client accepts from a server, listed in its HELLO
 * (revision 2.2): HELLO, RESPONSE, ERROR, NOTIFY, GOODBYE, PONG, ITEM, CREDIT.
 */
export const CLIENT_KINDS: readonly number[] = [1, 3, 4, 5, 6, 8, 13, 14];
/** The smallest maximum a server may announce (PROTOCOL.md "Maximum frame length"). */
export const SMALLEST_SERVER_MAXIMUM = 74;

function checkMagic(payload: Uint8Array, what: string): void {
  if (payload.length < 6 || !MAGIC.equals(payload.subarray(0, 4))) {
    throw new PipesvcError("protocol", `the server's ${what} does not start with "PSVC": not a pipesvc server`);
  }
}

/** Parses the server's first HELLO. */
export function parseServerHello(payload: Uint8Array): ServerHello {
  checkMagic(payload, "HELLO");
  if (payload.length < 10) {
    throw new PipesvcError("protocol", `the server's HELLO is ${payload.length} bytes long; at least 10 expected`);
  }
  const view = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const version = view.readUInt16LE(4);
  const maxFrameLength = view.readUInt32LE(6);
  if (maxFrameLength < SMALLEST_SERVER_MAXIMUM) {
    throw new PipesvcError(
      "protocol",
      `the server announced a maximum frame length of ${maxFrameLength}, below the protocol's smallest (74)`,
    );
  }
  return { version, maxFrameLength, serverName: untrustedText(payload.subarray(10)) };
}

/**
 * The client's HELLO payload: magic and the highest version it speaks;
 * for version 2, the `kinds` field it accepts (revision 2.2; older servers
 * ignore bytes after the version).
 */
export function encodeClientHello(version: number): Buffer {
  const fields = version >= 2 ? [TAG_KINDS, CLIENT_KINDS.length, 0, ...CLIENT_KINDS] : [];
  const out = Buffer.alloc(6 + fields.length);
  MAGIC.copy(out, 0);
  out.writeUInt16LE(version, 4);
  out.set(fields, 6);
  return out;
}

/**
 * Parses the HELLO reply. Fields of unknown tags are skipped; a field that
 * runs past the end of the payload is a protocol error.
 */
export function parseHelloReply(payload: Uint8Array): HelloReply {
  checkMagic(payload, "HELLO reply");
  const view = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const version = view.readUInt16LE(4);
  let encodings: number[] = [];
  let kinds: number[] = [];
  let streamWindow: number | undefined;
  let at = 6;
  while (at < view.length) {
    if (at + 3 > view.length) {
      throw new PipesvcError("protocol", "the server's HELLO reply ends in the middle of a field header");
    }
    const tag = view.readUInt8(at);
    const len = view.readUInt16LE(at + 1);
    const start = at + 3;
    if (start + len > view.length) {
      throw new PipesvcError("protocol", `the server's HELLO reply field ${tag} runs past the end of the payload`);
    }
    const value = [...view.subarray(start, start + len)];
    if (tag === TAG_ENCODINGS) encodings = value;
    else if (tag === TAG_KINDS) kinds = value;
    else if (tag === TAG_STREAM_WINDOW) {
      if (len < 4) throw new PipesvcError("protocol", `the server's stream window field is ${len} bytes; 4 expected`);
      streamWindow = view.readUInt32LE(start);
    }
    at = start + len;
  }
  return { version, encodings, kinds, streamWindow };
}
