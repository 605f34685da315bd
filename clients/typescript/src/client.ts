/**
 * {@link Client}: the protocol 2 surface over one connection at a time,
 * with connection states and (optionally) reconnects.
 *
 * @module
 */

import { EventEmitter } from "node:events";
import { Connection, kindName, type ConnectionOptions } from "./connection.js";
import { ENCODING_BYTE, decodeValue, encodeCall, encodeValue, encodingOfByte, type Encoding } from "./codec.js";
import { parseDescription, type Description } from "./describe.js";
import { resolveEndpoint, type Endpoint } from "./endpoint.js";
import { ErrorCode, PipesvcError, RemoteError } from "./errors.js";
import { EMPTY, Kind } from "./frame.js";
import type { ServerIdentity } from "./identity.js";
import { NotificationQueue, type Notification, type NotificationPolicy } from "./notifications.js";
import { parseStatus, type Status } from "./status.js";
import { delay } from "./transport.js";
import { Credit, EntryType, Receiver, encodeEntries, type Entry } from "./streams.js";
import { Stream, Subscription, type TopicItem } from "./stream-client.js";

/** Settings of a {@link Client}; every one has a default. */
export interface ClientOptions {
  /** Milliseconds to keep retrying an absent or busy server at connect. Default 5000. */
  readonly connectTimeoutMs?: number;
  /** Milliseconds for the handshake. Default 5000. */
  readonly handshakeTimeoutMs?: number;
  /** Largest frame `length` accepted from the server; larger ones close the connection. Default 8 MiB. */
  readonly maxFrameLength?: number;
  /** Highest protocol version to speak. Default 2. */
  readonly protocolVersion?: 1 | 2;
  /** Which server to accept. Default `same-user-or-admin`. */
  readonly serverIdentity?: ServerIdentity;
  /** Connect again (in the background, with backoff) when the connection is lost or the server says GOODBYE. Default false. */
  readonly reconnect?: boolean;
  /** Encoding of calls. Default: the server's first preference that this client speaks. */
  readonly encoding?: Encoding;
  /**
   * Milliseconds a request without a timeout of its own may take: sent as
   * a CALL's deadline, and the client's own limit for every other wait.
   * `null`: no limit. Default 30000.
   */
  readonly requestTimeoutMs?: number | null;
  /** Extra milliseconds the client waits past a CALL's deadline for the server's `timed out`. Default 1000. */
  readonly deadlineGraceMs?: number;
  /** Most notifications buffered. Default 1024. */
  readonly notificationBuffer?: number;
  /** Most notification payload bytes buffered. Default 4 MiB. */
  readonly notificationBufferBytes?: number;
  /** What a full notification buffer does. Default `drop` (see {@link NotificationPolicy}). */
  readonly notificationPolicy?: NotificationPolicy;
}

/** Options of one request. */
export interface RequestOptions {
  /** Milliseconds allowed (a CALL carries it as its deadline); `null`: none. Default: the client's `requestTimeoutMs`. */
  readonly timeoutMs?: number | null;
  /** Gives up on the request: CANCEL is sent (version 2) and the promise rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Metadata for the service (version 2), such as `traceparent`. */
  readonly metadata?: Readonly<Record<string, string>> | readonly (readonly [string, string])[];
}

/** Options of one call. */
export interface CallOptions extends RequestOptions {
  /** Encoding of this call. Default: the client's. */
  readonly encoding?: Encoding;
}

/** The state of a client's connection ({@link Client.state}, event `state`). */
export type ConnectionState =
  | { readonly state: "connected"; readonly reconnects: number }
  | { readonly state: "lost"; readonly error: PipesvcError; readonly reconnecting: boolean }
  | { readonly state: "closed" };

const DEFAULTS = {
  connectTimeoutMs: 5000,
  handshakeTimeoutMs: 5000,
  maxFrameLength: 8 * 1024 * 1024,
  requestTimeoutMs: 30_000,
  deadlineGraceMs: 1000,
  notificationBuffer: 1024,
  notificationBufferBytes: 4 * 1024 * 1024,
};
const RECONNECT_BACKOFF_MIN_MS = 50;
const RECONNECT_BACKOFF_MAX_MS = 5000;

/**
 * A client of a pipesvc service. Requests are pipelined on one connection
 * and matched by id. Emits `state` ({@link ConnectionState}) on every
 * change of its connection.
 */
export class Client extends EventEmitter<{ state: [ConnectionState] }> {
  private current: Connection | undefined;
  private connecting: Promise<Connection> | undefined;
  private currentState: ConnectionState = { state: "connected", reconnects: 0 };
  private reconnectCount = 0;
  private readonly stop = new AbortController();
  private readonly queue: NotificationQueue;
  private readonly connectionOptions: ConnectionOptions;

  private constructor(
    /** Where it connects. */
    readonly endpoint: Endpoint,
    private readonly options: ClientOptions,
  ) {
    super();
    this.queue = new NotificationQueue({
      maxItems: positive("notificationBuffer", options.notificationBuffer ?? DEFAULTS.notificationBuffer),
      maxBytes: positive("notificationBufferBytes", options.notificationBufferBytes ?? DEFAULTS.notificationBufferBytes),
      policy: options.notificationPolicy ?? "drop",
    });
    this.queue.onRoom = () => this.current?.resume();
    this.connectionOptions = {
      protocolVersion: options.protocolVersion ?? 2,
      maxFrameLength: options.maxFrameLength ?? DEFAULTS.maxFrameLength,
      handshakeTimeoutMs: positive("handshakeTimeoutMs", options.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs),
      serverIdentity: options.serverIdentity ?? "same-user-or-admin",
    };
  }

  /**
   * Connects to the service `name` (a bare name as `pipesvc serve --name`
   * takes, a socket path, or a `\\.\pipe\` name), retrying an absent or
   * busy server for `connectTimeoutMs`, then checks the server's identity
   * and performs the handshake.
   */
  static async connect(name: string, options: ClientOptions = {}, signal?: AbortSignal): Promise<Client> {
    const client = new Client(resolveEndpoint(name), options);
    client.current = await client.open(signal);
    return client;
  }

  /** The connection's state now. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** How many times the client connected again after losing its connection. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  /** The server's name from its HELLO (made safe). */
  get serverName(): string {
    return this.current?.serverHello?.serverName ?? "";
  }

  /** The largest frame `length` the server accepts. */
  get serverMaxFrameLength(): number {
    return this.current?.serverHello?.maxFrameLength ?? 0;
  }

  /** The protocol version of the current connection. */
  get protocolVersion(): number {
    return this.current?.version ?? 0;
  }

  /** The encodings the server offers, in its order of preference (those this client speaks). */
  get encodings(): Encoding[] {
    const bytes = this.current?.helloReply?.encodings ?? [];
    return bytes.map(encodingOfByte).filter((e): e is Encoding => e !== undefined);
  }

  /** The frame kinds the server accepts (its HELLO reply; empty on version 1). */
  get kinds(): number[] {
    return [...(this.current?.helloReply?.kinds ?? [])];
  }

  /** Notifications dropped because the buffer was full (or nobody was iterating). */
  get droppedNotifications(): number {
    return this.queue.dropped;
  }

  /**
   * Calls the typed method `method` with `params` (a value of the JSON data
   * model; `undefined` sends none) and resolves to its result.
   * @throws {@link RemoteError} for the server's ERROR answer; {@link PipesvcError}
   * `timeout` when no answer came in time; the signal's reason when aborted.
   */
  async call<Result = unknown>(method: string, params?: unknown, options: CallOptions = {}): Promise<Result> {
    const started = performance.now();
    const { timeoutMs, waitMs } = this.limits(options.timeoutMs, true);
    const connection = this.current?.usable === true ? this.current : await this.usable(options.signal, started, waitMs);
    if (connection.version < 2) {
      throw new PipesvcError("unsupported", "typed calls need protocol version 2; this connection speaks version 1");
    }
    const encoding = this.pickEncoding(connection, options.encoding);
    const payload = encodeCall(
      { encoding: ENCODING_BYTE[encoding], method, timeoutMs: remaining(timeoutMs, started), metadata: entries(options.metadata) },
      encodeValue(encoding, params),
    );
    if (connection.needsDrain) await connection.writable(remaining(waitMs, started), options.signal);
    const answer = await connection.request(Kind.Call, payload, {
      waitMs: remaining(waitMs, started),
      signal: options.signal,
      cancellable: true,
    });
    return decodeValue(encoding, answer) as Result;
  }

  /**
   * Sends bytes to the service's byte handler and resolves to its answer.
   * On a version 2 connection it goes as a CALL with no method (carrying the
   * deadline and metadata); on version 1 as a REQUEST (the deadline is the
   * client's own, metadata cannot be sent).
   */
  async request(payload: Uint8Array, options: RequestOptions = {}): Promise<Uint8Array> {
    const started = performance.now();
    const { timeoutMs, waitMs } = this.limits(options.timeoutMs, true);
    const connection = this.current?.usable === true ? this.current : await this.usable(options.signal, started, waitMs);
    if (connection.needsDrain) await connection.writable(remaining(waitMs, started), options.signal);
    if (connection.version < 2) {
      if (entries(options.metadata).length > 0) {
        throw new PipesvcError("unsupported", "metadata needs protocol version 2; this connection speaks version 1");
      }
      const wait = { waitMs: remaining(timeoutMs, started), signal: options.signal, cancellable: true };
      return connection.request(Kind.Request, payload, wait);
    }
    const call = encodeCall(
      { encoding: 0, method: "", timeoutMs: remaining(timeoutMs, started), metadata: entries(options.metadata) },
      payload,
    );
    return connection.request(Kind.Call, call, { waitMs: remaining(waitMs, started), signal: options.signal, cancellable: true });
  }

  /**
   * Sends PING (with `payload`, empty by default) and resolves to the round
   * trip in milliseconds once the PONG repeats the payload unchanged.
   * @throws {@link PipesvcError} `protocol` if the PONG's payload differs
   */
  async ping(options: Pick<RequestOptions, "timeoutMs" | "signal"> & { payload?: Uint8Array } = {}): Promise<number> {
    const sent = options.payload ?? EMPTY;
    const answer = await this.immediate(Kind.Ping, options, sent);
    if (!Buffer.from(answer.payload).equals(sent)) {
      throw new PipesvcError("protocol", "the server's PONG did not repeat the PING's payload");
    }
    return answer.elapsedMs;
  }

  /**
   * Probes for a frame kind this client does not speak (13 to 255, such as
   * one of a later protocol version): sends a frame of that kind with a new
   * id and resolves to the answer's payload. A version 2 server that does
   * not know the kind answers ERROR `unknown kind` ({@link RemoteError}
   * code 4) and the connection carries on (PROTOCOL.md "Unknown kinds").
   */
  async probe(kind: number, payload: Uint8Array = EMPTY, options: Pick<RequestOptions, "timeoutMs" | "signal"> = {}): Promise<Uint8Array> {
    if (!Number.isInteger(kind) || kind <= Kind.Describe || kind > 255) {
      throw new PipesvcError("invalid", `probe takes a kind from 13 to 255, not ${kind}`);
    }
    return (await this.immediate(kind, options, payload)).payload;
  }

  /** Asks the server for its counters (STATUS). */
  async status(options: Pick<RequestOptions, "timeoutMs" | "signal"> = {}): Promise<Status> {
    return parseStatus((await this.immediate(Kind.Status, options)).payload);
  }

  /** Asks what the service offers (DESCRIBE, version 2). */
  async describe(options: Pick<RequestOptions, "timeoutMs" | "signal"> = {}): Promise<Description> {
    return parseDescription((await this.immediate(Kind.Describe, options)).payload);
  }

  /**
   * Opens a stream of the streaming method `method` (revision 2.2): iterate
   * the result for the server's items, `send`/`end` for the client's, await
   * `result` for the last answer. A stream has no deadline unless
   * `timeoutMs` is given (it covers the whole stream); `signal` cancels it.
   */
  async stream<Item = unknown, Result = unknown, Sent = unknown>(
    method: string,
    params?: unknown,
    options: CallOptions = {},
  ): Promise<Stream<Item, Result, Sent>> {
    const started = performance.now();
    const { timeoutMs, waitMs } = this.limits(options.timeoutMs === undefined ? null : options.timeoutMs, true);
    const connection = this.current?.usable === true ? this.current : await this.usable(options.signal, started, waitMs);
    const window = streamWindow(connection);
    const encoding = this.pickEncoding(connection, options.encoding);
    const payload = encodeCall(
      { encoding: ENCODING_BYTE[encoding], method, timeoutMs: remaining(timeoutMs, started), metadata: entries(options.metadata) },
      encodeValue(encoding, params),
    );
    const controller = new AbortController();
    const signal = options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal]);
    const credit = new Credit(window);
    let id = 0;
    const receiver = new Receiver<Item>(window, (entry) => (entry.type === EntryType.Item ? (decodeValue(encoding, entry.value) as Item) : undefined), {
      grant: (bytes) => connection.streamFrame(Kind.Credit, id, u32(bytes)),
      cancel: () => controller.abort(new PipesvcError("closed", `the stream ${method} was cancelled`)),
    });
    const opened = connection.openStream(Kind.Call, payload, { waitMs: remaining(waitMs, started), signal, cancellable: true }, {
      onItem: (items) => receiver.push(items),
      onCredit: (bytes) => credit.grant(bytes),
    });
    id = opened.id;
    const result = opened.answer.then(
      (bytes) => {
        receiver.finish();
        return decodeValue(encoding, bytes) as Result;
      },
      (error: unknown) => {
        receiver.finish(error);
        throw error;
      },
    );
    result.catch(() => undefined); // also read through the iterator; not unhandled
    const sender = {
      send: async (item: Sent, wait?: AbortSignal): Promise<void> => {
        await credit.positive(wait === undefined ? signal : AbortSignal.any([wait, signal]));
        const itemPayload = encodeEntries([encodeValue(encoding, item)]);
        credit.spend(itemPayload.length);
        connection.streamFrame(Kind.Item, id, itemPayload);
      },
      end: () => connection.streamFrame(Kind.End, id),
      cancel: () => controller.abort(new PipesvcError("closed", `the stream ${method} was cancelled`)),
    };
    return new Stream<Item, Result, Sent>(receiver, result, sender, id);
  }

  /**
   * Subscribes to `topic` (revision 2.2). With `reconnect`, the
   * subscription is made again on each new connection and yields a
   * `resubscribed` item there. `break` (or `return()`) unsubscribes.
   */
  async subscribe<Event = unknown>(topic: string, options: Pick<CallOptions, "encoding" | "signal"> = {}): Promise<Subscription<Event>> {
    const first = await this.openSubscription<Event>(topic, options, false);
    const again = (error: unknown): Promise<Receiver<TopicItem<Event>>> | undefined => {
      const retry =
        (this.options.reconnect ?? false) &&
        this.currentState.state !== "closed" &&
        options.signal?.aborted !== true &&
        error instanceof PipesvcError &&
        (error.reason === "lost" || (error instanceof RemoteError && error.code === ErrorCode.ShuttingDown));
      return retry ? this.openSubscription<Event>(topic, options, true) : undefined;
    };
    return new Subscription<Event>(first, again);
  }

  private async openSubscription<Event>(
    topic: string,
    options: Pick<CallOptions, "encoding" | "signal">,
    resubscribed: boolean,
  ): Promise<Receiver<TopicItem<Event>>> {
    const connection = this.current?.usable === true ? this.current : await this.usable(options.signal, performance.now(), Infinity);
    const window = streamWindow(connection);
    const encoding = this.pickEncoding(connection, options.encoding);
    const name = Buffer.from(topic);
    if (name.length === 0 || name.length > 255) {
      throw new PipesvcError("invalid", `a topic's name is 1 to 255 bytes of UTF-8; ${name.length} given`);
    }
    const controller = new AbortController();
    const signal = options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal]);
    let id = 0;
    const convert = (entry: Entry): TopicItem<Event> | undefined => {
      if (entry.type === EntryType.Item) return { type: "event", value: decodeValue(encoding, entry.value) as Event };
      if (entry.type === EntryType.Lagged) return { type: "lagged", count: Number(Buffer.from(entry.value).readBigUInt64LE(0)) };
      if (entry.type === EntryType.Subscribed && resubscribed) return { type: "resubscribed" };
      return undefined;
    };
    const receiver = new Receiver<TopicItem<Event>>(window, convert, {
      grant: (bytes) => connection.streamFrame(Kind.Credit, id, u32(bytes)),
      cancel: () => controller.abort(new PipesvcError("closed", `unsubscribed from ${topic}`)),
    });
    const payload = Buffer.concat([Uint8Array.of(ENCODING_BYTE[encoding], name.length), name]);
    // Subscribed once the first ITEM (its `subscribed` entry) came; an ERROR before it is the subscription's.
    let subscribed!: { resolve(): void; reject(error: unknown): void };
    const started = new Promise<void>((resolve, reject) => (subscribed = { resolve, reject }));
    const opened = connection.openStream(Kind.Subscribe, payload, { waitMs: Infinity, signal, cancellable: true }, {
      onItem: (items) => {
        receiver.push(items);
        subscribed.resolve();
      },
      onCredit: () => undefined, // a subscription takes nothing from the client
    });
    id = opened.id;
    opened.answer.then(
      () => {
        receiver.finish();
        subscribed.resolve();
      },
      (error: unknown) => {
        receiver.finish(error);
        subscribed.reject(error);
      },
    );
    await started;
    return receiver;
  }

  /** Sends a NOTIFY to the service. */
  async notify(payload: Uint8Array, options: Pick<RequestOptions, "signal"> = {}): Promise<void> {
    const started = performance.now();
    const { waitMs } = this.limits(undefined, false);
    const connection = this.current?.usable === true ? this.current : await this.usable(options.signal, started, waitMs);
    if (connection.needsDrain) await connection.writable(remaining(waitMs, started), options.signal);
    connection.notify(payload);
  }

  /**
   * The server's NOTIFY payloads, with `lagged` items where some were lost
   * (see {@link NotificationPolicy}); across reconnects. Ends when the
   * client is closed, or when the connection is lost without `reconnect`.
   * One iteration at a time.
   */
  notifications(): AsyncIterableIterator<Notification> {
    return this.queue.iterator();
  }

  /**
   * Resolves with the first state (the current one included) that
   * `predicate` accepts; rejects at `timeoutMs` or when `signal` aborts.
   */
  waitForState(
    predicate: (state: ConnectionState) => boolean,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<ConnectionState> {
    if (predicate(this.currentState)) return Promise.resolve(this.currentState);
    const timeoutMs = options.timeoutMs ?? DEFAULTS.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const onState = (state: ConnectionState): void => {
        if (!predicate(state)) return;
        done();
        resolve(state);
      };
      const onAbort = (): void => {
        done();
        reject(options.signal?.reason);
      };
      const timer = setTimeout(() => {
        done();
        reject(new PipesvcError("timeout", `the connection did not reach the state asked for within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.off("state", onState);
        options.signal?.removeEventListener("abort", onAbort);
      };
      this.on("state", onState);
      options.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Closes the connection (unanswered requests fail with `closed`) and stops reconnecting. */
  close(): void {
    if (this.currentState.state === "closed") return;
    this.stop.abort(new PipesvcError("closed", "the client was closed"));
    this.current?.close();
    this.setState({ state: "closed" });
    this.queue.end();
  }

  private limits(timeoutMs: number | null | undefined, call: boolean): { timeoutMs: number; waitMs: number } {
    const chosen = timeoutMs === undefined ? (this.options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs) : timeoutMs;
    if (chosen === null) return { timeoutMs: 0, waitMs: Infinity };
    if (!Number.isFinite(chosen) || chosen <= 0) {
      throw new PipesvcError("invalid", `a timeout is a positive number of milliseconds (or null), not ${chosen}`);
    }
    const grace = call ? (this.options.deadlineGraceMs ?? DEFAULTS.deadlineGraceMs) : 0;
    return { timeoutMs: Math.ceil(chosen), waitMs: chosen + grace };
  }

  private async immediate(
    kind: number,
    options: Pick<RequestOptions, "timeoutMs" | "signal">,
    body: Uint8Array = EMPTY,
  ): Promise<{ payload: Uint8Array; elapsedMs: number }> {
    const started = performance.now();
    const { waitMs } = this.limits(options.timeoutMs, false);
    const connection = this.current?.usable === true ? this.current : await this.usable(options.signal, started, waitMs);
    if ((kind === Kind.Describe || kind > Kind.Describe) && connection.version < 2) {
      throw new PipesvcError("unsupported", `${kindName(kind)} needs protocol version 2; this connection speaks version 1`);
    }
    const sent = performance.now();
    const payload = await connection.request(kind, body, {
      waitMs: remaining(waitMs, started),
      signal: options.signal,
      cancellable: false,
    });
    return { payload, elapsedMs: performance.now() - sent };
  }

  private pickEncoding(connection: Connection, asked: Encoding | undefined): Encoding {
    const offered = (connection.helloReply?.encodings ?? []).map(encodingOfByte);
    const wanted = asked ?? this.options.encoding ?? offered.find((e) => e !== undefined);
    if (wanted === undefined || !offered.includes(wanted)) {
      const list = offered.filter((e) => e !== undefined).join(", ") || "none";
      throw new PipesvcError("unsupported", `the server does not offer the encoding ${wanted ?? "(any this client speaks)"}; it offers ${list}`);
    }
    return wanted;
  }

  /** The connection to send on, waiting for a reconnect within the request's time. */
  private async usable(signal: AbortSignal | undefined, started: number, waitMs: number): Promise<Connection> {
    signal?.throwIfAborted();
    if (this.currentState.state === "closed") throw new PipesvcError("closed", "the client was closed");
    const current = this.current;
    if (current?.usable) return current;
    if (!(this.options.reconnect ?? false)) {
      throw current?.closedError ?? new PipesvcError("lost", "the server is shutting down (GOODBYE)");
    }
    this.startReconnect();
    const left = remaining(waitMs, started);
    return raceWithin(this.connecting as Promise<Connection>, left, signal, "no connection");
  }

  private open(signal?: AbortSignal): Promise<Connection> {
    const connectTimeoutMs = positive("connectTimeoutMs", this.options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs);
    const deadline = performance.now() + connectTimeoutMs;
    let connection: Connection | undefined;
    const hooks = {
      onNotify: (payload: Uint8Array, from: Connection) => {
        if (!this.queue.push(payload)) from.pause();
      },
      onGoodbye: (reason: string) => {
        if (connection !== this.current) return;
        const reconnecting = this.options.reconnect ?? false;
        const error = new PipesvcError("lost", `the server is shutting down (GOODBYE${reason === "" ? "" : `: ${reason}`})`);
        this.setState({ state: "lost", error, reconnecting });
        if (reconnecting) this.startReconnect();
      },
      onClosed: (error: PipesvcError) => {
        if (connection !== this.current || this.currentState.state === "closed") return;
        const reconnecting = this.options.reconnect ?? false;
        if (this.currentState.state !== "lost") this.setState({ state: "lost", error, reconnecting });
        if (reconnecting) this.startReconnect();
        else this.queue.end();
      },
    };
    const combined = signal === undefined ? this.stop.signal : AbortSignal.any([signal, this.stop.signal]);
    return Connection.open(this.endpoint, this.connectionOptions, hooks, deadline, combined).then((c) => {
      connection = c;
      return c;
    });
  }

  /** Starts the background reconnect loop, unless it runs already. */
  private startReconnect(): void {
    if (this.connecting !== undefined) return;
    const attempt = async (): Promise<Connection> => {
      for (let tries = 0; ; tries++) {
        this.stop.signal.throwIfAborted();
        try {
          return await this.open();
        } catch (error) {
          if (this.stop.signal.aborted) throw error;
          const backoff = Math.min(RECONNECT_BACKOFF_MAX_MS, RECONNECT_BACKOFF_MIN_MS * 2 ** Math.min(tries, 7));
          await delay(backoff, this.stop.signal);
        }
      }
    };
    const connecting = attempt().then(
      (fresh) => {
        const old = this.current;
        this.current = fresh;
        this.connecting = undefined;
        this.reconnectCount++;
        // The old connection, after a GOODBYE, still delivers its last answers.
        if (old !== undefined && old.inFlight === 0) old.close();
        this.setState({ state: "connected", reconnects: this.reconnectCount });
        return fresh;
      },
      (error: unknown) => {
        this.connecting = undefined;
        throw error;
      },
    );
    // A loop nobody waits on must not be an unhandled rejection.
    connecting.catch(() => undefined);
    this.connecting = connecting;
  }

  private setState(state: ConnectionState): void {
    if (this.currentState.state === "closed") return;
    this.currentState = state;
    this.emit("state", state);
  }
}

/** The stream window of a connection whose server streams (revision 2.2). */
function streamWindow(connection: Connection): number {
  const reply = connection.helloReply;
  if (reply?.streamWindow === undefined || !reply.kinds.includes(Kind.Item)) {
    throw new PipesvcError("unsupported", "the server does not speak streams (protocol revision 2.2)");
  }
  return reply.streamWindow;
}

function u32(n: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(n, 0);
  return out;
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new PipesvcError("invalid", `${name} must be a positive number, not ${value}`);
  }
  return value;
}

function remaining(total: number, started: number): number {
  if (total === 0 || !Number.isFinite(total)) return total;
  return Math.max(1, Math.ceil(total - (performance.now() - started)));
}

function entries(metadata: RequestOptions["metadata"]): (readonly [string, string])[] {
  if (metadata === undefined) return [];
  if (Array.isArray(metadata)) return [...(metadata as readonly (readonly [string, string])[])];
  return Object.entries(metadata as Readonly<Record<string, string>>);
}

/** `promise`, or a `timeout` error after `ms`, or the signal's reason. */
function raceWithin<T>(promise: Promise<T>, ms: number, signal: AbortSignal | undefined, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = Number.isFinite(ms)
      ? setTimeout(() => {
          done();
          reject(new PipesvcError("timeout", `${what} within ${Math.round(ms)} ms`));
        }, ms)
      : undefined;
    const onAbort = (): void => {
      done();
      reject(signal?.reason);
    };
    const done = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        done();
        resolve(value);
      },
      (error: unknown) => {
        done();
        reject(error);
      },
    );
  });
}
