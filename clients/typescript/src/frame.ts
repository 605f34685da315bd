/**
 * Frames: the 10-byte header, their encoding, and a decoder that
 * reassembles them from a byte stream by the length prefix, checking each
 * length as soon as its 4 bytes arrive (PROTOCOL.md "Frame layout").
 *
 * @module
 */

import { PipesvcError } from "./errors.js";

/** Frame kinds (PROTOCOL.md "Kinds"). */
export const Kind = {
  Hello: 1,
  Request: 2,
  Response: 3,
  Error: 4,
  Notify: 5,
  Goodbye: 6,
  Ping: 7,
  Pong: 8,
  Status: 9,
  Call: 10,
  Cancel: 11,
  Describe: 12,
  Item: 13,
  Credit: 14,
  End: 15,
  Subscribe: 16,
} as const;

/** Bytes of the header before the payload: length, kind, flags, id. */
export const HEADER_LEN = 10;
/** The smallest `length` (a frame with no payload). */
export const MIN_LENGTH = 6;
/** Largest u32. */
const U32_MAX = 0xffff_ffff;

/** One frame as read or to be written. */
export interface Frame {
  /** Kind byte, see {@link Kind}. */
  readonly kind: number;
  /** Request id, 0 for frames without one. */
  readonly id: number;
  /** Payload (may be empty). */
  readonly payload: Uint8Array;
}

/** The `length` field of a frame with `payloadLen` bytes of payload. */
export function frameLength(payloadLen: number): number {
  return MIN_LENGTH + payloadLen;
}

/** Encodes one frame, header and payload, in one buffer. */
export function encodeFrame(kind: number, id: number, payload: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LEN + payload.length);
  out.writeUInt32LE(frameLength(payload.length), 0);
  out.writeUInt8(kind, 4);
  out.writeUInt8(0, 5);
  out.writeUInt32LE(id, 6);
  out.set(payload, HEADER_LEN);
  return out;
}

/** An empty payload. */
export const EMPTY: Uint8Array = new Uint8Array(0);

/**
 * Reassembles frames from chunks of a byte stream. Each frame's `length`
 * is checked against `maxLength` as soon as it is known, before the rest
 * is buffered, so a hostile peer cannot make the client allocate more
 * than one maximum frame (plus one read).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** The `length` of the frame being read, once its 4 bytes are in. */
  private pendingLength: number | undefined;

  /** @param maxLength - the largest `length` accepted (at least 6) */
  constructor(private readonly maxLength: number) {
    if (!Number.isInteger(maxLength) || maxLength < MIN_LENGTH || maxLength > U32_MAX) {
      throw new PipesvcError("invalid", `a maximum frame length must be 6 to ${U32_MAX}, not ${maxLength}`);
    }
  }

  /** Bytes held for a frame not yet complete. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * Adds `chunk` and returns the frames it completes, in order.
   * @throws {@link PipesvcError} `protocol` or `too-large` on a frame no
   * peer may send; the stream cannot be read further after that.
   */
  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.pendingLength === undefined) {
        if (this.buffered < 4) return frames;
        this.pendingLength = this.checkLength(this.take(4).readUInt32LE(0));
      }
      if (this.buffered < this.pendingLength) return frames;
      const body = this.take(this.pendingLength);
      this.pendingLength = undefined;
      frames.push(parseBody(body));
    }
  }

  private checkLength(length: number): number {
    if (length < MIN_LENGTH) {
      throw new PipesvcError("protocol", `the server sent a malformed frame (length ${length} < 6)`);
    }
    if (length > this.maxLength) {
      throw new PipesvcError(
        "too-large",
        `the server sent a frame of length ${length}, over this client's maximum of ${this.maxLength}`,
      );
    }
    return length;
  }

  /** Removes and returns the next `n` buffered bytes (`n <= buffered`). */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      this.buffered -= n;
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0];
      if (head === undefined) throw new Error("FrameDecoder.take past the buffered bytes");
      const part = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, part);
      filled += part;
      if (part === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(part);
    }
    this.buffered -= n;
    return out;
  }
}

/** Kind, flags, id and payload of a frame whose length was read. */
function parseBody(body: Buffer): Frame {
  const flags = body.readUInt8(1);
  if (flags !== 0) {
    throw new PipesvcError("protocol", `the server sent a frame with flags ${flags} (must be 0)`);
  }
  return { kind: body.readUInt8(0), id: body.readUInt32LE(2), payload: body.subarray(MIN_LENGTH) };
}
