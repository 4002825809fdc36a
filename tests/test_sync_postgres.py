"""The PostgreSQL target passes the sync target contract; its schema checks, the NUL escape, the
redacted URL, and what a failure mid-batch leaves (nothing)."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import timedelta

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from primitives.errors import SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.postgres_target import PostgresWarehouse, decode_text, encode_text, redact_url
from primitives.sync.rows import Cursor, SyncRow, row_from_mapping
from primitives.tooling.localredis import free_port
from tests.sync_contract import T0, WarehouseContract, make_row

pytestmark = pytest.mark.integration


async def _sql(url: str, *statements: str) -> list[tuple]:
    """Run statements on a connection of their own; the last one's rows."""
    rows: list[tuple] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as con:
        for statement in statements:
            cur = await con.execute(statement)
            rows = await cur.fetchall() if cur.description is not None else []
    return rows


@pytest.fixture
async def schema(postgres_server):
    """A fresh schema for one test (its three tables live there), dropped afterwards."""
    name = f"sync_test_{uuid.uuid4().hex[:12]}"
    yield name
    await _sql(postgres_server.url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class TestPostgresContract(WarehouseContract):
    @pytest.fixture
    async def target(self, postgres_server, schema):
        async with PostgresWarehouse(postgres_server.url, schema=schema) as w:
            yield w


class TestPostgresNoVectorsContract(WarehouseContract):
    vectors = False

    @pytest.fixture
    async def target(self, postgres_server, schema):
        async with PostgresWarehouse(postgres_server.url, schema=schema, vectors=False) as w:
            yield w


# -- the NUL escape ---------------------------------------------------------------------------------

_CHARS = st.text(alphabet=st.sampled_from(["\x00", "\x01", "\x02", "\\", "0", "a", "é", "\U0010ffff"]), max_size=8)


@given(_CHARS, _CHARS)
def test_escape_round_trips_and_keeps_code_point_order(a, b):
    ea, eb = encode_text(a), encode_text(b)
    assert decode_text(ea) == a and "\x00" not in ea
    assert (ea < eb) == (a < b) and (ea == eb) == (a == b)
    # UTF-8 bytes (what COLLATE "C" compares) order like the code points
    assert (ea.encode() < eb.encode()) == (a < b)


def test_ordinary_strings_are_stored_as_they_are():
    for s in ("plain", "back\\slash", "a\\0", "日本語", "\u200b"):
        assert encode_text(s) == s


async def test_keys_with_nul_and_escape_characters_are_distinct_and_ordered(postgres_server, schema):
    # with escaping per row only, "a\0" would be stored like the literal "a\\0" and collide
    ids = ["a", "a\x00", "a\x00\x00", "a\x00b", "a\x01", "a\x01\x00", "a\x01\x02", "a\x02", "a\\0", "a\\", "\x00", "\x01", "b"]
    rows = [make_row(ns, i, k % 2) for k, i in enumerate(ids) for ns in ("n", "n\x00", "n\x01")]
    async with PostgresWarehouse(postgres_server.url, schema=schema) as w:
        assert await w.upsert(rows) == len(rows)
        seen, cursor = [], None
        while page := await w.changes_after(cursor, 4):
            got = [row_from_mapping(r) for r in page]
            seen += got
            cursor = got[-1].cursor()
        assert [r.sort_key() for r in seen] == sorted(r.sort_key() for r in rows)
        # a cursor on a key that is not stored (the SQL compares the escaped cursor)
        after = await w.changes_after(Cursor(T0 + timedelta(seconds=1), "n\x00", "a\x00"), 100)
        want = sorted((r for r in rows if r.sort_key() > (rows[0].sort_key()[0] + 1_000_000, "n\x00", "a\x00")), key=SyncRow.sort_key)
        assert [(r["namespace"], r["id"]) for r in after] == [(r.namespace, r.id) for r in want]
        assert await w.execute(f'SELECT count(*) FROM "{schema}".memories WHERE namespace = %s AND id = %s', ["n", "a\\0"]) == [(1,)]


async def test_json_is_kept_as_written(postgres_server, schema):
    row = make_row("n", "x", 1, metadata={"neg": -0.0, "big": 1e300, "int": 2**70, "s": "\x00\x01"}, topics=("\x00",))
    async with PostgresWarehouse(postgres_server.url, schema=schema) as w:
        await w.upsert([row])
        [raw] = await w.changes_after(None, 10)
        back = row_from_mapping(raw)
        assert back.version == row.version  # the same content hashes the same
        assert math.copysign(1, back.metadata["neg"]) == -1 and back.metadata["big"] == 1e300
        assert back.topics == ("\x00",)
        [(text,)] = await w.execute(f'SELECT metadata FROM "{schema}".memories')
        assert "\x00" not in text and "\\u0000" in text


async def test_vectors_are_exact_float32(postgres_server, schema):
    import struct

    odd = tuple(struct.unpack("f", struct.pack("f", x))[0] for x in (0.1, -0.0, 3.4028234663852886e38, 1e-45, -1.5, 1 / 3))
    rows = [make_row("n", "odd", 1, embedding=odd), make_row("n", "one", 1, embedding=(2.5,)), make_row("n", "none", 1)]
    async with PostgresWarehouse(postgres_server.url, schema=schema) as w:
        await w.upsert(rows)
        back = {r["id"]: r["embedding"] for r in await w.changes_after(None, 10)}
        assert [x.hex() for x in back["odd"]] == [x.hex() for x in odd]
        assert back["one"] == [2.5] and back["none"] is None
        assert await w.execute(f'SELECT embedding[2]::text, array_ndims(embedding) FROM "{schema}".memories WHERE id = %s', ["odd"]) == [("-0", 1)]


# -- schema ---------------------------------------------------------------------------------------


async def test_column_names_and_table_are_configurable(postgres_server, schema):
    columns = {"text": "content", "updated_at": "modified_at"}
    async with PostgresWarehouse(postgres_server.url, schema=schema, table="agent memory", columns=columns) as w:
        await w.upsert([make_row("n", "x", 1, "hello")])
        assert await w.execute(f'SELECT content FROM "{schema}"."agent memory"') == [("hello",)]
        [raw] = await w.changes_after(None, 10)
        assert raw["text"] == "hello"
    async with PostgresWarehouse(postgres_server.url, schema=schema, table="agent memory", columns=columns) as w:
        assert (await w.stats()).rows == 1  # the table it made passes its own check


async def test_default_schema_is_the_search_path(postgres_server):
    table = f"mem_{uuid.uuid4().hex[:10]}"
    try:
        async with PostgresWarehouse(postgres_server.url, table=table) as w:
            await w.upsert([make_row("n", "x", 1)])
        assert await _sql(postgres_server.url, f"SELECT count(*) FROM public.{table}") == [(1,)]
    finally:
        await _sql(postgres_server.url, f"DROP TABLE IF EXISTS public.{table}")


async def test_missing_column_names_the_column_and_the_fix(postgres_server, schema):
    await _sql(
        postgres_server.url, f'CREATE SCHEMA "{schema}"',
        f'CREATE TABLE "{schema}".memories (namespace text, id text, PRIMARY KEY (namespace, id))',
    )  # fmt: skip
    with pytest.raises(SyncSchemaError) as info:
        await PostgresWarehouse(postgres_server.url, schema=schema).open()
    assert info.value.column == "user_id" and 'ADD COLUMN "user_id" text' in str(info.value)


@pytest.mark.parametrize(("column", "wrong"), [("ttl", "text"), ("metadata", "jsonb"), ("embedding", "double precision[]"), ("updated_at", "timestamp")])
async def test_wrong_column_type_is_named_with_the_fix(postgres_server, schema, column, wrong):
    async with PostgresWarehouse(postgres_server.url, schema=schema):
        pass
    await _sql(postgres_server.url, f'ALTER TABLE "{schema}".memories ALTER COLUMN {column} TYPE {wrong} USING NULL')
    with pytest.raises(SyncSchemaError) as info:
        await PostgresWarehouse(postgres_server.url, schema=schema).open()
    assert info.value.column == column and f'ALTER COLUMN "{column}" TYPE' in info.value.fix


async def test_missing_unique_key_is_named(postgres_server, schema):
    async with PostgresWarehouse(postgres_server.url, schema=schema):
        pass
    await _sql(postgres_server.url, f'ALTER TABLE "{schema}".memories DROP CONSTRAINT memories_pkey')
    with pytest.raises(SyncSchemaError) as info:
        await PostgresWarehouse(postgres_server.url, schema=schema).open()
    assert info.value.column == "namespace" and "ADD PRIMARY KEY" in info.value.fix


# -- URLs and unreachable servers -------------------------------------------------------------------


def test_password_is_not_in_url(postgres_server):
    assert PostgresWarehouse(postgres_server.url).url == postgres_server.url.replace(f":{postgres_server.password}@", "@")
    assert postgres_server.password not in PostgresWarehouse(postgres_server.url).url
    assert redact_url("postgresql://u:s3cret@h:1,h2:2/db?password=s3cret&sslmode=require") == "postgresql://u@h:1,h2:2/db?sslmode=require"
    assert "s3cret" not in redact_url("host=h user=u password=s3cret dbname=db")
    assert redact_url("postgresql://h/db") == "postgresql://h/db"


async def test_unreachable_server_is_a_typed_error_without_the_password():
    url = f"postgresql://u:s3cret@127.0.0.1:{free_port()}/db"
    with pytest.raises(SyncTargetUnavailableError) as info:
        await PostgresWarehouse(url).open()
    assert "s3cret" not in str(info.value) and info.value.target == "postgresql://u@127.0.0.1:" + url.split(":")[-1]


async def test_calls_before_open_are_a_typed_error(postgres_server):
    with pytest.raises(SyncTargetUnavailableError, match="not open"):
        await PostgresWarehouse(postgres_server.url).changes_after(None, 10)


# -- failures mid-batch leave nothing ----------------------------------------------------------------


async def test_a_failure_after_the_rows_before_the_state_leaves_neither(postgres_server, schema):
    async with PostgresWarehouse(postgres_server.url, schema=schema) as w:
        await w.upsert([make_row("n", "old", 1)], state={"cursor": "first"})
        await _sql(
            postgres_server.url,
            f'CREATE FUNCTION "{schema}".boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION \'boom\'; END $$',
            f'CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON "{schema}".sync_state FOR EACH ROW '
            f'WHEN (NEW.key = \'cursor\') EXECUTE FUNCTION "{schema}".boom()',
        )  # fmt: skip
        with pytest.raises(SyncTargetUnavailableError, match="boom"):
            await w.upsert([make_row("n", "new", 2), make_row("n", "old", 3, "changed")], state={"cursor": "second"})
        assert [(r["id"], r["text"]) for r in await w.changes_after(None, 10)] == [("old", "t")]
        assert await w.get_state("cursor") == "first"
        # the connection is usable again
        assert await w.upsert([make_row("n", "new", 2)], state={"other": "x"}) == 1


async def test_server_killed_mid_batch_leaves_nothing_and_the_target_reconnects(tmp_path):
    from tests.postgres_server import start_postgres

    server = start_postgres(None)  # a server of its own: this test kills it
    try:
        async with PostgresWarehouse(server.url) as w:
            await w.upsert([make_row("n", "kept", 1)], state={"cursor": "first"})
            # the merge statement sleeps, so the kill lands inside the batch's transaction
            await _sql(
                server.url,
                "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$",
                "CREATE TRIGGER slow BEFORE INSERT ON memories FOR EACH STATEMENT EXECUTE FUNCTION slow()",
            )  # fmt: skip
            batch = asyncio.create_task(w.upsert([make_row("n", f"lost{i}", 2) for i in range(1000)], state={"cursor": "second"}))
            for _ in range(200):
                if await _sql(server.url, "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the batch never reached the merge")
            pid = server.pid()
            await asyncio.to_thread(server.kill)
            with pytest.raises(SyncTargetUnavailableError) as info:
                await asyncio.wait_for(batch, 30)
            assert server.password not in str(info.value)
            with pytest.raises(SyncTargetUnavailableError):
                await w.get_state("cursor")  # still down
            await _gone(pid)
            await asyncio.to_thread(server.start)
            await _sql(server.url, "DROP TRIGGER slow ON memories")
            assert [r["id"] for r in await w.changes_after(None, 2000)] == ["kept"]
            assert await w.get_state("cursor") == "first"
            assert await w.upsert([make_row("n", "after", 3)]) == 1
    finally:
        await asyncio.to_thread(server.stop)


async def _gone(pid: int | None, timeout: float = 30) -> None:
    """Wait until a killed postmaster is reaped: while it is a zombie, its socket lock file
    still names a live pid and a new server on the same port refuses to start."""
    from pathlib import Path

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pid is not None and Path(f"/proc/{pid}").exists() and loop.time() < deadline:
        await asyncio.sleep(0.1)


# -- batches --------------------------------------------------------------------------------------


async def test_large_batches_merge_last_writer_wins(postgres_server, schema):
    rows = [make_row(f"ns{i % 7}", f"id{i}", 1, embedding=(float(i), 0.5)) for i in range(10_000)]
    async with PostgresWarehouse(postgres_server.url, schema=schema) as w:
        assert await w.upsert(rows) == 10_000
        assert await w.upsert(rows) == 0
        newer = [make_row(r.namespace, r.id, 2, "v2") for r in rows[::2]]
        assert await w.upsert(newer + rows[1::2]) == 5_000
        stats = await w.stats()
        assert (stats.rows, stats.max_updated_at) == (10_000, T0 + timedelta(seconds=2))
