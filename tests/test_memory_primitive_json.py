"""``MemoryPrimitive``'s output survives ``json.dumps``: any stored record and message (hostile
text and metadata, NUL, unicode, nested objects) recalled through it gives an output equal to its
own JSON round trip, with datetimes as ISO 8601 strings in UTC, on the in-process backend and on a
real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives import WorkflowContext
from primitives.memory import InMemoryBackend, Memory, MemoryBackend, MemoryPrimitive, MemoryRecord, MemoryType, Message
from tests.differential_strategies import explicit_datetimes, messages, metadata, texts

MARKER = "zebraquark"

records = st.builds(
    lambda text, meta, created_at, memory_type: (text, meta, created_at, memory_type),
    texts(),
    metadata(),
    st.one_of(st.none(), explicit_datetimes()),
    st.sampled_from([MemoryType.EPISODIC, MemoryType.SEMANTIC]),
)


def _utc(text: str | None) -> datetime:
    assert isinstance(text, str)
    when = datetime.fromisoformat(text)
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    return when


async def _one(memory: Memory, stored: tuple, said: list[Message]) -> None:
    text, meta, created_at, memory_type = stored
    scope = f"t{uuid.uuid4().hex[:10]}"  # one user, namespace and session per example
    record = MemoryRecord(f"{MARKER} {text}", id="r", user_id=scope, namespace=scope, metadata=meta,
                          created_at=created_at, memory_type=memory_type)
    (kept,) = await memory.add([record])
    if said:
        await memory.append_messages(scope, said, namespace=scope)
    ctx = WorkflowContext(session_id=scope, metadata={"user_id": scope, "namespace": scope})
    out = await MemoryPrimitive(memory, limit=3, mode="keyword").execute({"query": MARKER}, ctx)

    assert json.loads(json.dumps(out)) == out
    (hit,) = out["relevant_memories"]
    assert set(hit) == {"id", "text", "score", "metadata", "memory_type", "created_at"}
    assert (hit["id"], hit["text"], hit["metadata"], hit["memory_type"]) == ("r", record.text, meta, memory_type.value)
    assert type(hit["score"]) is float and type(hit["metadata"]) is dict
    assert _utc(hit["created_at"]) == kept.created_at
    assert [(m["role"], m["content"], m["metadata"]) for m in out["working_memory"]] == [
        (m.role, m.content, dict(m.metadata)) for m in said
    ]
    for m, given_message in zip(out["working_memory"], said):
        when = _utc(m["created_at"])
        if given_message.created_at is not None:
            assert when == given_message.created_at
    # a fresh copy: changing the output changes nothing stored
    if hit["metadata"]:
        hit["metadata"].clear()
        assert dict((await memory.get("r", namespace=scope)).metadata) == meta  # type: ignore[union-attr]


def _check(make_backend: Callable[[], MemoryBackend], examples: int) -> None:
    loop = asyncio.new_event_loop()
    memory = Memory(make_backend())

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(stored=records, said=st.lists(messages(), max_size=3))
    def round_trip(stored: tuple, said: list[Message]) -> None:
        loop.run_until_complete(_one(memory, stored, said))

    try:
        round_trip()
    finally:
        loop.run_until_complete(memory.backend.drop())
        loop.run_until_complete(memory.aclose())
        loop.close()


def test_output_round_trips_through_json_in_process() -> None:
    _check(InMemoryBackend, 80)


@pytest.mark.integration
def test_output_round_trips_through_json_on_redis(redis_server) -> None:
    from primitives.memory.redis_backend import RedisBackend

    _check(lambda: RedisBackend(redis_server.url, prefix=f"json{uuid.uuid4().hex[:8]}:"), 30)


async def test_context_output_is_json_too() -> None:
    memory = Memory(InMemoryBackend())
    await memory.remember(f"{MARKER} likes \x00 tea ünïcødé", user_id="u", metadata={"a": [{"b": (1, 2.5)}]})
    await memory.append_messages("s", [Message("user", "hello", datetime(2020, 1, 1, tzinfo=timezone.utc))])
    out = await MemoryPrimitive(memory, context_budget_tokens=200).execute(
        MARKER, WorkflowContext(session_id="s", metadata={"user_id": "u"}))
    assert json.loads(json.dumps(out)) == out
    assert out["relevant_memories"][0]["metadata"] == {"a": [{"b": [1, 2.5]}]}
    assert out["working_memory"][0]["created_at"] == "2020-01-01T00:00:00+00:00"
    assert out["context"] and all(type(i["score"]) in (float, type(None)) for i in out["context_items"])
    await memory.aclose()
