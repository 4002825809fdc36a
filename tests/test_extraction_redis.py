"""Extraction on a real Redis: a process killed mid-extraction loses nothing and extracts nothing
twice when run again; a damaged extraction mark costs only a re-read (facts deduplicate)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from primitives.evaluation.bench_agent import StandInLLM
from primitives.memory import Memory, MemoryType, Message
from primitives.memory.redis_backend import RedisBackend

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
N = 200  # five batches of 40


def fresh_prefix() -> str:
    return f"ex{uuid.uuid4().hex[:8]}:"


def lines() -> list[str]:
    return [f"Statement {i}: the user owns item{i} of kind k{i % 7}" for i in range(N)]


async def fill(memory: Memory) -> None:
    await memory.append_messages("s1", [Message("user", t, T0 + timedelta(seconds=i)) for i, t in enumerate(lines())])


async def facts_of(memory: Memory) -> list[str]:
    hits = await memory.search("statement user owns item", user_id="u1", memory_type=MemoryType.SEMANTIC,
                               limit=1000, mode="keyword")
    return sorted(h.record.text for h in hits.hits)


async def test_process_killed_mid_extraction_then_rerun_extracts_each_message_once(redis_server, tmp_path) -> None:
    prefix = fresh_prefix()
    memory = Memory(RedisBackend(redis_server.url, prefix=prefix, working_memory_size=1000))
    await fill(memory)
    script = tmp_path / "extract.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from primitives.evaluation.bench_agent import StandInLLM
        from primitives.memory import Memory
        from primitives.memory.redis_backend import RedisBackend

        class Slow(StandInLLM):
            async def complete(self, messages, **kw):
                await asyncio.sleep(0.25)
                return await super().complete(messages, **kw)

        async def main():
            memory = Memory(RedisBackend({redis_server.url!r}, prefix={prefix!r}, working_memory_size=1000), llm=Slow())
            print("started", flush=True)
            await memory.extract("s1", user_id="u1")
            print("finished", flush=True)

        asyncio.run(main())
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill once at least one batch is written, before the last
        done = len(await facts_of(memory))
        if done >= 40:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    partial = await facts_of(memory)
    assert 40 <= len(partial) < N, len(partial)
    memory.llm = StandInLLM()
    report = await memory.extract("s1", user_id="u1")
    assert report.messages <= N - 40  # the killed run's marked batches are not sent again
    final = await facts_of(memory)
    assert final == sorted(lines()) and len(set(final)) == N
    again = await memory.extract("s1", user_id="u1")
    assert again.messages == 0 and again.llm_calls == 0
    await memory.aclose()


async def test_damaged_mark_costs_a_reread_never_a_duplicate(redis_server) -> None:
    prefix = fresh_prefix()
    memory = Memory(RedisBackend(redis_server.url, prefix=prefix, working_memory_size=1000), llm=StandInLLM())
    await fill(memory)
    await memory.extract("s1", user_id="u1")
    from primitives.memory.extraction import _mark_id

    mark = await memory.get(_mark_id("u1", "s1", "discrete"))
    import dataclasses

    # an unknown message id falls back to the mark's time: nothing to do
    await memory.add([dataclasses.replace(mark, metadata={**mark.metadata, "last_message_id": "nope"})])
    assert (await memory.extract("s1", user_id="u1")).messages == 0
    # nothing usable: every message is read again, and every fact is a duplicate
    await memory.add([dataclasses.replace(mark, metadata={**mark.metadata, "last_message_id": 17, "last_created_at": "yesterday"})])
    report = await memory.extract("s1", user_id="u1")
    assert report.messages == N
    assert all(w.status == "duplicate" for w in report.writes)
    assert await facts_of(memory) == sorted(lines())
    await memory.aclose()
