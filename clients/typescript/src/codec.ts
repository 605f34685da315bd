/**
 * CALL params and results in the two encodings (PROTOCOL.md "Encodings"),
 * and the CALL payload (PROTOCOL.md "CALL").
 *
 * @module
 */

import { Decoder, Encoder } from "@msgpack/msgpack";
import { PipesvcError } from "./errors.js";

/** The encodings a CALL may use. */
export type Encoding = "json" | "msgpack";

/** The byte of each encoding on the wire. */
export const ENCODING_BYTE: Readonly<Record<Encoding, number>> = { json: 1, msgpack: 2 };

/** The encoding of a byte, or undefined for one this client does not know. */
export function encodingOfByte(byte: number): Encoding | undefined {
  if (byte === 1) return "json";
  if (byte === 2) return "msgpack";
  return undefined;
}

/** A value of the JSON data model: what params and results are. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const msgpackEncoder = new Encoder({ ignoreUndefined: true });
const msgpackDecoder = new Decoder();

/** Encodes `value` as params in `encoding` (`undefined` is sent as no params: null). */
export function encodeValue(encoding: Encoding, value: unknown): Uint8Array {
  if (value === undefined) return new Uint8Array(0);
  try {
    if (encoding === "json") return utf8.encode(JSON.stringify(value));
    // A view of the encoder's buffer: encodeCall copies it into the frame before the next call.
    return msgpackEncoder.encodeSharedRef(value);
  } catch (cause) {
    throw new PipesvcError("invalid", `the params cannot be encoded as ${encoding}: ${String(cause)}`, { cause });
  }
}

/** Decodes a result in `encoding`; empty bytes are `null`. */
export function decodeValue(encoding: Encoding, bytes: Uint8Array): unknown {
  if (bytes.length === 0) return null;
  try {
    if (encoding === "json") return JSON.parse(strictUtf8.decode(bytes)) as unknown;
    return msgpackDecoder.decode(bytes);
  } catch (cause) {
    throw new PipesvcError("protocol", `the server's result is not valid ${encoding}: ${String(cause)}`, { cause });
  }
}

/** The parts of a CALL payload. */
export interface CallHeader {
  /** Encoding byte (0 for the byte handler). */
  readonly encoding: number;
  /** Method name, empty for the byte handler. */
  readonly method: string;
  /** Milliseconds the server allows the call; 0: no deadline. */
  readonly timeoutMs: number;
  /** Metadata entries, in order. */
  readonly metadata: readonly (readonly [string, string])[];
}

/** Metadata keys reserved for the protocol: a client does not send them. */
const RESERVED_PREFIX = "pipesvc-";

/** Encodes a CALL payload: header, then `params` as they are. */
export function encodeCall(header: CallHeader, params: Uint8Array): Buffer {
  const method = utf8.encode(header.method);
  if (method.length > 255) {
    throw new PipesvcError("invalid", `a method name is at most 255 bytes of UTF-8; ${method.length} given`);
  }
  if (header.metadata.length > 255) {
    throw new PipesvcError("invalid", `at most 255 metadata entries; ${header.metadata.length} given`);
  }
  if (!Number.isInteger(header.timeoutMs) || header.timeoutMs < 0 || header.timeoutMs > 0xffff_ffff) {
    throw new PipesvcError("invalid", `a call's timeout is 0 to ${0xffff_ffff} ms, not ${header.timeoutMs}`);
  }
  const parts: Uint8Array[] = [Uint8Array.of(header.encoding, method.length), method, u32(header.timeoutMs)];
  parts.push(Uint8Array.of(header.metadata.length));
  for (const [key, value] of header.metadata) {
    parts.push(...metadataEntry(key, value));
  }
  parts.push(params);
  return Buffer.concat(parts);
}

function metadataEntry(key: string, value: string): Uint8Array[] {
  if (key.startsWith(RESERVED_PREFIX)) {
    throw new PipesvcError("invalid", `metadata key ${JSON.stringify(key)}: keys starting with "pipesvc-" are reserved`);
  }
  const k = utf8.encode(key);
  const v = utf8.encode(value);
  if (k.length > 255) throw new PipesvcError("invalid", `a metadata key is at most 255 bytes; ${k.length} given`);
  if (v.length > 0xffff) throw new PipesvcError("invalid", `a metadata value is at most 65535 bytes; ${v.length} given`);
  const vlen = Buffer.alloc(2);
  vlen.writeUInt16LE(v.length, 0);
  return [Uint8Array.of(k.length), k, vlen, v];
}

function u32(n: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(n, 0);
  return out;
}
