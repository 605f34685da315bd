/**
 * Streams and topics (PROTOCOL.md revision 2.2, "Streams", "Flow control",
 * "Topics"): the entries of ITEM frames, the receiving side's bounded
 * queue that grants credit as the app consumes, and the sending side's
 * credit.
 *
 * Flow control bounds what a stream can make the client hold: the server
 * may send only the credit the client granted (the stream window W at the
 * start), and the client grants only what the app has taken, once that is
 * at least half of W. So at most W bytes of entries (plus one ITEM) wait
 * unread per stream, however slow the app.
 *
 * @module
 */

import { PipesvcError } from "./errors.js";

/** Entry types of an ITEM. */
export const EntryType = { Item: 0, Lagged: 1, Subscribed: 2 } as const;

/** One entry of an ITEM. */
export interface Entry {
  /** See {@link EntryType}; unknown types are skipped when parsed. */
  readonly type: number;
  /** The value: an encoded item or event; for `lagged`, 8 bytes. */
  readonly value: Uint8Array;
}

/** Bytes an entry takes from the credit: its 5-byte header and value. */
export function entrySize(entry: Entry): number {
  return 5 + entry.value.length;
}

/** Encodes entries of type `item` into one ITEM payload. */
export function encodeEntries(values: readonly Uint8Array[]): Buffer {
  const parts: Uint8Array[] = [];
  for (const value of values) {
    const head = Buffer.alloc(5);
    head.writeUInt8(EntryType.Item, 0);
    head.writeUInt32LE(value.length, 1);
    parts.push(head, value);
  }
  return Buffer.concat(parts);
}

/**
 * Parses an ITEM payload from the server. No entry, an entry past the end,
 * or a `lagged` value that is not 8 bytes is a protocol error; entries of
 * unknown types are kept (they still count for credit) for the caller to skip.
 */
export function parseEntries(payload: Uint8Array): Entry[] {
  const view = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  if (view.length === 0) throw new PipesvcError("protocol", "the server sent an ITEM with no entry");
  const entries: Entry[] = [];
  let at = 0;
  while (at < view.length) {
    if (at + 5 > view.length) throw new PipesvcError("protocol", "an ITEM entry's header runs past the end of the payload");
    const type = view.readUInt8(at);
    const length = view.readUInt32LE(at + 1);
    if (at + 5 + length > view.length) throw new PipesvcError("protocol", "an ITEM entry runs past the end of the payload");
    if (type === EntryType.Lagged && length !== 8) {
      throw new PipesvcError("protocol", `a lagged entry of ${length} bytes (8 expected)`);
    }
    entries.push({ type, value: view.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return entries;
}

/** What a receiving stream tells its connection. */
export interface ReceiverLink {
  /** Grants the server `bytes` more credit (sends CREDIT). */
  grant(bytes: number): void;
  /** The app stopped early: cancel the stream (sends CANCEL). */
  cancel(): void;
}

/**
 * The received entries of one stream, for one consumer, in order. Ends
 * after the last entry once {@link finish} was called; a failure is thrown
 * by `next()` after the entries that came before it.
 */
export class Receiver<T> implements AsyncIterableIterator<T> {
  private readonly entries: Entry[] = [];
  private head = 0;
  private consumed = 0;
  private held = 0;
  private peak = 0;
  /** The sender's credit as this side counts it: W, less each ITEM, plus each grant. */
  private credit: number;
  private done = false;
  private failure: unknown;
  private waiter: { resolve(r: IteratorResult<T>): void; reject(e: unknown): void } | undefined;

  /**
   * @param window - the stream window W: credit is granted once half of it was consumed
   * @param convert - turns an entry into what the iterator yields; `undefined` skips it
   * @param link - where credit and cancellation go
   */
  constructor(
    private readonly window: number,
    private readonly convert: (entry: Entry) => T | undefined,
    private readonly link: ReceiverLink,
  ) {
    this.credit = window;
  }

  /** Bytes of entries held unread. */
  get heldBytes(): number {
    return this.held;
  }

  /** The most bytes of entries held unread at once so far. */
  get peakHeldBytes(): number {
    return this.peak;
  }

  /**
   * Adds the entries of one ITEM the server sent (copied: the read buffer
   * is reused).
   *
   * @throws {@link PipesvcError} `protocol` if the ITEM came while the
   *   server's credit (as granted) was used up (PROTOCOL.md "Flow control")
   */
  push(entries: readonly Entry[]): void {
    if (this.done) return;
    if (this.credit <= 0) {
      throw new PipesvcError("protocol", `the server sent an ITEM past the credit it was granted (${this.credit} bytes left; flow control)`);
    }
    for (const entry of entries) this.credit -= entrySize(entry);
    for (const entry of entries) {
      const kept = { type: entry.type, value: entry.value.slice() };
      this.entries.push(kept);
      this.held += entrySize(kept);
    }
    this.peak = Math.max(this.peak, this.held);
    this.wake();
  }

  /** The stream's last answer came (`failure` undefined: it succeeded). */
  finish(failure?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.failure = failure;
    this.wake();
  }

  /** The next item, waiting for one. */
  next(): Promise<IteratorResult<T>> {
    for (;;) {
      const entry = this.take();
      if (entry === undefined) break;
      const value = this.convert(entry);
      if (value !== undefined) return Promise.resolve({ value, done: false });
    }
    if (this.done) return this.ended();
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** Stops early: the stream is cancelled (unless it had ended). */
  return(): Promise<IteratorResult<T>> {
    if (!this.done) {
      this.done = true;
      this.link.cancel();
    }
    this.entries.length = 0;
    this.head = 0;
    this.held = 0;
    this.failure = undefined;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  private ended(): Promise<IteratorResult<T>> {
    if (this.failure !== undefined) {
      const failure = this.failure;
      this.failure = undefined;
      return Promise.reject(failure);
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  private take(): Entry | undefined {
    const entry = this.entries[this.head];
    if (entry === undefined) return undefined;
    this.head++;
    if (this.head > 256 && this.head * 2 > this.entries.length) {
      this.entries.splice(0, this.head);
      this.head = 0;
    }
    const size = entrySize(entry);
    this.held -= size;
    this.consumed += size;
    if (!this.done && this.consumed >= this.window / 2) {
      this.link.grant(this.consumed);
      this.credit += this.consumed;
      this.consumed = 0;
    }
    return entry;
  }

  private wake(): void {
    const waiter = this.waiter;
    if (waiter === undefined) return;
    for (;;) {
      const entry = this.take();
      if (entry === undefined) break;
      const value = this.convert(entry);
      if (value !== undefined) {
        this.waiter = undefined;
        waiter.resolve({ value, done: false });
        return;
      }
    }
    if (!this.done) return;
    this.waiter = undefined;
    this.ended().then(waiter.resolve, waiter.reject);
  }
}

/**
 * The sending side's credit: ITEMs go out only while it is above 0 (it
 * may go below by one ITEM); CREDIT from the server adds to it.
 */
export class Credit {
  private waiters: (() => void)[] = [];

  /** @param credit - the stream window W */
  constructor(private credit: number) {}

  /** The credit now (may be negative by at most one ITEM). */
  get available(): number {
    return this.credit;
  }

  /** Takes `bytes` for an ITEM sent. */
  spend(bytes: number): void {
    this.credit -= bytes;
  }

  /** Adds what the server granted; a total past 2147483647 is a protocol error. */
  grant(bytes: number): void {
    this.credit += bytes;
    if (this.credit > 0x7fff_ffff) {
      throw new PipesvcError("protocol", "the server granted credit past 2147483647 bytes (flow control)");
    }
    if (this.credit > 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const wake of waiters) wake();
    }
  }

  /** Resolves once the credit is above 0 (at once if it is), or rejects when `signal` aborts. */
  async positive(signal: AbortSignal): Promise<void> {
    while (this.credit <= 0) {
      signal.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        this.waiters.push(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        });
      });
    }
  }
}
