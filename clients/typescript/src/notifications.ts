/**
 * The bounded queue that carries NOTIFY payloads from the connections to
 * the app, as an async iterator.
 *
 * The queue is bounded in items and in bytes. When it is full, the
 * {@link NotificationPolicy} decides: `drop` (the default) drops the new
 * notification and the iterator yields a `lagged` item with the number
 * lost at that point, so responses are never held up; `backpressure`
 * stops reading the connection until the app takes one (nothing is lost;
 * answers queue behind the notifications, so the app must keep reading).
 * Until the iterator is taken the queue fills without waiting (what does
 * not fit is dropped and reported when it is); `ignore` buffers nothing.
 *
 * @module
 */

/** One item of {@link Client.notifications}. */
export type Notification =
  | { readonly type: "message"; readonly payload: Uint8Array }
  | { readonly type: "lagged"; readonly count: number };

/** What a full notification queue does; see the module's description. */
export type NotificationPolicy = "drop" | "backpressure" | "ignore";

/** The bounds of a {@link NotificationQueue}. */
export interface QueueLimits {
  /** Most notifications held. */
  readonly maxItems: number;
  /** Most payload bytes held. */
  readonly maxBytes: number;
  /** What to do when full. */
  readonly policy: NotificationPolicy;
}

/** The queue behind {@link Client.notifications}; one consumer at a time. */
export class NotificationQueue {
  private items: Notification[] = [];
  private head = 0;
  private bytes = 0;
  private lost = 0;
  private ended = false;
  private taken = false;
  private waiter: ((item: IteratorResult<Notification>) => void) | undefined;
  /** Called when room is made (to resume a paused connection). */
  onRoom: (() => void) | undefined;

  /** @param limits - bounds and policy */
  constructor(private readonly limits: QueueLimits) {}

  /** Notifications dropped so far (never more than what `lagged` items reported plus what is pending report). */
  dropped = 0;

  /** Payload bytes held now. */
  get heldBytes(): number {
    return this.bytes;
  }

  /** Items held now. */
  get heldItems(): number {
    return this.items.length - this.head;
  }

  /**
   * Offers a payload (copied when kept). Returns false when the connection
   * should stop reading (`backpressure` and now full).
   */
  push(payload: Uint8Array): boolean {
    if (this.ended || this.limits.policy === "ignore") return true;
    const item: Notification = { type: "message", payload: payload.slice() };
    if (this.waiter !== undefined && this.lost === 0) {
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter({ value: item, done: false });
      return true;
    }
    if (this.full(payload.length)) {
      if (this.limits.policy === "backpressure" && this.taken) {
        this.keep(item);
        return false;
      }
      this.lost++;
      this.dropped++;
      return true;
    }
    this.keep(item);
    return !(this.limits.policy === "backpressure" && this.taken && this.full(0));
  }

  /** Ends the iterator once what is held has been read. */
  end(): void {
    this.ended = true;
    this.flush();
  }

  /** Whether the queue has ended. */
  get isEnded(): boolean {
    return this.ended;
  }

  /** The iterator (one at a time: a second while the first is live throws). */
  iterator(): AsyncIterableIterator<Notification> {
    if (this.taken) throw new Error("the notifications are already being iterated");
    this.taken = true;
    const next = (): Promise<IteratorResult<Notification>> => {
      const item = this.take();
      if (item !== undefined) return Promise.resolve({ value: item, done: false });
      if (this.ended) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => {
        this.waiter = resolve;
      });
    };
    const stop = (): Promise<IteratorResult<Notification>> => {
      this.taken = false;
      this.items = [];
      this.head = 0;
      this.bytes = 0;
      this.onRoom?.();
      return Promise.resolve({ value: undefined, done: true });
    };
    const iterator: AsyncIterableIterator<Notification> = {
      next,
      return: stop,
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  private full(extra: number): boolean {
    return this.heldItems + 1 > this.limits.maxItems || this.bytes + extra > this.limits.maxBytes;
  }

  private keep(item: Notification): void {
    if (this.lost > 0) {
      this.items.push({ type: "lagged", count: this.lost });
      this.lost = 0;
    }
    this.items.push(item);
    if (item.type === "message") this.bytes += item.payload.length;
  }

  private take(): Notification | undefined {
    if (this.head === this.items.length) {
      if (this.lost > 0) {
        const lagged: Notification = { type: "lagged", count: this.lost };
        this.lost = 0;
        return lagged;
      }
      return undefined;
    }
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    if (item !== undefined && item.type === "message") this.bytes -= item.payload.length;
    this.onRoom?.();
    return item;
  }

  private flush(): void {
    if (this.waiter === undefined) return;
    const item = this.take();
    if (item === undefined && !this.ended) return;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter(item === undefined ? { value: undefined, done: true } : { value: item, done: false });
  }
}
