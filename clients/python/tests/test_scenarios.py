"""clients/SCENARIOS.md stays true: every Rust and Python test it names
exists."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

SCENARIOS = REPO / "clients" / "SCENARIOS.md"
TESTS = Path(__file__).resolve().parent


def rows() -> list[list[str]]:
    """The table rows with a scenario id, split into cells."""
    found = []
    for line in SCENARIOS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"[A-Z]+-\d+", cells[0]):
            found.append(cells)
    return found


def names(cell: str) -> list[str]:
    """The ``file::function`` references of one cell."""
    return re.findall(r"[\w/.]+::[\w:]+", cell)


def test_ids_are_unique() -> None:
    """Scenario ids never repeat."""
    ids = [cells[0] for cells in rows()]
    assert len(ids) == len(set(ids)) > 40


def test_every_rust_test_named_exists() -> None:
    """Rust column: ``file::fn`` is ``tests/file.rs``; ``src/...rs::tests::fn`` a unit test."""
    missing = []
    for cells in rows():
        for name in names(cells[2]):
            path, *_, function = name.split("::")
            file = REPO / path if path.startswith("src/") else REPO / "tests" / f"{path}.rs"
            if not file.is_file() or not re.search(rf"\bfn {function}\b", file.read_text()):
                missing.append(f"{cells[0]}: {name}")
    assert missing == []


def test_every_python_test_named_exists() -> None:
    """Python column: ``test_file.py::function`` in this directory."""
    missing = []
    for cells in rows():
        for name in names(cells[3]):
            path, function = name.split("::")
            file = TESTS / path
            if not file.is_file() or not re.search(rf"\bdef {function}\b", file.read_text()):
                missing.append(f"{cells[0]}: {name}")
    assert missing == []
