// Watches the job runner (`cargo run --example job_service -- jobs`):
// submits two jobs, prints their progress and when each finishes, and
// cancels the longer one after 10 of its 50 steps. Run: node build/examples/jobs-watch.js jobs
//
// The job runner has no progress events yet (they come with streams,
// issue 21), so `watch` follows a job with its `status` method, one call
// per step; with events it becomes a subscription and nothing else changes.
import { Client } from "pipesvc-client";
import { JobsClient, type Job } from "./generated/jobs.js";

/** Yields a job each time its state changes, until it ends. */
async function* watch(jobs: JobsClient, id: number, signal: AbortSignal): AsyncGenerator<Job> {
  let last = "";
  for (;;) {
    const job = await jobs.status(id, { signal, timeoutMs: 2000 });
    if (JSON.stringify(job.state) !== last) yield job;
    last = JSON.stringify(job.state);
    if (typeof job.state === "string") return; // Finished or Cancelled
    await new Promise((resolve) => setTimeout(resolve, 100)); // one step
  }
}

function describe({ state, submit }: Job): string {
  return typeof state === "string" ? state.toLowerCase() : `running, ${state.Running.done} of ${submit.steps} steps`;
}

const client = await Client.connect(process.argv[2] ?? "jobs");
const jobs = new JobsClient(client);
const stop = new AbortController(); // Ctrl-C stops watching (and cancels the calls in flight)
process.once("SIGINT", () => stop.abort());

const follow = async (name: string, steps: number, cancelAt?: number): Promise<void> => {
  const id = await jobs.submit({ name, steps });
  for await (const job of watch(jobs, id, stop.signal)) {
    console.log(`${name} (job ${id}): ${describe(job)}`);
    const done = typeof job.state === "object" ? job.state.Running.done : 0;
    if (cancelAt !== undefined && done >= cancelAt) await jobs.cancel(id);
  }
};

try {
  await Promise.all([follow("build", 5), follow("test", 50, 10)]);
} finally {
  client.close();
}
