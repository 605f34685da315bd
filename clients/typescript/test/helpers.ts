/**
 * Test helpers: a real `pipesvc serve` on a unique endpoint in a private
 * temporary directory (removed afterwards), and small hostile servers
 * written with `net` for the cases a real server never produces.
 */

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { once } from "node:events";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Client, type ClientOptions } from "../src/index.js";

/** The repository's root (this file is clients/typescript/build/test/helpers.js). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

const cachedBinaries = new Map<string, string>();

/**
 * A binary of the repository: `$<env>` when set, else the target/debug or
 * target/release build at `relative`, built with `cargo build <args>` when
 * missing.
 */
function cargoBinary(env: string, relative: string, args: string[]): string {
  const cached = cachedBinaries.get(env);
  if (cached !== undefined) return cached;
  const fromEnv = process.env[env];
  let found: string | undefined = fromEnv !== undefined && fromEnv !== "" ? fromEnv : undefined;
  const targetDir = process.env["CARGO_TARGET_DIR"] ?? path.join(REPO_ROOT, "target");
  for (const profile of ["debug", "release"]) {
    const candidate = path.join(targetDir, profile, relative);
    if (found === undefined && existsSync(candidate)) found = candidate;
  }
  if (found === undefined) {
    const built = spawnSync("cargo", ["build", ...args], { cwd: REPO_ROOT, stdio: "inherit" });
    if (built.status !== 0) throw new Error(`cargo build ${args.join(" ")} failed`);
    found = path.join(targetDir, "debug", relative);
  }
  cachedBinaries.set(env, found);
  return found;
}

/**
 * The `pipesvc` binary: `PIPESVC_BIN` when set, else the repository's
 * target/debug or target/release build, built with cargo when missing.
 */
export function pipesvcBinary(): string {
  return cargoBinary("PIPESVC_BIN", "pipesvc", ["--bin", "pipesvc"]);
}

/** The job runner example (`JOB_SERVICE_BIN`, else target/.../examples/job_service, else built). */
export function jobServiceBinary(): string {
  return cargoBinary("JOB_SERVICE_BIN", path.join("examples", "job_service"), ["--example", "job_service"]);
}

/** A private temporary directory, removed by {@link TempDir.remove}. */
export class TempDir {
  /** Its path. */
  readonly path = mkdtempSync(path.join(os.tmpdir(), "pipesvc-ts-"));

  /** A socket path in it. */
  socket(name = "svc"): string {
    return path.join(this.path, `${name}.sock`);
  }

  /** Removes it and everything in it. */
  remove(): void {
    rmSync(this.path, { recursive: true, force: true });
  }
}

/** A running `pipesvc serve`. */
export class Server {
  private exited: Promise<unknown>;

  private constructor(
    /** Its child process. */
    readonly child: ChildProcess,
    /** The socket path it serves. */
    readonly name: string,
    /** Everything it wrote on stderr so far. */
    readonly log: { text: string },
  ) {
    this.exited = once(child, "exit");
  }

  /** Starts `pipesvc serve --name <name>` with `args`, and waits until it accepts a client. */
  static async start(name: string, args: string[] = []): Promise<Server> {
    return Server.spawn(pipesvcBinary(), ["serve", "--name", name, ...args], name);
  }

  /** Starts `binary` with `args`, serving `name`, and waits until it accepts a client. */
  static async spawn(binary: string, args: string[], name: string): Promise<Server> {
    const child = spawn(binary, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, RUST_LOG: process.env["RUST_LOG"] ?? "warn" },
    });
    const log = { text: "" };
    child.stderr?.on("data", (chunk: Buffer) => {
      if (log.text.length < 1 << 20) log.text += chunk.toString();
    });
    const server = new Server(child, name, log);
    // The first successful handshake says it is up (the client retries an absent socket).
    const probe = await Client.connect(name, { connectTimeoutMs: 60_000 });
    probe.close();
    return server;
  }

  /** Stops it gracefully (SIGTERM: it sends GOODBYE and removes its socket) and waits for it to exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGTERM");
    await this.exited;
  }

  /** Kills it at once (SIGKILL), as a crash. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }
}

/** A started server in its own directory, and a connected client; `done` undoes both. */
export async function withServer(
  args: string[] = [],
  options: ClientOptions = {},
): Promise<{ server: Server; client: Client; dir: TempDir; done(): Promise<void> }> {
  const dir = new TempDir();
  let server: Server | undefined;
  let client: Client;
  try {
    server = await Server.start(dir.socket(), args);
    client = await Client.connect(server.name, options);
  } catch (error) {
    await server?.stop();
    dir.remove();
    throw error;
  }
  return {
    server,
    client,
    dir,
    async done() {
      client.close();
      await server.stop();
      dir.remove();
    },
  };
}

/**
 * A hostile server on a socket in `dir`: `onConnection` gets each accepted
 * socket. `close` ends every connection and the listener.
 */
export async function fakeServer(
  socketPath: string,
  onConnection: (socket: net.Socket) => void,
): Promise<{ close(): Promise<void>; connections: net.Socket[] }> {
  const connections: net.Socket[] = [];
  const server = net.createServer((socket) => {
    connections.push(socket);
    socket.on("error", () => undefined);
    onConnection(socket);
  });
  server.listen(socketPath);
  await once(server, "listening");
  return {
    connections,
    async close() {
      for (const socket of connections) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
}

/** One frame's bytes. */
export function frame(kind: number, id: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.alloc(10 + payload.length);
  out.writeUInt32LE(6 + payload.length, 0);
  out.writeUInt8(kind, 4);
  out.writeUInt32LE(id, 6);
  out.set(payload, 10);
  return out;
}

/** The HELLO a server sends first: magic, version 1, maximum, name. */
export function serverHello(max = 8 * 1024 * 1024, name = "fake"): Buffer {
  const payload = Buffer.alloc(10 + name.length);
  payload.write("PSVC", 0, "ascii");
  payload.writeUInt16LE(1, 4);
  payload.writeUInt32LE(max, 6);
  payload.write(name, 10);
  return frame(1, 0, payload);
}

/**
 * A version 2 HELLO reply offering `encodings` and the kinds of a pipesvc
 * server; with `streamWindow`, one of revision 2.2 (kinds 13 to 16 and the
 * stream window field).
 */
export function helloReply(encodings: number[] = [2, 1], streamWindow?: number): Buffer {
  const kinds = [1, 2, 5, 7, 9, 10, 11, 12, ...(streamWindow === undefined ? [] : [13, 14, 15, 16])];
  const window = Buffer.alloc(4);
  window.writeUInt32LE(streamWindow ?? 0, 0);
  const payload = Buffer.from([
    ...Buffer.from("PSVC"), 2, 0,
    1, encodings.length, 0, ...encodings,
    2, kinds.length, 0, ...kinds,
    ...(streamWindow === undefined ? [] : [3, 4, 0, ...window]),
  ]);
  return frame(1, 0, payload);
}

/** An ITEM payload of entries `[type, value]`. */
export function entries(...list: [number, Uint8Array][]): Buffer {
  return Buffer.concat(
    list.flatMap(([type, value]) => {
      const head = Buffer.alloc(5);
      head.writeUInt8(type, 0);
      head.writeUInt32LE(value.length, 1);
      return [head, Buffer.from(value)];
    }),
  );
}

/**
 * Reads frames from a socket (as a fake server): calls `onFrame` for each,
 * reassembling by the length prefix.
 */
export function readFrames(socket: net.Socket, onFrame: (kind: number, id: number, payload: Buffer) => void): void {
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4) {
      const length = buffered.readUInt32LE(0);
      if (buffered.length < 4 + length) return;
      onFrame(buffered.readUInt8(4), buffered.readUInt32LE(6), buffered.subarray(10, 4 + length));
      buffered = buffered.subarray(4 + length);
    }
  });
}

/** Runs `body` with a private temporary directory, removed afterwards. */
export async function scenario(body: (dir: TempDir) => Promise<void>): Promise<void> {
  const dir = new TempDir();
  try {
    await body(dir);
  } finally {
    dir.remove();
  }
}

/**
 * A version 2 fake server on `dir`'s socket: sends `hello`, answers the
 * client's HELLO with a HELLO reply (of revision 2.2 with `streamWindow`),
 * answers PING if asked (`pings`), and gives every other frame to `onFrame`. The client's
 * HELLO payloads are kept in `hellos`.
 */
export async function v2Server(
  dir: TempDir,
  onFrame: (socket: net.Socket, kind: number, id: number, payload: Buffer) => void,
  options: { hello?: Buffer; streamWindow?: number; pings?: boolean } = {},
): Promise<{ close(): Promise<void>; hellos: Buffer[] }> {
  const hellos: Buffer[] = [];
  const server = await fakeServer(dir.socket(), (socket) => {
    socket.write(options.hello ?? serverHello());
    readFrames(socket, (kind, id, payload) => {
      if (kind === 1) {
        hellos.push(Buffer.from(payload));
        socket.write(helloReply(options.streamWindow === undefined ? [2, 1] : [1, 2], options.streamWindow));
      } else if (kind === 7 && options.pings === true) socket.write(frame(8, id, payload));
      else onFrame(socket, kind, id, payload);
    });
  });
  return { close: () => server.close(), hellos };
}
