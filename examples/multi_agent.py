"""Two agents share one memory and hear each other's new memories as they are written.

    python examples/multi_agent.py                               # in process, no server
    REDIS_URL=redis://127.0.0.1:6379 python examples/multi_agent.py  # Redis (with the Query Engine)

Each agent is its own ``Memory`` with its own ``agent_id``; both write to the same store and
announce their writes on the same change feed. Each subscribes to the feed (its own changes are
filtered out), the other writes a memory, and the listener reads it by id. The printed latency
runs from the start of the writer's ``remember()`` (the store write included) to the moment the
listener's iterator yields the event.

With ``REDIS_URL`` set, each agent is built by ``Memory.from_env()`` (the Redis backend and a
``RedisChangeFeed`` on the same server and key prefix), as two processes on two machines would
be. Without it, the two agents share one in-process backend and one ``InMemoryChangeFeed``.

The notes live only in this example's namespace and user (:data:`NAMESPACE`, :data:`USER_ID`)
under fixed ids (``note-<agent>``), so a re-run replaces them instead of adding two more, and
each agent listens to this namespace only. A missing extra or a configuration error prints one
line and exits with status 2.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from primitives.errors import BackendUnavailableError, ConfigurationError, OutboxError
from primitives.memory import InMemoryBackend, Memory
from primitives.sync.feed import ChangeSubscription, InMemoryChangeFeed

#: Where this example's memories live.
NAMESPACE = "examples.multi_agent"
USER_ID = "examples.multi_agent.team"

NOTES = {
    "planner": "The release freeze starts on Thursday at 18:00 UTC",
    "researcher": "The flaky integration test fails only when the cache is cold",
}


def make_agents(env: Mapping[str, str]) -> tuple[Memory, Memory]:
    """The planner and the researcher: from the environment when ``REDIS_URL`` is set, else
    two memories over one in-process backend and feed."""
    if env.get("REDIS_URL"):
        return (
            Memory.from_env({**env, "MEMORY_AGENT_ID": "planner"}),
            Memory.from_env({**env, "MEMORY_AGENT_ID": "researcher"}),
        )
    backend, feed = InMemoryBackend(), InMemoryChangeFeed()
    return (
        Memory(backend, feed=feed, agent_id="planner"),
        Memory(backend, feed=feed, agent_id="researcher"),
    )


async def tell(writer: Memory, listener: Memory, hears: ChangeSubscription) -> dict[str, Any]:
    """``writer`` remembers its note; ``listener`` waits for the change and reads the memory."""
    heard = asyncio.create_task(anext(hears))
    started = time.perf_counter()
    written = await writer.remember(NOTES[writer.agent_id], user_id=USER_ID, namespace=NAMESPACE,
                                    id=f"note-{writer.agent_id}")
    async with asyncio.timeout(10):
        event = await heard
    latency_ms = (time.perf_counter() - started) * 1000
    seen = await listener.get(event.id, namespace=event.namespace)
    return {
        "writer": writer.agent_id,
        "listener": listener.agent_id,
        "id": written.id,
        "event_id": event.id,
        "origin": event.origin,
        "op": event.op,
        "text": seen.text if seen else None,
        "latency_ms": latency_ms,
    }


async def run(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each agent tells the other one thing; returns what each listener heard and read."""
    planner, researcher = make_agents(env)
    try:
        async with (
            planner.subscribe(namespace=NAMESPACE) as planner_hears,
            researcher.subscribe(namespace=NAMESPACE) as researcher_hears,
        ):
            return [
                await tell(planner, researcher, researcher_hears),
                await tell(researcher, planner, planner_hears),
            ]
    finally:
        await planner.aclose()
        await researcher.aclose()


async def main() -> None:
    where = "Redis at " + os.environ["REDIS_URL"] if os.environ.get("REDIS_URL") else "one process"
    print(f"two agents sharing memory in {where}")
    for seen in await run(os.environ):
        print(
            f"  {seen['listener']} heard {seen['writer']}'s new memory after "
            f"{seen['latency_ms']:.2f} ms (write included): {seen['text']!r}"
        )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ImportError, ConfigurationError, BackendUnavailableError, OutboxError) as exc:
        # a missing extra, a configuration the store refuses, Redis down with no fallback, an outbox of another store
        print(f"multi_agent.py: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
