/**
 * Opening the byte stream: `net.connect` reaches both Unix sockets and
 * Windows named pipes. A server that is absent, restarting or busy is
 * retried with a short backoff until the connect timeout (PROTOCOL.md
 * "Transport").
 *
 * @module
 */

import * as net from "node:net";
import { PipesvcError } from "./errors.js";
import type { Endpoint } from "./endpoint.js";

/**
 * Whether a failed connect is worth retrying: the server is not there yet
 * or is restarting (`ENOENT`, `ECONNREFUSED`), its backlog is full
 * (`EAGAIN`), or on Windows every pipe instance is busy (libuv reports
 * `ERROR_PIPE_BUSY` as `EBUSY` once its own wait gives up).
 */
export function isRetryableConnectError(code: string | undefined, transport: Endpoint["transport"]): boolean {
  if (code === "ENOENT" || code === "ECONNREFUSED" || code === "EAGAIN") return true;
  return transport === "pipe" && (code === "EBUSY" || code === "EPIPE");
}

/** The backoff before try number `attempt` (0-based): 10 ms doubling up to 200 ms. */
export function backoffMs(attempt: number): number {
  return Math.min(200, 10 * 2 ** Math.min(attempt, 5));
}

/**
 * Connects to `endpoint`, retrying while {@link isRetryableConnectError},
 * until `deadline` (a `performance.now()` value) or `signal`.
 * @throws {@link PipesvcError} `connect` when no connection was made in time
 */
export async function connectSocket(endpoint: Endpoint, deadline: number, signal?: AbortSignal): Promise<net.Socket> {
  for (let attempt = 0; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await connectOnce(endpoint, deadline, signal);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const left = deadline - performance.now();
      if (error instanceof PipesvcError || !isRetryableConnectError(code, endpoint.transport) || left <= 0) {
        if (error instanceof PipesvcError || signal?.aborted) throw error;
        throw new PipesvcError("connect", `cannot connect to ${endpoint.path}: ${String((error as Error).message)}`, {
          cause: error,
        });
      }
      await delay(Math.min(backoffMs(attempt), left), signal);
    }
  }
}

function connectOnce(endpoint: Endpoint, deadline: number, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: endpoint.path });
    const timer = setTimeout(() => {
      finish();
      socket.destroy();
      reject(new PipesvcError("connect", `cannot connect to ${endpoint.path}: timed out`));
    }, Math.max(0, deadline - performance.now()));
    const onAbort = (): void => {
      finish();
      socket.destroy();
      reject(signal?.reason);
    };
    const onError = (error: Error): void => {
      finish();
      socket.destroy();
      reject(error);
    };
    const onConnect = (): void => {
      finish();
      // Until its connection listens (after the identity check), an error
      // (a server killed at that moment) is left to the next read or write.
      socket.on("error", () => undefined);
      resolve(socket);
    };
    const finish = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.off("error", onError);
      socket.off("connect", onConnect);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("error", onError);
    socket.once("connect", onConnect);
  });
}

/** Waits `ms`, or rejects with the signal's reason when it aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
