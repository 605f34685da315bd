/**
 * Endpoint names: the same bare names as the Rust client and `pipesvc
 * serve --name` (PROTOCOL.md "Transport"). The rules of both platforms are
 * pure functions, so that each is tested on every platform.
 *
 * @module
 */

import { PipesvcError } from "./errors.js";

/** Where a client connects. */
export interface Endpoint {
  /** What `net.connect({ path })` takes: a socket path or a `\\.\pipe\` name. */
  readonly path: string;
  /** `unix` for a Unix domain socket, `pipe` for a Windows named pipe. */
  readonly transport: "unix" | "pipe";
  /** For a bare name on Unix, the private directory it lives in. */
  readonly privateDir: string | undefined;
}

/** The prefix of every Windows pipe name. */
export const PIPE_PREFIX = "\\\\.\\pipe\\";
/** Windows limits a pipe name to 256 characters. */
const PIPE_MAX_LEN = 256;
/** `sun_path` holds 107 bytes and a NUL on Linux. */
const UNIX_MAX_PATH = 107;

/** What the naming rules depend on, given explicitly to test them. */
export interface EndpointContext {
  /** `process.platform`. */
  readonly platform: string;
  /** `XDG_RUNTIME_DIR`, if set. */
  readonly xdgRuntimeDir?: string | undefined;
  /** The user's uid (Unix; for `/tmp/pipesvc-<uid>`). */
  readonly uid?: number | undefined;
}

/** The context of this process. */
export function currentContext(): EndpointContext {
  return {
    platform: process.platform,
    xdgRuntimeDir: process.env["XDG_RUNTIME_DIR"],
    uid: typeof process.getuid === "function" ? process.getuid() : undefined,
  };
}

/**
 * Resolves a name as pipesvc does: on Windows a bare name `N` is
 * `\\.\pipe\N` and a full pipe name (any case of the prefix) is kept; on
 * Unix a name with a `/` is a socket path, and a bare name `N` is
 * `$XDG_RUNTIME_DIR/pipesvc/N.sock` (`/tmp/pipesvc-<uid>/N.sock` without
 * an absolute `XDG_RUNTIME_DIR`; a name already ending in `.sock` gets no
 * second suffix).
 * @throws {@link PipesvcError} `invalid` for a name that cannot be an endpoint
 */
export function resolveEndpoint(name: string, context: EndpointContext = currentContext()): Endpoint {
  const fail = (why: string): never => {
    throw new PipesvcError("invalid", `invalid endpoint name ${JSON.stringify(name)}: ${why}`);
  };
  const reason = context.platform === "win32" ? windowsProblem(name) : unixProblem(name);
  if (reason !== undefined) fail(reason);
  if (context.platform === "win32") {
    const full = name.slice(0, PIPE_PREFIX.length).toLowerCase() === PIPE_PREFIX ? name : PIPE_PREFIX + name;
    if (full.length > PIPE_MAX_LEN) fail(`the pipe name is ${full.length} characters long; Windows allows 256`);
    return { path: full, transport: "pipe", privateDir: undefined };
  }
  let path = name;
  let privateDir: string | undefined;
  if (!name.includes("/")) {
    privateDir = defaultPrivateDir(context);
    path = `${privateDir}/${socketFileName(name)}`;
  }
  const bytes = Buffer.byteLength(path);
  if (bytes > UNIX_MAX_PATH) fail(`the socket path ${path} is ${bytes} bytes long; Unix sockets allow 107`);
  return { path, transport: "unix", privateDir };
}

function bareNameProblem(name: string): string | undefined {
  if (name === "") return "the name is empty";
  if (name.includes("\\")) return "a bare name cannot contain a backslash (a full pipe name starts with \\\\.\\pipe\\)";
  if (name.includes("\0")) return "the name contains a NUL character";
  return undefined;
}

function windowsProblem(name: string): string | undefined {
  if (name.slice(0, PIPE_PREFIX.length).toLowerCase() === PIPE_PREFIX) {
    const rest = bareNameProblem(name.slice(PIPE_PREFIX.length));
    return rest === undefined ? undefined : `after \\\\.\\pipe\\: ${rest}`;
  }
  return bareNameProblem(name);
}

function unixProblem(name: string): string | undefined {
  if (name.includes("/")) return name.includes("\0") ? "the path contains a NUL character" : undefined;
  if (name === "." || name === "..") return "`.` and `..` are not names";
  return bareNameProblem(name);
}

function socketFileName(name: string): string {
  return name.endsWith(".sock") && name !== ".sock" ? name : `${name}.sock`;
}

function defaultPrivateDir(context: EndpointContext): string {
  const xdg = context.xdgRuntimeDir;
  if (xdg !== undefined && xdg.startsWith("/")) return `${xdg.replace(/\/+$/, "")}/pipesvc`;
  if (context.uid === undefined) {
    throw new PipesvcError("invalid", "no XDG_RUNTIME_DIR and no uid: cannot place a bare name");
  }
  return `/tmp/pipesvc-${context.uid}`;
}
