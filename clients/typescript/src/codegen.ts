/**
 * Code generation: a service's description (DESCRIBE) turned into
 * TypeScript types (from the JSON Schemas of params and results) and a
 * typed client class whose methods call the service's methods.
 *
 * Schemas are mapped as far as TypeScript can say them: `type` (and lists
 * of types), `properties`/`required`, `additionalProperties`, `items` and
 * `prefixItems`, `enum`, `const`, `oneOf`/`anyOf` (unions), `allOf`
 * (intersections), and `$ref` to `$defs`/`definitions` (named types).
 * Keywords that only constrain values (`minimum`, `format`, `pattern`...)
 * are kept in the doc comments; a schema with no type at all is
 * `JsonValue`. Every name and text from the description is escaped, so a
 * hostile description cannot inject code.
 *
 * @module
 */

import type { Description, JsonSchema } from "./describe.js";

/** Choices for {@link generateTypeScript}. */
export interface CodegenOptions {
  /** The module the generated code imports the client from. Default `pipesvc-client`. */
  readonly importFrom?: string;
  /** Name of the generated class. Default: the service's name in PascalCase + `Client`. */
  readonly className?: string;
}

type SchemaObject = { readonly [keyword: string]: unknown };

/** Names the generated file imports; definitions may not take them. */
const RESERVED_NAMES = new Set(["Client", "CallOptions", "JsonValue", "METHODS", "TOPICS", "Stream", "Subscription"]);

/** Turns `description` into the text of a TypeScript module. */
export function generateTypeScript(description: Description, options: CodegenOptions = {}): string {
  const generator = new Generator();
  const importFrom = options.importFrom ?? "pipesvc-client";
  const className = identifier(options.className ?? `${pascal(description.service || "service")}Client`);
  const body: string[] = [];
  const members: string[] = [];
  const used = new Set<string>();
  for (const method of description.methods) {
    const base = unique(identifier(pascal(method.name) || "Method"), used);
    const params = `${base}Params`;
    const result = `${base}Result`;
    body.push(doc(`The params of \`${method.name}\`.`, method.request), `export type ${params} = ${generator.root(method.request)};`, "");
    body.push(doc(`The result of \`${method.name}\`.`, method.response), `export type ${result} = ${generator.root(method.response)};`, "");
    const takesNothing = isNull(method.request);
    const signature = takesNothing ? `params?: ${params}, options?: CallOptions` : `params: ${params}, options?: CallOptions`;
    const member = memberName(method.name);
    if (method.streams === undefined) {
      members.push(
        indent(doc(method.doc ?? `Calls \`${method.name}\`.`), 2),
        `  ${member}(${signature}): Promise<${result}> {`,
        `    return this.client.call<${result}>(${JSON.stringify(method.name)}, params, options);`,
        "  }",
        "",
      );
      continue;
    }
    let serverItem = "never";
    let clientItem = "never";
    if (method.streams !== "client") {
      serverItem = `${base}Item`;
      body.push(doc(`Each item the server sends on \`${method.name}\`.`, method.serverItem), `export type ${serverItem} = ${generator.root(method.serverItem ?? true)};`, "");
    }
    if (method.streams !== "server") {
      clientItem = `${base}ClientItem`;
      body.push(doc(`Each item the client sends on \`${method.name}\`.`, method.clientItem), `export type ${clientItem} = ${generator.root(method.clientItem ?? true)};`, "");
    }
    const streamType = `Stream<${serverItem}, ${result}, ${clientItem}>`;
    members.push(
      indent(doc(`${method.doc ?? `Opens the stream \`${method.name}\`.`}\n\nStreams: ${method.streams}.`), 2),
      `  ${member}(${signature}): Promise<${streamType}> {`,
      `    return this.client.stream<${serverItem}, ${result}, ${clientItem}>(${JSON.stringify(method.name)}, params, options);`,
      "  }",
      "",
    );
  }
  for (const topic of description.topics) {
    const base = unique(identifier(pascal(topic.name) || "Topic"), used);
    const event = `${base}Event`;
    body.push(doc(`Each event of the topic \`${topic.name}\`.`, topic.event), `export type ${event} = ${generator.root(topic.event)};`, "");
    const policy = topic.policy === undefined ? "" : ` Policy: ${topic.policy}${topic.queue === undefined ? "" : `, queue ${topic.queue}`}.`;
    members.push(
      indent(doc(`${topic.doc ?? `The topic \`${topic.name}\`.`}\n\nSubscribes to it.${policy}`), 2),
      `  subscribe${base}(options?: Pick<CallOptions, "encoding" | "signal">): Promise<Subscription<${event}>> {`,
      `    return this.client.subscribe<${event}>(${JSON.stringify(topic.name)}, options);`,
      "  }",
      "",
    );
  }
  const types = [...generator.definitions(), ...body].join("\n");
  const streams = description.methods.some((m) => m.streams !== undefined) ? ["Stream"] : [];
  const topics = description.topics.length > 0 ? ["Subscription"] : [];
  const imported = ["Client", "CallOptions", ...(/\bJsonValue\b/.test(types) ? ["JsonValue"] : []), ...streams, ...topics];
  const imports = imported.join(", ");
  const header = [
    `// Generated by pipesvc-describe from the description of the service ${comment(JSON.stringify(description.service))}.`,
    "// Do not edit: generate it again when the service changes.",
    "",
    `import type { ${imports} } from ${JSON.stringify(importFrom)};`,
    "",
    "/** The service's methods, by name. */",
    `export const METHODS = ${JSON.stringify(description.methods.map((m) => m.name))} as const;`,
    "",
    ...(description.topics.length === 0
      ? []
      : ["/** The service's topics, by name. */", `export const TOPICS = ${JSON.stringify(description.topics.map((t) => t.name))} as const;`, ""]),
  ];
  const classText = [
    `/** Typed calls of the service ${comment(JSON.stringify(description.service))}, over a connected {@link Client}. */`,
    `export class ${className} {`,
    "  /** @param client - a connected client */",
    "  constructor(readonly client: Client) {}",
    "",
    ...members,
  ];
  while (classText.at(-1) === "") classText.pop();
  classText.push("}", "");
  return [...header, types, ...classText].join("\n");
}

class Generator {
  private readonly defs = new Map<string, string>();
  /** Each named type by its TypeScript text: a schema met again (in another method's `$defs`, or titled) reuses it. */
  private readonly byText = new Map<string, string>();
  private readonly pending: string[] = [];

  /**
   * The type of a method's or topic's whole schema: the named type already
   * made for the same text, else, for a titled object or union (such as a
   * serde type's `"title": "Job"`), a named type of that title, else the text.
   */
  root(schema: JsonSchema): string {
    const text = this.type(schema, schema);
    const known = this.byText.get(text);
    if (known !== undefined) return known;
    const title = typeof schema === "object" ? schema["title"] : undefined;
    if (typeof title !== "string" || !/^[A-Z][A-Za-z0-9_]*$/.test(title) || !/[{|]/.test(text)) return text;
    const name = this.freeName(title);
    this.defs.set(`title/${title}:${text}`, name);
    this.byText.set(text, name);
    this.pending.push(doc(typeof schema === "object" ? describeSchema(schema) || `\`${title}\`.` : `\`${title}\`.`), `export type ${name} = ${text};`, "");
    return name;
  }

  /** `base` as a type name no definition has taken yet. */
  private freeName(base: string): string {
    let name = identifier(pascal(base) || "Definition");
    if (RESERVED_NAMES.has(name)) name = `${name}_`;
    const taken = new Set(this.defs.values());
    for (let n = 2; taken.has(name); n++) name = `${identifier(pascal(base) || "Definition")}${n}`;
    return name;
  }

  /** The TypeScript type of `schema`; `root` is where `$ref`s point into. */
  type(schema: JsonSchema | undefined, root: JsonSchema): string {
    if (schema === undefined || schema === true) return "JsonValue";
    if (schema === false) return "never";
    const s = schema;
    if (typeof s["$ref"] === "string") return this.ref(s["$ref"], root);
    if ("const" in s) return literal(s["const"]);
    if (Array.isArray(s["enum"])) return union(s["enum"].map(literal));
    const alternatives = (Array.isArray(s["oneOf"]) ? s["oneOf"] : Array.isArray(s["anyOf"]) ? s["anyOf"] : undefined) as
      | JsonSchema[]
      | undefined;
    const own = this.ownType(s, root);
    if (alternatives !== undefined) {
      const alts = union(alternatives.map((a) => this.type(a, root)));
      return own === "JsonValue" ? alts : `(${own}) & (${alts})`;
    }
    if (Array.isArray(s["allOf"])) {
      const parts = (s["allOf"] as JsonSchema[]).map((a) => `(${this.type(a, root)})`);
      return own === "JsonValue" ? parts.join(" & ") : [`(${own})`, ...parts].join(" & ");
    }
    return own;
  }

  /** Named types made from `$defs`, in the order first used. */
  definitions(): string[] {
    return this.pending;
  }

  private ownType(s: SchemaObject, root: JsonSchema): string {
    const types = typeof s["type"] === "string" ? [s["type"]] : Array.isArray(s["type"]) ? (s["type"] as unknown[]) : [];
    if (types.length === 0) return "properties" in s ? this.object(s, root) : "JsonValue";
    return union(types.map((t) => this.single(String(t), s, root)));
  }

  private single(type: string, s: SchemaObject, root: JsonSchema): string {
    switch (type) {
      case "null":
        return "null";
      case "boolean":
        return "boolean";
      case "integer":
      case "number":
        return "number";
      case "string":
        return "string";
      case "array":
        return this.array(s, root);
      case "object":
        return this.object(s, root);
      default:
        return "JsonValue";
    }
  }

  private array(s: SchemaObject, root: JsonSchema): string {
    if (Array.isArray(s["prefixItems"])) {
      return `[${(s["prefixItems"] as JsonSchema[]).map((i) => this.type(i, root)).join(", ")}]`;
    }
    const items = s["items"] as JsonSchema | undefined;
    return `Array<${this.type(items, root)}>`;
  }

  private object(s: SchemaObject, root: JsonSchema): string {
    const properties = (typeof s["properties"] === "object" && s["properties"] !== null ? s["properties"] : {}) as Record<string, JsonSchema>;
    const required = new Set(Array.isArray(s["required"]) ? (s["required"] as unknown[]).map(String) : []);
    const lines: string[] = [];
    for (const [name, property] of Object.entries(properties)) {
      const text = typeof property === "object" ? describeSchema(property) : "";
      if (text !== "") lines.push(indent(doc(text), 2));
      lines.push(`  ${propertyKey(name)}${required.has(name) ? "" : "?"}: ${nest(this.type(property, root))};`);
    }
    const extra = s["additionalProperties"] as JsonSchema | undefined;
    if (extra !== false && (extra !== undefined || lines.length === 0)) {
      lines.push(`  [key: string]: ${extra === undefined || extra === true || lines.length > 0 ? "JsonValue" : nest(this.type(extra, root))};`);
    }
    if (lines.length === 0) return "{}";
    return `{\n${lines.join("\n")}\n}`;
  }

  private ref(ref: string, root: JsonSchema): string {
    const match = /^#\/(\$defs|definitions)\/(.+)$/.exec(ref);
    if (match === null || typeof root !== "object") return "JsonValue";
    const key = decodeURIComponent((match[2] ?? "").replace(/~1/g, "/").replace(/~0/g, "~"));
    const table = root[match[1] ?? ""] as Record<string, JsonSchema> | undefined;
    const target = table?.[key];
    if (target === undefined) return "JsonValue";
    const signature = `${match[1]}/${key}:${JSON.stringify(target)}`;
    const known = this.defs.get(signature);
    if (known !== undefined) return known;
    const name = this.freeName(key);
    this.defs.set(signature, name);
    const text = this.type(target, root);
    const same = this.byText.get(text);
    if (same !== undefined) {
      this.defs.set(signature, same);
      return same;
    }
    this.byText.set(text, name);
    this.pending.push(doc(typeof target === "object" ? describeSchema(target) || `\`${key}\`.` : `\`${key}\`.`), `export type ${name} = ${text};`, "");
    return name;
  }
}

function isNull(schema: JsonSchema): boolean {
  return typeof schema === "object" && schema["type"] === "null";
}

/** The schema's description and its constraints, for a doc comment. */
function describeSchema(s: SchemaObject): string {
  const parts: string[] = [];
  if (typeof s["description"] === "string") parts.push(s["description"]);
  const constraints = ["format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems"]
    .filter((k) => k in s)
    .map((k) => `${k} ${JSON.stringify(s[k])}`);
  if (constraints.length > 0) parts.push(`(${constraints.join(", ")})`);
  return parts.join(" ");
}

function doc(text: string, schema?: JsonSchema): string {
  const extra = schema !== undefined && typeof schema === "object" ? describeSchema(schema) : "";
  const all = [text, extra].filter((t) => t !== "").join("\n\n");
  const lines = comment(all).split("\n");
  return lines.length === 1 ? `/** ${lines[0]} */` : ["/**", ...lines.map((l) => ` * ${l}`.trimEnd()), " */"].join("\n");
}

/** Text made safe inside a block comment. */
function comment(text: string): string {
  return text.replace(/\*\//g, "*\\/").replace(/[\u0000-\u0009\u000b-\u001f\u007f\u2028\u2029]/g, " ");
}

/** A type's text placed one level deeper: its continuation lines indented. */
function nest(text: string): string {
  return text.replace(/\n/g, "\n  ");
}

function indent(text: string, spaces: number): string {
  const pad = " ".repeat(spaces);
  return text
    .split("\n")
    .map((l) => pad + l)
    .join("\n");
}

function literal(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "number" || typeof value === "string") {
    return JSON.stringify(value);
  }
  return "JsonValue";
}

function union(parts: string[]): string {
  const unique = [...new Set(parts)];
  if (unique.length === 0) return "never";
  return unique.length === 1 ? (unique[0] as string) : unique.map((p) => (p.includes("&") ? `(${p})` : p)).join(" | ");
}

/** `jobs.submit` → `JobsSubmit`. */
export function pascal(name: string): string {
  return name
    .split(/[^A-Za-z0-9]+/)
    .filter((w) => w !== "")
    .map((w) => w[0]?.toUpperCase() + w.slice(1))
    .join("");
}

/** `jobs.submit` → `jobsSubmit`, a valid member name. */
export function memberName(name: string): string {
  const p = pascal(name);
  if (p === "") return "call_";
  const camel = (p[0]?.toLowerCase() ?? "") + p.slice(1);
  return /^[0-9]/.test(camel) ? `_${camel}` : camel === "client" || camel === "constructor" ? `${camel}_` : camel;
}

function identifier(name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : `_${name.replace(/[^A-Za-z0-9_$]/g, "_")}`;
}

function propertyKey(name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? name : JSON.stringify(name);
}

function unique(name: string, used: Set<string>): string {
  let candidate = name;
  for (let n = 2; used.has(candidate); n++) candidate = `${name}${n}`;
  used.add(candidate);
  return candidate;
}
