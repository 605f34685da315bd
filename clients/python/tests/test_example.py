"""examples/watch_jobs.py against the job runner example (built with
cargo, or ``PIPESVC_JOBS_BIN``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import GUARD, REPO

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def job_service_binary() -> str:
    """``$PIPESVC_JOBS_BIN``, else ``cargo build --example job_service``."""
    given = os.environ.get("PIPESVC_JOBS_BIN")
    if given:
        return given
    subprocess.run(["cargo", "build", "--quiet", "--example", "job_service"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "examples" / "job_service")


async def test_the_example_follows_two_jobs_and_cancels_one(private_dir: Path) -> None:
    """The short job finishes, the long one is cancelled while running."""
    socket = str(private_dir / "jobs.sock")
    service = await asyncio.create_subprocess_exec(
        job_service_binary(), socket, stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        assert service.stdout is not None
        assert b"listening" in await asyncio.wait_for(service.stdout.readline(), GUARD)
        example = await asyncio.create_subprocess_exec(
            sys.executable, "watch_jobs.py", socket, cwd=EXAMPLES,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(example.communicate(), GUARD)
        assert example.returncode == 0, err.decode()
    finally:
        service.send_signal(signal.SIGINT)
        await asyncio.wait_for(service.wait(), GUARD)
    lines = out.decode().splitlines()
    assert "build: finished" in lines and lines[-1] == "deploy: cancelled"
    cancelled = [line for line in lines if line.startswith("cancelled deploy at running")]
    assert len(cancelled) == 1 and cancelled[0].endswith(": cancelled")
