"""A local stand-in for Salesforce Data Cloud's Ingestion API and Query API V2, for tests (needs
starlette, uvicorn and duckdb). It runs on loopback in a background thread (:class:`LocalDataCloud`).

Implemented, as Salesforce documents it (URLs in :mod:`primitives.sync.datacloud_target`):

- ``Authorization: Bearer <token>`` on every route but the token exchange; a wrong or missing
  token: 401 ``[{"errorCode": "INVALID_SESSION_ID", ...}]``.
- ``POST /services/a360/token`` (form: ``grant_type=urn:salesforce:grant-type:external:cdp``,
  ``subject_token``, ``subject_token_type``, optional ``dataspace``): the Data Cloud token and
  ``instance_url``; a wrong subject token: 400 ``invalid_grant``.
- Streaming upsert ``POST /api/v1/ingest/sources/{connector}/{object}`` with ``{"data": [...]}``
  (flat JSON objects): ``202 {"accepted": true}``; a body over ``streaming_limit_bytes`` (200,000
  by default; the docs say "less than 200 KB"): 413; not an envelope of flat objects, or a field
  name outside ``a-z A-Z 0-9 _ -``: 400; an unknown connector/object: 404.
- Streaming delete ``DELETE`` on that path, ``?ids=a,b`` or ``{"ids": [...]}``, at most 200: 202;
  a record is deleted only when its Record Modified value is older than the time of the delete.
- Bulk: ``POST /api/v1/ingest/jobs`` ``{object, sourceName, operation: upsert|delete}`` (201, state
  ``Open``), ``PUT /api/v1/ingest/jobs/{id}/batches`` (text/csv, at most 100 files of 150 MB: 202;
  upsert files have a header row, delete files none: key, optional modified), ``PATCH`` ``{state:
  UploadComplete|Aborted}`` (200), ``GET`` (states Open, UploadComplete, JobComplete, Failed,
  Aborted), ``DELETE`` of a finished job (204).
- Asynchronous processing: accepted payloads are applied in arrival order ``processing_delay``
  seconds later (default 0.05; Data Cloud: "approximately every 3 minutes"), by primary key, full
  replace, newest Record Modified value wins; a tie is applied (later arrival wins: Data Cloud
  documents nothing for ties). Records without a primary key are dropped and listed in ``errors``.
- Query API V2: ``POST /api/v2/query`` ``{"sql": ...}`` runs one SELECT in an in-memory DuckDB
  over one table per object, ``{object}__dll`` with fields ``{field}__c`` (all VARCHAR) plus
  ``DataSource__c`` and ``DataSourceObject__c``; answers ``data`` (rows as arrays), ``metadata``
  (``{name: {type, placeInOrder (0-based), typeCode}}``), ``startTime``, ``endTime``,
  ``rowCount``, ``queryId``, ``nextBatchId``, ``done``; more than ``query_batch_rows`` rows page
  through ``GET /api/v2/query/{nextBatchId}``. A bad or non-SELECT statement: 400.

Not implemented: OAuth flows before the exchange, token expiry, rate limits (429), the synchronous
validation route (``/actions/test``), partial-update refresh mode, field types (everything is
text), Data Cloud's SQL dialect (DuckDB's is used), data model objects (DMOs), identity
resolution, job listing, data spaces (accepted and ignored), the 8 MB query-response limit.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from primitives.errors import PrimitivesError

__all__ = ["LocalDataCloud", "LocalDataCloudError", "Stream"]

_FIELD = re.compile(r"[A-Za-z0-9_-]{1,80}\Z")
_TYPE_CODES = {"VARCHAR": 12, "BIGINT": -5, "INTEGER": 4, "DOUBLE": 8, "DECIMAL": 3, "BOOLEAN": 16, "TIMESTAMP": 93, "DATE": 91}
_MAX_IDS = 200
_MAX_FILES = 100


class LocalDataCloudError(PrimitivesError, RuntimeError):
    """The local Data Cloud server did not start (the message says why)."""


@dataclass(frozen=True, slots=True)
class Stream:
    """A data stream: the primary key field, the Record Modified field (``None``: the later
    arrival always wins), fields created up front (others are added when first ingested)."""

    primary_key: str
    modified_field: str | None = None
    fields: tuple[str, ...] = ()


def _error(status: int, message: str, code: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse([{"errorCode": code, "message": message}], status_code=status)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LocalDataCloud:
    """The server; use as a context manager (``with LocalDataCloud(streams) as dc: dc.url``).

    Args:
        streams: ``(connector, object) -> Stream`` for every data stream.
        token: The Data Cloud access token it accepts.
        salesforce_token: The Salesforce access token its ``/services/a360/token`` exchanges.
        processing_delay: Seconds between accepting a payload and applying it (settable later).
        streaming_limit_bytes: Largest streaming request body.
        query_batch_rows: Rows per Query API batch.
        bulk_file_bytes: Largest bulk CSV upload.
    """

    def __init__(self, streams: Mapping[tuple[str, str], Stream], *, token: str = "local-datacloud-token",
                 salesforce_token: str = "local-salesforce-token", processing_delay: float = 0.05,
                 streaming_limit_bytes: int = 200_000, query_batch_rows: int = 1_000,
                 bulk_file_bytes: int = 150_000_000, host: str = "127.0.0.1", port: int = 0) -> None:
        import duckdb

        self.streams = dict(streams)
        self.token, self.salesforce_token = token, salesforce_token
        self.processing_delay = processing_delay
        self.streaming_limit_bytes, self.query_batch_rows, self.bulk_file_bytes = streaming_limit_bytes, query_batch_rows, bulk_file_bytes
        self.host, self.port = host, port
        self.url = ""
        #: ``(method, path, body bytes)`` of every request, in arrival order.
        self.requests: list[tuple[str, str, int]] = []
        #: Records dropped while applying (no primary key, unreadable CSV ...).
        self.errors: list[str] = []
        self._db = duckdb.connect(":memory:")
        self._lock = threading.RLock()  # the DuckDB connection, shared by the server and the caller's thread
        self._tables: dict[str, set[str]] = {}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._files: dict[str, list[bytes]] = {}
        self._batches: dict[str, tuple[list[list[Any]], dict[str, Any], str]] = {}
        self._queued = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self.reset()

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> LocalDataCloud:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> str:
        """Serve from a background thread; returns the instance URL ``http://127.0.0.1:<port>``.

        Raises:
            LocalDataCloudError: it did not start within ``timeout`` seconds.
        """
        import uvicorn

        started = threading.Event()
        self._server = uvicorn.Server(uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning",
                                                     access_log=False, lifespan="off"))

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
            worker = asyncio.create_task(self._worker())
            serving = asyncio.create_task(self._server.serve())
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            if self._server.started:
                self.port = self._server.servers[0].sockets[0].getsockname()[1]
                self.url = f"http://{self.host}:{self.port}"
            started.set()
            await serving
            worker.cancel()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name="datacloud-local", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or not self.url:
            self.stop()
            raise LocalDataCloudError(f"the local Data Cloud server did not start on {self.host}:{self.port} within {timeout} s")
        return self.url

    def stop(self) -> None:
        """Shut down gracefully (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def kill(self) -> None:
        """Stop at once, as a crash would: listening sockets and open connections are dropped."""
        server, loop = self._server, self._loop
        if server is None or loop is None or self._thread is None:
            return

        def drop() -> None:
            for listener in server.servers:
                listener.close()
            for conn in list(server.server_state.connections):
                if getattr(conn, "transport", None) is not None:
                    conn.transport.abort()
            server.should_exit = server.force_exit = True

        loop.call_soon_threadsafe(drop)
        self._thread.join(10)
        self._thread = None

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every accepted payload is applied.

        Raises:
            TimeoutError: payloads are still queued after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self._queued:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._queued} payloads still queued after {timeout} s")
            time.sleep(0.01)

    def reset(self) -> None:
        """Apply what is queued, then forget every record, job and query batch (the streams stay)."""
        if self._thread is not None:
            self.drain()
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        for table in list(self._tables):
            self._db.execute(f'DROP TABLE "{table}"')
        self._tables.clear()
        self._jobs.clear()
        self._files.clear()
        self._batches.clear()
        self.requests.clear()
        self.errors.clear()
        for (connector, obj), stream in self.streams.items():
            fields = [stream.primary_key] + ([stream.modified_field] if stream.modified_field else []) + list(stream.fields)
            self._columns(obj, fields)

    @property
    def queued(self) -> int:
        """Accepted payloads not applied yet."""
        return self._queued

    # -- storage (only ever touched from the server's loop) ------------------------------------

    def _columns(self, obj: str, fields: list[str]) -> str:
        table = f"{obj}__dll"
        have = self._tables.get(table)
        if have is None:
            self._db.execute(f'CREATE TABLE "{table}" ("DataSource__c" VARCHAR, "DataSourceObject__c" VARCHAR)')
            have = self._tables[table] = set()
        for field in fields:
            if field not in have:
                self._db.execute(f'ALTER TABLE "{table}" ADD COLUMN "{field}__c" VARCHAR')
                have.add(field)
        return table

    def _upsert(self, connector: str, obj: str, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._upsert_locked(connector, obj, records)

    def _upsert_locked(self, connector: str, obj: str, records: list[dict[str, Any]]) -> None:
        stream = self.streams[(connector, obj)]
        pk, mod = stream.primary_key, stream.modified_field
        for record in records:
            key = record.get(pk)
            if not isinstance(key, str) or not key:
                self.errors.append(f"{obj}: a record without the primary key {pk} was dropped")
                continue
            table = self._columns(obj, list(record))
            if mod is not None:
                stored = self._db.execute(f'SELECT "{mod}__c" FROM "{table}" WHERE "{pk}__c" = ?', [key]).fetchone()
                new, old = _when(record.get(mod)), _when(stored[0]) if stored else None
                if stored and new is not None and old is not None and new < old:
                    continue  # stale: the stored record is newer
            self._db.execute(f'DELETE FROM "{table}" WHERE "{pk}__c" = ?', [key])
            names = ["DataSource__c", "DataSourceObject__c"] + [f"{f}__c" for f in record]
            values = [connector, obj] + [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in record.values()]
            cols = ", ".join(f'"{n}"' for n in names)
            self._db.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(names))})', values)

    def _delete(self, connector: str, obj: str, ids: list[tuple[str, str | None]], at: datetime) -> None:
        with self._lock:
            self._delete_locked(connector, obj, ids, at)

    def _delete_locked(self, connector: str, obj: str, ids: list[tuple[str, str | None]], at: datetime) -> None:
        stream = self.streams[(connector, obj)]
        table, pk, mod = self._columns(obj, []), stream.primary_key, stream.modified_field
        for key, modified in ids:
            if mod is not None:
                stored = self._db.execute(f'SELECT "{mod}__c" FROM "{table}" WHERE "{pk}__c" = ?', [key]).fetchone()
                when = _when(modified) or at
                if stored and _when(stored[0]) is not None and not _when(stored[0]) < when:  # type: ignore[operator]
                    continue
            self._db.execute(f'DELETE FROM "{table}" WHERE "{pk}__c" = ?', [key])

    def _run_job(self, job_id: str) -> None:
        with self._lock:
            self._run_job_locked(job_id)

    def _run_job_locked(self, job_id: str) -> None:
        job = self._jobs[job_id]
        if job["state"] != "UploadComplete":
            return
        stream = (job["sourceName"], job["object"])
        csv.field_size_limit(max(csv.field_size_limit(), self.bulk_file_bytes))  # a field may be as large as a file
        try:
            for data in self._files.pop(job_id, []):
                rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
                if job["operation"] == "upsert":
                    header, body = rows[0], rows[1:]
                    bad = [f for f in header if not _FIELD.match(f)]
                    if bad or any(len(r) != len(header) for r in body):
                        raise ValueError(f"bad header {bad} or a row with the wrong number of columns")
                    self._upsert(*stream, [{f: (v if v != "" else None) for f, v in zip(header, r)} for r in body])
                else:
                    self._delete(*stream, [(r[0], r[1] if len(r) > 1 else None) for r in rows if r], datetime.now(timezone.utc))
            job["state"] = "JobComplete"
        except (ValueError, UnicodeDecodeError, IndexError, csv.Error) as exc:
            job.update(state="Failed", errorMessage=str(exc))
        job["systemModstamp"] = _now()

    async def _worker(self) -> None:
        while True:
            ready_at, apply = await self._queue.get()
            wait = ready_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                apply()
            except Exception as exc:  # a bug here must not stop later payloads: listed for the test to see
                self.errors.append(f"applying a payload failed: {exc!r}")
            finally:
                self._queued -= 1

    def _enqueue(self, apply: Any) -> None:
        self._queued += 1
        self._queue.put_nowait((time.monotonic() + self.processing_delay, apply))

    # -- HTTP ----------------------------------------------------------------------------------

    def app(self) -> Any:
        """The Starlette application."""
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(routes=[
            Route("/services/a360/token", self._token_exchange, methods=["POST"]),
            Route("/api/v1/ingest/sources/{connector}/{object}", self._ingest, methods=["POST", "DELETE"]),
            Route("/api/v1/ingest/jobs", self._create_job, methods=["POST"]),
            Route("/api/v1/ingest/jobs/{job}", self._job, methods=["GET", "PATCH", "DELETE"]),
            Route("/api/v1/ingest/jobs/{job}/batches", self._upload, methods=["PUT"]),
            Route("/api/v2/query", self._query, methods=["POST"]),
            Route("/api/v2/query/{batch}", self._next_batch, methods=["GET"]),
        ])

    async def _body(self, request: Any) -> bytes:
        body: bytes = await request.body()
        self.requests.append((request.method, request.url.path, len(body)))
        return body

    def _denied(self, request: Any) -> Any:
        if request.headers.get("authorization", "") != f"Bearer {self.token}":
            return _error(401, "Session expired or invalid", "INVALID_SESSION_ID")
        return None

    async def _token_exchange(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        form = {k: v[0] for k, v in parse_qs((await self._body(request)).decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "urn:salesforce:grant-type:external:cdp" or form.get("subject_token") != self.salesforce_token:
            return JSONResponse({"error": "invalid_grant", "error_description": "invalid subject token"}, status_code=400)
        return JSONResponse({"access_token": self.token, "instance_url": self.url, "token_type": "Bearer",
                             "issued_token_type": "urn:ietf:params:oauth:token-type:jwt", "expires_in": 7200})

    async def _ingest(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        connector, obj = request.path_params["connector"], request.path_params["object"]
        if (connector, obj) not in self.streams:
            return _error(404, f"no data stream for source {connector} object {obj}", "NOT_FOUND")
        if request.method == "DELETE":
            ids = [i for i in request.query_params.get("ids", "").split(",") if i]
            if not ids and body:
                try:
                    ids = list(json.loads(body)["ids"])
                except (ValueError, KeyError, TypeError):
                    return _error(400, 'the body must be {"ids": [...]}', "INVALID_INPUT")
            if not ids or len(ids) > _MAX_IDS or not all(isinstance(i, str) for i in ids):
                return _error(400, f"give 1 to {_MAX_IDS} ids", "INVALID_INPUT")
            at = datetime.now(timezone.utc)
            self._enqueue(lambda: self._delete(connector, obj, [(i, None) for i in ids], at))
            return JSONResponse({"accepted": True}, status_code=202)
        if len(body) > self.streaming_limit_bytes:
            return _error(413, f"the payload is {len(body)} bytes; the limit is {self.streaming_limit_bytes}", "PAYLOAD_TOO_LARGE")
        try:
            data = json.loads(body)["data"]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(400, 'the body must be {"data": [flat JSON objects]}', "INVALID_INPUT")
        for record in data:
            for field, value in record.items():
                if not _FIELD.match(field) or isinstance(value, (dict, list)):
                    return _error(400, f"field {field[:80]!r}: names are a-z, A-Z, 0-9, _ and -, values are not nested", "INVALID_INPUT")
        self._enqueue(lambda: self._upsert(connector, obj, data))
        return JSONResponse({"accepted": True}, status_code=202)

    def _job_json(self, job_id: str) -> dict[str, Any]:
        return dict(self._jobs[job_id])

    async def _create_job(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            spec = json.loads(body)
            obj, source, operation = spec["object"], spec["sourceName"], spec["operation"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "the body must be {object, sourceName, operation}", "INVALID_INPUT")
        if (source, obj) not in self.streams:
            return _error(404, f"no data stream for source {source} object {obj}", "NOT_FOUND")
        if operation not in ("upsert", "delete"):
            return _error(400, "operation must be upsert or delete", "INVALID_INPUT")
        job_id = str(uuid.uuid4())
        self._jobs[job_id] = {"id": job_id, "operation": operation, "object": obj, "sourceName": source,
                              "createdById": "005local", "createdDate": _now(), "systemModstamp": _now(), "state": "Open",
                              "contentType": "CSV", "apiVersion": "v1", "contentUrl": f"api/v1/ingest/jobs/{job_id}/batches"}
        self._files[job_id] = []
        return JSONResponse(self._job_json(job_id), status_code=201)

    async def _upload(self, request: Any) -> Any:
        from starlette.responses import Response

        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        job_id = request.path_params["job"]
        if job_id not in self._jobs:
            return _error(404, "no such job", "NOT_FOUND")
        if self._jobs[job_id]["state"] != "Open":
            return _error(409, "the job is not Open", "INVALID_STATE")
        if len(body) > self.bulk_file_bytes or len(self._files[job_id]) >= _MAX_FILES:
            return _error(400, f"a job takes {_MAX_FILES} files of at most {self.bulk_file_bytes} bytes", "LIMIT_EXCEEDED")
        self._files[job_id].append(body)
        return Response(status_code=202)

    async def _job(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        job_id = request.path_params["job"]
        if job_id not in self._jobs:
            return _error(404, "no such job", "NOT_FOUND")
        job = self._jobs[job_id]
        if request.method == "DELETE":
            if job["state"] not in ("JobComplete", "Failed", "Aborted"):
                return _error(409, "only a finished job can be deleted", "INVALID_STATE")
            del self._jobs[job_id]
            return Response(status_code=204)
        if request.method == "PATCH":
            try:
                state = json.loads(body)["state"]
            except (ValueError, KeyError, TypeError):
                return _error(400, 'the body must be {"state": "UploadComplete" | "Aborted"}', "INVALID_INPUT")
            if job["state"] != "Open" or state not in ("UploadComplete", "Aborted"):
                return _error(409, f"cannot move a {job['state']} job to {state}", "INVALID_STATE")
            job.update(state=state, systemModstamp=_now())
            if state == "Aborted":
                self._files.pop(job_id, None)
            else:
                self._enqueue(lambda: self._run_job(job_id))
        return JSONResponse(self._job_json(job_id))

    async def _query(self, request: Any) -> Any:
        import duckdb

        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        started = _now()
        try:
            sql = json.loads(body)["sql"]
            with self._lock:
                statements = self._db.extract_statements(sql)
                if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                    return _error(400, "send one SELECT statement", "INVALID_QUERY")
                cursor = self._db.execute(sql)
                rows = [list(r) for r in cursor.fetchall()]
                description = cursor.description
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f'the body must be {{"sql": "..."}} ({exc})', "INVALID_INPUT")
        except duckdb.Error as exc:
            return _error(400, str(exc), "INVALID_QUERY")
        metadata = {}
        for place, column in enumerate(description):
            kind = str(column[1]).upper()
            metadata[column[0]] = {"type": kind, "placeInOrder": place, "typeCode": _TYPE_CODES.get(kind.split("(")[0], 1111)}
        rows = [[v.isoformat() if isinstance(v, datetime) else v for v in r] for r in rows]
        return self._page(rows, metadata, f"{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:5]}", started)

    def _page(self, rows: list[list[Any]], metadata: dict[str, Any], query_id: str, started: str) -> Any:
        from starlette.responses import JSONResponse

        now, rest = rows[: self.query_batch_rows], rows[self.query_batch_rows:]
        batch = None
        if rest:
            batch = str(uuid.uuid4())
            self._batches[batch] = (rest, metadata, query_id)
        return JSONResponse({"data": now, "startTime": started, "endTime": _now(), "rowCount": len(now), "queryId": query_id,
                             "nextBatchId": batch, "done": batch is None, "metadata": metadata})

    async def _next_batch(self, request: Any) -> Any:
        await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        found = self._batches.pop(request.path_params["batch"], None)
        if found is None:
            return _error(404, "no such batch", "NOT_FOUND")
        rows, metadata, query_id = found
        return self._page(rows, metadata, query_id, _now())

    def records(self, obj: str) -> Iterator[dict[str, Any]]:
        """Every stored record of ``obj`` (field names without ``__c``), for tests."""
        with self._lock:
            cursor = self._db.execute(f'SELECT * FROM "{obj}__dll"')
            names = [c[0].removesuffix("__c") for c in cursor.description]
            rows = cursor.fetchall()
        for row in rows:
            yield dict(zip(names, row))
