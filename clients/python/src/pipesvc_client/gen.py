"""Typed Python from a running service: turns a service's DESCRIBE (its
methods' JSON Schemas) into ``TypedDict``s and a typed client class.

    python -m pipesvc_client.gen --name myservice --class MyClient -o my_api.py
    python -m pipesvc_client.gen --from-json description.json -o my_api.py

The generated module needs only this package. Each method becomes an async
method of the class, taking its params as the generated type and returning
the result as the generated type (checked by a type checker, not at run
time: the server validates params, and results are trusted to follow the
schema the server published).

Streaming methods (``"streams"`` in the description, revision 2.2) become
methods returning a :class:`Stream` of their server items, and each topic a
``subscribe_<topic>`` method returning a :class:`Subscription` of its
events.

Schemas map as follows: ``null``, ``boolean``, ``integer``, ``number``,
``string`` to ``None``, ``bool``, ``int``, ``float``, ``str``; a list of
types to a union; ``array`` to ``list[...]``; ``object`` with
``properties`` to a ``TypedDict`` named after its ``title`` (keys not in
``required`` may be absent); other objects to ``dict[str, ...]``; ``enum``
and ``const`` to ``Literal``; ``oneOf``/``anyOf`` to unions; ``$ref`` to
the type of the definition it names (``$defs``/``definitions``); anything
else (``{}``, a schema of any JSON value) to ``Any``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import keyword
import re
import sys
from dataclasses import dataclass, field
from typing import Any

JsonSchema = Any

_SCALARS = {"null": "None", "boolean": "bool", "integer": "int", "number": "float", "string": "str"}


def _pascal(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Value"
    return name if not name[0].isdigit() else "T" + name


def _snake(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "call"
    if name[0].isdigit() or keyword.iskeyword(name):
        name = "m_" + name
    return name


def _doc(text: str | None, indent: str) -> list[str]:
    if not text:
        return []
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    lines = body.splitlines()
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}'] + [f"{indent}{ln}".rstrip() for ln in lines[1:]] + [f'{indent}"""']


#: Keys that name or describe a schema without changing what it admits.
_NAMES = ("$schema", "$defs", "definitions", "title", "description")


@dataclass
class Generator:
    """Collects the type definitions while schemas are translated."""

    definitions: dict[str, list[str]] = field(default_factory=dict)
    uses_literal: bool = False
    uses_any: bool = False
    _defs: dict[str, JsonSchema] = field(default_factory=dict)
    #: Each object schema already defined (by its content), so that a type
    #: used by several methods is defined once.
    _by_schema: dict[str, str] = field(default_factory=dict)
    _ref_names: dict[str, str] = field(default_factory=dict)
    #: Each union already translated (by its content): its type.
    _by_union: dict[str, str] = field(default_factory=dict)

    def _unique(self, wanted: str) -> str:
        name, n = wanted, 2
        while name in self.definitions:
            name, n = f"{wanted}{n}", n + 1
        return name

    def type_of(self, schema: JsonSchema, hint: str) -> str:
        """The Python type expression of ``schema`` (defining what it needs)."""
        if schema is True or not isinstance(schema, dict):
            self.uses_any = True
            return "Any"
        if "$ref" in schema:
            return self._ref(schema["$ref"], hint)
        if "const" in schema:
            self.uses_literal = True
            return f"Literal[{schema['const']!r}]"
        if "enum" in schema:
            values = [v for v in schema["enum"] if v is None or isinstance(v, (str, int, bool))]
            if len(values) == len(schema["enum"]):
                self.uses_literal = True
                literals = ", ".join(repr(v) for v in values)
                return f"Literal[{literals}]"
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema:
                # A union met again (a stream's item typed as a type that
                # another method's schema holds in its $defs) is the same
                # type: the content, without its names, is the key.
                key = json.dumps(
                    {k: v for k, v in schema.items() if k not in _NAMES}, sort_keys=True
                )
                if key in self._by_union:
                    return self._by_union[key]
                title = schema.get("title")
                named = isinstance(title, str) and bool(title)
                if isinstance(title, str) and title:
                    hint = _pascal(title)
                options = [
                    self.type_of(s, self._variant_hint(hint, s, i))
                    for i, s in enumerate(schema[combinator])
                ]
                typ = self._union(options)
                if named and " | " in typ:
                    # A named union gets its name (`State = ...`).
                    alias = self._unique(hint)
                    self.definitions[alias] = [f"{alias} = {typ}"]
                    typ = alias
                self._by_union[key] = typ
                return typ
        kinds = schema.get("type")
        if isinstance(kinds, list):
            return self._union([self._typed(dict(schema, type=k), hint) for k in kinds])
        if isinstance(kinds, str):
            return self._typed(schema, hint)
        if "properties" in schema:
            return self._typed(dict(schema, type="object"), hint)
        self.uses_any = True
        return "Any"

    @staticmethod
    def _variant_hint(hint: str, schema: JsonSchema, index: int) -> str:
        """``StateRunning`` for the variant ``{"Running": ...}`` of ``State``
        (how serde tags enum variants), else ``State1``."""
        properties = schema.get("properties") if isinstance(schema, dict) else None
        if isinstance(properties, dict) and len(properties) == 1:
            return hint + _pascal(next(iter(properties)))
        return f"{hint}{index}"

    @staticmethod
    def _union(options: list[str]) -> str:
        unique = list(dict.fromkeys(options))
        if "Any" in unique:
            return "Any"
        return " | ".join(unique)

    def _typed(self, schema: dict[str, Any], hint: str) -> str:
        kind = schema["type"]
        if kind in _SCALARS:
            return _SCALARS[kind]
        if kind == "array":
            items = schema.get("items", {})
            if isinstance(items, list) or "prefixItems" in schema:
                self.uses_any = True
                return "list[Any]"
            return f"list[{self.type_of(items, hint + 'Item')}]"
        if kind == "object":
            if schema.get("properties"):
                return self._typed_dict(schema, hint)
            extra = schema.get("additionalProperties", True)
            return f"dict[str, {self.type_of(extra, hint + 'Value')}]"
        self.uses_any = True
        return "Any"

    def _typed_dict(self, schema: dict[str, Any], hint: str) -> str:
        title = schema.get("title")
        wanted = _pascal(title) if isinstance(title, str) and title else hint
        unrelated = ("$schema", "$defs", "definitions", "title")
        content = json.dumps(
            [wanted, {k: v for k, v in schema.items() if k not in unrelated}], sort_keys=True
        )
        if content in self._by_schema:
            return self._by_schema[content]
        name = self._unique(wanted)
        self._by_schema[content] = name
        self.definitions[name] = []  # reserved before the fields, for recursion
        required = set(schema.get("required", []))
        fields = [
            (key, self.type_of(sub, name + _pascal(key)), key in required, sub)
            for key, sub in schema["properties"].items()
        ]
        self.definitions[name] = self._typed_dict_lines(name, schema.get("description"), fields)
        return name

    @staticmethod
    def _typed_dict_lines(
        name: str, doc: str | None, fields: list[tuple[str, str, bool, Any]]
    ) -> list[str]:
        identifiers = all(k.isidentifier() and not keyword.iskeyword(k) for k, *_ in fields)
        if not identifiers:
            entries = ", ".join(f"{k!r}: {t}" for k, t, *_ in fields)
            total = all(req for _, _, req, _ in fields)
            return [f'{name} = TypedDict("{name}", {{{entries}}}, total={total})']
        required = [(k, t, s) for k, t, req, s in fields if req]
        optional = [(k, t, s) for k, t, req, s in fields if not req]
        lines: list[str] = []

        def body(items: list[tuple[str, str, Any]]) -> list[str]:
            out: list[str] = []
            for key, typ, sub in items:
                out.append(f"    {key}: {typ}")
                desc = sub.get("description") if isinstance(sub, dict) else None
                out += _doc(desc, "    ")
            return out

        if required and optional:
            lines += [f"class _{name}Required(TypedDict):"]
            lines += ['    """The keys of ``' + name + '`` that are always present."""', ""]
            lines += body(required) + ["", ""]
            lines += [f"class {name}(_{name}Required, total=False):"]
            lines += _doc(doc, "    ") or [f'    """``{name}``."""']
            lines += [""] + body(optional)
            return lines
        partial = "" if not optional else ", total=False"
        lines += [f"class {name}(TypedDict{partial}):"]
        lines += _doc(doc, "    ") or [f'    """``{name}``."""']
        lines += [""] + body(required or optional)
        return lines

    def _ref(self, ref: str, hint: str) -> str:
        if ref in self._ref_names:
            return self._ref_names[ref]
        match = re.fullmatch(r"#/(\$defs|definitions)/(.+)", ref)
        if not match or match.group(2) not in self._defs:
            self.uses_any = True
            return "Any"
        target = self._defs[match.group(2)]
        self._ref_names[ref] = f'"{_pascal(match.group(2))}"'  # while it is being defined
        typ = self.type_of(dict(target, title=target.get("title", match.group(2))), _pascal(match.group(2)))
        if typ != _pascal(match.group(2)) and not typ.startswith(("dict", "list")) and typ not in self.definitions:
            alias = self._unique(_pascal(match.group(2)))
            self.definitions[alias] = [f"{alias} = {typ}"]
            for key, union in self._by_union.items():
                if union == typ:
                    self._by_union[key] = alias
            typ = alias
        self._ref_names[ref] = typ
        return typ

    def use_defs(self, schema: JsonSchema) -> None:
        """Makes the ``$defs`` of ``schema`` resolvable."""
        if isinstance(schema, dict):
            for key in ("$defs", "definitions"):
                self._defs.update(schema.get(key, {}))


def generate(description: dict[str, Any], class_name: str | None = None) -> str:
    """The Python module for ``description`` (a DESCRIBE answer)."""
    service = str(description.get("service", "service"))
    class_name = class_name or _pascal(service) + "Client"
    gen = Generator()
    methods = []
    for method in description.get("methods", []):
        name = str(method["name"])
        base = _pascal(name)
        for key in ("request", "response", "server_item", "client_item"):
            gen.use_defs(method.get(key))
        params = gen.type_of(method.get("request", True), base + "Params")
        result = gen.type_of(method.get("response", True), base + "Result")
        streams = method.get("streams")
        item = None
        if streams in ("server", "both", "client"):
            server_item = method.get("server_item", {"type": "null"})
            item = "None" if streams == "client" else gen.type_of(server_item, base + "Item")
        methods.append((name, params, result, method.get("doc"), item))
    topics = []
    for topic in description.get("topics", []):
        gen.use_defs(topic.get("event"))
        event = gen.type_of(topic.get("event", True), _pascal(str(topic["name"])) + "Event")
        topics.append((str(topic["name"]), event, topic.get("doc")))

    imports = ["TypedDict", "cast"]
    if gen.uses_any or not methods:
        imports.insert(0, "Any")
    if gen.uses_literal:
        imports.insert(0, "Literal")
    out = [
        f'"""Typed client of the ``{service}`` service, generated by pipesvc_client.gen',
        "from its description (DESCRIBE). Do not edit: generate it again.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any, " + ", ".join(i for i in imports if i != "Any"),
        "",
        "from pipesvc_client import DEFAULT, Client" + (", Stream" if any(m[4] for m in methods) else "") + (", Subscription" if topics else ""),
        "from pipesvc_client.client import TimeoutArg",
        "",
        f"SERVICE = {service!r}",
        "",
    ]
    for lines in gen.definitions.values():
        if lines:
            out += ["", *lines, ""]
    out += ["", f"class {class_name}:"]
    out += [f'    """The methods of ``{service}``, typed; wraps a connected :class:`Client`."""', ""]
    out += ["    def __init__(self, client: Client) -> None:"]
    out += ['        """Uses ``client`` (already connected) for every call."""']
    out += ["        self.client = client", ""]
    for name, params, result, doc, item in methods:
        optional = params == "None" or params == "Any" or params.endswith("| None")
        default = " = None" if optional else ""
        if item is not None:
            out += [
                f"    async def {_snake(name)}(",
                f"        self, params: {params}{default}, *, timeout: float | None = None",
                f"    ) -> Stream[{item}]:",
            ]
            text = f"``{name}`` (a stream: iterate it for its items; ``result()`` is {result})"
            out += _doc(f"{text}: {doc}" if doc else text, "        ")
            call = f"await self.client.stream({name!r}, params, timeout=timeout)"
            out += [f"        return cast({'Stream[' + item + ']'!r}, {call})", ""]
            continue
        out += [
            f"    async def {_snake(name)}(",
            f"        self, params: {params}{default}, *, timeout: TimeoutArg = DEFAULT",
            f"    ) -> {result}:",
        ]
        out += _doc(f"``{name}``: {doc}" if doc else f"``{name}``.", "        ")
        out += [f"        return cast({result!r}, await self.client.call({name!r}, params, timeout=timeout))", ""]
    for name, event, doc in topics:
        out += [f"    async def subscribe_{_snake(name)}(self) -> Subscription[{event}]:"]
        text = f"Subscribes to the topic ``{name}``"
        out += _doc(f"{text}: {doc}" if doc else text + ".", "        ")
        call = f"await self.client.subscribe({name!r})"
        out += [f"        return cast({'Subscription[' + event + ']'!r}, {call})", ""]
    text = "\n".join(out).rstrip() + "\n"
    if "Any" not in text.split("from pipesvc_client", 1)[1]:
        text = text.replace("from typing import Any, ", "from typing import ")
    return text


async def _describe(name: str) -> dict[str, Any]:
    from .client import Client

    async with await Client.connect(name) as client:
        return await client.describe()


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m pipesvc_client.gen --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipesvc_client.gen",
        description="Generate typed Python from a pipesvc service's description.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--name", help="the service's endpoint (bare name, socket path or pipe name)")
    source.add_argument("--from-json", metavar="FILE", help="a saved description (JSON)")
    parser.add_argument("--class", dest="class_name", help="the client class's name")
    parser.add_argument("-o", "--output", help="write here (default: stdout)")
    parser.add_argument("--check", metavar="FILE", help="fail unless FILE holds what would be generated")
    args = parser.parse_args(argv)
    if args.name:
        description = asyncio.run(_describe(args.name))
    else:
        with open(args.from_json, encoding="utf-8") as f:
            description = json.load(f)
    code = generate(description, args.class_name)
    if args.check:
        with open(args.check, encoding="utf-8") as f:
            if f.read() != code:
                print(f"{args.check} is not what the generator makes now; generate it again", file=sys.stderr)
                return 1
        return 0
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(code)
    else:
        sys.stdout.write(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
