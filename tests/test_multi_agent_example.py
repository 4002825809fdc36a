"""examples/multi_agent.py: each agent hears the other's new memory, in process and on Redis."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from examples import multi_agent

ROOT = Path(__file__).resolve().parents[1]


def check(heard: list[dict]) -> None:
    assert [(h["writer"], h["listener"]) for h in heard] == [("planner", "researcher"), ("researcher", "planner")]
    for h in heard:
        assert h["event_id"] == h["id"] and h["origin"] == h["writer"] and h["op"] == "upsert"
        assert h["text"] == multi_agent.NOTES[h["writer"]]
        assert h["latency_ms"] > 0


async def test_in_process() -> None:
    check(await multi_agent.run({}))


@pytest.mark.integration
async def test_on_redis(redis_server, tmp_path) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    env = {"REDIS_URL": redis_server.url, "MEMORY_REDIS_PREFIX": prefix, "MEMORY_RESILIENT": "0"}
    heard = await multi_agent.run(env)
    check(heard)
    from primitives.memory import Memory

    async with Memory.from_env(env) as memory:  # both notes are in Redis, and both changes in its stream
        assert await memory.count(namespace=multi_agent.NAMESPACE) == 2 and await memory.count() == 0
        assert [e.origin for e in await memory.feed.read("0")] == ["planner", "researcher"]
        await memory.backend.drop()
        await memory.feed.client.delete(memory.feed.key)


def test_script_runs_in_process() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "multi_agent.py")], capture_output=True, text=True, env=env,
        timeout=120, check=True,
    ).stdout
    assert "researcher heard planner's new memory after" in out
    assert "planner heard researcher's new memory after" in out
