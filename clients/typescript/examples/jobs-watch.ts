// Watches the job runner (`cargo run --example job_service -- jobs`):
// follows the `finished` topic, submits two jobs, prints each one's
// progress from its `progress` stream (no polling), and cancels the longer
// one after 10 of its 50 steps. Run: node build/examples/jobs-watch.js jobs
import { Client } from "pipesvc-client";
import { JobsClient, type State } from "./generated/jobs.js";

const describe = (state: State, steps: number): string =>
  typeof state === "string" ? state.toLowerCase() : `running, ${state.Running.done} of ${steps} steps`;

const client = await Client.connect(process.argv[2] ?? "jobs");
const jobs = new JobsClient(client);
const stop = new AbortController(); // Ctrl-C stops watching (and cancels the streams)
process.once("SIGINT", () => stop.abort());

// Every job that ends, announced by the service (subscribed before submitting).
const finished = await jobs.subscribeFinished({ signal: stop.signal });
const announced = (async () => {
  let ended = 0;
  for await (const item of finished) {
    if (item.type === "event") console.log(`announced: ${item.value.submit.name} (job ${item.value.id}) ${describe(item.value.state, 0)}`);
    if (item.type === "event" && ++ended === 2) break; // both jobs ended: unsubscribe
  }
})();

const follow = async (name: string, steps: number, cancelAt?: number): Promise<void> => {
  const id = await jobs.submit({ name, steps });
  const progress = await jobs.progress(id, { signal: stop.signal });
  for await (const state of progress) {
    console.log(`${name} (job ${id}): ${describe(state, steps)}`);
    if (cancelAt !== undefined && typeof state === "object" && state.Running.done >= cancelAt) await jobs.cancel(id);
  }
  await progress.result; // the last state, also sent as the last item
};

try {
  await Promise.all([follow("build", 5), follow("test", 50, 10)]);
  await announced;
} finally {
  client.close();
}
