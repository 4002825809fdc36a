"""Export and import between the in-process store and a DuckDB file: round trips (exact, hostile
strings, a property test), incremental cursors, tombstones, rejected rows, failures that leave the
cursor, no ping-pong, no resurrection, the primitive and the CLI."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives.core.context import WorkflowContext
from primitives.errors import InvalidInputError, SyncTargetUnavailableError
from primitives.memory.datasync import StoreSource, SyncPrimitive, record_from_row, row_from_change
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import MemoryRecord, MemoryType
from primitives.sync.duckdb_target import DuckDBWarehouse
from primitives.sync.engine import export_changes, import_changes, sync_status
from primitives.sync.rows import Cursor, SyncRow
from tests.sync_contract import HOSTILE

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def hostile_records() -> list[MemoryRecord]:
    out = []
    for i, s in enumerate(HOSTILE):
        out.append(MemoryRecord(
            text=f"{s} said {i}", id=s, namespace=s, user_id=s, session_id=s,
            memory_type=list(MemoryType)[i % 4], topics=(s, s, "x"),
            metadata={s: {"n": [1, 2.5, None, True, s]}, "speaker": s}, embedding=(0.5, -2.0, float(i)),
            ttl=(None, math.inf, 86_400.0 * 365)[i % 3],
        ))
    return out


def live(backend: InMemoryBackend) -> dict[tuple[str, str], MemoryRecord]:
    return {(r.namespace, r.id): r for r in backend._live_records()}


def same(a: MemoryRecord, b: MemoryRecord) -> bool:
    return (row_from_change(a).version == row_from_change(b).version) and a.ttl == b.ttl


@pytest.fixture
async def warehouse(tmp_path):
    async with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        yield w


async def test_round_trip_every_field_exactly_with_hostile_strings(warehouse):
    a, b = InMemoryBackend(), InMemoryBackend()
    records = await a.add(hostile_records())
    await a.delete([HOSTILE[0]], namespace=HOSTILE[0])
    exported = await export_changes(StoreSource(a), warehouse, batch_size=7)
    assert exported.read == len(records) and exported.tombstones == 1
    imported = await import_changes(warehouse, StoreSource(b))
    assert imported.written == len(records) - 1 and imported.rejected == 0
    want, got = live(a), live(b)
    assert set(got) == set(want)
    for key, record in want.items():
        assert got[key] == record  # every field, timestamps and float32 vectors included
    assert await b.get(HOSTILE[0], namespace=HOSTILE[0]) is None


async def test_export_is_incremental_and_resends_nothing(warehouse):
    a = InMemoryBackend()
    source = StoreSource(a)
    await a.add([MemoryRecord(text=f"t{i}", id=f"i{i}") for i in range(30)])
    assert (await export_changes(source, warehouse, batch_size=8)).read == 30
    assert (await export_changes(source, warehouse)).read == 0
    await a.add([MemoryRecord(text="changed", id="i3"), MemoryRecord(text="new", id="n1")])
    await a.delete(["i4"])
    second = await export_changes(source, warehouse)
    assert (second.read, second.tombstones, second.written) == (3, 1, 3)
    again = await export_changes(source, warehouse, since=NOW - timedelta(days=1))
    assert again.read == 31 and again.written == 0  # re-sent, nothing newer: LWW keeps the target as is
    [(text,)] = await warehouse.execute("SELECT text FROM memories WHERE id = 'i3'")
    assert text == "changed"


async def test_dry_run_reads_but_writes_nothing(warehouse):
    a = InMemoryBackend()
    await a.add([MemoryRecord(text="x", id="1")])
    report = await export_changes(StoreSource(a), warehouse, dry_run=True)
    assert report.read == 1 and report.written == 0
    assert await warehouse.changes_after(None, 10) == []
    assert (await export_changes(StoreSource(a), warehouse)).written == 1


async def test_a_failing_target_leaves_the_cursor_at_the_last_committed_batch(warehouse, monkeypatch):
    a = InMemoryBackend()
    source = StoreSource(a)
    await a.add([MemoryRecord(text=f"t{i}", id=f"i{i:02d}") for i in range(25)])
    real = warehouse._upsert
    calls = {"n": 0}

    async def flaky(rows, state):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SyncTargetUnavailableError("gone", target=warehouse.url)
        return await real(rows, state)

    monkeypatch.setattr(warehouse, "_upsert", flaky)
    with pytest.raises(SyncTargetUnavailableError):
        await export_changes(source, warehouse, batch_size=10)
    assert len(await warehouse.changes_after(None, 100)) == 20
    resumed = await export_changes(source, warehouse, batch_size=10)
    assert resumed.read == 5
    assert len(await warehouse.changes_after(None, 100)) == 25


async def test_no_ping_pong_own_rows_are_skipped_and_nothing_is_re_exported(warehouse):
    a = InMemoryBackend()
    source = StoreSource(a)
    await a.add([MemoryRecord(text=f"t{i}", id=f"i{i}") for i in range(10)])
    await export_changes(source, warehouse)
    report = await import_changes(warehouse, source)
    assert (report.own, report.written) == (10, 0)
    assert (await export_changes(source, warehouse)).read == 0
    # restoring with include_own rewrites equal versions: they go back once, change nothing, and stop
    restored = await import_changes(warehouse, source, since=NOW - timedelta(days=1), include_own=True)
    assert restored.read == 10
    echo = await export_changes(source, warehouse)
    assert (echo.read, echo.written) == (10, 0)
    assert (await import_changes(warehouse, source)).read == 0
    assert (await export_changes(source, warehouse)).read == 0


async def test_an_expired_record_is_never_resurrected_and_a_deleted_one_stays_deleted(warehouse):
    b = InMemoryBackend()
    old = NOW - timedelta(days=3)
    expired = SyncRow(namespace="n", id="gone", text="old", created_at=old, updated_at=old, ttl=60.0)
    fresh = SyncRow(namespace="n", id="ok", text="fresh", created_at=NOW, updated_at=NOW, ttl=3600.0)
    await warehouse.upsert([expired, fresh])
    await b.delete(["late"], namespace="n")  # deleted now, after the row below was written
    stale = SyncRow(namespace="n", id="late", text="stale", created_at=old, updated_at=old)
    await warehouse.upsert([stale])
    report = await import_changes(warehouse, StoreSource(b))
    assert report.written == 1 and report.skipped == 2
    assert await b.get("gone", namespace="n") is None
    assert await b.get("late", namespace="n") is None
    assert (await b.get("ok", namespace="n")).text == "fresh"


async def test_bad_rows_go_to_the_rejected_table_and_the_import_goes_on(tmp_path):
    async with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        good = SyncRow(namespace="n", id="good", text="fine", created_at=NOW, updated_at=NOW)
        await w.upsert([good])
        at = NOW + timedelta(seconds=1)
        for id, column, value in (
            ("json", "metadata", "{not json"),
            ("type", "memory_type", "dream"),
            ("topics", "topics", '"not a list"'),
            (" ", "text", "blank id"),
        ):
            await w.execute(
                f"INSERT INTO memories (namespace, id, text, topics, metadata, memory_type, created_at, updated_at, version) "
                f"VALUES ('n', ?, 't', '[]', '{{}}', 'episodic', ?, ?, 'x')", [id, at, at],
            )
            await w.execute(f"UPDATE memories SET {column} = ? WHERE id = ?", [value, id])
        await w.execute(
            "INSERT INTO memories (namespace, id, text, topics, metadata, memory_type, embedding, created_at, updated_at, version) "
            "VALUES ('n', 'dims', 't', '[]', '{}', 'episodic', [1.0, 2.0], ?, ?, 'x')", [at, at],
        )
        b = InMemoryBackend()
        source = StoreSource(b)
        source.dims = 3  # the store takes 3-d vectors: a 2-d one is rejected
        report = await import_changes(w, source)
        assert report.written == 1 and report.rejected == 5
        reasons = {r.id: r.reason for r in await w.rejected(10)}
        assert set(reasons) == {"json", "type", "topics", " ", "dims"}
        assert "metadata" in reasons["json"] and "memory_type" in reasons["type"] and "2 dims" in reasons["dims"]
        assert (await w.stats()).rejected == 5
        assert (await import_changes(w, source)).read == 0  # the cursor moved past them


async def test_status_reports_cursors_lag_and_rejected(warehouse):
    a = InMemoryBackend()
    source = StoreSource(a)
    await a.add([MemoryRecord(text=f"t{i}", id=f"i{i}") for i in range(5)])
    status = await sync_status(source, warehouse)
    assert status["export"]["cursor"] is None and status["export"]["lag_records"] == 5
    await export_changes(source, warehouse)
    status = await sync_status(source, warehouse)
    assert status["export"]["lag_records"] == 0 and status["export"]["last_run"]["rows"] == 5
    assert status["import"]["lag_records"] == 5 and status["target_rows"] == 5


async def test_sync_primitive_in_a_pipeline(warehouse):
    a = InMemoryBackend()
    await a.add([MemoryRecord(text="x", id="1")])
    step = SyncPrimitive(a, warehouse, direction="both")
    out = await step.execute({"query": "q"}, WorkflowContext())
    assert out["query"] == "q" and out["sync"]["export"]["read"] == 1 and out["sync"]["import"]["own"] == 1
    with pytest.raises(InvalidInputError):
        SyncPrimitive(a, warehouse, direction="sideways")


async def test_bad_arguments_are_typed_errors(warehouse):
    source = StoreSource(InMemoryBackend())
    for size in (0, 10_001, "5", None):
        with pytest.raises(InvalidInputError):
            await export_changes(source, warehouse, batch_size=size)  # type: ignore[arg-type]
    for text in ("", "[1,2]", "junk", '["a", "b", "c"]', "[1.5, \"a\", \"b\"]"):
        with pytest.raises(InvalidInputError):
            Cursor.from_text(text)
    with pytest.raises(InvalidInputError):
        await InMemoryBackend().changes(("not a time", "", ""))


_ident = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6).filter(lambda s: s.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "delete", "sync"]), _ident, _ident, st.text(max_size=20)), max_size=25))
async def test_property_export_then_import_reproduces_the_live_store(tmp_path_factory, ops):
    """Random adds (replaces) and deletes with hostile identifiers, exports between them:
    importing the warehouse into an empty store gives exactly the source's live records."""
    path = tmp_path_factory.mktemp("prop") / "w.duckdb"
    a, b = InMemoryBackend(), InMemoryBackend()
    source = StoreSource(a)
    async with DuckDBWarehouse(path) as w:
        for op, ns, id, text in ops:
            if op == "add":
                await a.add([MemoryRecord(text=text, id=id, namespace=ns, topics=(ns,), metadata={id: text})])
            elif op == "delete":
                await a.delete([id], namespace=ns)
            else:
                await export_changes(source, w, batch_size=3)
        await export_changes(source, w, batch_size=3)
        await import_changes(w, StoreSource(b), batch_size=4)
    assert live(b) == live(a)


async def test_record_row_conversion_is_exact():
    record = hostile_records()[5]
    [stored] = await InMemoryBackend().add([record])
    assert record_from_row(row_from_change(stored)) == stored


def test_cli_sync_export_status_import(tmp_path, monkeypatch, capsys):
    from primitives.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    target = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    assert main(["sync", "export", "--target", target, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["read"] == 0
    assert main(["sync", "status", "--target", target, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["target"] == target and status["export"]["cursor"] is None
    assert main(["sync", "import", "--target", target, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is True
    assert main(["sync", "export", "--target", target, "--batch-size", "0"]) == 2
    assert main(["sync", "export", "--target", "nosuchname"]) == 2
    assert main(["sync", "export", "--target", "ftp://x"]) == 2
    assert main(["sync", "export"]) == 0  # the default target: a DuckDB file under .memory-primitives/
    assert (tmp_path / ".memory-primitives" / "memories.duckdb").exists()


def test_target_urls_and_names_resolve_to_the_registered_targets(tmp_path):
    from primitives.errors import ConfigurationError
    from primitives.sync.targets import DEFAULT_TARGET, open_target, resolve_target

    env = {"MEMORY_SYNC_DATACLOUD_TOKEN": "tok", "MEMORY_SYNC_SNOWFLAKE_PASSWORD": "sf-secret",
           "MEMORY_SYNC_TARGET_ARCHIVE": f"duckdb:///{tmp_path / 'a.duckdb'}"}
    cases = {
        f"duckdb:///{tmp_path / 'x.duckdb'}?table=t&vectors=0": "duckdb",
        "postgresql://u:pg-secret@127.0.0.1:5432/db": "postgresql",
        f"delta:///{tmp_path / 'lake'}": "delta",
        "datacloud://example.my.salesforce.com?connector=c&object=o": "datacloud",
        "snowflake://bob@acct/DB/SCH?warehouse=WH": "snowflake",
        "archive": "duckdb",
    }
    for url, name in cases.items():
        target = open_target(url, env)
        assert target.name == name, url
        assert "secret" not in target.url
    assert open_target(f"duckdb:///{tmp_path / 'x.duckdb'}?vectors=0", env).holds_vectors is False
    assert resolve_target(None, {}) == DEFAULT_TARGET
    for bad in ("ftp://x", "no such name", "missing", "duckdb:///", "datacloud://h?connector=c", "snowflake://acct"):
        with pytest.raises(ConfigurationError):
            open_target(bad, env)
