"""SessionHistory: one contract suite against the in-process twin (fake clock) and real Redis;
Redis-specific keys, TTLs, atomicity and crash-ordering checks; the same basics on a Cluster."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from primitives.errors import (
    CorruptValueError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidKeyError,
    InvalidTTLError,
    PrimitivesError,
    SerializationError,
)
from primitives.redis_connection import connect
from primitives.store.session import BaseSessionHistory, InMemorySessionHistory
from primitives.store.session_redis import SessionHistory
from primitives.validation import MAX_COUNT, MAX_LIMIT, MAX_TTL

HOSTILE_IDS = ["*", "?", "[a-z]", "a:b", "{tag}", "}{", "a b", "line\nbreak", "ünï-💬", "%3A", "x]*?"]


@pytest.fixture(
    params=[
        "in-memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
def make(request, clock) -> Callable[..., BaseSessionHistory]:
    """Builds the implementation under test (the Redis one on a standalone server and on a
    3-master Cluster); each test gets its own namespace."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    if request.param == "in-memory":
        return lambda **kw: InMemorySessionHistory(namespace=kw.pop("namespace", namespace), clock=clock, **kw)
    client = request.getfixturevalue("redis_client" if request.param == "redis" else "cluster_client")
    return lambda **kw: SessionHistory(client, namespace=kw.pop("namespace", namespace), clock=clock, **kw)


def msg(content: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


# --- contract -------------------------------------------------------------------------------


async def test_append_and_read_oldest_first(make, clock) -> None:
    history = make()
    stored = await history.append("s1", [msg("hi"), msg("hello", "assistant", tokens=3)])
    assert stored == [
        {"role": "user", "content": "hi", "created_at": "2023-11-14T22:13:20.000000+00:00"},
        {"role": "assistant", "content": "hello", "tokens": 3, "created_at": "2023-11-14T22:13:20.000000+00:00"},
    ]
    await history.append("s1", msg("third", created_at="2020-01-01T00:00:00Z"))
    out = await history.read("s1")
    assert [m["content"] for m in out] == ["hi", "hello", "third"]
    assert out[1]["tokens"] == 3 and out[2]["created_at"] == "2020-01-01T00:00:00Z"
    assert [m["content"] for m in await history.read("s1", limit=2)] == ["hello", "third"]
    assert [m["content"] for m in await history.read("s1", limit=50)] == ["hi", "hello", "third"]
    assert await history.read("unknown") == []
    assert await history.append("s1", []) == []


async def test_aware_datetime_created_at_is_stored_as_utc(make) -> None:
    history = make()
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    (stored,) = await history.append("s", msg("x", created_at=when))
    assert stored["created_at"] == "2024-05-01T10:00:00.000000+00:00"
    assert (await history.read("s"))[0]["created_at"] == stored["created_at"]


async def test_bounded_to_last_max_messages(make) -> None:
    history = make(max_messages=3)
    for i in range(5):
        await history.append("s", msg(f"m{i}"))
    assert [m["content"] for m in await history.read("s")] == ["m2", "m3", "m4"]
    # one append larger than the bound keeps its own last three
    await history.append("s", [msg(f"b{i}") for i in range(7)])
    assert [m["content"] for m in await history.read("s")] == ["b4", "b5", "b6"]


async def test_returned_messages_are_copies(make) -> None:
    history = make()
    original = msg("x", meta={"k": [1]})
    await history.append("s", original)
    first = await history.read("s")
    first[0]["meta"]["k"].append(2)
    original["meta"]["k"].append(3)
    assert (await history.read("s"))[0]["meta"] == {"k": [1]}


async def test_sessions_and_namespaces_are_isolated(make) -> None:
    a, b = make(namespace="ns-a"), make(namespace="ns-b")
    await a.append("s", msg("in a"))
    await b.append("s", msg("in b"))
    await a.append("other", msg("other session"))
    assert [m["content"] for m in await a.read("s")] == ["in a"]
    assert [m["content"] for m in await b.read("s")] == ["in b"]


async def test_hostile_ids_stay_in_their_own_session(make) -> None:
    history = make(namespace="ns:*{x}")
    for sid in HOSTILE_IDS:
        await history.append(sid, msg(f"for {sid}"))
    for sid in HOSTILE_IDS:
        assert [m["content"] for m in await history.read(sid)] == [f"for {sid}"]
    rotated = await history.rotate("{tag}", "a}b{c")
    assert await history.chain(rotated) == ["{tag}", "a}b{c"]


async def test_clear_removes_messages_keeps_links(make) -> None:
    history = make()
    await history.append("s", [msg("a"), msg("b")])
    new = await history.rotate("s", "s2")
    await history.clear("s")
    assert await history.read("s") == []
    assert await history.chain(new) == ["s", "s2"]
    await history.clear("never-existed")  # no error


async def test_rotate_and_chain(make) -> None:
    history = make()
    await history.append("s1", msg("first"))
    s2 = await history.rotate("s1")
    assert isinstance(s2, str) and len(s2) == 32 and s2 != "s1"
    assert await history.read(s2) == []
    s3 = await history.rotate(s2, "s3")
    assert s3 == "s3"
    for sid in ("s1", s2, "s3"):
        assert await history.chain(sid) == ["s1", s2, "s3"]
    assert await history.chain("s3", limit=2) == [s2, "s3"]
    assert await history.chain("s1", limit=2) == ["s1", s2]
    assert await history.chain("lonely") == ["lonely"]
    assert [m["content"] for m in await history.read("s1")] == ["first"]


async def test_rotate_refuses_twice_and_existing_ids(make) -> None:
    history = make()
    await history.append("old", msg("x"))
    await history.append("taken", msg("y"))
    new = await history.rotate("old", "new")
    with pytest.raises(InvalidInputError, match="already rotated"):
        await history.rotate("old", "other")
    with pytest.raises(InvalidInputError, match="already exists"):
        await history.rotate("new", "taken")
    with pytest.raises(InvalidInputError, match="differ"):
        await history.rotate("new", "new")
    # the refused attempts left nothing behind
    assert await history.chain("other") == ["other"]
    assert await history.read("other") == []
    assert await history.chain(new) == ["old", "new"]
    assert [m["content"] for m in await history.read("taken")] == ["y"]


async def test_concurrent_rotations_one_wins(make) -> None:
    history = make()
    await history.append("root", msg("x"))
    results = await asyncio.gather(
        *(history.rotate("root", f"n{i}") for i in range(8)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidInputError) for r in results if not isinstance(r, str))
    assert await history.chain("root") == ["root", winners[0]]
    for i in range(8):
        if f"n{i}" != winners[0]:
            assert await history.chain(f"n{i}") == [f"n{i}"]


@pytest.mark.parametrize(
    "bad",
    [
        msg("x", role=""),
        {"role": 1, "content": "x"},
        {"content": "x"},
        {"role": "user", "content": None},
        {"role": "user", "content": b"bytes"},
        {"role": "user", "content": "x", 3: "int key"},
        msg("x", created_at=12),
        msg("x", created_at=datetime(2024, 1, 1)),
        "not a mapping",
        [msg("ok"), "not a mapping"],
        42,
    ],
)
async def test_bad_messages_raise_and_write_nothing(make, bad) -> None:
    history = make()
    await history.append("s", msg("kept"))
    with pytest.raises(InvalidInputError):
        await history.append("s", bad)
    assert [m["content"] for m in await history.read("s")] == ["kept"]


@pytest.mark.parametrize("extra", [{"obj": object()}, {"nan": float("nan")}, {"s": {1, 2}}])
async def test_unserializable_extras_raise_serialization_error(make, extra) -> None:
    history = make()
    with pytest.raises(SerializationError):
        await history.append("s", [msg("fine"), msg("bad", **extra)])
    assert await history.read("s") == []


@pytest.mark.parametrize("sid", ["", None, 5, b"bytes"])
async def test_bad_session_ids(make, sid) -> None:
    history = make()
    for call in (
        history.append(sid, msg("x")),
        history.read(sid),
        history.clear(sid),
        history.rotate(sid),
        history.chain(sid),
        history.rotate("ok", sid) if sid is not None else history.rotate("", "x"),
    ):
        with pytest.raises(InvalidKeyError):
            await call


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
async def test_bad_limits(make, limit) -> None:
    history = make()
    with pytest.raises(InvalidInputError):
        await history.read("s", limit=limit)
    with pytest.raises(InvalidInputError):
        await history.chain("s", limit=limit)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "10", True])
def test_bad_ttl(make, ttl) -> None:
    with pytest.raises(InvalidTTLError):
        make(ttl=ttl)


@pytest.mark.parametrize("max_messages", [0, -5, 2.0, None, True])
def test_bad_max_messages(make, max_messages) -> None:
    with pytest.raises(InvalidInputError):
        make(max_messages=max_messages)


@pytest.mark.parametrize("namespace", ["", None, 3])
def test_bad_namespace(make, namespace) -> None:
    with pytest.raises(InvalidKeyError):
        make(namespace=namespace)


# --- hostile input: the same typed error on both implementations ------------------------------

#: Odd but valid session ids: kept exactly, each its own session.
ODD_IDS = ["\x00", "a\x00b", " ", "\t", "\u2028", "\ufeff", "🙂\u200d🙂", "x" * 5000, "%00", "{", "}"]
#: Strings UTF-8 cannot encode (lone surrogates).
NOT_TEXT = ["\ud800", "a\udfffb"]


def assert_typed(exc: BaseException, cls: type[BaseException]) -> None:
    assert isinstance(exc, cls) and isinstance(exc, PrimitivesError), repr(exc)
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)


async def test_odd_ids_and_text_round_trip(make) -> None:
    history = make(namespace="\x00 ns 🙂")
    for sid in ODD_IDS:
        await history.append(sid, msg(f"\x00{sid}\u2028", role=" ", extra={"k\x00": ["\ufeff", None]}))
    for sid in ODD_IDS:
        (got,) = await history.read(sid)
        assert (got["role"], got["content"], got["extra"]) == (" ", f"\x00{sid}\u2028", {"k\x00": ["\ufeff", None]})
    assert await history.chain(await history.rotate(" ", "new\x00 ")) == [" ", "new\x00 "]


@pytest.mark.parametrize("sid", [*NOT_TEXT, True, 0, 1.5, 10**400])
async def test_an_id_that_cannot_be_a_key_is_an_invalid_key_error(make, sid) -> None:
    history = make()
    for call in (
        history.append(sid, msg("x")),
        history.read(sid),
        history.clear(sid),
        history.rotate(sid),
        history.rotate("ok", sid),
        history.chain(sid),
    ):
        with pytest.raises(InvalidKeyError) as info:
            await call
        assert_typed(info.value, InvalidKeyError)
    with pytest.raises(InvalidKeyError):
        make(namespace=sid)
    assert await history.chain("ok") == ["ok"]  # the refused rotate left nothing behind


@pytest.mark.parametrize(
    "bad",
    [
        msg("\ud800"),
        msg("x", role="\ud800"),
        msg("x", extra="a\udfffb"),
        msg("x", extra={"nested": ["\ud800"]}),
        {"role": "user", "content": "x", "\ud800": 1},
        msg("x", created_at="2024-01-01\ud800"),
        msg("x", created_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),  # before year 1 in UTC
        msg("x", role=True),
        msg(7),
    ],
)
async def test_hostile_messages_raise_the_same_typed_error_and_write_nothing(make, bad) -> None:
    history = make()
    await history.append("s", msg("kept"))
    with pytest.raises(InvalidInputError) as info:
        await history.append("s", [msg("fine"), bad])
    assert_typed(info.value, InvalidInputError)
    assert [m["content"] for m in await history.read("s")] == ["kept"]


@pytest.mark.parametrize("limit", [0, True, 1.5, float("nan"), "3", MAX_LIMIT + 1, 10**400, -(10**400)])
async def test_hostile_limits_are_refused(make, limit) -> None:
    history = make()
    await history.append("s", msg("x"))
    with pytest.raises(InvalidInputError) as info:
        await history.read("s", limit=limit)
    assert_typed(info.value, InvalidInputError)
    with pytest.raises(InvalidInputError):
        await history.chain("s", limit=limit)


async def test_chain_limit_none_is_refused_and_the_largest_limits_work(make) -> None:
    history = make()
    with pytest.raises(InvalidInputTypeError):
        await history.chain("s", limit=None)
    await history.append("s", [msg("a"), msg("b")])
    assert [m["content"] for m in await history.read("s", limit=MAX_LIMIT)] == ["a", "b"]
    assert await history.chain("s", limit=MAX_LIMIT) == ["s"]


@pytest.mark.parametrize("ttl", [float("-inf"), 2**63, 10**400, MAX_TTL + 1, 1e300, b"1", [1]])
def test_hostile_ttl(make, ttl) -> None:
    with pytest.raises(InvalidTTLError) as info:
        make(ttl=ttl)
    assert_typed(info.value, InvalidTTLError)


@pytest.mark.parametrize("max_messages", [MAX_COUNT + 1, 10**30, 10**400, float("inf"), float("nan"), "3"])
def test_hostile_max_messages(make, max_messages) -> None:
    with pytest.raises(InvalidInputError) as info:
        make(max_messages=max_messages)
    assert_typed(info.value, InvalidInputError)


async def test_the_largest_max_messages_and_ttl_work(make) -> None:
    history = make(max_messages=MAX_COUNT, ttl=MAX_TTL)
    await history.append("s", [msg("a"), msg("b")])
    assert [m["content"] for m in await history.read("s")] == ["a", "b"]
    assert [m["content"] for m in await history.read("s", limit=1)] == ["b"]


@pytest.mark.parametrize("max_sessions", [0, True, 1.5, None])
def test_in_memory_max_sessions_must_be_an_int_of_at_least_one(max_sessions) -> None:
    with pytest.raises(InvalidInputError):
        InMemorySessionHistory(max_sessions=max_sessions)


# --- in-process: sliding TTL with the fake clock ----------------------------------------------


async def test_in_memory_sliding_ttl(clock) -> None:
    history = InMemorySessionHistory(ttl=10, clock=clock)
    await history.append("s", msg("a"))
    clock.advance(9)
    assert len(await history.read("s")) == 1  # read is activity: expiry moves to t+19
    clock.advance(9)
    await history.append("s", msg("b"))  # append is activity
    clock.advance(9)
    new = await history.rotate("s", "s2")  # rotate is activity on both
    clock.advance(9)
    assert await history.chain("s2") == ["s", "s2"]  # chain is not activity
    clock.advance(2)
    assert await history.read("s") == []
    assert await history.chain(new) == ["s2"]  # the old end expired, the walk stops there


async def test_in_memory_ttl_none_never_expires(clock) -> None:
    history = InMemorySessionHistory(ttl=None, clock=clock)
    await history.append("s", msg("a"))
    clock.advance(10**9)
    assert len(await history.read("s")) == 1


async def test_in_memory_max_sessions(clock) -> None:
    history = InMemorySessionHistory(clock=clock, max_sessions=2)
    for sid in ("a", "b", "c"):
        await history.append(sid, msg(sid))
    assert await history.read("a") == []
    assert len(await history.read("c")) == 1


# --- Redis specifics --------------------------------------------------------------------------


@pytest.mark.integration
async def test_redis_keys_escaped_and_share_a_hash_tag(redis_client) -> None:
    history = SessionHistory(redis_client, namespace="ns:{x}", prefix="p:")
    messages, meta = history.keys("a}b{c *")
    assert messages == "p:{ns%3A%7Bx%7D:a%7Db%7Bc%20%2A}:messages"
    assert meta == "p:{ns%3A%7Bx%7D:a%7Db%7Bc%20%2A}:meta"
    await history.append("a}b{c *", msg("x"))
    assert await redis_client.llen(messages) == 1
    assert sorted(await redis_client.hkeys(meta)) == [b"created_at", b"updated_at"]
    assert sorted(await redis_client.keys("p:*")) == sorted([messages.encode(), meta.encode()])


@pytest.mark.integration
async def test_redis_sliding_ttl_refreshed_by_append_read_rotate_not_chain(redis_client) -> None:
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex, ttl=1000)
    messages, meta = history.keys("s")
    await history.append("s", msg("a"))
    assert 990_000 < await redis_client.pttl(messages) <= 1_000_000
    assert 990_000 < await redis_client.pttl(meta) <= 1_000_000
    for activity in (lambda: history.read("s"), lambda: history.append("s", msg("b")),
                     lambda: history.read("s", limit=1)):
        await redis_client.pexpire(messages, 5_000)
        await redis_client.pexpire(meta, 5_000)
        await activity()
        assert await redis_client.pttl(messages) > 900_000
        assert await redis_client.pttl(meta) > 900_000
    await redis_client.pexpire(messages, 5_000)
    await redis_client.pexpire(meta, 5_000)
    await history.chain("s")
    assert await redis_client.pttl(meta) <= 5_000
    new = await history.rotate("s", "s2")
    assert await redis_client.pttl(messages) > 900_000 and await redis_client.pttl(meta) > 900_000
    assert await redis_client.pttl(history.keys(new)[1]) > 900_000


@pytest.mark.integration
async def test_redis_session_expires(redis_client) -> None:
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex, ttl=0.05)
    await history.append("s", msg("a"))
    for _ in range(500):  # bounded wait for Redis to expire the keys (0.05 s TTL)
        if not await redis_client.exists(*history.keys("s")):
            break
        await asyncio.sleep(0.01)
    assert await history.read("s") == []


@pytest.mark.integration
async def test_redis_ttl_none_sets_no_expiry(redis_client) -> None:
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex, ttl=None)
    await history.append("s", msg("a"))
    await history.read("s")
    assert [await redis_client.pttl(k) for k in history.keys("s")] == [-1, -1]


@pytest.mark.integration
async def test_redis_half_done_rotation_is_invisible(redis_client) -> None:
    """A crash after step 1 of rotate (new session's prev written, old session's next not):
    the chain from either end ignores the orphan, and rotating again works."""
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex)
    await history.append("old", msg("x"))
    await redis_client.hset(history.keys("orphan")[1], mapping={"prev": "old", "created_at": "t"})
    assert await history.chain("orphan") == ["orphan"]
    assert await history.chain("old") == ["old"]
    new = await history.rotate("old", "new")
    assert await history.chain("old") == ["old", new]


@pytest.mark.integration
async def test_redis_cycle_in_stored_links_is_bounded(redis_client) -> None:
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex)
    for sid, prev, nxt in (("a", "c", "b"), ("b", "a", "c"), ("c", "b", "a")):
        await redis_client.hset(history.keys(sid)[1], mapping={"prev": prev, "next": nxt})
    # back from b: a, then c; c's prev is b again (seen), so the walk stops; b's next c is seen too
    assert await history.chain("b") == ["c", "a", "b"]
    assert await history.chain("b", limit=2) == ["a", "b"]


@pytest.mark.integration
async def test_redis_corrupt_message_raises_typed_error(redis_client) -> None:
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex)
    await history.append("s", msg("fine"))
    await redis_client.rpush(history.keys("s")[0], b"\xff not json")
    with pytest.raises(CorruptValueError):
        await history.read("s")
    await redis_client.rpush(history.keys("s")[0], json.dumps([1, 2]))
    with pytest.raises(CorruptValueError):
        await history.read("s", limit=1)


@pytest.mark.integration
async def test_redis_concurrent_appends_stay_bounded(redis_client) -> None:
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex, max_messages=10)
    await asyncio.gather(*(history.append("s", [msg(f"{i}-{j}") for j in range(3)]) for i in range(50)))
    out = await history.read("s")
    assert len(out) == 10 and await redis_client.llen(history.keys("s")[0]) == 10
    # each append is atomic: its three messages are contiguous, so the kept tail ends on a whole batch
    assert out[-1]["content"].endswith("-2") and out[-3]["content"].endswith("-0")


@pytest.mark.integration
async def test_redis_large_batch_is_pushed_in_chunks(redis_client) -> None:
    history = SessionHistory(redis_client, namespace=uuid.uuid4().hex, max_messages=20_000)
    await history.append("s", [msg(str(i)) for i in range(12_000)])
    out = await history.read("s")
    assert len(out) == 12_000 and out[0]["content"] == "0" and out[-1]["content"] == "11999"


@pytest.mark.integration
async def test_redis_works_with_decode_responses(plain_redis_server) -> None:
    client = connect(plain_redis_server.url, decode_responses=True)
    try:
        history = SessionHistory(client, namespace=uuid.uuid4().hex)
        await history.append("s", msg("ünï"))
        new = await history.rotate("s")
        assert await history.chain(new) == ["s", new]
        assert (await history.read("s"))[0]["content"] == "ünï"
    finally:
        await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("prefix", ["\ud800", None, 5, b"p:"])
def test_redis_prefix_must_be_text(redis_client, prefix) -> None:
    with pytest.raises(InvalidInputError) as info:
        SessionHistory(redis_client, prefix=prefix)
    assert_typed(info.value, InvalidInputError)
