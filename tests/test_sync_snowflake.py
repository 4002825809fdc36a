"""The Snowflake target passes the sync target contract on fakesnow (Snowflake emulated on DuckDB);
its MERGE per key, schema checks, identifier quoting, and what a failure mid-batch leaves (nothing).

Nothing here reaches a real Snowflake account. One fakesnow gap is worked around, not skipped: a
``MERGE`` inside ``BEGIN ... COMMIT`` fails on fakesnow 0.12 in an ordinary database, because
fakesnow runs the MERGE as several DuckDB statements, one of them a ``CREATE TABLE`` after which it
writes its own metadata database ``_fs_global``, and DuckDB lets one transaction write only one
attached database. The target's database here is therefore ``_FS_GLOBAL`` itself (with fakesnow's
per-database views added to it). Snowflake has no such limit; the SQL the target sends is the same.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # under CI a missing fakesnow fails loudly
    pytest.importorskip("fakesnow")

import snowflake.connector.errors as sf_errors
from fakesnow import info_schema, macros
from fakesnow.instance import GLOBAL_DATABASE_NAME, FakeSnow

from primitives.errors import ConfigurationError, SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.rows import row_from_mapping
from primitives.sync.snowflake_target import (
    SnowflakeWarehouse,
    check_columns,
    merge_sql,
    quote_identifier,
    stored_name,
)
from tests.sync_contract import T0, WarehouseContract, make_row

DB = GLOBAL_DATABASE_NAME.upper()
# fakesnow's own note on every result (DuckDB 2.0 on its DB-API path), nothing of the target's
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


def fake_snow() -> FakeSnow:
    """A fakesnow instance whose database :data:`DB` can hold a MERGE in a transaction (above)."""
    fs = FakeSnow()
    fs.duck_conn.execute(info_schema.per_db_creation_sql(DB))
    fs.duck_conn.execute(macros.creation_sql(DB))
    return fs


def target(fs: FakeSnow, connect: Any = None, **kw: Any) -> SnowflakeWarehouse:
    return SnowflakeWarehouse(
        account="fakesnow", user="tester", password="s3cret-pw", database=DB, connect=connect or fs.connect, **kw
    )


def side_sql(fs: FakeSnow, *statements: str, params: list | None = None) -> list[tuple]:
    """Run statements on a connection of their own (as another session would); the last one's rows."""
    con = fs.connect(database=DB, schema="PUBLIC", paramstyle="qmark")
    cur = con.cursor()
    for sql in statements:
        cur.execute(sql, params)
    return cur.fetchall()


class Recording:
    """A connection that records every statement and can fail the first one containing ``fail_on``
    (a Snowflake ``ProgrammingError``, as a statement failing on the server raises)."""

    def __init__(self, con: Any, log: list[str], fail_on: str | None = None) -> None:
        self._con, self.log, self.fail_on = con, log, fail_on

    def cursor(self) -> _RecordingCursor:
        return _RecordingCursor(self._con.cursor(), self)

    def is_closed(self) -> bool:
        return self._con.is_closed()

    def close(self) -> None:
        self._con.close()


class _RecordingCursor:
    def __init__(self, cur: Any, con: Recording) -> None:
        self._cur, self._con = cur, con

    def _check(self, sql: str) -> None:
        self._con.log.append(sql)
        if self._con.fail_on is not None and self._con.fail_on in sql:
            self._con.fail_on = None
            raise sf_errors.ProgrammingError(msg="injected failure", errno=100000, sqlstate="22000")

    def execute(self, sql: str, params: Any = None) -> _RecordingCursor:
        self._check(sql)
        self._cur.execute(sql, params)
        return self

    def executemany(self, sql: str, seq: Any) -> _RecordingCursor:
        self._check(sql)
        self._cur.executemany(sql, seq)
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> Any:
        return self._cur.fetchall()

    @property
    def description(self) -> Any:
        return self._cur.description


class TestSnowflakeContract(WarehouseContract):
    @pytest.fixture
    async def target(self):
        async with target(fake_snow()) as w:
            yield w


class TestSnowflakeNoVectorsContract(WarehouseContract):
    vectors = False

    @pytest.fixture
    async def target(self):
        async with target(fake_snow(), vectors=False) as w:
            yield w


# -- MERGE -----------------------------------------------------------------------------------------


async def test_one_batch_merges_each_key_against_the_stored_row():
    stored = [
        make_row("n", "older", 5, "stored"),
        make_row("n", "tie", 5, "stored"),
        make_row("n", "deleted", 5, "stored"),
        make_row("n", "newer", 5, "stored"),
    ]
    incoming = [
        make_row("n", "older", 3, "incoming"),  # older: never overwrites
        make_row("n", "tie", 5, "incoming"),  # same time: the larger version wins
        make_row("n", "deleted", 5, "", deleted_at=T0 + timedelta(seconds=5)),  # a delete wins a tie
        make_row("n", "newer", 9, "incoming"),
        make_row("n", "new", 1, "incoming"),
    ]
    async with target(fake_snow()) as w:
        assert await w.upsert(stored) == 4
        want = {r.id: r for r in stored}
        for r in incoming:
            if r.id not in want or r.wins_over(want[r.id]):
                want[r.id] = r
        expected_written = sum(1 for r in incoming if want[r.id] is r)
        assert await w.upsert(incoming) == expected_written
        got = {row_from_mapping(raw).id: row_from_mapping(raw) for raw in await w.changes_after(None, 100)}
        assert {k: (r.text, r.version, r.is_tombstone) for k, r in got.items()} == {
            k: (r.text, r.version, r.is_tombstone) for k, r in want.items()
        }
        assert got["older"].text == "stored" and got["deleted"].is_tombstone and got["newer"].text == "incoming"
        assert await w.upsert(incoming) == 0  # re-sending changes nothing


def test_rendered_merge_is_one_statement_with_the_incoming_wins_condition():
    cols = ["namespace", "id", "ttl", "updated_at", "version"]
    names = {"namespace": "namespace", "id": "id", "ttl": "ttl", "updated_at": "modified_at", "version": "version"}
    assert merge_sql('"DB"."PUBLIC"."MEMORIES"', names, cols, '"SYNC_INCOMING"') == (
        'MERGE INTO "DB"."PUBLIC"."MEMORIES" t USING (SELECT "NAMESPACE" AS "NAMESPACE", "ID" AS "ID", '
        'CAST("TTL" AS FLOAT) AS "TTL", TO_TIMESTAMP_NTZ("UPDATED_AT", 6) AS "MODIFIED_AT", "VERSION" AS "VERSION" '
        'FROM "SYNC_INCOMING") s ON t."NAMESPACE" = s."NAMESPACE" AND t."ID" = s."ID" '
        'WHEN MATCHED AND (s."MODIFIED_AT" > t."MODIFIED_AT" OR (s."MODIFIED_AT" = t."MODIFIED_AT" AND s."VERSION" > t."VERSION")) '
        'THEN UPDATE SET "TTL" = s."TTL", "MODIFIED_AT" = s."MODIFIED_AT", "VERSION" = s."VERSION" '
        'WHEN NOT MATCHED THEN INSERT ("NAMESPACE", "ID", "TTL", "MODIFIED_AT", "VERSION") '
        'VALUES (s."NAMESPACE", s."ID", s."TTL", s."MODIFIED_AT", s."VERSION")'
    )


@pytest.mark.parametrize(
    ("typed", "stored", "quoted"),
    [
        ("memories", "MEMORIES", '"MEMORIES"'),
        ("Mem_1$", "MEM_1$", '"MEM_1$"'),
        ("agent memory", "agent memory", '"agent memory"'),
        ('a"b', 'a"b', '"a""b"'),
        ('x"; DROP TABLE t; --', 'x"; DROP TABLE t; --', '"x""; DROP TABLE t; --"'),
        ("1abc", "1abc", '"1abc"'),
        ("$x", "$x", '"$x"'),
    ],
)
def test_identifiers_resolve_and_quote_as_snowflake_does(typed, stored, quoted):
    assert stored_name(typed) == stored
    assert quote_identifier(typed) == quoted


async def test_values_are_bound_never_in_statement_text():
    fs, log = fake_snow(), []
    hostile = "'; DROP TABLE MEMORIES; --\x00\"x\""
    row = make_row(hostile, hostile, 1, hostile, user_id=hostile, metadata={hostile: hostile}, topics=(hostile,))
    async with target(fs, connect=lambda **kw: Recording(fs.connect(**kw), log)) as w:
        await w.upsert([row], state={"k": hostile})
        await w.changes_after(row.cursor(), 10)
        [raw] = await w.changes_after(None, 10)
        assert row_from_mapping(raw).text == hostile and await w.get_state("k") == hostile
    assert log and not any("DROP TABLE MEMORIES" in sql or "\x00" in sql for sql in log)
    assert sum(sql.startswith("MERGE INTO") and '"MEMORIES"' in sql for sql in log) == 1


async def test_strings_are_stored_as_they_are_nul_included():
    async with target(fake_snow()) as w:
        await w.upsert([make_row("n\x00s", "i\x00d", 1, "a\x00b")])
        assert await w.execute(f'SELECT "NAMESPACE", "ID", "TEXT" FROM "{DB}"."PUBLIC"."MEMORIES"') == [("n\x00s", "i\x00d", "a\x00b")]


async def test_times_are_utc_microseconds_and_ttl_keeps_infinity():
    row = make_row("n", "x", 1.000001, ttl=float("inf"))
    async with target(fake_snow()) as w:
        await w.upsert([row])
        [(us, ttl)] = await w.execute(f'SELECT DATE_PART(EPOCH_MICROSECOND, "UPDATED_AT") AS "U", "TTL" FROM "{DB}"."PUBLIC"."MEMORIES"')
        assert (us, ttl) == (row.sort_key()[0], float("inf"))


# -- a failure mid-batch ---------------------------------------------------------------------------


async def test_an_injected_failure_after_the_rows_merge_leaves_neither_rows_nor_state():
    fs, log = fake_snow(), []
    con = {}

    def connect(**kw: Any) -> Recording:
        con["c"] = Recording(fs.connect(**kw), log)
        return con["c"]

    async with target(fs, connect=connect) as w:
        await w.set_state("export:s", "before")
        con["c"].fail_on = '"SYNC_STATE"'
        with pytest.raises(SyncTargetUnavailableError, match="injected failure"):
            await w.upsert([make_row("n", "x", 1)], state={"export:s": "after"})
        assert any('MERGE INTO' in sql and '"MEMORIES"' in sql for sql in log)  # the rows merged first
        assert log[-1] == "ROLLBACK"
        assert await w.changes_after(None, 10) == []
        assert await w.get_state("export:s") == "before"
        assert await w.upsert([make_row("n", "x", 1)], state={"export:s": "after"}) == 1  # still usable
        assert await w.get_state("export:s") == "after"


async def test_a_failing_statement_mid_transaction_leaves_neither_rows_nor_state():
    fs = fake_snow()
    async with target(fs) as w:
        await w.upsert([make_row("n", "kept", 1, "kept")])
        # another session replaces the state table: the state MERGE (after the rows MERGE) cannot
        # assign a timestamp to a BOOLEAN column and fails on the server
        side_sql(
            fs,
            f'DROP TABLE "{DB}"."PUBLIC"."SYNC_STATE"',
            f'CREATE TABLE "{DB}"."PUBLIC"."SYNC_STATE" ("KEY" VARCHAR, "VALUE" VARCHAR, "UPDATED_AT" BOOLEAN)',
            f"INSERT INTO \"{DB}\".\"PUBLIC\".\"SYNC_STATE\" VALUES ('export:s', 'before', NULL)",
        )
        with pytest.raises(SyncTargetUnavailableError):
            await w.upsert([make_row("n", "kept", 2, "changed"), make_row("n", "new", 2)], state={"export:s": "after"})
        assert [(r["id"], r["text"]) for r in await w.changes_after(None, 10)] == [("kept", "kept")]
        assert await w.get_state("export:s") == "before"
        assert side_sql(fs, f'SELECT COUNT(*) AS "N" FROM "{DB}"."PUBLIC"."MEMORIES"') == [(1,)]


# -- schema ----------------------------------------------------------------------------------------


async def test_column_names_are_configurable():
    async with target(fake_snow(), table="agent memory", columns={"text": "content", "updated_at": "modified_at"}) as w:
        await w.upsert([make_row("n", "x", 1, "hello")])
        assert await w.execute(f'SELECT content FROM "{DB}"."PUBLIC"."agent memory"') == [("hello",)]
        [raw] = await w.changes_after(None, 10)
        assert raw["text"] == "hello"


async def test_missing_column_names_the_column_and_the_fix():
    fs = fake_snow()
    side_sql(fs, f'CREATE TABLE "{DB}"."PUBLIC"."MEMORIES" ("NAMESPACE" VARCHAR, "ID" VARCHAR)')
    with pytest.raises(SyncSchemaError) as info:
        await target(fs).open()
    assert info.value.column == "USER_ID" and 'ADD COLUMN "USER_ID" VARCHAR' in str(info.value)
    assert "columns={'user_id': ...}" in str(info.value)


async def test_wrong_column_type_is_named():
    fs = fake_snow()
    async with target(fs):
        pass
    side_sql(fs, f'ALTER TABLE "{DB}"."PUBLIC"."MEMORIES" DROP COLUMN "TTL"', f'ALTER TABLE "{DB}"."PUBLIC"."MEMORIES" ADD COLUMN "TTL" VARCHAR')
    with pytest.raises(SyncSchemaError) as info:
        await target(fs).open()
    assert info.value.column == "TTL" and "sync needs FLOAT" in str(info.value)


def _have(**over: dict) -> dict:
    base = {"NAMESPACE": {"DATA_TYPE": "TEXT", "CHARACTER_MAXIMUM_LENGTH": 16777216, "COLLATION_NAME": None},
            "UPDATED_AT": {"DATA_TYPE": "TIMESTAMP_NTZ", "DATETIME_PRECISION": 6}}  # fmt: skip
    return {k: {**v, **over.get(k, {})} for k, v in base.items()}


_WANT = {"NAMESPACE": ("namespace", "text"), "UPDATED_AT": ("updated_at", "time")}


@pytest.mark.parametrize(
    ("over", "column", "words"),
    [
        ({"NAMESPACE": {"COLLATION_NAME": "en-ci"}}, "NAMESPACE", "collation 'en-ci'"),
        ({"NAMESPACE": {"CHARACTER_MAXIMUM_LENGTH": 10}}, "NAMESPACE", "VARCHAR(10)"),
        ({"UPDATED_AT": {"DATETIME_PRECISION": 3}}, "UPDATED_AT", "3 fractional digits"),
        ({"UPDATED_AT": {"DATA_TYPE": "DATE"}}, "UPDATED_AT", "is DATE"),
    ],
)
def test_columns_snowflake_reports_but_fakesnow_cannot_make_are_checked(over, column, words):
    # fakesnow has no collations and no DATETIME_PRECISION: these checks run on what Snowflake's
    # INFORMATION_SCHEMA.COLUMNS reports, given here as such rows
    with pytest.raises(SyncSchemaError) as info:
        check_columns('"DB"."PUBLIC"."MEMORIES"', _have(**over), _WANT)
    assert info.value.column == column and words in str(info.value)


@pytest.mark.parametrize("over", [{}, {"NAMESPACE": {"COLLATION_NAME": "utf8"}}, {"UPDATED_AT": {"DATA_TYPE": "TIMESTAMP_TZ"}}])
def test_binary_collation_and_other_timestamp_types_are_accepted(over):
    check_columns('"DB"."PUBLIC"."MEMORIES"', _have(**over), _WANT)


# -- connection ------------------------------------------------------------------------------------


def test_url_names_the_place_without_the_password():
    w = target(fake_snow(), schema="Analytics")
    assert w.url == f"snowflake://tester@fakesnow/{DB}/Analytics" and "s3cret" not in repr(w)


@pytest.mark.parametrize("field", ["account", "user", "database", "schema", "table"])
def test_empty_names_are_refused(field):
    kw = {"account": "a", "user": "u", "database": "d", field: ""}
    with pytest.raises(ConfigurationError, match=field):
        SnowflakeWarehouse(**kw)


async def test_a_refused_login_is_a_typed_error_without_the_password():
    def refuse(**kw: Any) -> Any:
        raise sf_errors.DatabaseError(msg="Incorrect username or password was specified.", errno=250001)

    with pytest.raises(SyncTargetUnavailableError) as info:
        await target(fake_snow(), connect=refuse).open()
    assert "snowflake://tester@fakesnow" in str(info.value) and "s3cret" not in str(info.value)


async def test_calls_before_open_are_refused():
    with pytest.raises(SyncTargetUnavailableError, match="not open"):
        await target(fake_snow()).changes_after(None, 10)


async def test_a_closed_connection_is_reopened_by_the_next_call():
    async with target(fake_snow()) as w:
        await w.upsert([make_row("n", "x", 1, "kept")])
        w._con.close()
        assert (await w.changes_after(None, 10))[0]["text"] == "kept"
        assert await w.upsert([make_row("n", "y", 1)]) == 1  # the staging table is back in the schema


async def test_data_survives_reopen():
    fs = fake_snow()
    async with target(fs) as w:
        await w.upsert([make_row("n", "x", 1, "kept")], state={"k": "v"})
    async with target(fs) as w:
        assert (await w.changes_after(None, 10))[0]["text"] == "kept"
        assert await w.get_state("k") == "v"
