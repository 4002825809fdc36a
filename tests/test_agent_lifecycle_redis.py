"""Fact lifecycle, forgetting, summaries and the prompt context on a real Redis give what the
in-process oracle gives for the same operations."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from primitives.memory import ForgetPolicy, InMemoryBackend, Memory, MemoryRecord, Message
from primitives.memory.redis_backend import RedisBackend
from tests.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.integration
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
async def pair(redis_server):
    redis = Memory(RedisBackend(redis_server.url, prefix=f"lc{uuid.uuid4().hex[:8]}:", working_memory_size=50))
    oracle = Memory(InMemoryBackend(working_memory_size=50))
    yield oracle, redis
    await redis.aclose()
    await oracle.aclose()


async def both(pair, fn):
    return [await fn(m) for m in pair]


async def test_supersession_and_as_of_agree(pair) -> None:
    async def run(m: Memory):
        await m.remember_fact("The user lives in Paris", user_id="u\x00|1", subject="residence",
                              valid_from=T0)
        await m.remember_fact("The user lives in Berlin", user_id="u\x00|1", subject="Residence ",
                              valid_from=T0 + timedelta(days=100))
        await m.remember_fact("the user lives in berlin.", user_id="u\x00|1")  # exact duplicate
        now = [h.record.text for h in (await m.search("where does the user live", user_id="u\x00|1")).hits]
        then = [h.record.text for h in (await m.search("where does the user live", user_id="u\x00|1",
                                                           as_of=T0 + timedelta(days=50))).hits]
        every = sorted(h.record.text for h in (await m.search("lives", user_id="u\x00|1", include_superseded=True)).hits)
        return now, then, every

    oracle, redis = await both(pair, run)
    assert oracle == redis == (["The user lives in Berlin"], ["The user lives in Paris"],
                               ["The user lives in Berlin", "The user lives in Paris"])


async def test_forgetting_selects_the_same_records(pair) -> None:
    async def run(m: Memory):
        for i in range(12):
            await m.add([MemoryRecord(text=f"memory {i}", id=f"m{i}", user_id=f"u{i % 2}", ttl=math.inf,
                                      metadata={"importance": (i % 5) / 5})])
        dry = await m.forget(ForgetPolicy(max_per_user=3))
        done = await m.forget(ForgetPolicy(max_per_user=3), dry_run=False)
        left = sorted(h.record.id for h in (await m.search("memory", limit=50)).hits)
        return sorted(i for i, _, _ in dry.selected), done.deleted, left

    oracle, redis = await both(pair, run)
    assert oracle == redis
    assert len(oracle[2]) == 6


async def test_working_memory_summary_agrees(pair) -> None:
    async def run(m: Memory):
        m.llm = ScriptedLLM([{"summary": "They talked a lot."}])
        await m.append_messages("s1", [Message("user", f"turn {i}: " + "word " * 50, T0 + timedelta(minutes=i))
                                       for i in range(10)])
        report = await m.summarize_session("s1", threshold_tokens=300, keep_last=3, user_id="u1")
        msgs = await m.get_messages("s1")
        return report.summarized, [(x.role, x.content, x.created_at) for x in msgs]

    oracle, redis = await both(pair, run)
    assert oracle == redis and oracle[0] == 7 and len(oracle[1]) == 4


async def test_context_agrees(pair) -> None:
    async def run(m: Memory):
        await m.append_messages("s1", [Message("user", "plan the Rome trip", T0)])
        await m.remember("Rome trip booked for May", user_id="u1", created_at=T0)
        await m.remember_fact("The user prefers trains to Rome", user_id="u1", kind="preference")
        ctx = await m.context("Rome trip", user_id="u1", session_id="s1", budget_tokens=200)
        return ctx.text, ctx.tokens

    oracle, redis = await both(pair, run)
    assert oracle == redis and "Rome trip booked for May" in oracle[0]
