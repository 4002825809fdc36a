"""The Salesforce Data Cloud target against the local contract server (no Salesforce account:
:mod:`primitives.tooling.datacloud_local` implements the documented Ingestion and Query APIs).

Ingestion is asynchronous, so the contract runs through :class:`VisibleAfterWrites`, which makes
every read wait (bounded poll, :meth:`DataCloudWarehouse.wait_visible`) for the target's own writes.
"""

from __future__ import annotations

import os

import re
import time
from datetime import timedelta
from itertools import product

import pytest

if os.environ.get("CI") != "true":  # under CI a missing package fails loudly at import
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    pytest.importorskip("duckdb")
    pytest.importorskip("httpx")
import httpx  # noqa: E402


from primitives.errors import AuthenticationFailedError, ConfigurationError, SyncSchemaError, SyncTargetUnavailableError  # noqa: E402
from primitives.sync.datacloud_target import (  # noqa: E402
    DataCloudWarehouse,
    decode_key,
    encode_key,
    exchange_token,
    keyset_text,
    sql_literal,
)
from primitives.sync.rows import Cursor, SyncRow, row_from_mapping  # noqa: E402
from primitives.tooling.datacloud_local import LocalDataCloud, Stream  # noqa: E402
from tests.sync_contract import HOSTILE, T0, WarehouseContract, _fields, full_row, make_row  # noqa: E402

CONNECTOR, OBJECT, TOKEN = "memory_sync", "memory_records", "test-datacloud-token"
INGEST = f"/api/v1/ingest/sources/{CONNECTOR}/{OBJECT}"


def streams() -> dict[tuple[str, str], Stream]:
    """The data streams an admin would create, from the target's own description."""
    spec = DataCloudWarehouse("http://unused", token="x", connector=CONNECTOR, object_name=OBJECT)
    return {(CONNECTOR, s.object_name): Stream(s.primary_key, s.record_modified, s.fields) for s in spec.data_streams()}


@pytest.fixture(scope="module")
def server():
    with LocalDataCloud(streams(), token=TOKEN) as dc:
        yield dc


@pytest.fixture
def dc(server):
    server.reset()
    server.processing_delay, server.query_batch_rows = 0.05, 1_000
    yield server
    assert server.errors == []  # nothing was dropped or failed while applying


class Recorder(httpx.AsyncBaseTransport):
    """Forwards to real HTTP, noting ``(method, path, body bytes)``; ``before`` sees each request."""

    def __init__(self, before=None) -> None:
        self.inner, self.sent, self.before = httpx.AsyncHTTPTransport(), [], before

    async def handle_async_request(self, request):
        self.sent.append((request.method, request.url.path, len(request.content)))
        if self.before is not None:
            self.before(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make(dc, http=None, **kw) -> DataCloudWarehouse:
    return DataCloudWarehouse(dc.url, token=kw.pop("token", TOKEN), connector=CONNECTOR,
                              object_name=kw.pop("object_name", OBJECT), http=http, **kw)


class VisibleAfterWrites:
    """The target, with every read first waiting (at most 10 s) until its writes are queryable."""

    def __init__(self, target: DataCloudWarehouse) -> None:
        self._target = target

    def __getattr__(self, name):
        return getattr(self._target, name)

    async def changes_after(self, cursor, limit):
        await self._target.wait_visible(timeout=10)
        return await self._target.changes_after(cursor, limit)

    async def get_state(self, key):
        await self._target.wait_visible(timeout=10)
        return await self._target.get_state(key)

    async def rejected(self, limit=100):
        await self._target.wait_visible(timeout=10)
        return await self._target.rejected(limit)

    async def stats(self):
        await self._target.wait_visible(timeout=10)
        return await self._target.stats()


class TestDataCloudContract(WarehouseContract):
    vectors = False

    @pytest.fixture
    async def target(self, dc):
        async with make(dc) as w:
            yield VisibleAfterWrites(w)


# -- encoding: no user string reaches SQL or the ids list ------------------------------------


def test_key_encoding_round_trips_hostile_strings_and_stays_ascii():
    for ns, id in product(HOSTILE, HOSTILE):
        key = encode_key(ns, id)
        assert decode_key(key) == (ns, id)
        assert re.fullmatch(r"[A-Za-z0-9_.~%/-]+", key) and "," not in key
    with pytest.raises(ValueError):
        decode_key("a/b/c")


def test_keyset_text_sorts_in_keyset_order():
    keys = [(us, ns, id) for us in (-5, 0, 7) for ns in ("a", "a\x00", "ab", "b", "\U0010ffff", "é") for id in ("", "x", "x\x00", "日本")]
    assert sorted(keys, key=lambda k: keyset_text(*k)) == sorted(keys, key=lambda k: (k[0], k[1].encode(), k[2].encode()))


def test_rendered_sql_of_a_hostile_cursor():
    target = DataCloudWarehouse("http://dc.example", token="t", connector=CONNECTOR, object_name=OBJECT)
    sql = target.changes_sql(Cursor(T0, "'; DROP TABLE x; --", 'a"b'), 10)
    assert sql == (
        "SELECT record_key__c, keyset__c, namespace__c, id__c, user_id__c, session_id__c, memory_type__c, text__c, "
        "topics__c, metadata__c, ttl__c, created_at__c, updated_at__c, deleted_at__c, row_version__c, origin__c "
        "FROM memory_records__dll WHERE keyset__c > '00063902822400000000.273b2044524f50205441424c4520783b202d2d.612262' "
        "ORDER BY keyset__c LIMIT 10"
    )
    with pytest.raises(ValueError):
        sql_literal("x' OR '1'='1")


def test_schema_follows_the_documented_field_rules():
    target = DataCloudWarehouse("http://dc.example", token="t", connector=CONNECTOR, object_name=OBJECT)
    yaml = target.schema_yaml()
    assert yaml.startswith("openapi: 3.0.3") and "format: date-time" in yaml
    for stream in target.data_streams():
        for field in stream.fields:
            assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,79}", field) and "__" not in field and field != "version"
    with pytest.raises(ConfigurationError):
        DataCloudWarehouse("http://dc.example", token="t", connector=CONNECTOR, object_name=OBJECT, columns={"text": "version"})


# -- the documented behaviour of the service ---------------------------------------------------


async def test_a_batch_over_200_kb_is_split_into_requests_of_at_most_200_kb(dc):
    rows = [make_row("n", f"id{i:02d}", i, "x" * 12_000) for i in range(50)]  # ~620 KB
    http = httpx.AsyncClient(transport=Recorder())
    async with make(dc, http=http) as w:
        assert await w.upsert(rows) == 50
        posts = [size for method, path, size in http._transport.sent if method == "POST" and path == INGEST]
        assert len(posts) >= 4 and max(posts) <= 200_000
        await w.wait_visible(timeout=10)
        assert len(await w.changes_after(None, 100)) == 50
    await http.aclose()
    assert max(size for method, path, size in dc.requests if path == INGEST) <= 200_000


async def test_the_server_answers_202_and_data_is_invisible_until_processed(dc):
    dc.processing_delay = 0.6
    async with make(dc) as w:
        async with httpx.AsyncClient() as raw:
            resp = await raw.post(dc.url + INGEST, json={"data": [w._record(make_row("n", "x", 1, "hello"))]},
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert (resp.status_code, resp.json()) == (202, {"accepted": True})
        assert await w.changes_after(None, 10) == [] and dc.queued == 1
        started = time.monotonic()
        await w.upsert([make_row("n", "y", 2, "second")])
        await w.wait_visible(timeout=10)
        assert time.monotonic() - started > 0.3
        assert sorted(r["text"] for r in await w.changes_after(None, 10)) == ["hello", "second"]


async def test_a_stale_row_does_not_overwrite_on_the_server(dc):
    """Two writers within one ingestion cycle: B cannot see A's newer row and sends an older one;
    the server keeps the newer by the Record Modified field."""
    dc.processing_delay = 0.3
    async with make(dc) as a, make(dc) as b:
        assert await a.upsert([make_row("n", "x", 10, "new")]) == 1
        assert await b.upsert([make_row("n", "x", 5, "old")]) == 1  # B's view: nothing stored yet
        await a.wait_visible(timeout=10)
        await b.wait_visible(timeout=10)  # superseded counts as visible
        [raw] = await a.changes_after(None, 10)
        assert raw["text"] == "new"
        assert await b.upsert([make_row("n", "x", 5, "old")]) == 0  # now visible: not even sent


async def test_a_wrong_token_is_a_typed_error_naming_the_fix(dc):
    with pytest.raises(AuthenticationFailedError) as info:
        async with make(dc, token="expired"):
            pass
    assert isinstance(info.value, ConfigurationError)
    assert "/services/a360/token" in str(info.value) and "cdp_ingest_api" in str(info.value)


async def test_an_unknown_object_names_the_setup_fix(dc):
    with pytest.raises(SyncSchemaError) as info:
        async with make(dc, object_name="not_set_up"):
            pass
    assert "schema_yaml()" in str(info.value)


async def test_server_killed_mid_batch_is_unavailable_and_the_cursor_stays():
    with LocalDataCloud(streams(), token=TOKEN) as victim:
        posts = []

        def kill_on_third(request):
            if request.method == "POST" and request.url.path == INGEST:
                posts.append(1)
                if len(posts) == 3:
                    victim.kill()

        http = httpx.AsyncClient(transport=Recorder(kill_on_third))
        async with make(victim, http=http, streaming_limit_bytes=20_000) as w:
            rows = [make_row("n", f"id{i:02d}", i, "y" * 3_000) for i in range(40)]
            with pytest.raises(SyncTargetUnavailableError):
                await w.upsert(rows, state={"export_cursor": rows[-1].cursor().to_text()})
            assert not any("memory_sync_state" in path for _, path, _ in http._transport.sent)
        await http.aclose()
        assert list(victim.records("memory_sync_state")) == []  # the cursor was never sent
        assert len(posts) == 3


async def test_hostile_rows_round_trip_through_a_bulk_csv_job(dc):
    rows = [full_row(i, s) for i, s in enumerate(HOSTILE)]
    http = httpx.AsyncClient(transport=Recorder())
    async with make(dc, http=http, bulk_threshold=1) as w:
        assert await w.upsert(rows) == len(rows)
        calls = [(m, p.rsplit("/", 1)[-1]) for m, p, _ in http._transport.sent if "/jobs" in p]
        assert [m for m, _ in calls[:3]] == ["POST", "PUT", "PATCH"] and calls[1][1] == "batches"
        await w.wait_visible(timeout=10)
        back = [row_from_mapping(r) for r in await w.changes_after(None, 100)]
    await http.aclose()
    want = sorted(rows, key=SyncRow.sort_key)
    assert [_fields(b) for b in back] == [{**_fields(r), "embedding": None} for r in want]


async def test_413_halves_a_request_and_a_record_over_the_limit_goes_by_bulk(dc):
    rows = [make_row("n", f"r{i}", i, "z" * 90_000) for i in range(3)] + [make_row("n", "huge", 9, "h" * 250_000)]
    http = httpx.AsyncClient(transport=Recorder())
    async with make(dc, http=http, streaming_limit_bytes=400_000) as w:  # the server allows 200,000
        assert await w.upsert(rows) == 4
        sent = http._transport.sent
        assert any(m == "POST" and p == INGEST and s > 200_000 for m, p, s in sent)  # refused with 413
        assert any(p == "/api/v1/ingest/jobs" for _, p, _ in sent)  # the 250 KB record
        await w.wait_visible(timeout=10)
        assert sorted(r["id"] for r in await w.changes_after(None, 10)) == ["huge", "r0", "r1", "r2"]
    await http.aclose()


async def test_query_results_page_through_next_batch_id(dc):
    dc.query_batch_rows = 7
    http = httpx.AsyncClient(transport=Recorder())
    async with make(dc, http=http) as w:
        await w.upsert([make_row("n", f"id{i:02d}", i) for i in range(20)])
        await w.wait_visible(timeout=10)
        got = await w.changes_after(None, 100)
        assert [r["id"] for r in got] == [f"id{i:02d}" for i in range(20)]
        assert sum(1 for m, p, _ in http._transport.sent if m == "GET" and p.startswith("/api/v2/query/")) >= 2
    await http.aclose()


async def test_purge_deletes_records_outright(dc):
    async with make(dc) as w:
        await w.upsert([make_row("a,b", "x/y", 1), make_row("n", "keep", 2)])
        await w.wait_visible(timeout=10)
        await w.purge([("a,b", "x/y")])
        await w.wait_visible(timeout=10)
        assert [(r["namespace"], r["id"]) for r in await w.changes_after(None, 10)] == [("n", "keep")]


async def test_token_exchange(dc):
    token = await exchange_token(dc.url, dc.salesforce_token, dataspace="default")
    assert (token.access_token, token.instance_url) == (TOKEN, dc.url)
    with pytest.raises(AuthenticationFailedError, match="oauth2/token"):
        await exchange_token(dc.url, "not-a-salesforce-token")


async def test_wait_visible_is_bounded(dc):
    dc.processing_delay = 1.0
    async with make(dc) as w:
        await w.upsert([make_row("n", "x", 1)])
        started = time.monotonic()
        with pytest.raises(SyncTargetUnavailableError, match="not queryable"):
            await w.wait_visible(timeout=0.3)
        assert time.monotonic() - started < 1


def test_stale_time_is_compared_at_microseconds_not_the_modified_milliseconds():
    a = make_row("n", "x", 1)
    b = make_row("n", "x", 1, updated_at=T0 + timedelta(seconds=1, microseconds=400))
    target = DataCloudWarehouse("http://dc.example", token="t", connector=CONNECTOR, object_name=OBJECT)
    ra, rb = target._record(a), target._record(b)
    assert ra["record_modified"] == rb["record_modified"] == "2026-01-01T00:00:01.000Z"
    assert ra["updated_at"] != rb["updated_at"] and ra["keyset"] < rb["keyset"]
