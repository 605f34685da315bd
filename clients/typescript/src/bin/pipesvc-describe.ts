#!/usr/bin/env node
/**
 * `pipesvc-describe --name NAME [--out FILE]`: asks a running service for
 * its description (DESCRIBE) and writes TypeScript types and a typed
 * client for it. `--from-json FILE` reads a description saved with
 * `pipesvc methods --json` instead.
 *
 * @module
 */

import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { Client } from "../client.js";
import { generateTypeScript } from "../codegen.js";
import { parseDescription, type Description } from "../describe.js";

const USAGE = `usage: pipesvc-describe (--name NAME | --from-json FILE) [--out FILE] [--class NAME] [--import MODULE]

  --name NAME        the service's endpoint (a bare name, a socket path or a \\\\.\\pipe\\ name)
  --from-json FILE   a description saved with \`pipesvc methods --json\` instead of a running service
  --out FILE         where to write the TypeScript (default: standard output)
  --class NAME       the generated class's name (default: the service's name + "Client")
  --import MODULE    the module to import the client from (default: pipesvc-client)
  --timeout MS       connect and DESCRIBE timeout (default: 5000)`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      name: { type: "string" },
      "from-json": { type: "string" },
      out: { type: "string" },
      class: { type: "string" },
      import: { type: "string" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help === true) {
    console.log(USAGE);
    return;
  }
  const timeoutMs = values.timeout === undefined ? 5000 : Number(values.timeout);
  let description: Description;
  if (values["from-json"] !== undefined) {
    description = parseDescription(await readFile(values["from-json"], "utf8"));
  } else if (values.name !== undefined) {
    const client = await Client.connect(values.name, { connectTimeoutMs: timeoutMs, notificationPolicy: "ignore" });
    try {
      description = await client.describe({ timeoutMs });
    } finally {
      client.close();
    }
  } else {
    throw new Error(`--name or --from-json is required\n${USAGE}`);
  }
  const text = generateTypeScript(description, {
    ...(values.class === undefined ? {} : { className: values.class }),
    ...(values.import === undefined ? {} : { importFrom: values.import }),
  });
  if (values.out === undefined) process.stdout.write(text);
  else await writeFile(values.out, text);
}

main().catch((error: unknown) => {
  console.error(`pipesvc-describe: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
