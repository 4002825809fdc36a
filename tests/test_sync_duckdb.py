"""The DuckDB target passes the sync target contract; its own schema checks and file errors."""

from __future__ import annotations

import pytest

from primitives.errors import SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.duckdb_target import DuckDBWarehouse
from tests.sync_contract import WarehouseContract, make_row


class TestDuckDBContract(WarehouseContract):
    @pytest.fixture
    async def target(self, tmp_path):
        async with DuckDBWarehouse(tmp_path / "m.duckdb") as w:
            yield w


class TestDuckDBNoVectorsContract(WarehouseContract):
    vectors = False

    @pytest.fixture
    async def target(self, tmp_path):
        async with DuckDBWarehouse(tmp_path / "m.duckdb", vectors=False) as w:
            yield w


async def test_column_names_are_configurable(tmp_path):
    async with DuckDBWarehouse(tmp_path / "m.duckdb", table="agent memory", columns={"text": "content", "updated_at": "modified_at"}) as w:
        await w.upsert([make_row("n", "x", 1, "hello")])
        assert await w.execute('SELECT content FROM "agent memory"') == [("hello",)]
        [raw] = await w.changes_after(None, 10)
        assert raw["text"] == "hello"


async def test_missing_column_names_the_column_and_the_fix(tmp_path):
    import duckdb

    path = tmp_path / "m.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE memories (namespace VARCHAR, id VARCHAR, PRIMARY KEY (namespace, id))")
    con.close()
    with pytest.raises(SyncSchemaError) as info:
        await DuckDBWarehouse(path).open()
    assert info.value.column == "user_id" and "ADD COLUMN user_id" in str(info.value)


async def test_wrong_column_type_is_named(tmp_path):
    import duckdb

    path = tmp_path / "m.duckdb"
    async with DuckDBWarehouse(path):
        pass
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE memories DROP COLUMN ttl")
    con.execute("ALTER TABLE memories ADD COLUMN ttl VARCHAR")
    con.close()
    with pytest.raises(SyncSchemaError) as info:
        await DuckDBWarehouse(path).open()
    assert info.value.column == "ttl"


@pytest.mark.parametrize("content", [b"", b"not a duckdb file at all" * 100])
async def test_damaged_file_is_a_typed_error_naming_it(tmp_path, content):
    path = tmp_path / "m.duckdb"
    path.write_bytes(content)
    with pytest.raises(SyncTargetUnavailableError) as info:
        await DuckDBWarehouse(path).open()
    assert str(path) in str(info.value)


async def test_a_directory_in_the_way_is_a_typed_error(tmp_path):
    (tmp_path / "m.duckdb").mkdir()
    with pytest.raises(SyncTargetUnavailableError):
        await DuckDBWarehouse(tmp_path / "m.duckdb").open()


async def test_data_survives_reopen(tmp_path):
    path = tmp_path / "m.duckdb"
    async with DuckDBWarehouse(path) as w:
        await w.upsert([make_row("n", "x", 1, "kept")], state={"k": "v"})
    async with DuckDBWarehouse(path) as w:
        assert (await w.changes_after(None, 10))[0]["text"] == "kept"
        assert await w.get_state("k") == "v"
