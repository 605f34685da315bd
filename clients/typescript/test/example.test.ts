/** The Node example against the job runner example it was written for. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT, Server, TempDir, jobServiceBinary } from "./helpers.js";

test("examples/jobs-watch follows two jobs of the job runner by their progress streams and the finished topic, one to the end and one cancelled", async () => {
  const dir = new TempDir();
  const name = dir.socket("jobs");
  const service = await Server.spawn(jobServiceBinary(), [name], name);
  try {
    const example = path.join(REPO_ROOT, "clients", "typescript", "build", "examples", "jobs-watch.js");
    const { stdout } = await promisify(execFile)(process.execPath, [example, name], { timeout: 60_000 });
    const lines = stdout.trim().split("\n");
    assert.ok(lines.includes("build (job 1): finished") || lines.includes("build (job 2): finished"), stdout);
    assert.match(stdout, /test \(job \d\): running, \d+ of 50 steps/);
    assert.match(stdout, /test \(job \d\): cancelled/);
    assert.doesNotMatch(stdout, /test \(job \d\): finished/);
    // The finished topic announced both ends.
    assert.match(stdout, /announced: build \(job \d\) finished/);
    assert.match(stdout, /announced: test \(job \d\) cancelled/);
  } finally {
    await service.stop();
    dir.remove();
  }
});
