/**
 * One connection: the handshake, requests matched to their answers by id,
 * deadlines, cancellation, NOTIFY and GOODBYE. A {@link Connection} never
 * reconnects; the {@link Client} makes new ones.
 *
 * @module
 */

import type * as net from "node:net";
import { once } from "node:events";
import { ErrorCode, PipesvcError, RemoteError, untrustedText } from "./errors.js";
import { EMPTY, FrameDecoder, Kind, encodeFrame, frameLength, type Frame } from "./frame.js";
import { encodeClientHello, parseHelloReply, parseServerHello, type HelloReply, type ServerHello } from "./hello.js";
import { checkServerIdentity, type ServerIdentity } from "./identity.js";
import { connectSocket } from "./transport.js";
import { parseEntries, type Entry } from "./streams.js";
import type { Endpoint } from "./endpoint.js";

/** How a connection is made and what it accepts. */
export interface ConnectionOptions {
  /** The highest protocol version to speak: 2 (default) or 1. */
  readonly protocolVersion: 1 | 2;
  /** The largest frame `length` this client accepts from the server. */
  readonly maxFrameLength: number;
  /** Milliseconds from connecting to the end of the handshake. */
  readonly handshakeTimeoutMs: number;
  /** Which server to accept. */
  readonly serverIdentity: ServerIdentity;
}

/** What a connection tells its owner. */
export interface ConnectionHooks {
  /** A NOTIFY arrived on `connection` (its payload is a view of the read buffer: copy to keep). */
  onNotify(payload: Uint8Array, connection: Connection): void;
  /** The server said GOODBYE: no new requests here, answers still come. */
  onGoodbye(reason: string): void;
  /** The connection ended; every unanswered request has failed with `error`. */
  onClosed(error: PipesvcError): void;
}

/** Where the ITEMs and CREDITs of a stream go (revision 2.2). */
export interface StreamSink {
  /** Entries of an ITEM from the server (views of the read buffer: copy to keep). */
  onItem(entries: Entry[]): void;
  /** CREDIT from the server: bytes the client may send more. */
  onCredit(bytes: number): void;
}

/** How one request waits. */
export interface WaitOptions {
  /** Milliseconds to wait for the answer; undefined: no limit of the client's own. */
  readonly waitMs?: number | undefined;
  /** Aborts the wait (and sends CANCEL when `cancellable` on a version 2 connection). */
  readonly signal?: AbortSignal | undefined;
  /** Whether the server may still be working on it (REQUEST, CALL): CANCEL it when given up. */
  readonly cancellable: boolean;
}

interface Pending {
  resolve(payload: Uint8Array): void;
  reject(error: unknown): void;
  /** The caller has its answer or gave up; the id stays taken until the server answers. */
  settled: boolean;
  /** Undoes the timer and abort listener. */
  cleanup(): void;
  /** For a stream: where its ITEMs and CREDITs go. */
  sink: StreamSink | undefined;
  /** The kind of the frame that asked (CALL, REQUEST, ...). */
  kind: number;
}

type Phase = "hello" | "reply" | "open" | "closed";

/** One handshaken connection to a server. */
export class Connection {
  /** What the server's HELLO said. */
  serverHello: ServerHello | undefined;
  /** The HELLO reply (version 2 connections). */
  helloReply: HelloReply | undefined;
  /** The server's GOODBYE reason, once it said GOODBYE. */
  goodbye: string | undefined;
  /** Why the connection ended, once it did. */
  closedError: PipesvcError | undefined;

  private readonly decoder: FrameDecoder;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private phase: Phase = "hello";
  private handshake: { resolve(): void; reject(error: PipesvcError): void } | undefined;

  private constructor(
    private readonly socket: net.Socket,
    private readonly endpoint: Endpoint,
    private readonly options: ConnectionOptions,
    private readonly hooks: ConnectionHooks,
  ) {
    this.decoder = new FrameDecoder(options.maxFrameLength);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => {
      // The server shut its side: everything it sent has been read.
      socket.end();
      this.fail(new PipesvcError("lost", `the server at ${endpoint.path} closed the connection`));
    });
    socket.on("error", (error) => this.fail(new PipesvcError("lost", `connection to ${endpoint.path}: ${error.message}`, { cause: error })));
    socket.on("close", () => this.fail(new PipesvcError("lost", `the connection to ${endpoint.path} closed`)));
  }

  /**
   * Connects (retrying an absent or busy server until `deadline`, a
   * `performance.now()` value), checks the server's identity, and performs
   * the handshake within the handshake timeout.
   */
  static async open(
    endpoint: Endpoint,
    options: ConnectionOptions,
    hooks: ConnectionHooks,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<Connection> {
    const socket = await connectSocket(endpoint, deadline, signal);
    try {
      await checkServerIdentity(endpoint, options.serverIdentity);
    } catch (error) {
      socket.destroy();
      throw error;
    }
    const connection = new Connection(socket, endpoint, options, hooks);
    await connection.handshaken(signal);
    return connection;
  }

  /** The connection's protocol version (1 or 2). */
  get version(): number {
    return this.helloReply?.version ?? 1;
  }

  /** Whether new requests may be sent here (open, no GOODBYE). */
  get usable(): boolean {
    return this.phase === "open" && this.goodbye === undefined;
  }

  /** Requests sent and not yet answered (including those given up on). */
  get inFlight(): number {
    return this.pending.size;
  }

  private handshaken(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new PipesvcError("timeout", `no handshake from ${this.endpoint.path} within ${this.options.handshakeTimeoutMs} ms`));
      }, this.options.handshakeTimeoutMs);
      const onAbort = (): void => {
        this.close();
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.handshake = undefined;
      };
      this.handshake = {
        resolve: () => {
          done();
          resolve();
        },
        reject: (error) => {
          done();
          reject(error);
        },
      };
    });
  }

  /**
   * Sends a frame that gets an answer, and waits for it: the answer's
   * payload, or a {@link RemoteError} for an ERROR with its id.
   */
  request(kind: number, payload: Uint8Array, wait: WaitOptions): Promise<Uint8Array> {
    return this.send(kind, payload, wait, undefined).answer;
  }

  /**
   * Opens a stream (a CALL of a streaming method, or a SUBSCRIBE): like
   * {@link request}, and its ITEMs and CREDITs go to `sink` until the last
   * answer. Returns the stream's id with the answer.
   */
  openStream(kind: number, payload: Uint8Array, wait: WaitOptions, sink: StreamSink): { id: number; answer: Promise<Uint8Array> } {
    return this.send(kind, payload, wait, sink);
  }

  /** Sends frames of a stream in flight (ITEM, CREDIT, END) or CANCEL; nothing once closed. */
  streamFrame(kind: number, id: number, payload: Uint8Array = EMPTY): void {
    if (this.phase !== "open" || !this.pending.has(id)) return;
    this.checkFits(payload.length);
    this.write(kind, id, payload);
  }

  private send(kind: number, payload: Uint8Array, wait: WaitOptions, sink: StreamSink | undefined): { id: number; answer: Promise<Uint8Array> } {
    wait.signal?.throwIfAborted();
    this.checkUsable();
    this.checkFits(payload.length);
    const id = this.takeId();
    const answer = new Promise<Uint8Array>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const giveUp = (error: unknown): void => {
        if (entry.settled) return;
        entry.settled = true;
        entry.cleanup();
        if (wait.cancellable && this.version >= 2 && this.phase === "open") {
          this.write(Kind.Cancel, id, EMPTY);
        }
        reject(error);
      };
      const onAbort = (): void => giveUp(wait.signal?.reason);
      const entry: Pending = {
        sink,
        kind,
        settled: false,
        resolve: (answer) => {
          entry.settled = true;
          entry.cleanup();
          resolve(answer);
        },
        reject: (error) => {
          entry.settled = true;
          entry.cleanup();
          reject(error);
        },
        cleanup: () => {
          if (timer !== undefined) clearTimeout(timer);
          wait.signal?.removeEventListener("abort", onAbort);
        },
      };
      this.pending.set(id, entry);
      if (wait.waitMs !== undefined && Number.isFinite(wait.waitMs)) {
        timer = setTimeout(
          () => giveUp(new PipesvcError("timeout", `no answer from ${this.endpoint.path} within ${wait.waitMs} ms`)),
          wait.waitMs,
        );
      }
      wait.signal?.addEventListener("abort", onAbort, { once: true });
      this.write(kind, id, payload);
    });
    return { id, answer };
  }

  /** Sends a NOTIFY. */
  notify(payload: Uint8Array): void {
    this.checkUsable();
    this.checkFits(payload.length);
    this.write(Kind.Notify, 0, payload);
  }

  /** Whether the socket holds more unwritten bytes than it wants (see {@link writable}). */
  get needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  /**
   * Resolves once the socket can take more (at once if it can), within
   * `waitMs`: a server that stops reading does not hold the caller longer.
   */
  async writable(waitMs: number, signal?: AbortSignal): Promise<void> {
    if (!this.socket.writableNeedDrain || this.phase === "closed") return;
    const timeout = Number.isFinite(waitMs) ? AbortSignal.timeout(waitMs) : undefined;
    const signals = [signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    try {
      await once(this.socket, "drain", signals.length === 0 ? {} : { signal: AbortSignal.any(signals) });
    } catch (error) {
      if (timeout?.aborted === true && signal?.aborted !== true) {
        throw new PipesvcError("timeout", `the server at ${this.endpoint.path} did not read for ${waitMs} ms`);
      }
      throw signal?.aborted === true ? signal.reason : error;
    }
  }

  /** Stops reading from the server (notification backpressure). */
  pause(): void {
    this.socket.pause();
  }

  /** Reads from the server again. */
  resume(): void {
    this.socket.resume();
  }

  /** Closes the connection; unanswered requests fail with `closed`. */
  close(): void {
    this.fail(new PipesvcError("closed", "the client was closed"));
  }

  private checkUsable(): void {
    if (this.closedError !== undefined) throw this.closedError;
    if (this.goodbye !== undefined) {
      throw new PipesvcError("lost", `the server is shutting down (GOODBYE${this.goodbye === "" ? "" : `: ${this.goodbye}`})`);
    }
  }

  private checkFits(payloadLen: number): void {
    const max = this.serverHello?.maxFrameLength ?? 0;
    if (frameLength(payloadLen) > max) {
      throw new PipesvcError("too-large", `a frame of length ${frameLength(payloadLen)} is over the server's maximum of ${max}`);
    }
  }

  /** A new id: not 0, not the id of a request still unanswered. */
  private takeId(): number {
    const id = nextFreeId(this.nextId, this.pending);
    this.nextId = id === 0xffff_ffff ? 1 : id + 1;
    return id;
  }

  private write(kind: number, id: number, payload: Uint8Array): void {
    this.socket.write(encodeFrame(kind, id, payload));
  }

  private onData(chunk: Buffer): void {
    if (this.phase === "closed") return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.fail(error as PipesvcError);
      return;
    }
    for (const frame of frames) {
      // A frame before this one may have closed the connection.
      if ((this.phase as Phase) === "closed") return;
      try {
        this.onFrame(frame);
      } catch (error) {
        this.fail(error instanceof PipesvcError ? error : new PipesvcError("protocol", String(error), { cause: error }));
      }
    }
  }

  private onFrame(frame: Frame): void {
    if (frame.kind === Kind.Error && frame.id === 0) {
      this.fail(this.connectionError(frame.payload));
      return;
    }
    if (frame.kind === Kind.Goodbye && this.phase !== "open") {
      const reason = untrustedText(frame.payload);
      this.fail(new PipesvcError("refused", `the server is shutting down (GOODBYE${reason === "" ? "" : `: ${reason}`})`));
      return;
    }
    switch (this.phase) {
      case "hello":
        return this.onServerHello(frame);
      case "reply":
        return this.onHelloReply(frame);
      default:
        return this.onOpenFrame(frame);
    }
  }

  private onServerHello(frame: Frame): void {
    if (frame.kind !== Kind.Hello) throw unexpected(frame, "the server's HELLO");
    const hello = parseServerHello(frame.payload);
    if (hello.version !== 1) {
      throw new PipesvcError("protocol", `the server's HELLO names version ${hello.version}; every server's first HELLO names 1`);
    }
    this.serverHello = hello;
    this.write(Kind.Hello, 0, encodeClientHello(this.options.protocolVersion));
    if (this.options.protocolVersion >= 2) {
      this.phase = "reply";
    } else {
      this.open();
    }
  }

  private onHelloReply(frame: Frame): void {
    if (frame.kind !== Kind.Hello) throw unexpected(frame, "the server's HELLO reply");
    const reply = parseHelloReply(frame.payload);
    if (reply.version !== 2) {
      throw new PipesvcError("protocol", `the server's HELLO reply names version ${reply.version}; this client asked for 2`);
    }
    this.helloReply = reply;
    this.open();
  }

  private open(): void {
    this.phase = "open";
    this.handshake?.resolve();
  }

  private onOpenFrame(frame: Frame): void {
    switch (frame.kind) {
      case Kind.Response:
      case Kind.Pong:
        return this.answer(frame.id, (entry) => entry.resolve(frame.payload), frame);
      case Kind.Error: {
        const { code, message } = parseError(frame.payload);
        return this.answer(frame.id, (entry) => entry.reject(new RemoteError(code, message)), frame);
      }
      case Kind.Notify:
        return this.hooks.onNotify(frame.payload, this);
      case Kind.Item:
      case Kind.Credit:
        return this.onStreamFrame(frame);
      case Kind.Goodbye:
        if (this.goodbye === undefined) {
          this.goodbye = untrustedText(frame.payload);
          this.hooks.onGoodbye(this.goodbye);
        }
        return;
      default:
        throw unexpected(frame, "an answer, NOTIFY or GOODBYE");
    }
  }

  /**
   * ITEM or CREDIT: to its stream. One for a stream no longer in flight
   * crossed its last answer and is ignored; one for a request that is not
   * a stream is garbage.
   */
  private onStreamFrame(frame: Frame): void {
    const entry = this.pending.get(frame.id);
    if (frame.id === 0) throw new PipesvcError("protocol", `the server sent ${kindName(frame.kind)} with id 0`);
    if (entry === undefined) return;
    if (entry.sink === undefined) {
      // A plain call of a streaming method (the client cannot know which
      // methods stream): its items are discarded, their credit granted
      // back at once, and the call gets the stream's last answer.
      if (entry.kind === Kind.Call && frame.kind === Kind.Item) {
        parseEntries(frame.payload);
        if (frame.payload.length > 0) this.write(Kind.Credit, frame.id, u32(frame.payload.length));
        return;
      }
      if (entry.kind === Kind.Call && frame.kind === Kind.Credit) return;
      throw new PipesvcError("protocol", `the server sent ${kindName(frame.kind)} for request ${frame.id}, which is not a stream`);
    }
    if (frame.kind === Kind.Item) {
      const entries = parseEntries(frame.payload);
      if (!entry.settled) entry.sink.onItem(entries);
      return;
    }
    if (frame.payload.length < 4) throw new PipesvcError("protocol", "the server sent a CREDIT of fewer than 4 bytes");
    const bytes = Buffer.from(frame.payload.buffer, frame.payload.byteOffset, 4).readUInt32LE(0);
    if (!entry.settled) entry.sink.onCredit(bytes);
  }

  /** Hands an answer to its request; an answer nobody asked for is garbage. */
  private answer(id: number, settle: (entry: Pending) => void, frame: Frame): void {
    const entry = this.pending.get(id);
    if (entry === undefined) {
      throw new PipesvcError("protocol", `the server sent ${kindName(frame.kind)} with id ${id}, which no request in flight has`);
    }
    this.pending.delete(id);
    if (!entry.settled) settle(entry);
  }

  private connectionError(payload: Uint8Array): PipesvcError {
    const { code, message } = parseError(payload);
    const refused = this.phase !== "open";
    return new RemoteError(code, message, refused ? (code === ErrorCode.UnsupportedVersion ? "unsupported" : "refused") : "lost");
  }

  /** Ends the connection for `error` (the first cause wins) and fails what is unanswered. */
  private fail(error: PipesvcError): void {
    if (this.phase === "closed") return;
    const wasOpen = this.phase === "open";
    this.phase = "closed";
    this.closedError = error;
    this.socket.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const entry of pending) if (!entry.settled) entry.reject(error);
    if (this.handshake !== undefined) this.handshake.reject(error);
    if (wasOpen) this.hooks.onClosed(error);
  }
}

/**
 * The first id from `from` on (wrapping after 2^32 - 1, skipping 0) that
 * `inUse` does not hold (PROTOCOL.md "Ids": a new id).
 */
export function nextFreeId(from: number, inUse: { has(id: number): boolean }): number {
  let id = from === 0 ? 1 : from;
  while (inUse.has(id)) id = id === 0xffff_ffff ? 1 : id + 1;
  return id;
}

/** Code and safe message of an ERROR payload. */
export function parseError(payload: Uint8Array): { code: number; message: string } {
  if (payload.length < 2) {
    throw new PipesvcError("protocol", `the server sent an ERROR of ${payload.length} bytes (at least 2: the code)`);
  }
  const code = (payload[0] ?? 0) | ((payload[1] ?? 0) << 8);
  return { code, message: untrustedText(payload.subarray(2)) };
}

const KIND_NAMES = ["", "HELLO", "REQUEST", "RESPONSE", "ERROR", "NOTIFY", "GOODBYE", "PING", "PONG", "STATUS", "CALL", "CANCEL", "DESCRIBE", "ITEM", "CREDIT", "END", "SUBSCRIBE"];

/** The name of a kind byte, for messages. */
export function kindName(kind: number): string {
  return KIND_NAMES[kind] ?? `kind ${kind}`;
}

function unexpected(frame: Frame, expected: string): PipesvcError {
  return new PipesvcError("protocol", `the server sent ${kindName(frame.kind)} (id ${frame.id}) where ${expected} was expected`);
}

function u32(n: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(n, 0);
  return out;
}
