/**
 * The errors the client raises, and the protocol's error codes.
 *
 * Everything the server sends as text (ERROR messages, GOODBYE reasons,
 * its name) is untrusted: it is decoded leniently, stripped of control
 * characters and cut to a bounded length by {@link untrustedText} before
 * it reaches an `Error` message or a log line.
 *
 * @module
 */

/** The protocol's error codes (PROTOCOL.md "Errors"). */
export const ErrorCode = {
  MalformedFrame: 1,
  FrameTooLarge: 2,
  UnsupportedVersion: 3,
  UnknownKind: 4,
  HandlerFailed: 5,
  Overloaded: 6,
  ShuttingDown: 7,
  TimedOut: 8,
  UnexpectedFrame: 9,
  DuplicateId: 10,
  NotAllowed: 11,
  UnknownMethod: 12,
  BadRequest: 13,
  Cancelled: 14,
  TooSlow: 15,
  FlowControl: 16,
} as const;

/** One of the codes of {@link ErrorCode}, or any other u16 (15-999 reserved, 1000+ the service's own). */
export type ErrorCodeNumber = number;

const CODE_NAMES: ReadonlyMap<number, string> = new Map([
  [1, "malformed frame"],
  [2, "frame too large"],
  [3, "unsupported version"],
  [4, "unknown kind"],
  [5, "handler failed"],
  [6, "overloaded"],
  [7, "shutting down"],
  [8, "timed out"],
  [9, "unexpected frame"],
  [10, "duplicate id"],
  [11, "not allowed"],
  [12, "unknown method"],
  [13, "bad request"],
  [14, "cancelled"],
  [15, "too slow"],
  [16, "flow control"],
]);

/**
 * The protocol's name for `code` (`"timed out"` for 8); `"service error N"`
 * for codes 1000 and up, `"error N"` for any other code this client does
 * not know.
 */
export function errorCodeName(code: number): string {
  const name = CODE_NAMES.get(code);
  if (name !== undefined) return name;
  return code >= 1000 ? `service error ${code}` : `error ${code}`;
}

/** The longest server text, in characters, kept in an error or a name. */
export const MAX_UNTRUSTED_TEXT = 1024;

const lenientUtf8 = new TextDecoder("utf-8", { fatal: false });

/**
 * Text from the server made safe to show: invalid UTF-8 replaced, control
 * characters (C0, DEL, C1, bidi overrides) replaced by U+FFFD, and cut to
 * {@link MAX_UNTRUSTED_TEXT} characters with an ellipsis.
 */
export function untrustedText(bytes: Uint8Array): string {
  const limit = MAX_UNTRUSTED_TEXT;
  // Decoding more than 4 bytes per kept character cannot add any.
  const head = bytes.subarray(0, limit * 4 + 4);
  let text = lenientUtf8.decode(head);
  text = text.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "\ufffd");
  if (text.length > limit || head.length < bytes.length) {
    text = `${text.slice(0, limit)}…`;
  }
  return text;
}

/**
 * Why a {@link PipesvcError} was raised:
 * - `connect`: no connection could be made within the connect timeout;
 * - `refused`: the server refused the connection (ERROR with id 0 instead
 *   of its HELLO or HELLO reply, such as `overloaded` or `not allowed`);
 * - `lost`: the connection ended (closed, reset, ERROR with id 0, GOODBYE
 *   without reconnect) before the request was answered;
 * - `protocol`: the server sent something the protocol does not allow
 *   (garbage); the connection was closed;
 * - `timeout`: the client's own deadline passed (no answer in time);
 * - `too-large`: a frame over a maximum (ours to send, or the server's
 *   announced maximum);
 * - `wrong-server`: the server failed the identity check;
 * - `unsupported`: the server does not offer what was asked (an older
 *   version, an encoding it did not list);
 * - `closed`: {@link Client.close} was called;
 * - `invalid`: the caller's input cannot be sent (a name too long, ...);
 * - `remote`: an ERROR answering this request ({@link RemoteError}).
 */
export type ErrorReason =
  | "connect"
  | "refused"
  | "lost"
  | "protocol"
  | "timeout"
  | "too-large"
  | "wrong-server"
  | "unsupported"
  | "closed"
  | "invalid"
  | "remote";

/** Every error this package raises (except an `AbortSignal`'s own reason). */
export class PipesvcError extends Error {
  /** Why it was raised. */
  readonly reason: ErrorReason;

  /**
   * @param reason - why (see {@link ErrorReason})
   * @param message - for humans
   * @param options - the underlying cause, if any
   */
  constructor(reason: ErrorReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PipesvcError";
    this.reason = reason;
  }
}

/**
 * The server answered a request with ERROR (or refused the connection with
 * an ERROR of id 0, then `reason` is `refused` or `lost`).
 */
export class RemoteError extends PipesvcError {
  /** The protocol code (see {@link ErrorCode}); 1000 and up are the service's own. */
  readonly code: number;
  /** The server's message, made safe by {@link untrustedText}. */
  readonly serverMessage: string;

  /**
   * @param code - the ERROR's code
   * @param serverMessage - its message, already made safe
   * @param reason - `remote` for a request's answer, else how the connection ended
   */
  constructor(code: number, serverMessage: string, reason: ErrorReason = "remote") {
    const text = serverMessage === "" ? errorCodeName(code) : `${errorCodeName(code)}: ${serverMessage}`;
    super(reason, `server: ${text} (code ${code})`);
    this.name = "RemoteError";
    this.code = code;
    this.serverMessage = serverMessage;
  }
}
