"""The Delta Lake target passes the sync target contract; plus what is Delta's own: other readers
see the table, racing writers both land, a damaged log is a typed error, the state rides in the
merge commit."""

from __future__ import annotations

import os

import asyncio
import json
import math
import subprocess
import sys
from datetime import timedelta

import pytest

if os.environ.get("CI") != "true":  # under CI a missing package fails loudly at import
    pytest.importorskip("deltalake")


from deltalake import DeltaTable  # noqa: E402
from deltalake.exceptions import CommitFailedError  # noqa: E402

from primitives.errors import SyncSchemaError, SyncTargetUnavailableError  # noqa: E402
from primitives.sync import delta_target  # noqa: E402
from primitives.sync.delta_target import STATE_FIELD, DeltaWarehouse  # noqa: E402
from primitives.sync.rows import Cursor, row_from_mapping  # noqa: E402
from tests.sync_contract import HOSTILE, T0, WarehouseContract, full_row, make_row  # noqa: E402


class TestDeltaContract(WarehouseContract):
    @pytest.fixture
    async def target(self, tmp_path):
        async with DeltaWarehouse(tmp_path / "memories") as w:
            yield w


class TestDeltaNoVectorsContract(WarehouseContract):
    vectors = False

    @pytest.fixture
    async def target(self, tmp_path):
        async with DeltaWarehouse(tmp_path / "memories", vectors=False) as w:
            yield w


_READER = """
import json, sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1]).to_pyarrow_table()
rows = sorted(t.to_pylist(), key=lambda r: (r["namespace"], r["id"]))
print(json.dumps([[r["namespace"], r["id"], r["text"], r["embedding"], repr(r["ttl"]),
                   r["updated_at"].isoformat()] for r in rows]))
"""


async def test_table_is_read_by_a_fresh_process_with_the_same_rows(tmp_path):
    path = tmp_path / "memories"
    rows = [full_row(i, s) for i, s in enumerate(HOSTILE)]
    async with DeltaWarehouse(path) as w:
        await w.upsert(rows[:10])
        await w.upsert(rows[5:])
    out = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True, check=True)
    want = sorted(rows, key=lambda r: (r.namespace, r.id))
    assert json.loads(out.stdout) == [
        [r.namespace, r.id, r.text, list(r.embedding), repr(r.ttl), r.updated_at.isoformat()] for r in want
    ]
    assert any(math.isinf(r.ttl or 0) for r in rows)


async def test_the_state_rides_in_the_merge_commit(tmp_path):
    path = tmp_path / "memories"
    async with DeltaWarehouse(path) as w:
        await w.upsert([make_row("n", "x", 1)], state={"export_a": "c1"})
    [newest] = DeltaTable(str(path)).history(1)
    assert newest["operation"] == "MERGE"
    assert json.loads(newest[STATE_FIELD]) == {"export_a": "c1"}


async def test_state_is_kept_when_no_row_wins(tmp_path):
    async with DeltaWarehouse(tmp_path / "memories") as w:
        await w.upsert([make_row("n", "x", 5)], state={"k": "1"})
        assert await w.upsert([make_row("n", "x", 1)], state={"k": "2", "other": "o"}) == 0
        assert (await w.get_state("k"), await w.get_state("other")) == ("2", "o")


async def test_data_and_state_survive_reopen(tmp_path):
    path = tmp_path / "memories"
    cursor = Cursor(T0, "n", "x").to_text()
    async with DeltaWarehouse(path) as w:
        await w.upsert([make_row("n", "x", 1, "kept")], state={"export_s": cursor})
        await w.set_state("import_s", "i1")
        await w.reject([delta_target_rejected()])
    async with DeltaWarehouse(path) as w:
        assert (await w.changes_after(None, 10))[0]["text"] == "kept"
        assert (await w.get_state("export_s"), await w.get_state("import_s")) == (cursor, "i1")
        assert (await w.stats()).rejected == 1


def delta_target_rejected():
    from primitives.sync.rows import RejectedRow

    return RejectedRow("import", "n", "x", "text is missing", "{}", T0)


async def test_two_writers_racing_both_land_and_last_writer_wins(tmp_path):
    path = tmp_path / "memories"
    async with DeltaWarehouse(path) as a, DeltaWarehouse(path) as b:

        async def write(w, name: str, second: int) -> None:
            for k in range(6):
                own = [make_row(name, f"r{k}-{i}", second) for i in range(20)]
                shared = [make_row("shared", f"s{i}", second + k, f"{name}{k}") for i in range(20)]
                await w.upsert(own + shared, state={f"export_{name}": str(k)})

        await asyncio.gather(write(a, "a", 10), write(b, "b", 100))
        raw = await a.changes_after(None, 1000)
        assert len(raw) == 2 * 6 * 20 + 20
        assert {r["text"] for r in raw if r["namespace"] == "shared"} == {"b5"}
        # neither writer's state key was lost to the other's commits
        assert (await b.get_state("export_a"), await a.get_state("export_b")) == ("5", "5")


async def test_a_lost_commit_race_is_retried_and_keeps_the_winners_state(tmp_path):
    path = tmp_path / "memories"
    async with DeltaWarehouse(path) as a, DeltaWarehouse(path) as b:
        await a.upsert([make_row("n", "x", 1, "first")])
        state_of, raced = a._state_of, []

        def racing_state_of(dt):
            state = state_of(dt)
            if not raced:  # b commits between a's read and a's commit
                raced.append(1)
                b._upsert_sync(None, {"export_b": "b1"})
                b._upsert_sync(delta_target.arrow_table([make_row("n", "y", 3, "b")], b.columns.names), {})
            return state

        a._state_of = racing_state_of
        assert await a.upsert([make_row("n", "x", 2, "a")], state={"export_a": "a1"}) == 1
        assert raced
        assert sorted(r["text"] for r in await a.changes_after(None, 10)) == ["a", "b"]
        assert (await a.get_state("export_a"), await a.get_state("export_b")) == ("a1", "b1")


async def test_endless_conflicts_give_up_with_a_typed_error(tmp_path, monkeypatch):
    async with DeltaWarehouse(tmp_path / "memories") as w:
        calls = []

        def conflict(*args):
            calls.append(1)
            raise CommitFailedError("Failed to commit transaction: 0")

        monkeypatch.setattr(w, "_commit_once", conflict)
        monkeypatch.setattr(delta_target.time, "sleep", lambda s: None)
        with pytest.raises(SyncTargetUnavailableError, match="commit races"):
            await w.upsert([make_row("n", "x", 1)])
        assert len(calls) == delta_target.COMMIT_ATTEMPTS


@pytest.mark.parametrize("keep", [0.5, 0.0])
async def test_a_truncated_log_file_is_a_typed_error_naming_it(tmp_path, keep):
    path = tmp_path / "memories"
    async with DeltaWarehouse(path) as w:
        await w.upsert([make_row("n", "x", 1)])
        await w.upsert([make_row("n", "y", 2)])
    log = path / "_delta_log" / "00000000000000000001.json"
    data = log.read_bytes()
    log.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SyncTargetUnavailableError) as info:
        await DeltaWarehouse(path).open()
    assert str(log) in str(info.value) and "Fix:" in str(info.value)


async def test_a_log_damaged_while_open_is_a_typed_error(tmp_path):
    path = tmp_path / "memories"
    async with DeltaWarehouse(path) as w:
        await w.upsert([make_row("n", "x", 1)])
        async with DeltaWarehouse(path) as other:
            await other.upsert([make_row("n", "y", 2)])
        log = path / "_delta_log" / "00000000000000000002.json"
        log.write_bytes(log.read_bytes()[:40])
        with pytest.raises(SyncTargetUnavailableError, match="00000000000000000002.json"):
            await w.changes_after(None, 10)


async def test_a_file_in_the_way_is_a_typed_error(tmp_path):
    (tmp_path / "memories").write_text("not a table")
    with pytest.raises(SyncTargetUnavailableError, match="memories"):
        await DeltaWarehouse(tmp_path / "memories").open()


async def test_column_names_are_configurable(tmp_path):
    path = tmp_path / "memories"
    async with DeltaWarehouse(path, columns={"text": "Content", "updated_at": "modified_at"}) as w:
        await w.upsert([make_row("n", "x", 1, "hello")])
        assert await w.upsert([make_row("n", "x", 2, "again")]) == 1
        [raw] = await w.changes_after(None, 10)
        assert raw["text"] == "again" and row_from_mapping(raw).updated_at == T0 + timedelta(seconds=2)
    assert DeltaTable(str(path)).to_pyarrow_table().column("Content").to_pylist() == ["again"]


async def test_missing_and_mistyped_columns_are_named(tmp_path):
    import pyarrow as pa

    path = tmp_path / "memories"
    DeltaTable.create(str(path), pa.schema([("namespace", pa.string()), ("id", pa.string())]))
    with pytest.raises(SyncSchemaError) as info:
        await DeltaWarehouse(path).open()
    assert info.value.column == "user_id"

    schema = delta_target.arrow_table([], DeltaWarehouse(path).columns.names).schema
    typed = pa.schema([f if f.name != "ttl" else pa.field("ttl", pa.string()) for f in schema])
    DeltaTable.create(str(tmp_path / "typed"), typed)
    with pytest.raises(SyncSchemaError) as info:
        await DeltaWarehouse(tmp_path / "typed").open()
    assert info.value.column == "ttl"


async def test_rejected_rows_live_beside_the_data_not_in_it(tmp_path):
    path = tmp_path / "memories"
    async with DeltaWarehouse(path) as w:
        await w.upsert([make_row("n", "x", 1)])
        await w.reject([delta_target_rejected()])
        await w.reject([delta_target_rejected()])
        assert [r.reason for r in await w.rejected(10)] == ["text is missing"] * 2
    assert DeltaTable(str(path)).to_pyarrow_table().num_rows == 1
    assert DeltaTable(str(path)).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True) == []
