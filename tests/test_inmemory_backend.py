"""``InMemoryBackend``: the contract suite plus what only an in-process store can show (a fake
clock for expiry, LRU eviction, size bounds)."""

from __future__ import annotations

import math

import pytest

from primitives.errors import InvalidInputError
from primitives.memory import InMemoryBackend, MemoryRecord, MemoryType, Message
from primitives.memory.inmemory.store import RecordStore
from primitives.memory.record import utc_from_timestamp
from tests.conftest import FakeClock
from tests.contract import BackendContract


class TestInMemoryContract(BackendContract):
    @pytest.fixture
    async def backend(self):
        backend = InMemoryBackend(working_memory_size=10)
        yield backend
        await backend.aclose()


async def test_record_expires_after_its_ttl(clock: FakeClock) -> None:
    backend = InMemoryBackend(clock=clock)
    await backend.add([MemoryRecord(text="short lived fact", id="s", ttl=10)])
    await backend.add([MemoryRecord(text="long lived fact", id="l", ttl=1000)])
    clock.advance(9.9)
    assert await backend.get("s") is not None
    clock.advance(0.2)
    assert await backend.get("s") is None
    assert [h.record.id for h in (await backend.search("lived fact")).hits] == ["l"]
    assert await backend.count() == 1
    assert backend._index.document_frequency("live") == 1  # the index forgot it too


async def test_rewrite_restarts_ttl(clock: FakeClock) -> None:
    backend = InMemoryBackend(clock=clock)
    await backend.add([MemoryRecord(text="fact", id="f", ttl=10)])
    clock.advance(8)
    await backend.add([MemoryRecord(text="fact again", id="f", ttl=10)])
    clock.advance(8)
    assert (await backend.get("f")).text == "fact again"


async def test_memory_type_default_ttls_apply(clock: FakeClock) -> None:
    backend = InMemoryBackend(clock=clock)
    await backend.add(
        [
            MemoryRecord(text="working note", id="w", memory_type=MemoryType.WORKING),
            MemoryRecord(text="episode", id="e", memory_type=MemoryType.EPISODIC),
            MemoryRecord(text="forever", id="inf", memory_type=MemoryType.WORKING, ttl=math.inf),
        ]
    )
    clock.advance(3601)
    assert await backend.get("w") is None
    assert await backend.get("e") is not None
    assert await backend.get("inf") is not None
    clock.advance(30 * 86400)
    assert await backend.get("e") is None
    assert await backend.get("inf") is not None


async def test_configured_ttls_override_defaults(clock: FakeClock) -> None:
    backend = InMemoryBackend(clock=clock, default_ttls={MemoryType.EPISODIC: 5})
    await backend.add([MemoryRecord(text="e", id="e"), MemoryRecord(text="s", id="s", memory_type="semantic")])
    clock.advance(6)
    assert await backend.get("e") is None
    assert await backend.get("s") is not None  # a type left out of default_ttls never expires


async def test_lru_eviction_drops_least_recently_used_and_its_index_entries() -> None:
    backend = InMemoryBackend(maxsize=3)
    await backend.add([MemoryRecord(text=f"word{i} shared", id=f"r{i}") for i in range(3)])
    await backend.get("r0")  # r0 is now most recently used; r1 is least
    await backend.add([MemoryRecord(text="word3 shared", id="r3")])
    assert await backend.get("r1") is None
    assert await backend.count() == 3
    assert (await backend.search("word1")).hits == []
    assert backend._index.document_frequency("share") == 3
    assert {h.record.id for h in (await backend.search("shared")).hits} == {"r0", "r2", "r3"}


async def test_working_memory_sessions_expire_after_an_idle_hour(clock: FakeClock) -> None:
    backend = InMemoryBackend(clock=clock)
    await backend.append_messages("s", [Message("user", "hi")])
    clock.advance(3000)
    await backend.append_messages("s", [Message("user", "still here")])  # activity slides the TTL
    clock.advance(3000)
    assert len(await backend.get_messages("s")) == 2
    clock.advance(700)
    assert await backend.get_messages("s") == []


@pytest.mark.parametrize("kwargs", [{"maxsize": 0}, {"working_memory_size": 0}, {"max_sessions": -1}, {"maxsize": 1.5}])
def test_bad_sizes_are_rejected(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        InMemoryBackend(**kwargs)


async def test_bad_session_ids_are_rejected() -> None:
    backend = InMemoryBackend()
    with pytest.raises(InvalidInputError):
        await backend.append_messages("", [Message("user", "x")])
    with pytest.raises(TypeError):
        await backend.append_messages("s", ["not a message"])  # type: ignore[list-item]
    assert await backend.get_messages("s") == []


async def test_indexed_text_includes_speaker_context_and_date() -> None:
    from datetime import datetime, timezone

    backend = InMemoryBackend()
    record = MemoryRecord(
        text="I went to the support group",
        metadata={"speaker": "Caroline", "context": "What did you do yesterday?", "other": "not indexed"},
        created_at=datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc),
    )
    text = backend.indexed_text(record)
    assert "Caroline" in text and "yesterday" in text and "8 May 2023" in text
    assert "not indexed" not in text
    await backend.add([record])
    assert (await backend.search("Caroline May 2023 yesterday")).hits[0].record.id == record.id


async def test_a_ttl_that_expires_on_arrival_replaces_and_leaves_nothing(clock: FakeClock) -> None:
    backend = InMemoryBackend(clock=clock)
    await backend.add([MemoryRecord(text="old version", id="x")])
    (stored,) = await backend.add([MemoryRecord(text="new version", id="x", ttl=1e-300)])
    assert stored.text == "new version"
    assert await backend.get("x") is None
    assert (await backend.search("version")).hits == []
    assert len(backend._index) == 0


async def test_a_repeated_topic_is_one_tag_and_survives_replace_and_delete() -> None:
    """Found by the differential test: ("alice", "alice") as topics broke the index's removal."""
    backend = InMemoryBackend()
    await backend.add([MemoryRecord(text="plan", id="r", topics=("alice", "alice", "bob"))])
    assert (await backend.get("r")).topics == ("alice", "alice", "bob")
    assert await backend.count({"topics": "alice"}) == 1
    await backend.add([MemoryRecord(text="plan two", id="r", topics=("alice",))])
    assert await backend.delete(["r"]) == 1
    assert await backend.count({"topics": "alice"}) == 0


def _store(maxsize: int, clock: FakeClock) -> tuple[RecordStore, list[tuple[str, str]]]:
    dropped: list[tuple[str, str]] = []
    store = RecordStore(
        maxsize,
        lambda record, now: (record.updated_at.timestamp() if record.updated_at else now) + (record.ttl or math.inf),
        clock,
        lambda key, record: dropped.append((key, record.text)),
    )
    return store, dropped


def _stamped(text: str, clock: FakeClock, ttl: float | None = None) -> MemoryRecord:
    now = utc_from_timestamp(clock())
    return MemoryRecord(text=text, id=text, ttl=ttl, created_at=now, updated_at=now)


def test_record_store_evicts_least_recently_used_and_reports_each_drop_once(clock: FakeClock) -> None:
    store, dropped = _store(2, clock)
    for text in ("a", "b"):
        assert store.set(text, _stamped(text, clock), clock())
    assert store.get("a") is not None  # a is now the most recently used
    assert store.peek("b") is not None  # peeking does not change the order
    store.set("c", _stamped("c", clock), clock())
    assert dropped == [("b", "b")] and list(store) == ["a", "c"]
    assert store.pop("a") is not None and store.pop("a") is None
    assert dropped == [("b", "b")]  # pop is not reported


def test_record_store_expiry_skips_rewritten_records_and_rebuilds_its_heap(clock: FakeClock) -> None:
    store, dropped = _store(10_000, clock)
    store.set("a", _stamped("a", clock, ttl=10), clock())
    clock.advance(5)
    store.set("a", _stamped("a", clock, ttl=10), clock())  # rewritten: now expires at +15
    store.set("b", _stamped("b", clock, ttl=1), clock())
    store.set("n", _stamped("n", clock), clock())  # no ttl: never expires, not in the heap
    clock.advance(5.5)
    store.expire()
    assert dropped == [("b", "b")] and "a" in store
    clock.advance(10)
    store.expire()
    assert dropped == [("b", "b"), ("a", "a")] and list(store) == ["n"]
    # a record rewritten many times leaves stale entries; the heap stays bounded
    for _ in range(5_000):
        store.set("r", _stamped("r", clock, ttl=100), clock())
        clock.advance(0.001)
    assert len(store._heap) <= 1024 + 1  # rebuilt from the live records when over its bound
    clock.advance(100)
    store.expire()
    assert dropped[-1] == ("r", "r") and list(store) == ["n"] and store._heap == []


def test_record_store_a_write_that_expires_on_arrival_removes_the_old_version(clock: FakeClock) -> None:
    store, dropped = _store(4, clock)
    store.set("a", _stamped("a", clock, ttl=10), clock())
    old = _stamped("a", clock, ttl=1)
    clock.advance(2)
    assert not store.set("a", old, clock())
    assert "a" not in store and dropped == []
