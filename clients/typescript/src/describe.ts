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
  /** Schema of the result. */
  readonly response: JsonSchema;
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
