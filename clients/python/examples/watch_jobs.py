"""Submits two jobs to the job runner example (`cargo run --example
job_service`), follows their progress, and cancels the long one as soon as
the short one has finished. Usage: python watch_jobs.py [SERVICE-NAME]

The job runner does not push progress yet (issue 21 item 7), so this
follows it by asking each job's status every 100 ms."""

import asyncio
import sys

from jobs_api import Job, JobsClient
from pipesvc_client import Client


def state_of(job: Job) -> str:
    """``running 3/50``, ``finished`` or ``cancelled``."""
    state = job["state"]
    if isinstance(state, str):
        return state.lower()
    return f"running {state['Running']['done']}/{job['submit']['steps']}"


async def main(name: str) -> None:
    async with await Client.connect(name, request_timeout=5) as client:
        jobs = JobsClient(client)
        build = await jobs.submit({"name": "build", "steps": 5})
        deploy = await jobs.submit({"name": "deploy", "steps": 50})
        seen: dict[int, str] = {}
        while True:
            for job in await asyncio.gather(jobs.status(build), jobs.status(deploy)):
                now = state_of(job)
                if seen.get(job["id"]) != now:
                    print(f"{job['submit']['name']}: {now}", flush=True)
                    seen[job["id"]] = now
            if seen[build] == "finished" and seen[deploy].startswith("running"):
                cancelled = await jobs.cancel(deploy)
                print(f"cancelled deploy at {seen[deploy]}: {state_of(cancelled)}")
            if not seen[deploy].startswith("running"):
                return
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "jobs"))
