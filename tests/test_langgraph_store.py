"""The LangGraph store (``primitives.integrations.langgraph.MemoryStore``) on the in-process
backend and on a real Redis 8.2 with the Query Engine.

The cases follow LangGraph's own store tests (libs/checkpoint/tests/test_store.py and
test_store_namespace_validation.py in the langgraph repository; the installed
langgraph-checkpoint ships no tests): namespace validation, list_namespaces with prefixes,
suffixes, wildcards, depth and pages, filtered and ranked search with pages. Then what this
adapter adds: hostile labels, keys and values, prefix isolation, ttl in minutes, damaged records,
the sync bridge, and a differential property test against LangGraph's ``InMemoryStore``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import threading

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.store.base import GetOp, InvalidNamespaceError, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

from primitives.errors import CorruptRecordError, InvalidFilterError, InvalidInputError, InvalidInputTypeError
from primitives.integrations._langgraph_mapping import item_id as _item_id, topic as _topic
from primitives.integrations.langgraph import LISTING_TERM, InvalidStoreNamespaceError, MemoryStore
from primitives.integrations._sync import SyncCallInEventLoopError
from primitives.memory import Memory, MemoryRecord
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.redis_backend import RedisBackend
from primitives.memory.redis_backend.keys import record_key
from tests.conftest import FakeClock

_prefixes = itertools.count()


def _prefix() -> str:
    return f"lg{os.getpid()}-{next(_prefixes)}:"


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request):
    if request.param == "inmemory":
        yield MemoryStore(Memory(InMemoryBackend()))
        return
    server = request.getfixturevalue("redis_server")
    backend = RedisBackend(server.url, prefix=_prefix())
    store = MemoryStore(Memory(backend))
    store.redis_url = server.url  # type: ignore[attr-defined]
    yield store
    await backend.drop()
    await backend.aclose()


HOSTILE_LABELS = [
    "a", "al", "alice", "a:b", "a,b", '"', "\\", "[", "]", "lg[]", " ", " a ", "\t", "\n", "ä", "🦜", "*",
    "a/b", "{x}", "@user:1", "-", "%", "x" * 2_000, "ﬁ", "e\u0301",
]
HOSTILE_KEYS = ["", " ", "k", "K", "k ", "k\x00", "ключ", "a.b", "*", '"]', "\\u0000", "x" * 3_000, LISTING_TERM]
HOSTILE_VALUES = [
    {},
    {"text": "plain"},
    {"nested": {"deep": [1, 2.5, None, True, False, {"x": "y"}]}, "n": 2**62, "neg": -1.5e-300},
    {"nul": "a\x00b", "emoji": "🦜", "rtl": "\u202eabc", "empty": "", "quote": '"\'`', "sql": "'; DROP TABLE x; --"},
    {"query syntax": "@user_id:{alice} | -foo* ~bar", "json": '{"a": 1}', "k.with.dots": 1},
]


# -- LangGraph's own cases, ported ------------------------------------------------------------------


async def test_put_get_delete_round_trip(store: MemoryStore) -> None:
    values = [*HOSTILE_VALUES, _nested(30)]  # with its list: 31 levels, the most a value takes
    for i, value in enumerate(values):
        await store.aput(("docs",), f"k{i}", value)
    for i, value in enumerate(values):
        item = await store.aget(("docs",), f"k{i}")
        assert item is not None and item.value == value and item.key == f"k{i}" and item.namespace == ("docs",)
        assert item.created_at <= item.updated_at
    first = await store.aget(("docs",), "k1")
    await store.aput(("docs",), "k1", {"text": "changed"})
    second = await store.aget(("docs",), "k1")
    assert second.value == {"text": "changed"} and second.created_at == first.created_at  # type: ignore[union-attr]
    assert second.updated_at > first.updated_at  # type: ignore[union-attr]
    second.value["text"] = "mutated by the caller"  # type: ignore[union-attr,index]
    assert (await store.aget(("docs",), "k1")).value == {"text": "changed"}  # type: ignore[union-attr]
    await store.adelete(("docs",), "k1")
    assert await store.aget(("docs",), "k1") is None
    assert await store.aget(("nowhere",), "k1") is None
    await store.adelete(("docs",), "never there")  # no error


async def test_namespace_rules_are_langgraphs(store: MemoryStore) -> None:
    doc = {"foo": "bar"}
    for bad in [(), ("the", "thing.about"), ("some", "fun", ""), ("langgraph", "foo"), ("a\x00b",)]:
        with pytest.raises(InvalidNamespaceError):
            await store.aput(bad, "foo", doc)
    for bad in [("foo.bar",), ("foo", ""), (123,)]:
        with pytest.raises(InvalidNamespaceError):
            await store.aget(bad, "key")  # type: ignore[arg-type]
        with pytest.raises(InvalidNamespaceError):
            await store.asearch(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidNamespaceError):
            await store.alist_namespaces(prefix=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidNamespaceError):
            await store.abatch([PutOp(bad, "k", doc)])  # type: ignore[arg-type]
    with pytest.raises(InvalidStoreNamespaceError):
        await store.abatch([PutOp((), "k", doc)])
    with pytest.raises(InvalidStoreNamespaceError):
        await store.aput(("\ud800",), "k", doc)
    with pytest.raises(InvalidStoreNamespaceError):
        await store.aput(tuple(f"l{i}" for i in range(256)), "k", doc)
    assert await store.alist_namespaces() == []
    # "langgraph" is only refused as the root of a put; ops given to abatch directly pass, as upstream
    await store.aput(("foo", "langgraph", "foo"), "bar", doc)
    await store.abatch([PutOp(("langgraph", "foo"), "bar", doc)])
    assert (await store.aget(("langgraph", "foo"), "bar")).value == doc  # type: ignore[union-attr]
    assert [i.value for i in await store.asearch(("foo", "langgraph", "foo"))] == [doc]
    deep = tuple(f"l{i}" for i in range(255))
    await store.aput(deep, "k", doc)
    assert (await store.aget(deep, "k")).namespace == deep  # type: ignore[union-attr]


async def test_list_namespaces(store: MemoryStore) -> None:
    namespaces = [
        ("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"), ("a", "c", "f"),
        ("b", "a", "f"), ("users", "123"), ("users", "456", "settings"), ("admin", "users", "789"),
    ]
    for i, ns in enumerate(namespaces):
        await store.aput(ns, f"id_{i}", {"data": f"value_{i:02d}"})
    ab = [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f")]
    assert await store.alist_namespaces(prefix=("a", "b")) == ab
    assert await store.alist_namespaces(suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f")]
    assert await store.alist_namespaces(prefix=("a",), suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f")]
    assert await store.alist_namespaces(prefix=("a", "b"), max_depth=3) == [
        ("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f")]
    assert await store.alist_namespaces(prefix=("a", "b"), limit=2) == ab[:2]
    assert await store.alist_namespaces(prefix=("a", "b"), offset=2) == ab[2:]
    assert await store.alist_namespaces(prefix=("a", "*", "f")) == [("a", "b", "f"), ("a", "c", "f")]
    assert await store.alist_namespaces(suffix=("*", "f")) == [("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f")]
    assert await store.alist_namespaces(prefix=("nonexistent",)) == []
    assert await store.alist_namespaces(prefix=("users", "123")) == [("users", "123")]
    assert await store.alist_namespaces(prefix=("*", "users"), suffix=("*", "settings")) == []
    assert await store.alist_namespaces(max_depth=2) == [
        ("a", "b"), ("a", "c"), ("admin", "users"), ("b", "a"), ("users", "123"), ("users", "456")
    ]
    assert await store.alist_namespaces() == sorted(namespaces)
    for i in range(20):
        await store.aput(("namespace", f"sub_{i:02d}"), f"id_{i:02d}", {"data": i})
    for offset in (0, 5, 15):
        page = await store.alist_namespaces(prefix=("namespace",), limit=5, offset=offset)
        assert page == [("namespace", f"sub_{i:02d}") for i in range(offset, offset + 5)]
    await store.adelete(("users", "123"), "id_6")
    assert ("users", "123") not in await store.alist_namespaces()  # an emptied namespace is gone


async def test_search_filters_and_pages(store: MemoryStore) -> None:
    docs = [
        ("doc1", {"text": "red apple", "color": "red", "score": 4.5}),
        ("doc2", {"text": "red car", "color": "red", "score": 3.0}),
        ("doc3", {"text": "green apple", "color": "green", "score": 4.0}),
        ("doc4", {"text": "blue car", "color": "blue", "score": 3.5, "tags": ["x", "y"], "meta": {"a": 1, "b": 2}}),
    ]
    for key, value in docs:
        await store.aput(("test",), key, value)

    async def keys(**kw) -> list[str]:
        return sorted(i.key for i in await store.asearch(("test",), **kw))

    assert await keys(filter={"color": "red"}) == ["doc1", "doc2"]
    assert await keys(filter={"score": {"$gt": 3.2}}) == ["doc1", "doc3", "doc4"]
    assert await keys(filter={"score": {"$gte": 4.0}, "color": "green"}) == ["doc3"]
    assert await keys(filter={"score": {"$lt": 3.5}}) == ["doc2"]
    assert await keys(filter={"score": {"$lte": 3.5}}) == ["doc2", "doc4"]
    assert await keys(filter={"color": {"$ne": "red"}}) == ["doc3", "doc4"]
    assert await keys(filter={"color": {"$eq": "blue"}}) == ["doc4"]
    assert await keys(filter={"tags": ["x", "y"]}) == ["doc4"]
    assert await keys(filter={"tags": ["y", "x"]}) == []
    assert await keys(filter={"meta": {"a": 1}}) == ["doc4"]
    assert await keys(filter={"color": "red", "text": {"$gt": 1}}) == []  # comparisons match numbers only
    assert await keys(filter={"missing": None}) == ["doc1", "doc2", "doc3", "doc4"]
    # a query ranks the items that share its words first; the rest follow without a score
    ranked = await store.asearch(("test",), query="apple", filter={"color": "red"})
    assert [(i.key, i.score is not None) for i in ranked] == [("doc1", True), ("doc2", False)]
    ranked = await store.asearch(("test",), query="green apple")
    assert ranked[0].key == "doc3" and ranked[1].key == "doc1" and ranked[0].score > ranked[1].score
    assert {i.key for i in ranked} == {"doc1", "doc2", "doc3", "doc4"}
    for query in ["", "   ", "the", "test!@#$%^&*()", "@text:{x} | *", "apple " * 100, LISTING_TERM]:
        assert len(await store.asearch(("test",), query=query, limit=10)) == 4
    for query in [None, "car"]:
        pages = [await store.asearch(("test",), query=query, limit=2, offset=o) for o in (0, 2, 4)]
        assert [len(p) for p in pages] == [2, 2, 0]
        assert sorted(i.key for p in pages for i in p) == ["doc1", "doc2", "doc3", "doc4"]
    assert await store.asearch(("test",), limit=0) == []
    listed = await store.asearch(("test",))
    assert [i.updated_at for i in listed] == sorted((i.updated_at for i in listed), reverse=True)


async def test_index_paths_choose_what_a_query_finds(store: MemoryStore) -> None:
    await store.aput(("t",), "a", {"title": "zebra", "body": "lion"}, index=["title"])
    await store.aput(("t",), "b", {"title": "lion", "body": "zebra"}, index=False)
    await store.aput(("t",), "c", {"items": [{"name": "zebra crossing"}, {"name": "okapi"}]}, index=["items[*].name"])
    found = await store.asearch(("t",), query="zebra")
    assert [(i.key, i.score is not None) for i in found][:2] in ([("a", True), ("c", True)], [("c", True), ("a", True)])
    assert found[2].key == "b" and found[2].score is None
    assert [i.key for i in await store.asearch(("t",), query="okapi") if i.score is not None] == ["c"]
    assert [i.key for i in await store.asearch(("t",), query="lion") if i.score is not None] == []


# -- hostile input, isolation -----------------------------------------------------------------------


async def test_hostile_labels_and_keys_are_kept_apart(store: MemoryStore) -> None:
    puts = []
    for i, label in enumerate(HOSTILE_LABELS):
        for key in HOSTILE_KEYS[:: 1 + i % 3]:
            puts.append(((label, HOSTILE_LABELS[-1 - i]), key, {"label": label, "key": key, "i": i}))
    puts += [(("a", "b"), "", {"w": 1}), (("a,b",), "", {"w": 2}), (("a",), "b", {"w": 3}), (('a","b',), "", {"w": 4})]
    await store.abatch([PutOp(ns, key, value) for ns, key, value in puts])
    results = await store.abatch([GetOp(ns, key) for ns, key, _ in puts])
    for (ns, key, value), item in zip(puts, results):
        assert item is not None and (item.namespace, item.key, item.value) == (ns, key, value)
    everything = await store.asearch((), limit=len(puts) + 10)
    assert sorted((i.namespace, i.key) for i in everything) == sorted((ns, key) for ns, key, _ in puts)
    assert await store.alist_namespaces(limit=1_000) == sorted({ns for ns, _, _ in puts})
    assert len({_item_id(ns, key) for ns, key, _ in puts}) == len(puts)


async def test_prefix_search_never_leaks_a_sibling(store: MemoryStore) -> None:
    siblings = [("users", "al"), ("users", "alice"), ("users", "al", "x"), ("users", "al "), ("users", " al"),
                ("users", "AL"), ("users", "al*"), ("users", "al:"), ("usersal",), ("users:al",)]
    for ns in siblings:
        await store.aput(ns, "k", {"owner": list(ns), "text": "secret words"})
    for prefix in [("users", "al"), ("users", "al", "x"), ("users", "al "), ("users:al",)]:
        for query in (None, "secret"):
            found = await store.asearch(prefix, query=query, limit=100)
            expected = sorted(ns for ns in siblings if ns[: len(prefix)] == prefix)
            assert sorted(i.namespace for i in found) == expected
            assert await store.alist_namespaces(prefix=prefix) == expected


async def test_two_store_namespaces_never_see_each_other() -> None:
    memory = Memory(InMemoryBackend())
    a, b = MemoryStore(memory, namespace="tenant-a"), MemoryStore(memory, namespace="tenant-a ")
    await a.aput(("users", "alice"), "k", {"v": "a"})
    await b.aput(("users", "alice"), "k", {"v": "b"})
    assert (await a.aget(("users", "alice"), "k")).value == {"v": "a"}  # type: ignore[union-attr]
    assert [i.value for i in await b.asearch(("users",), query="alice")] == [{"v": "b"}]
    await a.adelete(("users", "alice"), "k")
    assert await a.alist_namespaces() == [] and await b.alist_namespaces() == [("users", "alice")]
    # the memory's own searches of other namespaces see none of it
    assert (await memory.search(LISTING_TERM)).hits == []


def _nested(levels: int) -> dict:
    value: dict = {"leaf": [1]}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


async def test_bad_input_raises_typed_and_stores_nothing(store: MemoryStore) -> None:
    bad_puts = [
        (PutOp(("ns",), "k", {"x": {1, 2}}), InvalidInputTypeError),
        (PutOp(("ns",), "k", {"x": float("nan")}), InvalidInputError),
        (PutOp(("ns",), "k", {1: "x"}), InvalidInputTypeError),  # type: ignore[dict-item]
        (PutOp(("ns",), "k", {"x": "\ud800"}), InvalidInputError),
        (PutOp(("ns",), "k", ["not", "a", "dict"]), InvalidInputTypeError),  # type: ignore[arg-type]
        (PutOp(("ns",), "k", _nested(31)), InvalidInputError),  # 32 levels with its list
        (PutOp(("ns",), 5, {"x": 1}), InvalidInputTypeError),  # type: ignore[arg-type]
        (PutOp(("ns",), "\udfff", {"x": 1}), InvalidInputError),
        (PutOp(("ns",), "k", {"x": 1}, index="x"), InvalidInputTypeError),  # type: ignore[arg-type]
        (PutOp(("ns",), "k", {"x": 1}, ttl=-1), InvalidInputError),
        (PutOp(("ns",), "k", {"x": 1}, ttl=float("nan")), InvalidInputError),
        (PutOp(("ns",), "k", {"x": 1}, ttl="5"), InvalidInputTypeError),  # type: ignore[arg-type]
    ]
    for op, error in bad_puts:
        with pytest.raises(error):
            # a good put in the same batch is not written either
            await store.abatch([PutOp(("ns",), "good", {"x": 1}), op])
    bad_reads = [
        (SearchOp(("ns",), filter={"x": {"$regex": "a"}}), InvalidFilterError),
        (SearchOp(("ns",), filter={"x": {"$gt": "a"}}), InvalidFilterError),
        (SearchOp(("ns",), filter={"x": {"$gt": 1, "y": 2}}), InvalidFilterError),
        (SearchOp(("ns",), filter=["x"]), InvalidFilterError),  # type: ignore[arg-type]
        (SearchOp(("ns",), limit=-1), InvalidInputError),
        (SearchOp(("ns",), offset=-1), InvalidInputError),
        (SearchOp(("ns",), limit="3"), InvalidInputTypeError),  # type: ignore[arg-type]
        (SearchOp(("ns",), query=b"bytes"), InvalidInputTypeError),  # type: ignore[arg-type]
        (ListNamespacesOp(max_depth=0), InvalidInputError),
        (ListNamespacesOp(match_conditions=(MatchCondition("infix", ("a",)),)),  # type: ignore[arg-type]
         InvalidInputError),
        (GetOp(("ns",), None), InvalidInputTypeError),  # type: ignore[arg-type]
        ("not an op", InvalidInputTypeError),
    ]
    for op, error in bad_reads:
        with pytest.raises(error):
            await store.abatch([PutOp(("ns",), "good", {"x": 1}), op])  # type: ignore[list-item]
    assert await store.asearch(()) == []
    with pytest.raises(InvalidInputError):
        MemoryStore(Memory(InMemoryBackend()), namespace=" ")
    with pytest.raises(InvalidInputError):
        MemoryStore(Memory(InMemoryBackend()), mode="semantic")
    with pytest.raises(InvalidInputTypeError):
        MemoryStore(InMemoryBackend())  # type: ignore[arg-type]


async def test_batch_reads_see_the_state_before_its_writes(store: MemoryStore) -> None:
    await store.aput(("b",), "k", {"v": 0})
    results = await store.abatch([
        PutOp(("b",), "k", {"v": 1}), GetOp(("b",), "k"), PutOp(("b",), "k", {"v": 2}),
        SearchOp(("b",)), PutOp(("b",), "new", {"v": 3}), ListNamespacesOp(), PutOp(("b",), "gone", None),
    ])
    assert results[0] is None and results[1].value == {"v": 0}  # type: ignore[union-attr]
    assert [i.value for i in results[3]] == [{"v": 0}] and results[5] == [("b",)]  # type: ignore[union-attr]
    assert (await store.aget(("b",), "k")).value == {"v": 2}  # type: ignore[union-attr]
    await store.abatch([PutOp(("b",), "new", None), PutOp(("b",), "new", {"v": 4})])
    assert (await store.aget(("b",), "new")).value == {"v": 4}  # type: ignore[union-attr]
    await store.abatch([PutOp(("b",), "new", {"v": 5}), PutOp(("b",), "new", None)])
    assert await store.aget(("b",), "new") is None


# -- ttl: minutes at the LangGraph edge, seconds below ------------------------------------------------


async def test_ttl_minutes_become_seconds_and_reads_refresh_them(clock: FakeClock) -> None:
    memory = Memory(InMemoryBackend(clock=clock))
    store = MemoryStore(memory)
    assert store.supports_ttl
    await store.aput(("t",), "short", {"v": 1}, ttl=2)
    await store.aput(("t",), "forever", {"v": 2})
    await store.aput(("t",), "quiet", {"v": 3}, ttl=2)
    assert (await memory.get(_item_id(("t",), "short"))).ttl == 120.0  # type: ignore[union-attr]
    assert (await memory.get(_item_id(("t",), "forever"))).ttl == math.inf  # type: ignore[union-attr]
    clock.advance(100)
    assert await store.aget(("t",), "short") is not None  # refreshes: 120 s from now
    assert await store.aget(("t",), "quiet", refresh_ttl=False) is not None
    clock.advance(100)
    assert await store.aget(("t",), "quiet") is None  # 200 s after its put
    item = await store.aget(("t",), "short", refresh_ttl=False)
    assert item is not None and item.updated_at == item.created_at  # a refresh is not an update
    clock.advance(10_000)
    assert [i.key for i in await store.asearch(("t",))] == ["forever"]
    configured = MemoryStore(memory, namespace="cfg", ttl={"default_ttl": 1, "refresh_on_read": False})
    await configured.aput(("c",), "k", {"v": 1})
    assert (await memory.get(_item_id(("c",), "k"), namespace="cfg")).ttl == 60.0  # type: ignore[union-attr]
    clock.advance(59)
    assert await configured.aget(("c",), "k") is not None
    clock.advance(2)
    assert await configured.aget(("c",), "k") is None


# -- damaged stored data ------------------------------------------------------------------------------


async def test_a_damaged_record_costs_only_itself(store: MemoryStore) -> None:
    for key in ("good", "bad", "worse"):
        await store.aput(("d",), key, {"text": f"apple {key}"})
    if isinstance(store.memory.backend, RedisBackend):
        raw = aioredis.from_url(store.redis_url)  # type: ignore[attr-defined]
        try:
            key = record_key(store.memory.backend.spec.prefix, store.namespace, _item_id(("d",), "bad"))
            assert await raw.hset(key, "metadata", b"{not json") == 0
        finally:
            await raw.aclose()
    else:  # the same id and topics, metadata that is not an item
        await store.memory.add([MemoryRecord(
            text=f"apple bad {LISTING_TERM}", id=_item_id(("d",), "bad"), topics=[_topic(()), _topic(("d",))],
            metadata={"lg_namespace": ["d"], "lg_key": "bad", "lg_value": "not a dict", "lg_updated_at": "x"},
        )])
    # a record that claims another namespace than its id says
    await store.memory.add([MemoryRecord(
        text=f"apple worse {LISTING_TERM}", id=_item_id(("d",), "worse"), topics=[_topic(()), _topic(("d",))],
        metadata={"lg_namespace": ["e"], "lg_key": "worse", "lg_value": {},
                  "lg_updated_at": "2026-01-01T00:00:00+00:00"},
    )])
    for query in (None, "apple"):
        assert [i.key for i in await store.asearch(("d",), query=query)] == ["good"]
    assert await store.alist_namespaces() == [("d",)]
    assert (await store.aget(("d",), "good")).value == {"text": "apple good"}  # type: ignore[union-attr]
    for key in ("bad", "worse"):
        with pytest.raises(CorruptRecordError):
            await store.aget(("d",), key)
    await store.aput(("d",), "bad", {"text": "repaired"})  # a put replaces the damaged record
    assert (await store.aget(("d",), "bad")).value == {"text": "repaired"}  # type: ignore[union-attr]


async def test_listing_splits_full_pages_by_created_at(store: MemoryStore) -> None:
    store._page = 3
    for i in range(11):
        await store.aput(("p", f"n{i % 4}"), f"k{i}", {"i": i})
    assert sorted(i.value["i"] for i in await store.asearch(("p",), limit=100)) == list(range(11))
    assert await store.alist_namespaces(prefix=("p",)) == [("p", f"n{i}") for i in range(4)]
    assert len(await store.asearch(("p",), query="7", limit=100)) == 11


# -- the sync entry points ------------------------------------------------------------------------------


def test_sync_methods_from_plain_code() -> None:
    store = MemoryStore(Memory(InMemoryBackend()))
    store.put(("s",), "k", {"v": 1})
    assert store.get(("s",), "k").value == {"v": 1}  # type: ignore[union-attr]
    assert [i.key for i in store.search(("s",))] == ["k"]
    assert store.list_namespaces() == [("s",)]
    store.delete(("s",), "k")
    assert store.get(("s",), "k") is None
    asyncio.run(store.aclose())


async def test_sync_methods_inside_a_loop_and_from_its_worker_threads() -> None:
    store = MemoryStore(Memory(InMemoryBackend()))
    await store.aput(("s",), "k", {"v": 1})
    with pytest.raises(SyncCallInEventLoopError, match="abatch"):
        store.get(("s",), "k")
    seen: list[str] = []

    def tool() -> None:  # what a LangGraph sync tool does in a worker thread of an async graph
        seen.append(threading.current_thread().name)
        store.put(("s",), "from-thread", {"v": 2})
        assert store.get(("s",), "k").value == {"v": 1}  # type: ignore[union-attr]

    await asyncio.to_thread(tool)
    assert seen and (await store.aget(("s",), "from-thread")).value == {"v": 2}  # type: ignore[union-attr]
    await store.aclose()


# -- differential: LangGraph's InMemoryStore as the oracle ------------------------------------------


_label = st.one_of(
    st.sampled_from(["a", "al", "alice", "a:b", "ä", "🦜", " a", "*", "x y", "lg[]"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=".\x00"), min_size=1, max_size=4),
)
_namespace = st.lists(_label, min_size=1, max_size=3).map(tuple)
_key = st.one_of(st.sampled_from(["k", "K", "", " k", "k\x00", "ключ"]), st.text(max_size=3))
_value = st.fixed_dictionaries(
    {"n": st.integers(-3, 3), "s": st.sampled_from(["red", "Red", "", "🦜", "a b"])},
    optional={"tags": st.lists(st.sampled_from(["x", "y"]), max_size=2), "f": st.floats(-2, 2, allow_nan=False)},
)
_filter = st.one_of(
    st.none(),
    st.fixed_dictionaries({"n": st.integers(-3, 3)}),
    st.fixed_dictionaries({"s": st.sampled_from(["red", "Red", "", "🦜"])}),
    st.fixed_dictionaries({"n": st.fixed_dictionaries({}, optional={
        "$gt": st.integers(-3, 3), "$lte": st.floats(-3, 3, allow_nan=False), "$ne": st.integers(-3, 3)})}),
    st.fixed_dictionaries({"tags": st.lists(st.sampled_from(["x", "y"]), max_size=2)}),
)
_op = st.one_of(
    st.tuples(st.just("put"), _namespace, _key, _value),
    st.tuples(st.just("put"), _namespace, _key, _value),
    st.tuples(st.just("delete"), _namespace, _key),
    st.tuples(st.just("get"), _namespace, _key),
    st.tuples(st.just("search"), st.lists(_label, max_size=2).map(tuple), _filter, st.integers(0, 4),
              st.integers(0, 3)),
    st.tuples(st.just("list"), st.lists(_label, max_size=2).map(tuple), st.lists(_label, max_size=1).map(tuple),
              st.one_of(st.none(), st.integers(1, 3)), st.integers(0, 5), st.integers(0, 2)),
)


def _prune(oracle: InMemoryStore) -> None:
    """InMemoryStore lists a namespace that a get or a delete left empty (its dict of items is a
    defaultdict); what a user stored is items, so empty namespaces are dropped before comparing."""
    for ns in [ns for ns, items in oracle._data.items() if not items]:
        del oracle._data[ns]


async def _differential(store: MemoryStore, ops: list[tuple]) -> None:
    oracle = InMemoryStore()
    for op in ops:
        kind = op[0]
        if kind == "put":
            _, ns, key, value = op
            await store.aput(ns, key, value)
            oracle.put(ns, key, value)
        elif kind == "delete":
            await store.adelete(op[1], op[2])
            oracle.delete(op[1], op[2])
        elif kind == "get":
            got, want = await store.aget(op[1], op[2]), oracle.get(op[1], op[2])
            assert (got and (got.namespace, got.key, got.value)) == (want and (want.namespace, want.key, want.value))
        elif kind == "search":
            _, prefix, flt, limit, offset = op
            everything = await store.asearch(prefix, filter=flt, limit=1_000)
            expected = oracle.search(prefix, filter=flt, limit=1_000)
            assert sorted(((i.namespace, i.key), i.value) for i in everything) == sorted(
                ((i.namespace, i.key), i.value) for i in expected)
            page = await store.asearch(prefix, filter=flt, limit=limit, offset=offset)
            assert len(page) == len(oracle.search(prefix, filter=flt, limit=limit, offset=offset))
        else:
            _, prefix, suffix, depth, limit, offset = op
            _prune(oracle)
            kw = {"prefix": prefix or None, "suffix": suffix or None, "max_depth": depth, "limit": limit,
                  "offset": offset}
            assert await store.alist_namespaces(**kw) == oracle.list_namespaces(**kw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=25))
def test_differential_against_langgraphs_in_memory_store(ops: list[tuple]) -> None:
    store = MemoryStore(Memory(InMemoryBackend()))
    store._page = 3  # listings split by created_at often
    asyncio.run(_differential(store, ops))


@pytest.mark.integration
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=20))
def test_differential_on_redis(redis_server, ops: list[tuple]) -> None:
    async def run() -> None:
        backend = RedisBackend(redis_server.url, prefix=_prefix())
        try:
            await _differential(MemoryStore(Memory(backend)), ops)
        finally:
            await backend.drop()
            await backend.aclose()

    asyncio.run(run())


# -- the Agent Memory Server -------------------------------------------------------------------------


@pytest.mark.integration
async def test_on_the_agent_memory_server(ams_server) -> None:
    """One short walk (token auth costs ~0.4 s a request): what a LangGraph agent does most."""
    import uuid

    from primitives.memory.ams_backend import AgentMemoryServerBackend

    prefix = f"lg{os.getpid()}-{uuid.uuid4().hex[:6]}:"
    backend = AgentMemoryServerBackend(ams_server.url, token=ams_server.token, prefix=prefix, default_mode="keyword")
    store = MemoryStore(Memory(backend))
    try:
        assert not store.supports_ttl
        with pytest.raises(NotImplementedError):
            await store.aput(("m", "alice"), "k", {"text": "x"}, ttl=5)
        await store.abatch([
            PutOp(("m", "alice"), "tea", {"text": "alice drinks green tea", "n": 1}),
            PutOp(("m", "al"), "tea", {"text": "al drinks black tea", "n": 2}),
        ])
        item = await store.aget(("m", "alice"), "tea")
        assert item is not None and item.value == {"text": "alice drinks green tea", "n": 1}
        assert [i.key for i in await store.asearch(("m", "al"), query="tea")] == ["tea"]
        assert [i.namespace for i in await store.asearch(("m",), filter={"n": {"$gt": 1}})] == [("m", "al")]
        assert await store.alist_namespaces() == [("m", "al"), ("m", "alice")]
        await store.adelete(("m", "al"), "tea")
        assert await store.aget(("m", "al"), "tea") is None
        assert await store.alist_namespaces() == [("m", "alice")]
    finally:
        await backend.drop()
        await backend.aclose()
