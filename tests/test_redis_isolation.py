"""Exact tenant isolation on a real Redis 8.2 with the Query Engine, against the in-process
backend as the oracle.

Every hostile class of identifier (separators, whitespace around a value, tabs, newlines, NUL,
the previous layout's unit separator, unicode, RediSearch query syntax, values too long for hex)
is stored in every identifier field (id, user_id, session_id, namespace, topics) and used in every
filter; Redis must find exactly what the in-process backend finds, count the same, read every
record back exactly, and keep working memory apart per ``(namespace, session)``.
"""

from __future__ import annotations

import itertools
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis

from primitives.memory import InMemoryBackend, MemoryRecord, MemoryType, Message
from primitives.memory.redis_backend import RedisBackend

pytestmark = pytest.mark.integration

_prefixes = itertools.count()

HOSTILE = [
    "alice", "alice ", " alice", "alice\t", "alice\n", "alice\x00", "\x00", "mallory,alice", "alice,mallory",
    ",", "a\x1fb", "Alice", "ALICE", "*", "al*", "@user_id:{alice}", "alice|bob", "-alice", "{alice}", "(alice)",
    '"alice"', "alice\\", "\\", "=>[KNN 5 @v $b]", "ünïcødé 😀", "%61lice", "alice:x", "\u200balice",
    "$vector", "a" * 1024, "😀" * 1024, "é" * 1024,
]
SEARCH_VALUES = [*HOSTILE, "mallory", "acme", "evil", "a", "b", "x", "missing"]


def records() -> list[MemoryRecord]:
    out = []
    for i, v in enumerate(HOSTILE):
        # the value everywhere at once; the same id in another namespace; a neighbour whose
        # only link is the value as user (namespace acme) or as namespace (user alice)
        out.append(MemoryRecord(text=f"secret note {i}", id=v, user_id=v, session_id=v, namespace=v,
                                topics=(v, "common"), metadata={"v": v}))
        out.append(MemoryRecord(text=f"secret note {i} acme", id=v, user_id=v, namespace="acme"))
        out.append(MemoryRecord(text=f"secret note {i} alice", id=f"alice-in-{i}", user_id="alice", namespace=v,
                                session_id="s", topics=("x",), memory_type=MemoryType.SEMANTIC))
    out.append(MemoryRecord(text="secret note of the evil tenant", id="e", user_id="mallory", namespace="evil,acme",
                            topics=("a", "b")))
    return out


def visible(record: MemoryRecord) -> tuple:
    """What a user sees of a record, timestamps aside (each backend stamps its own)."""
    return (record.id, record.text, record.user_id, record.session_id, record.namespace, record.memory_type,
            record.topics, dict(record.metadata), record.embedding, record.ttl)


@pytest.fixture
async def pair(redis_server):
    redis_backend = RedisBackend(redis_server.url, prefix=f"iso{next(_prefixes)}:")
    oracle = InMemoryBackend()
    batch = records()
    await redis_backend.add(batch)
    await oracle.add(batch)
    yield redis_backend, oracle
    await redis_backend.drop()
    await redis_backend.aclose()


async def ids(backend, query: str = "secret note", **flt: object) -> set[tuple[str, str]]:
    result = await backend.search(query, filter=flt, limit=1000)
    assert result.skipped == 0
    return {(h.record.namespace, h.record.id) for h in result.hits}


@pytest.mark.parametrize("field", ["user_id", "session_id", "namespace", "topics"])
async def test_every_filter_is_exact_for_every_hostile_value(pair, field: str) -> None:
    redis_backend, oracle = pair
    for value in SEARCH_VALUES:
        want = await ids(oracle, **{field: value})
        assert await ids(redis_backend, **{field: value}) == want, (field, value)
        assert await redis_backend.count({field: value}) == await oracle.count({field: value}) == len(want), (field, value)
    # any-of lists, and filters combined
    assert await ids(redis_backend, **{field: ["alice ", "alice"]}) == await ids(oracle, **{field: ["alice ", "alice"]})
    combined = {"namespace": "acme", field: "mallory,alice"}
    assert await ids(redis_backend, **combined) == await ids(oracle, **combined)


async def test_the_issues_leaks_are_gone(pair) -> None:
    redis_backend, oracle = pair
    alice = await ids(redis_backend, user_id="alice")
    assert alice == {("alice", "alice"), ("acme", "alice")} | {(v, f"alice-in-{i}") for i, v in enumerate(HOSTILE)}
    assert await ids(redis_backend, user_id="mallory,alice") == {("mallory,alice", "mallory,alice"), ("acme", "mallory,alice")}
    acme = await ids(redis_backend, namespace="acme")
    assert ("evil,acme", "e") not in acme and all(ns == "acme" for ns, _ in acme)
    assert await ids(redis_backend, topics="a\x1fb") == {("a\x1fb", "a\x1fb")}
    assert await ids(redis_backend, topics="a") == {("evil,acme", "e")}
    assert await redis_backend.count() == await oracle.count() == len(records())


async def test_every_record_reads_back_exactly_from_its_namespace(pair, redis_server) -> None:
    redis_backend, oracle = pair
    for record in records():
        got = await redis_backend.get(record.id, namespace=record.namespace)
        assert visible(got) == visible(record) == visible(await oracle.get(record.id, namespace=record.namespace))
    assert await redis_backend.get("alice ", namespace="alice") is None
    assert await redis_backend.get("alice", namespace="default") is None
    # keys: {prefix}rec:{quote(ns)}:{quote(id)}, nothing raw
    raw = aioredis.from_url(redis_server.url)
    keys = {k async for k in raw.scan_iter(match=f"{redis_backend.spec.prefix}*", count=1000)}
    await raw.aclose()
    expected = {f"{redis_backend.spec.prefix}{quote(r.namespace, safe='')}:{quote(r.id, safe='')}".encode() for r in records()}
    assert keys == expected


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_query_text_neither_errors_nor_widens(pair, value: str) -> None:
    redis_backend, oracle = pair
    for flt in ({"user_id": "alice"}, {"namespace": value}, {}):
        got = await ids(redis_backend, f"secret {value} note", **flt)
        assert got == await ids(oracle, f"secret {value} note", **flt), (value, flt)
    assert (await redis_backend.search(value, filter={"user_id": "nobody"})).hits == []


async def test_delete_and_namespaces_are_hard_partitions(pair) -> None:
    redis_backend, oracle = pair
    for backend in (redis_backend, oracle):
        assert await backend.delete(["alice,mallory", "mallory,alice"], namespace="acme") == 2
        assert await backend.get("mallory,alice", namespace="mallory,alice") is not None
        assert await backend.get("mallory,alice", namespace="acme") is None
    assert await ids(redis_backend, namespace="acme") == await ids(oracle, namespace="acme")


async def test_working_memory_is_per_namespace_and_session(redis_server) -> None:
    backend = RedisBackend(redis_server.url, prefix=f"isowm{next(_prefixes)}:")
    oracle = InMemoryBackend()
    values = ["s", "s ", "s,t", "s\x00", "a:b", "*", "😀"]
    for store in (backend, oracle):
        for ns, sid in itertools.product(values[:4], values):
            await store.append_messages(sid, [Message("user", f"{ns!r}/{sid!r}")], namespace=ns)
    for ns, sid in itertools.product(values[:4], values):
        got = [m.content for m in await backend.get_messages(sid, namespace=ns)]
        assert got == [m.content for m in await oracle.get_messages(sid, namespace=ns)] == [f"{ns!r}/{sid!r}"]
    await backend.clear_session("s", namespace="s ")
    assert await backend.get_messages("s", namespace="s ") == []
    assert len(await backend.get_messages("s", namespace="s")) == 1
    await backend.drop()
    await backend.aclose()


async def test_text_after_a_nul_is_searchable_and_reads_back_exactly(redis_server) -> None:
    """RediSearch's tokenizer stops at a NUL; the in-process backend does not (found by the
    differential test)."""
    backend = RedisBackend(redis_server.url, prefix=f"isonul{next(_prefixes)}:")
    oracle = InMemoryBackend()
    record = MemoryRecord(text="mountain \x00 apple\x00river", id="n", metadata={"speaker": "Bob\x00carol"})
    for store in (backend, oracle):
        await store.add([record])
        for query in ("apple", "river", "carol"):
            assert [h.record.text for h in (await store.search(query)).hits] == [record.text], (store.name, query)
    assert visible(await backend.get("n")) == visible(record)
    await backend.drop()
    await backend.aclose()
