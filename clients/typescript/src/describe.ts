/**
 * The service's description, as DESCRIBE answers it (PROTOCOL.md
 * "DESCRIBE"): parsed and checked for the shape this client relies on.
 *
 * @module
 */

import { PipesvcError } from "./errors.js";

/** A JSON Schema (draft 2020-12), as the server gave it. */
export type JsonSchema = boolean | { readonly [keyword: string]: unknown };

/** One typed method. */
export interface MethodDescription {
  /** Its name, as CALL names it. */
  readonly name: string;
  /** What it does, if the service said. */
  readonly doc: string | undefined;
  /** Schema of the params. */
  readonly request: JsonSchema;
  /** Schema of the result (for a streaming method: of its last answer). */
  readonly response: JsonSchema;
  /** Revision 2.2: which way the method streams, if it does. */
  readonly streams: "server" | "client" | "both" | undefined;
  /** Schema of each item the server sends (`server` and `both`). */
  readonly serverItem: JsonSchema | undefined;
  /** Schema of each item the client sends (`client` and `both`). */
  readonly clientItem: JsonSchema | undefined;
}

/** One topic (revision 2.2). */
export interface TopicDescription {
  /** Its name, as SUBSCRIBE names it. */
  readonly name: string;
  /** What it carries, if the service said. */
  readonly doc: string | undefined;
  /** Schema of each event. */
  readonly event: JsonSchema;
  /** What happens to a subscriber that falls behind. */
  readonly policy: string | undefined;
  /** How many events a subscriber may fall behind by. */
  readonly queue: number | undefined;
}

/** What DESCRIBE answers. Members this client does not know are kept in `raw`. */
export interface Description {
  /** The service's name. */
  readonly service: string;
  /** The service's version. */
  readonly version: string;
  /** The protocol version of the server. */
  readonly protocol: number;
  /** Encodings the server accepts, in its order of preference. */
  readonly encodings: readonly string[];
  /** Its typed methods. */
  readonly methods: readonly MethodDescription[];
  /** Its topics (revision 2.2; empty from older servers). */
  readonly topics: readonly TopicDescription[];
  /** The whole JSON object. */
  readonly raw: { readonly [member: string]: unknown };
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Parses a DESCRIBE answer. */
export function parseDescription(payload: Uint8Array | string): Description {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof payload === "string" ? payload : strictUtf8.decode(payload));
  } catch (cause) {
    throw new PipesvcError("protocol", `the description is not UTF-8 JSON: ${String(cause)}`, { cause });
  }
  const object = asObject(raw, "the description");
  const methods = Array.isArray(object["methods"]) ? object["methods"] : bad("`methods` is not a list");
  return {
    service: typeof object["service"] === "string" ? object["service"] : "",
    version: typeof object["version"] === "string" ? object["version"] : "",
    protocol: typeof object["protocol"] === "number" ? object["protocol"] : 0,
    encodings: Array.isArray(object["encodings"]) ? object["encodings"].filter((e): e is string => typeof e === "string") : [],
    methods: methods.map((m: unknown, i: number) => parseMethod(m, i)),
    topics: Array.isArray(object["topics"]) ? object["topics"].map((t: unknown, i: number) => parseTopic(t, i)) : [],
    raw: object,
  };
}

function parseMethod(value: unknown, index: number): MethodDescription {
  const method = asObject(value, `method ${index}`);
  const name = method["name"];
  if (typeof name !== "string") bad(`method ${index} has no name`);
  return {
    name: name as string,
    doc: typeof method["doc"] === "string" ? method["doc"] : undefined,
    request: schema(method["request"]),
    response: schema(method["response"]),
    streams: method["streams"] === "server" || method["streams"] === "client" || method["streams"] === "both" ? method["streams"] : undefined,
    serverItem: method["server_item"] === undefined ? undefined : schema(method["server_item"]),
    clientItem: method["client_item"] === undefined ? undefined : schema(method["client_item"]),
  };
}

function parseTopic(value: unknown, index: number): TopicDescription {
  const topic = asObject(value, `topic ${index}`);
  const name = topic["name"];
  if (typeof name !== "string") bad(`topic ${index} has no name`);
  return {
    name: name as string,
    doc: typeof topic["doc"] === "string" ? topic["doc"] : undefined,
    event: schema(topic["event"]),
    policy: typeof topic["policy"] === "string" ? topic["policy"] : undefined,
    queue: typeof topic["queue"] === "number" ? topic["queue"] : undefined,
  };
}

function schema(value: unknown): JsonSchema {
  if (typeof value === "boolean") return value;
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as JsonSchema;
  return true;
}

function asObject(value: unknown, what: string): { [member: string]: unknown } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) bad(`${what} is not a JSON object`);
  return value as { [member: string]: unknown };
}

function bad(why: string): never {
  throw new PipesvcError("protocol", `the server's description: ${why}`);
}
