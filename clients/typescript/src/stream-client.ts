/**
 * The application's side of streams and topics: {@link Stream} (server,
 * client and bidirectional streams of a streaming method) and
 * {@link Subscription} (a topic's events, subscribed again across
 * reconnects).
 *
 * @module
 */

import type { Receiver } from "./streams.js";

/** What a stream's sending side does (made by the client). */
export interface StreamSender<Sent> {
  /** Sends one item once the server's credit allows it. */
  send(item: Sent, signal?: AbortSignal): Promise<void>;
  /** Sends END. */
  end(): void;
  /** Sends CANCEL (the server answers `cancelled`). */
  cancel(): void;
}

/**
 * A stream of a streaming method (PROTOCOL.md revision 2.2). Iterate it for
 * the items the server sends (in order; flow control keeps at most the
 * stream window unread); `send` and `end` for the items the client sends;
 * `result` is the last answer (it rejects with the stream's ERROR, which
 * iteration also throws after the items that came before it). Stopping an
 * iteration early (`break`) or `cancel()` sends CANCEL.
 */
export class Stream<Item, Result, Sent = never> implements AsyncIterable<Item> {
  /**
   * @param receiver - the items from the server
   * @param result - the last answer
   * @param sender - the sending side
   * @param id - the stream's id
   */
  constructor(
    private readonly receiver: Receiver<Item>,
    readonly result: Promise<Result>,
    private readonly sender: StreamSender<Sent>,
    readonly id: number,
  ) {}

  /**
   * The most bytes of the server's items (entries: 5 bytes and the value
   * each) this stream held unread at once so far: flow control bounds it.
   */
  get peakUnreadBytes(): number {
    return this.receiver.peakHeldBytes;
  }

  /** The items the server sends. One iteration at a time. */
  [Symbol.asyncIterator](): AsyncIterator<Item> {
    return this.receiver;
  }

  /** Sends an item (client and bidirectional streams), waiting for credit; `signal` bounds the wait. */
  send(item: Sent, options: { signal?: AbortSignal } = {}): Promise<void> {
    return this.sender.send(item, options.signal);
  }

  /** Ends the client's side (END) and resolves to the last answer. */
  end(): Promise<Result> {
    this.sender.end();
    return this.result;
  }

  /** Gives up on the stream: CANCEL is sent; `result` rejects. */
  cancel(): void {
    this.sender.cancel();
  }
}

/** One item of a {@link Subscription}. */
export type TopicItem<Event> =
  | { readonly type: "event"; readonly value: Event }
  | { readonly type: "lagged"; readonly count: number }
  | { readonly type: "resubscribed" };

/**
 * A topic's events (PROTOCOL.md "Topics"): `event` items in the order
 * published, `lagged` where the server dropped some for this subscriber,
 * and, when the client reconnected and subscribed again, `resubscribed`
 * (events published in between are lost). Ends when the service closes
 * the topic; throws when the subscription fails (such as `too slow`, or a
 * lost connection without `reconnect`). `break` unsubscribes.
 */
export class Subscription<Event> implements AsyncIterableIterator<TopicItem<Event>> {
  private stopped = false;

  /**
   * @param current - the subscription on the current connection
   * @param again - subscribes again after `error`, or undefined if it cannot be retried
   */
  constructor(
    private current: Receiver<TopicItem<Event>>,
    private readonly again: (error: unknown) => Promise<Receiver<TopicItem<Event>>> | undefined,
  ) {}

  /** The next item, subscribing again across a reconnect. */
  async next(): Promise<IteratorResult<TopicItem<Event>>> {
    for (;;) {
      try {
        return await this.current.next();
      } catch (error) {
        const retry = this.stopped ? undefined : this.again(error);
        if (retry === undefined) throw error;
        this.current = await retry;
      }
    }
  }

  /** Unsubscribes (CANCEL). */
  return(): Promise<IteratorResult<TopicItem<Event>>> {
    this.stopped = true;
    return this.current.return();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<TopicItem<Event>> {
    return this;
  }
}
