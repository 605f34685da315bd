"""Submits two jobs to the job runner example (`cargo run --example
job_service`), follows the long one's progress stream, and cancels it as
soon as the `finished` topic announces that the short one has finished.
Usage: python watch_jobs.py [SERVICE-NAME]"""

import asyncio
import sys

from jobs_api import Job, JobsClient, State
from pipesvc_client import Client, Subscription


def text(state: State, steps: int) -> str:
    """``running 3/50``, ``finished`` or ``cancelled``."""
    if isinstance(state, str):
        return state.lower()
    return f"running {state['Running']['done']}/{steps}"


async def finished(topic: Subscription[Job], job_id: int) -> None:
    """Returns once the topic announces job ``job_id``'s end."""
    async for job in topic:
        if isinstance(job, dict):  # not Lagged or Resubscribed
            print(f"{job['submit']['name']}: {text(job['state'], 0)}", flush=True)
            if job["id"] == job_id:
                return


async def main(name: str) -> None:
    async with await Client.connect(name, request_timeout=5) as client:
        jobs = JobsClient(client)
        async with await jobs.subscribe_finished() as topic:
            build = await jobs.submit({"name": "build", "steps": 5})
            deploy = await jobs.submit({"name": "deploy", "steps": 50})
            build_done = asyncio.create_task(finished(topic, build))
            cancelled = False
            async with await jobs.progress(deploy) as progress:
                async for state in progress:  # one item per change
                    now = text(state, 50)
                    print(f"deploy: {now}", flush=True)
                    if build_done.done() and not cancelled and now.startswith("running"):
                        job, cancelled = await jobs.cancel(deploy), True
                        print(f"cancelled deploy at {now}: {text(job['state'], 50)}")
            await build_done


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "jobs"))
