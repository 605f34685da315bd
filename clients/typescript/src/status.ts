/**
 * The STATUS answer (PROTOCOL.md "Status").
 *
 * @module
 */

import { PipesvcError } from "./errors.js";

/** A server's counters, as its STATUS answer gives them. */
export interface Status {
  /** Milliseconds since the server started. */
  readonly uptimeMs: number;
  /** Clients connected now, past the handshake. */
  readonly connectionsOpen: number;
  /** Connections accepted since the start, refused ones included. */
  readonly connectionsTotal: number;
  /** REQUESTs and CALLs answered. */
  readonly requestsServed: number;
  /** Bytes of the frames received (each with its length field and header). */
  readonly bytesIn: number;
  /** Bytes of the frames sent. */
  readonly bytesOut: number;
  /** ERROR frames sent, by code (only the lowest codes when they would not all fit). */
  readonly errors: ReadonlyMap<number, number>;
  /** Requests answered `cancelled` (version 2 servers; undefined from older ones). */
  readonly requestsCancelled: number | undefined;
  /** Requests answered `timed out` (version 2 servers; undefined from older ones). */
  readonly requestsTimedOut: number | undefined;
  /** Revision 2.2 counts (undefined from older servers, or one whose maximum frame cannot hold them). */
  readonly streams: StreamCounts | undefined;
}

/** The counts of streams and topics (revision 2.2). */
export interface StreamCounts {
  /** Streams in flight now. */
  readonly open: number;
  /** Item entries sent in ITEMs of streaming methods. */
  readonly itemsSent: number;
  /** Subscriptions open now, on every connection. */
  readonly subscribers: number;
  /** Event entries sent to subscribers. */
  readonly eventsSent: number;
  /** Events a subscriber lost. */
  readonly eventsDropped: number;
}

/** The only format this client reads. */
const FORMAT = 1;

/**
 * Parses a STATUS answer. Counts are u64 on the wire, returned as numbers
 * (exact up to 2^53). Bytes after the known fields are ignored; an unknown
 * format or a payload cut short is a protocol error.
 */
export function parseStatus(payload: Uint8Array): Status {
  const view = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const need = (n: number): void => {
    if (view.length < n) {
      throw new PipesvcError("protocol", `the server's STATUS answer is ${view.length} bytes, cut short (at least ${n})`);
    }
  };
  need(52);
  const format = view.readUInt16LE(0);
  if (format !== FORMAT) {
    throw new PipesvcError("protocol", `the server's STATUS answer has format ${format}; this client reads format 1`);
  }
  const u64 = (at: number): number => Number(view.readBigUInt64LE(at));
  const n = view.readUInt16LE(50);
  need(52 + n * 10);
  const errors = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const at = 52 + i * 10;
    errors.set(view.readUInt16LE(at), u64(at + 2));
  }
  const tail = 52 + n * 10;
  const v2 = view.length >= tail + 16;
  return {
    uptimeMs: u64(2),
    connectionsOpen: u64(10),
    connectionsTotal: u64(18),
    requestsServed: u64(26),
    bytesIn: u64(34),
    bytesOut: u64(42),
    errors,
    requestsCancelled: v2 ? u64(tail) : undefined,
    requestsTimedOut: v2 ? u64(tail + 8) : undefined,
    streams:
      view.length >= tail + 56
        ? {
            open: u64(tail + 16),
            itemsSent: u64(tail + 24),
            subscribers: u64(tail + 32),
            eventsSent: u64(tail + 40),
            eventsDropped: u64(tail + 48),
          }
        : undefined,
  };
}
