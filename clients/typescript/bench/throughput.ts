/**
 * Throughput of the TypeScript client: 1 connection, 64 calls in flight,
 * typed echo of a 64-byte string (as the Rust client's typed bench), for
 * `--seconds`. Prints one JSON line. Run against a running service:
 * `node build/bench/throughput.js --name NAME --seconds 3 --encoding msgpack`
 * (after `npm run build:test`). The coordinator runs it beside the Rust
 * client on a quiet machine; it is not part of the tests.
 */

import { parseArgs } from "node:util";
import { Client, type Encoding } from "../src/index.js";

const { values } = parseArgs({
  options: {
    name: { type: "string" },
    seconds: { type: "string", default: "3" },
    encoding: { type: "string", default: "msgpack" },
    inflight: { type: "string", default: "64" },
    bytes: { type: "boolean", default: false },
  },
});
if (values.name === undefined) throw new Error("--name is required");
const encoding = values.encoding as Encoding;
const client = await Client.connect(values.name, { notificationPolicy: "ignore" });
const text = "Z".repeat(64);
const payload = Buffer.from(text);
const deadline = performance.now() + Number(values.seconds) * 1000;
let calls = 0;
const started = performance.now();
const worker = async (): Promise<void> => {
  while (performance.now() < deadline) {
    if (values.bytes) {
      if ((await client.request(payload)).length !== 64) throw new Error("wrong echo");
    } else if ((await client.call<string>("echo", text, { encoding })).length !== 64) {
      throw new Error("wrong echo");
    }
    calls++;
  }
};
await Promise.all(Array.from({ length: Number(values.inflight) }, worker));
const elapsed = (performance.now() - started) / 1000;
client.close();
console.log(JSON.stringify({ client: "typescript", encoding: values.bytes ? "bytes" : encoding, calls, calls_per_s: Math.round(calls / elapsed) }));
