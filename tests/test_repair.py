"""Finding damaged data (``scan_damaged``, ``doctor``), moving it to quarantine (``repair``,
``memory-primitives repair``), and converting a store of the previous layout (``index migrate``),
on a real Redis 8.2 with the Query Engine."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from primitives.cli import main
from primitives.errors import IndexSchemaMismatchError
from primitives.memory import MemoryRecord, MemoryType, Message
from primitives.memory.redis_backend import RedisBackend
from primitives.memory.redis_backend.keys import record_key, session_key
from primitives.tooling.doctor import diagnose

pytestmark = pytest.mark.integration

_prefixes = itertools.count()


def fresh_prefix(name: str = "rp") -> str:
    return f"{name}{next(_prefixes)}:"


async def damaged_store(url: str, prefix: str) -> tuple[RedisBackend, aioredis.Redis]:
    """Five good records, three damaged ones, a key of the wrong type, and a session with two
    good and two bad messages."""
    backend = RedisBackend(url, prefix=prefix)
    raw = aioredis.from_url(url)
    await backend.add([MemoryRecord(text=f"apple {i}", id=f"g{i}", ttl=3600) for i in range(5)]
                      + [MemoryRecord(text="apple apple", id=f"b{i}", ttl=3600) for i in range(3)])
    rec = backend.spec.prefix
    await raw.hset(record_key(rec, "default", "b0"), "text", b"\xff")
    await raw.hset(record_key(rec, "default", "b1"), "metadata", b"{")
    await raw.hset(record_key(rec, "default", "b2"), "created_at", b"later")  # the index refuses it
    await raw.set(record_key(rec, "default", "str"), "a string where a record belongs")
    await backend.append_messages("s", [Message("user", "good one"), Message("user", "good two")])
    wm = session_key(prefix, "default", "s")
    await raw.linsert(wm, "BEFORE", await raw.lindex(wm, 1), b"\xfe")
    await raw.rpush(wm, b"{nope")
    return backend, raw


async def test_scan_finds_each_damaged_key_and_repair_moves_them_aside(redis_server) -> None:
    prefix = fresh_prefix()
    backend, raw = await damaged_store(redis_server.url, prefix)
    try:
        scan = await backend.scan_damaged(limit=2)
        assert scan.damaged == 5 and len(scan.first) == 2
        assert scan.scanned_records == 9 and scan.scanned_sessions == 1 and scan.legacy_records == 0
        assert scan.index_failures >= 1
        full = {d["key"]: d for d in (await backend.scan_damaged(limit=100)).first}
        rec = backend.spec.prefix
        assert full[record_key(rec, "default", "b0")]["reason"].startswith("field 'text' is not UTF-8")
        assert full[record_key(rec, "default", "str")]["kind"] == "wrong-type"
        assert full[session_key(prefix, "default", "s")]["kind"] == "session-items"

        dry = await backend.quarantine(dry_run=True)
        assert len(dry.moved) == 5 and all(m["moved_to"] is None for m in dry.moved)
        assert (await backend.scan_damaged()).damaged == 5  # nothing changed

        report = await backend.quarantine()
        assert sorted(m["key"] for m in report.moved) == sorted(full) and report.left == []
        assert (await backend.scan_damaged()).damaged == 0
        for entry in report.moved:
            assert entry["moved_to"].startswith(f"{prefix}quarantine:")
            assert await raw.exists(entry["moved_to"]) == 1
            assert await raw.pttl(entry["moved_to"]) == -1  # kept until someone decides
        moved = {m["key"]: m for m in report.moved}
        b0 = moved[record_key(rec, "default", "b0")]
        assert await raw.hget(b0["moved_to"], "text") == b"\xff"  # the bytes, untouched
        assert await backend.get("b0") is None  # out of the store, out of the index
        items = moved[session_key(prefix, "default", "s")]
        assert items["items"] == 2 and await raw.lrange(items["moved_to"], 0, -1) == [b"\xfe", b"{nope"]
        assert [m.content for m in await backend.get_messages("s")] == ["good one", "good two"]
        assert 0 < await raw.pttl(session_key(prefix, "default", "s"))  # the sliding expiry is kept
        log = await raw.xrange(f"{prefix}quarantine:log")
        assert [e[b"key"].decode() for _, e in log] == [m["key"] for m in report.moved]
        assert all(e[b"reason"] and e[b"at"] for _, e in log)
        result = await backend.search("apple", limit=20)
        assert {h.record.id for h in result.hits} == {f"g{i}" for i in range(5)} and result.skipped == 0
        assert await backend.repair() == []  # idempotent
    finally:
        await backend.drop()
        assert [k async for k in raw.scan_iter(match=f"{prefix}*")] == []  # drop takes quarantine too
        await backend.aclose()
        await raw.aclose()


async def test_repair_leaves_a_record_that_was_rewritten_meanwhile(redis_server) -> None:
    backend, raw = await damaged_store(redis_server.url, fresh_prefix())
    try:
        await backend.add([MemoryRecord(text="apple fixed", id="b0")])  # the damaged one rewritten
        moved = await backend.repair()
        assert len(moved) == 4
        assert record_key(backend.spec.prefix, "default", "b0") not in {m.key for m in moved}
        assert (await backend.get("b0")).text == "apple fixed"
    finally:
        await backend.drop()
        await backend.aclose()
        await raw.aclose()


def test_repair_and_doctor_commands(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    prefix = fresh_prefix("rpcli")

    async def setup() -> None:
        backend, raw = await damaged_store(redis_server.url, prefix)
        await backend.aclose()
        await raw.aclose()

    asyncio.run(setup())
    env = {"REDIS_URL": redis_server.url, "MEMORY_REDIS_PREFIX": prefix,
           "MEMORY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    report = asyncio.run(diagnose(env))
    damage = report["redis"]["damage"]
    assert damage["damaged"] == 5 and damage["index_failures"] >= 1
    problem = next(p for p in report["problems"] if "damaged" in p["problem"])
    assert problem["fix"].startswith(f"memory-primitives repair --prefix {prefix}")
    assert damage["first"][0]["key"] in problem["problem"] and "and 2 more" in problem["problem"]
    assert {d["key"] for d in damage["first"]} >= {record_key(f"{prefix}rec:", "default", i) for i in ("b0", "b1", "b2", "str")}
    assert report["healthy"] is True  # the store serves; the problem says what to repair

    assert main(["repair", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and len(dry["moved"]) == 5
    assert main(["repair"]) == 0
    out = capsys.readouterr().out
    assert f"moved 5 damaged keys from {prefix!r} to quarantine" in out and f"XRANGE {prefix}quarantine:log" in out
    assert record_key(f"{prefix}rec:", "default", "b0") in out
    assert main(["repair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["moved"] == []
    after = asyncio.run(diagnose(env))
    assert after["redis"]["damage"]["damaged"] == 0
    assert not [p for p in after["problems"] if "damaged" in p["problem"]]

    async def cleanup() -> None:
        backend = RedisBackend(redis_server.url, prefix=prefix)
        await backend.drop()
        await backend.aclose()

    asyncio.run(cleanup())


# -- the previous layout -----------------------------------------------------------------------

_US = 1_715_170_000_000_000


def legacy_hash(record: MemoryRecord, updated_us: int = _US) -> dict[str, str]:
    """A record as the previous version stored it (``RedisBackend._encode`` before this layout):
    raw TAG values, topics joined by the unit separator, at ``{prefix}rec:{id}``."""
    fields = {"id": record.id, "text": record.text, "namespace": record.namespace,
              "memory_type": record.memory_type.value, "metadata": json.dumps(dict(record.metadata)),
              "created_at": f"{_US // 10**6}.000000", "updated_at": f"{updated_us // 10**6}.{updated_us % 10**6:06d}",
              "created_at_us": str(_US), "updated_at_us": str(updated_us), "date": "8 May 2024"}
    if record.user_id is not None:
        fields["user_id"] = record.user_id
    if record.session_id is not None:
        fields["session_id"] = record.session_id
    if record.topics:
        fields["topics"] = "\x1f".join(record.topics)
    if record.ttl is not None:
        fields["ttl"] = repr(float(record.ttl))
    return fields


LEGACY_INDEX = ["SCHEMA", "text", "TEXT", "speaker", "TEXT", "context", "TEXT", "date", "TEXT",
                "user_id", "TAG", "CASESENSITIVE", "session_id", "TAG", "CASESENSITIVE", "namespace", "TAG",
                "CASESENSITIVE", "memory_type", "TAG", "CASESENSITIVE", "topics", "TAG", "SEPARATOR", "\x1f",
                "CASESENSITIVE", "created_at", "NUMERIC", "updated_at", "NUMERIC"]


async def test_index_migrate_converts_the_previous_layout_keeping_every_record(redis_server, monkeypatch) -> None:
    prefix = fresh_prefix("legacy")
    raw = aioredis.from_url(redis_server.url, decode_responses=True)
    await raw.execute_command("FT.CREATE", f"{prefix}idx", "ON", "HASH", "PREFIX", "1", f"{prefix}rec:",
                              "LANGUAGE", "english", *LEGACY_INDEX)
    old = [
        MemoryRecord(text="green tea with alice", id="a", user_id="alice", topics=("drinks", "New York, NY")),
        MemoryRecord(text="green tea with mallory", id="m", user_id="mallory,alice", namespace="evil,acme"),
        MemoryRecord(text="an id with colons", id="acme:x", namespace="acme", session_id="s 1",
                     memory_type=MemoryType.SEMANTIC, metadata={"speaker": "Bob"}, ttl=math.inf),
        MemoryRecord(text="expires", id="t", ttl=5000.0),
    ]
    for r in old:
        await raw.hset(f"{prefix}rec:{r.id}", mapping=legacy_hash(r))
    await raw.pexpire(f"{prefix}rec:t", 5_000_000)
    await raw.hset(f"{prefix}rec:broken", mapping={**legacy_hash(MemoryRecord(text="x", id="broken")), "memory_type": "dream"})
    # the same (namespace, id) already written in the new layout, newer: the legacy copy is quarantined
    newer = RedisBackend(redis_server.url, prefix=prefix)
    await raw.hset(f"{prefix}rec:dup", mapping=legacy_hash(MemoryRecord(text="old dup", id="dup")))

    backend = RedisBackend(redis_server.url, prefix=prefix)
    with pytest.raises(IndexSchemaMismatchError, match=f"index migrate --prefix {prefix}"):
        await backend.search("tea")
    scan = await backend.scan_damaged()
    assert scan.legacy_records == 6 and scan.damaged == 0

    await raw.execute_command("FT.DROPINDEX", f"{prefix}idx")
    await newer.add([MemoryRecord(text="new dup", id="dup")])  # creates the new index too
    report = await backend.migrate_layout()
    assert report.converted == 4
    assert sorted(q["key"] for q in report.quarantined) == [f"{prefix}rec:broken", f"{prefix}rec:dup"]
    for _ in range(600):  # background re-indexing
        if await backend.count() == 5 and (await backend.index_info())["indexing"] in ("0", 0):
            break
        await asyncio.sleep(0.05)
    for r in old:
        got = await backend.get(r.id, namespace=r.namespace)
        assert (got.text, got.user_id, got.session_id, got.topics, dict(got.metadata), got.ttl, got.memory_type) == (
            r.text, r.user_id, r.session_id, r.topics, dict(r.metadata), r.ttl, r.memory_type)
        assert got.updated_at.timestamp() * 10**6 == pytest.approx(_US)
    assert {h.record.id for h in (await backend.search("tea", filter={"user_id": "alice"})).hits} == {"a"}
    assert {h.record.id for h in (await backend.search("tea", filter={"namespace": "acme"})).hits} == set()
    assert {h.record.id for h in (await backend.search("tea", filter={"topics": "New York, NY"})).hits} == {"a"}
    assert 4_000_000 < await raw.pttl(record_key(f"{prefix}rec:", "default", "t")) <= 5_000_000  # expiry kept
    assert (await backend.get("dup")).text == "new dup"
    keys = sorted([k async for k in raw.scan_iter(match=f"{prefix}rec:*")])
    assert keys == sorted(record_key(f"{prefix}rec:", ns, id) for ns, id in
                          [("default", "a"), ("evil,acme", "m"), ("acme", "acme:x"), ("default", "t"), ("default", "dup")])
    assert (await backend.migrate_layout()).converted == 0  # once is enough
    assert await backend.get("broken") is None  # quarantined, not deleted:
    assert await raw.hget(next(q["moved_to"] for q in report.quarantined if q["key"].endswith("broken")), "memory_type") == "dream"
    await backend.drop()
    await backend.aclose()
    await newer.aclose()
    await raw.aclose()


def test_index_migrate_command_converts_a_legacy_store(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = fresh_prefix("legcli")

    async def write() -> None:
        raw = aioredis.from_url(redis_server.url, decode_responses=True)
        await raw.execute_command("FT.CREATE", f"{prefix}idx", "ON", "HASH", "PREFIX", "1", f"{prefix}rec:",
                                  "LANGUAGE", "english", *LEGACY_INDEX)
        await raw.hset(f"{prefix}rec:k", mapping=legacy_hash(MemoryRecord(text="survives the migration", id="k", user_id="u,v")))
        await raw.aclose()

    asyncio.run(write())
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("MEMORY_OUTBOX_PATH", str(tmp_path / "o.sqlite3"))
    assert main(["index", "migrate", "--prefix", prefix]) == 0

    async def check() -> None:
        backend = RedisBackend(redis_server.url, prefix=prefix)
        for _ in range(600):
            if (await backend.search("survives", filter={"user_id": "u,v"})).hits:
                break
            await asyncio.sleep(0.05)
        assert [h.record.id for h in (await backend.search("survives", filter={"user_id": "u,v"})).hits] == ["k"]
        assert (await backend.search("survives", filter={"user_id": "u"})).hits == []
        await backend.drop()
        await backend.aclose()

    asyncio.run(check())
