/**
 * Who is the server? Checked after connecting and before anything is
 * sent, so that a process squatting on the endpoint never sees a request.
 *
 * What Node can check, on Unix: the directories leading to the socket
 * (none may be in the hands of another user; like the server, a private
 * directory that is a symbolic link, belongs to another user or is
 * writable by others is refused, and on the whole path a directory of
 * another user, or one others may write to without the sticky bit), and
 * the owner of the socket file (the user whose process bound it).
 *
 * What it cannot: Node has no `SO_PEERCRED`, so the uid of the process
 * that *listens* is not read as the Rust client does; the socket file's
 * owner stands in for it (behind trusted directories nobody else can put
 * a socket there). On Windows Node cannot ask for the pipe server's
 * process or token (`GetNamedPipeServerProcessId`), so no check is made:
 * see the README.
 *
 * @module
 */

import { lstat, realpath, stat } from "node:fs/promises";
import * as path from "node:path";
import type { Stats } from "node:fs";
import { PipesvcError } from "./errors.js";
import type { Endpoint } from "./endpoint.js";

/**
 * Which server a client agrees to talk to: `same-user-or-admin` (the
 * default: a server running as this user or root), `any` (no check), or
 * `{ uid }` (exactly that uid, for a service running as a user of its own;
 * its directories may belong to it too).
 */
export type ServerIdentity = "same-user-or-admin" | "any" | { readonly uid: number };

/** Group or others may write. */
const WRITABLE_BY_OTHERS = 0o022;
/** Only an entry's owner may remove or rename it. */
const STICKY = 0o1000;

class Trust {
  constructor(
    readonly me: number,
    readonly wanted: number | undefined,
  ) {}

  serverOk(uid: number): boolean {
    return this.wanted !== undefined ? uid === this.wanted : uid === this.me || uid === 0;
  }

  ownerOk(uid: number): boolean {
    return uid === this.me || uid === 0 || uid === this.wanted;
  }

  users(): string {
    const base = this.me === 0 ? "root (uid 0, you)" : `uid ${this.me} (you) or root`;
    return this.wanted !== undefined && this.wanted !== this.me && this.wanted !== 0
      ? `uid ${this.wanted}, ${base}`
      : base;
  }
}

/**
 * Refuses a server `wanted` does not admit.
 * @throws {@link PipesvcError} `wrong-server` naming what was expected and found
 */
export async function checkServerIdentity(endpoint: Endpoint, wanted: ServerIdentity): Promise<void> {
  if (wanted === "any" || endpoint.transport === "pipe" || typeof process.getuid !== "function") return;
  const trust = new Trust(process.getuid(), wanted === "same-user-or-admin" ? undefined : wanted.uid);
  const problem = (await socketProblem(trust, endpoint)) ?? (await pathProblem(trust, endpoint));
  if (problem !== undefined) {
    throw new PipesvcError(
      "wrong-server",
      `refusing the server at ${endpoint.path}: expected a server of ${trust.users()} behind directories only they can change, found ${problem}`,
    );
  }
}

/** The socket file's owner, standing in for the listening process's uid. */
async function socketProblem(trust: Trust, endpoint: Endpoint): Promise<string | undefined> {
  const meta = await inspect(endpoint.path);
  if (typeof meta === "string") return meta;
  if (!trust.serverOk(meta.uid)) return `a socket bound by uid ${meta.uid}`;
  return undefined;
}

async function pathProblem(trust: Trust, endpoint: Endpoint): Promise<string | undefined> {
  if (endpoint.privateDir !== undefined) {
    return (
      (await privateDirProblem(trust, endpoint.privateDir)) ??
      (await entryProblem(trust, path.dirname(endpoint.privateDir), endpoint.privateDir))
    );
  }
  return entryProblem(trust, path.dirname(endpoint.path), endpoint.path);
}

async function privateDirProblem(trust: Trust, dir: string): Promise<string | undefined> {
  const meta = await inspect(dir);
  if (typeof meta === "string") return meta;
  const mode = meta.mode & 0o7777;
  if (meta.isSymbolicLink()) return `the private directory ${dir} is a symbolic link`;
  if (!meta.isDirectory()) return `${dir} is not a directory`;
  if (!trust.ownerOk(meta.uid)) return `the private directory ${dir} owned by uid ${meta.uid}`;
  if ((mode & WRITABLE_BY_OTHERS) !== 0) {
    return `the private directory ${dir} writable by others (mode ${mode.toString(8)})`;
  }
  return undefined;
}

/** Every directory from `/` down to `dir`, as written and resolved; then `entry` if `dir` is shared. */
async function entryProblem(trust: Trust, dir: string, entry: string): Promise<string | undefined> {
  const written = path.resolve(dir);
  let resolved: string;
  try {
    resolved = await realpath(written);
  } catch (error) {
    return `${dir} cannot be inspected (${(error as Error).message})`;
  }
  for (const start of [written, resolved]) {
    for (let at = start; ; at = path.dirname(at)) {
      const problem = await ancestorProblem(trust, at);
      if (problem !== undefined) return problem;
      if (path.dirname(at) === at) break;
    }
  }
  const shared = await stat(resolved);
  if ((shared.mode & WRITABLE_BY_OTHERS) !== 0) {
    const meta = await inspect(entry);
    if (typeof meta === "string") return meta;
    if (!trust.ownerOk(meta.uid)) return `${entry} owned by uid ${meta.uid} in the shared directory ${resolved}`;
  }
  return undefined;
}

async function ancestorProblem(trust: Trust, at: string): Promise<string | undefined> {
  const meta = await inspect(at);
  if (typeof meta === "string") return meta;
  if (!trust.ownerOk(meta.uid)) return `${at} owned by uid ${meta.uid}, who could swap the socket`;
  const mode = meta.mode & 0o7777;
  if (meta.isDirectory() && (mode & WRITABLE_BY_OTHERS) !== 0 && (mode & STICKY) === 0) {
    return `${at} writable by others (mode ${mode.toString(8)}, not sticky)`;
  }
  return undefined;
}

async function inspect(at: string): Promise<Stats | string> {
  try {
    return await lstat(at);
  } catch (error) {
    return `${at} cannot be inspected (${(error as Error).message})`;
  }
}
