/**
 * A Node client for pipesvc services: protocol versions 1 and 2 over Unix
 * sockets and Windows named pipes (PROTOCOL.md is the contract).
 *
 * @example
 * ```ts
 * import { Client } from "pipesvc-client";
 * const client = await Client.connect("pipesvc");
 * console.log(await client.call("echo", { hello: "world" }));
 * client.close();
 * ```
 *
 * @module
 */

export { Client, type ClientOptions, type CallOptions, type RequestOptions, type ConnectionState } from "./client.js";
export { ErrorCode, PipesvcError, RemoteError, errorCodeName, untrustedText, type ErrorReason } from "./errors.js";
export type { Encoding, JsonValue } from "./codec.js";
export type { Description, MethodDescription, TopicDescription, JsonSchema } from "./describe.js";
export { parseDescription } from "./describe.js";
export { resolveEndpoint, type Endpoint, type EndpointContext } from "./endpoint.js";
export type { ServerIdentity } from "./identity.js";
export type { Notification, NotificationPolicy } from "./notifications.js";
export type { Status, StreamCounts } from "./status.js";
export { Stream, Subscription, type TopicItem } from "./stream-client.js";
