/** The DESCRIBE code generator: its output for pipesvc serve, its schema mapping, and hostile descriptions. */

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import ts from "typescript";
import { generateTypeScript } from "../src/codegen.js";
import { parseDescription } from "../src/describe.js";
import { REPO_ROOT, withServer } from "./helpers.js";
import { PipesvcClient } from "../examples/generated/pipesvc-serve.js";

const PACKAGE = path.join(REPO_ROOT, "clients", "typescript");

/** Syntax errors of a TypeScript text (empty when it parses). */
function syntaxErrors(text: string): string[] {
  const out = ts.transpileModule(text, { reportDiagnostics: true, compilerOptions: { module: ts.ModuleKind.ESNext } });
  return (out.diagnostics ?? []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
}

test("the checked-in client of pipesvc serve is what the generator makes from the running service", async () => {
  const { client, server, done } = await withServer();
  try {
    const generated = generateTypeScript(await client.describe());
    const checkedIn = readFileSync(path.join(PACKAGE, "examples", "generated", "pipesvc-serve.ts"), "utf8");
    assert.equal(generated, checkedIn, "regenerate with: npx pipesvc-describe --name NAME --out examples/generated/pipesvc-serve.ts");
    // The command line does the same.
    const bin = path.join(PACKAGE, "dist", "bin", "pipesvc-describe.js");
    const { stdout } = await promisify(execFile)(process.execPath, [bin, "--name", server.name]);
    assert.equal(stdout, checkedIn);
  } finally {
    await done();
  }
});

test("the generated client makes typed calls", async () => {
  const { client, done } = await withServer();
  try {
    const typed = new PipesvcClient(client);
    assert.deepEqual(await typed.echo({ a: [1, "b"] }), { a: [1, "b"] });
    assert.equal(await typed.sleep({ ms: 1 }), null);
    const me = await typed.whoami();
    assert.equal(me.uid, process.getuid?.());
  } finally {
    await done();
  }
});

test("schemas map to TypeScript: $defs, oneOf enums, arrays, tuples, maps, nullable", () => {
  const description = parseDescription(
    JSON.stringify({
      service: "jobs",
      methods: [
        {
          name: "jobs.list",
          request: { type: "null" },
          response: {
            type: "array",
            items: { $ref: "#/$defs/Job" },
            $defs: {
              Job: {
                type: "object",
                properties: { id: { type: "integer" }, state: { $ref: "#/$defs/State" }, tags: { type: "object", additionalProperties: { type: "string" } } },
                required: ["id", "state"],
              },
              State: {
                oneOf: [
                  { type: "string", enum: ["Finished", "Cancelled"] },
                  { type: "object", properties: { Running: { type: "object", properties: { done: { type: "integer" } }, required: ["done"] } }, required: ["Running"], additionalProperties: false },
                ],
              },
            },
          },
        },
        { name: "pair", request: { type: "array", prefixItems: [{ type: "string" }, { type: ["number", "null"] }] }, response: { const: 3 } },
      ],
    }),
  );
  const text = generateTypeScript(description);
  assert.deepEqual(syntaxErrors(text), []);
  assert.match(text, /export type JobsListResult = Array<Job>;/);
  assert.match(text, /export type Job = \{\n {2}id: number;\n {2}state: State;\n {2}tags\?: \{\n {4}\[key: string\]: string;\n {2}\};\n\};/);
  assert.match(text, /export type State = "Finished" \| "Cancelled" \| \{\n {2}Running: \{\n {4}done: number;\n {2}\};\n\};/);
  assert.match(text, /export type PairParams = \[string, number \| null\];/);
  assert.match(text, /export type PairResult = 3;/);
  assert.match(text, /jobsList\(params\?: JobsListParams, options\?: CallOptions\): Promise<JobsListResult>/);
  assert.match(text, /export class JobsClient/);
});

test("a hostile description cannot inject code into the generated file", () => {
  const evil = "*/ import('child_process'); /*";
  const description = parseDescription(
    JSON.stringify({
      service: `x"; process.exit(1); "${evil}`,
      methods: [
        {
          name: `a'); process.exit(1); ('`,
          doc: `${evil}\nsecond line\u2028`,
          request: { type: "object", properties: { [`k"]: 1; ${evil}`]: { type: "string", description: evil } } },
          response: { enum: [`"; process.exit(1); "`, 1, null] },
        },
        { name: "constructor", request: true, response: false },
        { name: "9lives", request: {}, response: {} },
      ],
    }),
  );
  const text = generateTypeScript(description);
  assert.deepEqual(syntaxErrors(text), []);
  assert.doesNotMatch(text, /^\s*\*\/ import/m, "no comment is closed early");
  // Every statement is one the generator writes; nothing from the description runs.
  const sourceFile = ts.createSourceFile("x.ts", text, ts.ScriptTarget.ES2022);
  const allowed = (s: ts.Statement): boolean =>
    ts.isImportDeclaration(s) || ts.isVariableStatement(s) || ts.isTypeAliasDeclaration(s) || ts.isClassDeclaration(s);
  assert.ok(sourceFile.statements.every(allowed));
  assert.equal(sourceFile.statements.filter((s) => ts.isVariableStatement(s)).length, 1, "only METHODS");
  assert.match(text, /constructor_\(/);
  assert.match(text, /_9lives\(/);
});

test("streaming methods and topics become typed streams and subscriptions", () => {
  const description = parseDescription(
    JSON.stringify({
      service: "pipesvc",
      methods: [
        { name: "count", streams: "server", request: { type: "object", properties: { to: { type: "integer" } }, required: ["to"] }, response: { type: "null" }, server_item: { type: "integer" } },
        { name: "upload", streams: "client", request: { type: "null" }, response: { type: "integer" }, client_item: { type: "string" } },
        { name: "chat", streams: "both", request: { type: "null" }, response: { type: "null" }, server_item: { type: "string" }, client_item: { type: "string" } },
      ],
      topics: [{ name: "ticks", doc: "A tick a second", event: { type: "object", properties: { n: { type: "integer" } }, required: ["n"] }, policy: "drop_oldest", queue: 256 }],
    }),
  );
  const text = generateTypeScript(description);
  assert.deepEqual(syntaxErrors(text), []);
  assert.match(text, /import type \{ Client, CallOptions, Stream, Subscription \} from "pipesvc-client";/);
  assert.match(text, /export type CountItem = number;/);
  assert.match(text, /count\(params: CountParams, options\?: CallOptions\): Promise<Stream<CountItem, CountResult, never>>/);
  assert.match(text, /upload\(params\?: UploadParams, options\?: CallOptions\): Promise<Stream<never, UploadResult, UploadClientItem>>/);
  assert.match(text, /chat\(params\?: ChatParams, options\?: CallOptions\): Promise<Stream<ChatItem, ChatResult, ChatClientItem>>/);
  assert.match(text, /export type TicksEvent = \{\n {2}n: number;\n\};/);
  assert.match(text, /subscribeTicks\(options\?: Pick<CallOptions, "encoding" \| "signal">\): Promise<Subscription<TicksEvent>>/);
  assert.match(text, /export const TOPICS = \["ticks"\] as const;/);
});

test("a type met again is named once: a stream item equal to another schema's $defs entry, a titled result", () => {
  const state = { oneOf: [{ type: "string", enum: ["Done"] }, { type: "object", properties: { Running: { type: "integer" } }, required: ["Running"] }] };
  const job = { title: "Job", type: "object", properties: { state: { $ref: "#/$defs/State" } }, required: ["state"], $defs: { State: state } };
  const text = generateTypeScript(
    parseDescription(
      JSON.stringify({
        service: "jobs",
        methods: [
          { name: "status", request: { type: "integer" }, response: job },
          { name: "progress", request: { type: "integer" }, response: { title: "State", ...state }, streams: "server", server_item: { title: "State", ...state } },
        ],
        topics: [{ name: "finished", event: job }],
      }),
    ),
  );
  assert.deepEqual(syntaxErrors(text), []);
  assert.equal(text.match(/^export type State = /gm)?.length, 1, text);
  assert.equal(text.match(/^export type Job = /gm)?.length, 1, text);
  assert.match(text, /^export type StatusResult = Job;$/m);
  assert.match(text, /^export type ProgressItem = State;$/m);
  assert.match(text, /^export type ProgressResult = State;$/m);
  assert.match(text, /^export type FinishedEvent = Job;$/m);
});
