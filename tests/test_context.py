"""The prompt context: token budget (property-tested), what is included and why, the cache and
its invalidation; the tokenizer; ranking signals; what RememberPrimitive keeps long-term."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives import WorkflowContext
from primitives.errors import InvalidInputError, InvalidInputTypeError, UnscopedAccessError
from primitives.memory import (
    AgentMemory,
    InMemoryBackend,
    Memory,
    MemoryPrimitive,
    MemoryRecord,
    MemoryType,
    Message,
    RankingSignals,
    RememberPrimitive,
)
from primitives.memory.context import ContextCache
from primitives.memory.ranking import rerank
from primitives.memory.record import SearchHit
from primitives.memory.tokens import TiktokenCounter, check_token_counter, default_token_counter

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


async def seeded() -> tuple[Memory, AgentMemory]:
    memory = Memory(InMemoryBackend())
    agent = AgentMemory(memory, agent_id="helper", session_id="s1", user_id="alice")
    await memory.append_messages("s1", [Message("user", "Can you plan my trip to Rome?"),
                                        Message("assistant", "Sure, when do you travel?")])
    await agent.add_step("search flights", "found 3 flights to Rome", reasoning="user asked")
    await agent.save_episode("Plan a trip to Lisbon", "Booked flights and hotel", True, 120, importance=0.9)
    await agent.save_episode("Plan a trip to Oslo", "Hotel was full", False, 60)
    await agent.save_skill("plan_trip", "Plan a city trip", ["search flights", "book hotel", "send itinerary"])
    await agent.record_skill_execution("plan_trip", True, 30)
    await agent.record_skill_execution("plan_trip", True, 40)
    await agent.record_skill_execution("plan_trip", False, 50)
    await memory.remember_fact("Alice prefers window seats on flights", user_id="alice", kind="preference")
    await memory.remember_fact("Alice lives in Milan", user_id="alice", subject="residence")
    return memory, agent


async def test_context_has_every_section_with_reasons() -> None:
    memory, _ = await seeded()
    ctx = await memory.context("plan a trip with flights", user_id="alice", session_id="s1", budget_tokens=400)
    assert ctx.text.startswith("Recent conversation:\n")
    for needle in ("- user: Can you plan my trip to Rome?", "step: search flights -> found 3 flights to Rome (because user asked)",
                   "Facts and preferences:", "Alice prefers window seats on flights (preference)",
                   "Relevant past episodes:", "Plan a trip to Lisbon -> Booked flights and hotel (succeeded, importance 0.9)",
                   "Plan a trip to Oslo -> Hotel was full (failed",
                   "Skills:", "plan_trip: Plan a city trip; steps: search flights -> book hotel -> send itinerary; success rate 67% over 3 runs"):
        assert needle in ctx.text, needle
    assert ctx.tokens == default_token_counter().count(ctx.text) <= 400
    reasons: dict[str, str] = {}
    for item in ctx.items:
        reasons.setdefault(item.section, item.reason)
    assert reasons["recent"].startswith("recent message") and reasons["episodes"].startswith("relevant to the query: rank 1")
    assert json.loads(json.dumps(ctx.to_dict()))["budget_tokens"] == 400


async def test_small_budget_keeps_the_best_of_each_section_and_lists_what_was_dropped() -> None:
    memory, _ = await seeded()
    ctx = await memory.context("plan a trip with flights", user_id="alice", session_id="s1", budget_tokens=60)
    assert ctx.tokens <= 60 and ctx.dropped
    assert all("over budget" in d.reason for d in ctx.dropped)
    # the newest message is the first candidate of the recent section
    recent = [i for i in ctx.items if i.section == "recent"]
    assert recent and recent[-1].line.startswith("step: search flights")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    budget=st.integers(min_value=1, max_value=300),
    texts=st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=12),
)
async def test_context_never_exceeds_its_budget(budget, texts) -> None:
    memory = Memory(InMemoryBackend(), single_user=True)
    for i, t in enumerate(texts):
        await memory.add([MemoryRecord(text=f"topic {t}", memory_type=list(MemoryType)[1 + i % 3], id=f"r{i}")])
        await memory.append_messages("s", [Message("user", f"topic {t}")])
    ctx = await memory.context("topic", session_id="s", budget_tokens=budget, limit_per_type=5)
    assert ctx.tokens == (default_token_counter().count(ctx.text) if ctx.text else 0) <= budget
    assert len(ctx.items) + len(ctx.dropped) >= len(ctx.items)


async def test_cache_hits_and_is_invalidated_by_writes_to_the_same_scope() -> None:
    memory, agent = await seeded()
    first = await memory.context("trip", user_id="alice", session_id="s1")
    assert not first.cached
    assert (await memory.context("trip", user_id="alice", session_id="s1")).cached
    await memory.remember("Bob planned a trip too", user_id="bob")  # another user: still cached
    assert (await memory.context("trip", user_id="alice", session_id="s1")).cached
    await agent.add_step("book hotel", "Hotel Roma booked")  # same session
    after = await memory.context("trip", user_id="alice", session_id="s1")
    assert not after.cached and "Hotel Roma booked" in after.text
    await memory.remember("Alice's trip budget is 900 euros", user_id="alice")  # same user
    assert "900 euros" in (await memory.context("trip", user_id="alice", session_id="s1")).text
    assert (await memory.context("trip", user_id="alice", session_id="s1")).cached
    await memory.add([MemoryRecord(text="Shared: trips need passports", user_id=None)])  # whole namespace
    assert not (await memory.context("trip", user_id="alice", session_id="s1")).cached
    await memory.delete([after.items[-1].id or "x"])
    assert not (await memory.context("trip", user_id="alice", session_id="s1")).cached


def test_cache_entries_expire_and_an_evicted_scope_never_matches_old_entries() -> None:
    now = [0.0]
    cache = ContextCache(300, timer=lambda: now[0])
    key = cache.key("ns", "u", None, ("q",))
    from primitives.memory.context import PromptContext

    cache.put(key, PromptContext("x", 1, 10))
    assert cache.get(cache.key("ns", "u", None, ("q",))) is not None
    now[0] += 301
    assert cache.get(cache.key("ns", "u", None, ("q",))) is None
    cache.put(cache.key("ns", "u", None, ("q",)), PromptContext("x", 1, 10))
    cache.touch("ns", user_id="u")
    stale = cache.key("ns", "u", None, ("q",))
    for i in range(70_000):  # evict the user's generation from the bounded table
        cache.touch("ns", user_id=f"other{i}")
    assert cache.get(stale) is None or stale != cache.key("ns", "u", None, ("q",))
    assert cache.get(cache.key("ns", "u", None, ("q",))) is None
    off = ContextCache(0)
    off.put(key, PromptContext("x", 1, 10))
    assert off.get(key) is None


async def test_context_arguments_are_validated_and_scoped() -> None:
    memory = Memory(InMemoryBackend())
    with pytest.raises(UnscopedAccessError):
        await memory.context("x")
    for kwargs in ({"budget_tokens": 0}, {"budget_tokens": 1.5}, {"limit_per_type": 0}, {"recent_messages": -1},
                   {"session_id": ""}, {"as_of": datetime(2024, 1, 1)}, {"mode": "fuzzy"}):
        with pytest.raises(InvalidInputError):
            await memory.context("x", user_id="u", **kwargs)
    empty = await memory.context("   ", user_id="u")
    assert empty.text == "" and empty.tokens == 0


async def test_a_custom_token_counter_is_used() -> None:
    class Words:
        name = "words"

        def count(self, text: str) -> int:
            return len(text.split())

        def truncate(self, text: str, max_tokens: int) -> str:
            return " ".join(text.split()[:max_tokens])

    memory = Memory(InMemoryBackend(), token_counter=Words(), single_user=True)
    await memory.remember("one two three four five six seven")
    ctx = await memory.context("three", budget_tokens=12)
    assert ctx.tokens == len(ctx.text.split()) <= 12
    with pytest.raises(InvalidInputTypeError):
        check_token_counter(object())


def test_tokenizer_works_offline_and_cuts_at_character_boundaries() -> None:
    counter = TiktokenCounter()
    assert counter.count("hello world") == 2
    assert counter.count("<|endoftext|>") > 1  # special tokens are plain text here
    text = "😀" * 10 + " ünïcode \x00 NUL"
    for n in range(0, 25):
        cut = counter.truncate(text, n)
        assert text.startswith(cut) and counter.count(cut) <= n


async def test_memory_primitive_adds_a_json_ready_context() -> None:
    memory, _ = await seeded()
    step = MemoryPrimitive(memory, context_budget_tokens=200)
    out = await step.execute({"query": "trip flights"}, WorkflowContext(session_id="s1", metadata={"user_id": "alice"}))
    assert "Skills:" in out["context"] and out["context_items"]
    json.dumps(out["context_items"])
    assert "context" not in await MemoryPrimitive(memory).execute("trip", WorkflowContext(metadata={"user_id": "alice"}))
    with pytest.raises(InvalidInputError):
        MemoryPrimitive(memory, context_budget_tokens=0)


# -- ranking signals --------------------------------------------------------------------------


def _hit(id: str, score: float, age_days: float, importance: float | None = None) -> SearchHit:
    md = {} if importance is None else {"importance": importance}
    return SearchHit(MemoryRecord(text=id, id=id, created_at=T0 - timedelta(days=age_days), metadata=md), score)


def test_rerank_formula() -> None:
    hits = [_hit("old", 10.0, 60), _hit("new", 9.0, 0), _hit("vital", 5.0, 60, importance=1.0)]
    assert rerank(hits, RankingSignals(), T0) == hits  # off by default
    recent = rerank(hits, RankingSignals(recency_half_life_s=30 * 86400, recency_weight=1.0), T0)
    assert [h.record.id for h in recent] == ["new", "old", "vital"]
    assert recent[0].score == pytest.approx(0.9 + 1.0) and recent[1].score == pytest.approx(1.0 + 0.25)
    important = rerank(hits, RankingSignals(importance_weight=1.0), T0)
    assert important[0].record.id == "old" and important[0].score == pytest.approx(1.0 + 0.5)
    assert important[-1].record.id == "new" and important[-1].score == pytest.approx(0.9 + 0.5)
    with pytest.raises(InvalidInputError):
        RankingSignals(recency_half_life_s=0)
    with pytest.raises(InvalidInputError):
        RankingSignals(recency_weight=-1)
    with pytest.raises(InvalidInputError):
        RankingSignals(importance_weight=math.nan)


async def test_search_with_ranking_prefers_recent_memories() -> None:
    memory = Memory(InMemoryBackend())
    await memory.add([MemoryRecord(text="the dentist appointment is on monday", id="old", created_at=T0 - timedelta(days=400)),
                      MemoryRecord(text="the dentist appointment moved", id="new", created_at=T0)])
    plain = await memory.search("dentist appointment monday", limit=2)
    assert plain.hits[0].record.id == "old"
    ranked = await memory.search("dentist appointment monday", limit=2,
                                 ranking=RankingSignals(recency_half_life_s=30 * 86400, recency_weight=1.0, now=T0))
    assert ranked.hits[0].record.id == "new"
    with pytest.raises(InvalidInputTypeError):
        await memory.search("x", ranking={"recency_weight": 1})  # type: ignore[arg-type]


# -- what RememberPrimitive keeps ---------------------------------------------------------------


async def test_assistant_replies_stay_in_working_memory_only_by_default() -> None:
    """Tried as a new user would: a stored "Noted." came back as the top memory."""
    memory = Memory(InMemoryBackend())
    pipeline_ctx = WorkflowContext(session_id="s1", metadata={"user_id": "u1"})
    await (MemoryPrimitive(memory) >> RememberPrimitive(memory)).execute("My favourite colour is blue", pipeline_ctx)
    await RememberPrimitive(memory).execute({"query": "Remember that I like cats", "response": "Noted."}, pipeline_ctx)
    hits = (await memory.search("What is my favourite colour?", user_id="u1")).hits
    assert [h.record.text for h in hits][:1] == ["My favourite colour is blue"]
    assert all(h.record.text != "Noted." for h in (await memory.search("Noted", user_id="u1")).hits)
    assert [m.content for m in await memory.get_messages("s1")][-1] == "Noted."
    # configurable
    await RememberPrimitive(memory, remember_response=True).execute({"query": "q", "response": "Kept reply"}, pipeline_ctx)
    assert (await memory.search("Kept reply", user_id="u1")).hits
    with pytest.raises(InvalidInputError):
        RememberPrimitive(memory, remember_response="yes")  # type: ignore[arg-type]


async def test_a_write_during_the_first_context_call_is_not_hidden_by_the_cache() -> None:
    memory = Memory(InMemoryBackend())
    await memory.remember("Alice likes tea", user_id="alice")
    real = memory.get_messages

    async def write_meanwhile(*args, **kwargs):
        await memory.remember("Alice likes coffee now", user_id="alice")
        return await real(*args, **kwargs)

    memory.get_messages = write_meanwhile  # type: ignore[method-assign]
    first = await memory.context("Alice likes", user_id="alice", session_id="s1")
    memory.get_messages = real  # type: ignore[method-assign]
    second = await memory.context("Alice likes", user_id="alice", session_id="s1")
    assert not second.cached and "coffee" in second.text
    assert first.cached is False
