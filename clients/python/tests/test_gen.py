"""The code generator: typed Python from a service's DESCRIBE, checked
against the live service and compiled (mypy checks the checked-in output)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import Server
from pipesvc_client import Client, ErrorCode, RemoteError
from pipesvc_client.gen import generate, main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from serve_api import ServeClient, Sleep  # noqa: E402


def load(code: str, name: str) -> ModuleType:
    """Executes generated code as a module."""
    module = ModuleType(name)
    exec(compile(code, name, "exec"), module.__dict__)
    return module


async def test_the_checked_in_description_is_the_live_services(server: Server) -> None:
    """``examples/serve_description.json`` (the generator's input) still
    describes ``pipesvc serve``'s methods; regenerate it when this fails."""
    saved = json.loads((EXAMPLES / "serve_description.json").read_text())
    async with await Client.connect(server.socket) as client:
        live = await client.describe()
    assert live["methods"] == saved["methods"]
    assert generate(live, "ServeClient") == (EXAMPLES / "serve_api.py").read_text()


async def test_the_generated_client_calls_the_service(server: Server) -> None:
    """Typed calls through the generated class."""
    async with await Client.connect(server.socket) as client:
        typed = ServeClient(client)
        params: Sleep = {"ms": 1}
        await typed.sleep(params)
        assert await typed.echo({"any": [1]}) == {"any": [1]}
        me = await typed.whoami()
        assert me.get("pid") is not None and me.get("uid") is not None
        with pytest.raises(RemoteError) as bad:
            await typed.sleep({"ms": -1})
        assert bad.value.code == ErrorCode.BAD_REQUEST


def test_every_schema_shape_maps_to_a_type() -> None:
    """References, enums, unions, nullable and optional fields, keys that
    are not identifiers, recursion, and schemas of anything."""
    state: dict[str, Any] = {
        "oneOf": [
            {"type": "object", "properties": {"Running": {"type": "object", "properties": {"done": {"type": "integer"}}, "required": ["done"]}}, "required": ["Running"]},
            {"type": "string", "enum": ["Finished", "Cancelled"]},
        ]
    }
    description = {
        "service": "jobs-like",
        "methods": [
            {
                "name": "tree.get",
                "doc": "A recursive \"\"\"tree\"\"\"",
                "request": {"$ref": "#/$defs/Node", "$defs": {"Node": {"title": "Node", "type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}, "label": {"type": ["string", "null"]}}, "required": ["children"]}}},
                "response": {"type": "object", "properties": {"content-type": {"const": "x"}, "n": {"type": "number"}}, "required": ["n"]},
            },
            {"name": "state", "request": {"type": "null"}, "response": state},
            {"name": "map", "request": True, "response": {"type": "object", "additionalProperties": {"type": "boolean"}}},
            {"name": "class", "request": {}, "response": {"type": "array", "items": [{"type": "integer"}]}},
        ],
    }
    code = generate(description)
    module = load(code, "jobs_like_api")
    assert {"Node", "JobsLikeClient", "StateResultRunning"} <= set(vars(module))
    assert "def tree_get(" in code and "def m_class(" in code
    assert "'content-type': Literal['x']" in code
    assert "Literal['Finished', 'Cancelled']" in code
    assert "dict[str, bool]" in code and "label: str | None" in code


def test_the_command_writes_and_checks(private_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m pipesvc_client.gen``: --from-json, -o, --check."""
    source = str(EXAMPLES / "serve_description.json")
    out = private_dir / "api.py"
    assert main(["--from-json", source, "--class", "ServeClient", "-o", str(out)]) == 0
    assert out.read_text() == (EXAMPLES / "serve_api.py").read_text()
    assert main(["--from-json", source, "--class", "ServeClient", "--check", str(out)]) == 0
    out.write_text(out.read_text() + "# edited\n")
    assert main(["--from-json", source, "--class", "ServeClient", "--check", str(out)]) == 1
    assert "generate it again" in capsys.readouterr().err


async def test_streaming_methods_and_topics_get_typed_streams(server: Server) -> None:
    """``pipesvc serve``'s streaming methods and topic, generated
    (``examples/serve_api.py``): ``count`` returns a typed stream,
    ``lines`` a stream to send to, ``ticks`` a typed subscription."""
    async with await Client.connect(server.socket) as client:
        typed = ServeClient(client)
        count = await typed.count({"n": 2})
        assert [n async for n in count] == [1, 2]
        lines = await typed.lines()
        for line in ("a", "b", "c"):
            await lines.send(line)
        await lines.end()
        assert await lines.result() == 3
        async with await typed.subscribe_ticks() as ticks:
            async for tick in ticks:
                assert isinstance(tick, int) and tick % 1000 == 0
                break


def test_a_stream_item_of_a_type_held_in_defs_is_that_type() -> None:
    """The job runner's ``progress`` items are its ``State`` (a union, top
    level in the item's schema, in ``$defs`` in ``status``'s): one type,
    whichever comes first."""
    variants = [
        {"enum": ["Finished"], "type": "string"},
        {"type": "object", "properties": {"Running": {"type": "integer"}}, "required": ["Running"]},
    ]
    job = {
        "title": "Job", "type": "object", "properties": {"state": {"$ref": "#/$defs/State"}},
        "required": ["state"], "$defs": {"State": {"oneOf": variants}},
    }
    status = {"name": "status", "request": {"type": "integer"}, "response": job}
    progress = {
        "name": "progress", "streams": "server", "request": {"type": "integer"},
        "response": {"title": "State", "oneOf": variants},
        "server_item": {"title": "State", "oneOf": variants},
    }
    for methods in ([status, progress], [progress, status]):
        code = generate({"service": "jobs", "methods": methods}, "JobsClient")
        assert "-> Stream[State]:" in code and "Running: int" in code, code
        assert code.count("(TypedDict)") == 2, code  # Job and StateRunning
        load(code, "jobs_state_api")
