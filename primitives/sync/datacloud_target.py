"""Salesforce Data Cloud (Data 360) as a sync target: Ingestion API writes, Query API V2 reads
(extra ``sync-datacloud``). **Not run against the live service**: written from Salesforce's
documentation (below) and tested against :mod:`primitives.tooling.datacloud_local`.

Setup, once: an Ingestion API connector ``connector`` with the schema :meth:`~DataCloudWarehouse.schema_yaml`
(objects: the memories, ``memory_sync_state``, ``memory_sync_rejected``); per object a data stream
(category *Other*) with the primary key and *Record Modified Field* of :meth:`~DataCloudWarehouse.data_streams`;
a connected app with scopes ``cdp_ingest_api``, ``cdp_query_api``, ``api``. Auth: a Salesforce
access token exchanged at ``/services/a360/token`` (:func:`exchange_token`, which binds the data
space) gives the bearer ``token`` and ``instance_url``.

Fields (Text, but the DateTime ``record_modified``; SQL adds ``field_suffix`` ``__c`` and reads the
data lake object ``query_object``, default ``{object_name}__dll``):

- ``record_key`` (primary key): ``quote(namespace, safe="") + "/" + quote(id, safe="")``, UTF-8
  percent-encoding keeping only ``A-Za-z0-9_.-~``: ASCII, reversible (:func:`decode_key`), free of
  ``/`` within a part and of ``,`` (the separator of a streaming delete's ``ids``). Reads take
  ``namespace`` and ``id`` from it.
- ``keyset``: ``{µs since 0001-01-01:020d}.{hex(utf8(namespace))}.{hex(utf8(id))}``; its byte order
  is keyset order (``.`` sorts before hex digits), so :meth:`changes_after` is ``WHERE keyset__c >
  '...' ORDER BY keyset__c``. Only encoded values reach SQL (:func:`sql_literal`).
- ``record_modified``: ``updated_at`` as ``yyyy-MM-ddTHH:mm:ss.SSSZ`` (documented format, ms).
- the canonical columns (``version`` as ``row_version``: a reserved name): times as ISO 8601 text
  with µs (Data Cloud shifts DateTimes to the org's zone), ``topics``/``metadata`` as JSON, ``ttl``
  as text (``"inf"`` kept); no ``embedding`` (imports re-embed).

Last writer wins twice. Data Cloud applies a record unless its Record Modified value is older than
the stored one (documented for partial updates and deletes; ties are undocumented: the local
server applies the later arrival). :meth:`upsert` first reads the stored ``(updated_at, version)``
of its keys (Query API, plus its own unconfirmed writes) and sends only winners: the written count
and the ``version`` tiebreak; writers racing within one ingestion cycle get the server's rule.
Tombstones are upserts with ``deleted_at``, so they propagate; :meth:`purge` erases outright.

Ingestion is asynchronous (202; "processed approximately every 3 minutes"). State goes after the
data, so the export cursor may advance before the data is queryable; re-sending is harmless by
last-writer-wins. :meth:`wait_visible` polls (bounded) until this object's writes are queryable;
:meth:`get_state` answers its own unconfirmed state writes from memory. Streaming requests carry at
most ``streaming_limit_bytes`` (documented: 200 KB); a 413 halves a request; a record too large
for one request, and batches of ``bulk_threshold`` rows, go by a bulk job (CSV, ``UploadComplete``).

Docs read: https://developer.salesforce.com/docs/data/data-cloud-int/references/data-cloud-ingestionapi-ref/
c360-a-api-{streaming-ingestion,insert-records,delete-records,create-a-job,upload-job-data,close-or-abort-a-job,
bulk-insert-example}.md; .../data-cloud-int/guide/c360-a-ingestion-api-schema-req.html and
c360-a-create-ingestion-data-stream.html; https://developer.salesforce.com/docs/atlas.en-us.c360a_api.meta/
c360a_api/c360a_api_query_v2.htm and c360a_api_get_query_v2.htm; the a360 token exchange,
https://help.salesforce.com/apex/HTViewHelpDoc?id=service.conversation_transcript_api_sample2.htm.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

from primitives.errors import AuthenticationFailedError, ConfigurationError, SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.rows import COLUMNS, Cursor, RejectedRow, SyncRow
from primitives.sync.warehouse import Warehouse, WarehouseStats
from primitives.validation import INPUT, check_identifier, check_items

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DataCloudNotVisibleError", "DataCloudToken", "DataCloudWarehouse", "DataStream", "decode_key", "encode_key",
    "exchange_token", "keyset_text", "sql_literal",
]

KEY: Final = "record_key"
KEYSET: Final = "keyset"
MODIFIED: Final = "record_modified"
_STATE_FIELDS: Final = ("state_key", "name", "value", "saved_at", MODIFIED)
_REJECTED_FIELDS: Final = ("rejected_key", "source", "namespace", "id", "reason", "raw", "rejected_at", MODIFIED)
#: Field names the schema file may not use (Salesforce's schema requirements).
_RESERVED: Final = frozenset({"date_id", "location_id", "dat_account_currency", "dat_exchange_rate", "pacing_period", "pacing_end_date", "row_count", "version"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}\Z")
_DLO = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}\Z")
#: The only characters a SQL literal built here may hold (encoded keys, keysets, digits).
_LITERAL = re.compile(r"[A-Za-z0-9_.~%/\-]*\Z")
#: Unconfirmed writes remembered for counting (the oldest are forgotten first).
_MAX_PENDING: Final = 200_000
_US_OFFSET: Final = 62_135_596_800 * 10**6  # µs from 0001-01-01 to 1970-01-01
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_AUTH_FIX = (
    "exchange a current Salesforce access token for a Data Cloud token (POST {my-domain}/services/a360/token with "
    "grant_type=urn:salesforce:grant-type:external:cdp; primitives.sync.datacloud_target.exchange_token) and pass it "
    "as token=, with its instance_url; the connected app needs the scopes cdp_ingest_api, cdp_query_api and api"
)


class DataCloudNotVisibleError(SyncTargetUnavailableError, TimeoutError):
    """Writes accepted by Data Cloud did not become queryable within the wait (or a bulk job failed)."""


def encode_key(namespace: str, id: str) -> str:
    """The primary key of ``(namespace, id)``: both parts percent-encoded, joined by ``/``."""
    return quote(namespace, safe="") + "/" + quote(id, safe="")


def decode_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`encode_key`.

    Raises:
        ValueError: ``key`` was not made by :func:`encode_key`.
    """
    parts = key.split("/")
    if len(parts) != 2 or not all(_LITERAL.match(p) for p in parts):
        raise ValueError(f"not a sync record key: {key[:80]!r}")
    return unquote(parts[0], errors="strict"), unquote(parts[1], errors="strict")


def keyset_text(us: int, namespace: str, id: str) -> str:
    """The ``keyset`` field: byte order on it is ``(updated_at, namespace, id)`` order."""
    return f"{us + _US_OFFSET:020d}.{namespace.encode().hex()}.{id.encode().hex()}"


def sql_literal(value: str) -> str:
    """A SQL string literal of an encoded value; anything else is a bug here, not user input."""
    if not _LITERAL.match(value):
        raise ValueError(f"refusing to put {value[:40]!r} in SQL: only encoded keys are")
    return "'" + value + "'"


def _us(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time_text(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(_UTC).isoformat(timespec="microseconds")


def _modified_text(at: datetime) -> str:
    u = at.astimezone(_UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _blank(value: Any) -> Any:
    return None if value == "" else value


@dataclass(frozen=True, slots=True)
class DataStream:
    """One data stream to create in Data Cloud: the object, its primary key, its Record Modified
    Field and every field of the object (in schema order)."""

    object_name: str
    primary_key: str
    record_modified: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DataCloudToken:
    """A Data Cloud access token and the instance it is valid for (``expires_in`` seconds)."""

    access_token: str
    instance_url: str
    expires_in: int | None


def _client(http: httpx.AsyncClient | None, timeout: float) -> httpx.AsyncClient:
    try:
        import httpx
    except ImportError as exc:
        raise ConfigurationError(f'the Data Cloud target needs httpx: pip install "memory-primitives[sync-datacloud]" ({exc})') from exc
    return http if http is not None else httpx.AsyncClient(timeout=timeout)


async def exchange_token(salesforce_url: str, access_token: str, *, dataspace: str | None = None,
                         http: httpx.AsyncClient | None = None) -> DataCloudToken:
    """Exchange a Salesforce access token for a Data Cloud token (``POST /services/a360/token``).

    Args:
        salesforce_url: The org's My Domain URL, e.g. ``https://acme.my.salesforce.com``.
        access_token: A Salesforce OAuth access token (any OAuth flow of a connected app).
        dataspace: The data space to bind the token to (default: the org's default space).

    Raises:
        AuthenticationFailedError: the exchange was refused (the message says what to fix).
        SyncTargetUnavailableError: the org did not answer.
    """
    client = _client(http, 30.0)
    import httpx

    form = {"grant_type": "urn:salesforce:grant-type:external:cdp", "subject_token": access_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token"}
    if dataspace:
        form["dataspace"] = dataspace
    try:
        resp = await client.post(salesforce_url.rstrip("/") + "/services/a360/token", data=form)
    except httpx.TransportError as exc:
        raise SyncTargetUnavailableError(f"{salesforce_url} did not answer the token exchange: {exc!r}", target=salesforce_url) from exc
    finally:
        if http is None:
            await client.aclose()
    if resp.status_code != 200:
        raise AuthenticationFailedError(
            f"the Data Cloud token exchange at {salesforce_url} was refused (HTTP {resp.status_code}: {resp.text[:300]}). "
            "Fix: get a fresh Salesforce access token from /services/oauth2/token (a password-flow token is "
            "exchangeable once) for a connected app with the scopes cdp_ingest_api, cdp_query_api and api"
        )
    body = resp.json()
    url = str(body["instance_url"])
    return DataCloudToken(str(body["access_token"]), url if "://" in url else "https://" + url, body.get("expires_in"))


class DataCloudWarehouse(Warehouse):
    """Salesforce Data Cloud as a sync target (see the module docstring for the setup).

    Args:
        instance_url: The Data Cloud instance (``instance_url`` of the token exchange).
        token: The Data Cloud access token (sent as ``Authorization: Bearer``).
        connector: The Ingestion API connector (source) name.
        object_name: The memories object in that connector.
        dataspace: The data space the token was exchanged for (recorded; bound at the exchange).
        columns: Canonical column -> field name (default: canonical, ``version`` -> ``row_version``).
        http: An ``httpx.AsyncClient`` to use (closed by its owner), else one is made.
        streaming_limit_bytes: Largest streaming request body, in bytes (documented: 200 KB).
        state_object, rejected_object: The objects holding sync state and rejected rows.
        query_object: The data lake object read by the Query API (default ``{object_name}__dll``;
            the other two objects likewise); field_suffix: added to field names in SQL (``__c``).
        bulk_threshold: Batches of this many rows or more go through a bulk job.
        timeout: Seconds per HTTP request.

    Raises:
        ConfigurationError: a name Data Cloud does not accept, or a URL that is not http(s).
    """

    name = "datacloud"
    holds_vectors = False

    def __init__(
        self, instance_url: str, *, token: str, connector: str, object_name: str, dataspace: str = "default",
        columns: Mapping[str, str] | None = None, http: httpx.AsyncClient | None = None,
        streaming_limit_bytes: int = 200_000, state_object: str = "memory_sync_state",
        rejected_object: str = "memory_sync_rejected", query_object: str | None = None,
        field_suffix: str = "__c", bulk_threshold: int = 10_000, timeout: float = 60.0,
    ) -> None:
        if not isinstance(instance_url, str) or not re.match(r"https?://[^\s/]+", instance_url):
            raise ConfigurationError(f"instance_url must be an http(s) URL (the token exchange's instance_url), got {instance_url!r}")
        if not isinstance(token, str) or not token.strip():
            raise ConfigurationError(f"token must be a non-empty Data Cloud access token. Fix: {_AUTH_FIX}")
        for what, value in (("connector", connector), ("object_name", object_name), ("state_object", state_object),
                            ("rejected_object", rejected_object)):
            if not isinstance(value, str) or not _NAME.match(value) or "__" in value:
                raise ConfigurationError(f"{what} must be 1-80 letters, digits and _ (no __), starting with a letter, got {value!r}")
        super().__init__(url=f"{instance_url.rstrip('/')}/api/v1/ingest/sources/{connector}/{object_name}",
                         columns={"version": "row_version", **dict(columns or {})})
        fields = [KEY, KEYSET, MODIFIED] + [self.columns[c] for c in COLUMNS if c != "embedding"]
        for field in fields:
            if field in _RESERVED or "__" in field or len(field) > 80:
                raise ConfigurationError(f"Data Cloud does not accept the field name {field!r} (reserved, or has __). Fix: map it with columns=")
        if len(set(fields)) != len(fields):
            raise ConfigurationError(f"a column is mapped onto {KEY}, {KEYSET} or {MODIFIED}, which this target uses")
        if not (_DLO.match(query_object or "x") and re.fullmatch(r"[A-Za-z0-9_]*", field_suffix or "")):
            raise ConfigurationError(f"query_object and field_suffix must be letters, digits and _, got {query_object!r}, {field_suffix!r}")
        if streaming_limit_bytes < 1024:
            raise ConfigurationError(f"streaming_limit_bytes must be at least 1024, got {streaming_limit_bytes}")
        self.instance_url = instance_url.rstrip("/")
        self.connector, self.object_name, self.dataspace = connector, object_name, dataspace
        self.state_object, self.rejected_object = state_object, rejected_object
        self.field_suffix = field_suffix
        self.query_objects = {object_name: query_object or f"{object_name}__dll", state_object: f"{state_object}__dll",
                              rejected_object: f"{rejected_object}__dll"}
        self.streaming_limit_bytes, self.bulk_threshold, self.timeout = streaming_limit_bytes, bulk_threshold, timeout
        self._token, self._given_http, self._http = token, http, http
        self._fields = fields
        self._pending: dict[str, tuple[int, str]] = {}  # record key -> (updated_at µs, version) sent
        self._pending_state: dict[str, str] = {}
        self._pending_rejected: set[str] = set()
        self._pending_absent: set[str] = set()
        self._jobs: list[str] = []
        self._last_state_ms = 0

    # -- the Salesforce side -----------------------------------------------------------------

    def data_streams(self) -> list[DataStream]:
        """The three data streams to create (object, primary key, Record Modified Field, fields)."""
        return [DataStream(self.object_name, KEY, MODIFIED, tuple(self._fields)),
                DataStream(self.state_object, "state_key", MODIFIED, _STATE_FIELDS),
                DataStream(self.rejected_object, "rejected_key", MODIFIED, _REJECTED_FIELDS)]

    def schema_yaml(self) -> str:
        """The Ingestion API connector's schema file (OpenAPI 3.0.3 YAML) for the three objects."""
        lines = ["openapi: 3.0.3", "components:", "  schemas:"]
        for stream in self.data_streams():
            lines += [f"    {stream.object_name}:", "      type: object", "      properties:"]
            for field in stream.fields:
                lines += [f"        {field}:", "          type: string"]
                if field == MODIFIED:
                    lines.append("          format: date-time")
        return "\n".join(lines) + "\n"

    # -- HTTP ------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, what: str, retries: int = 2, **kw: Any) -> httpx.Response:
        import httpx

        if self._http is None:
            raise SyncTargetUnavailableError(f"the Data Cloud target {self.url} is not open (call open())", target=self.url)
        headers = {"Authorization": f"Bearer {self._token}", **kw.pop("headers", {})}
        for attempt in range(retries + 1):
            try:
                resp = await self._http.request(method, self.instance_url + path, headers=headers, **kw)
            except httpx.TransportError as exc:
                raise SyncTargetUnavailableError(f"Data Cloud at {self.instance_url} did not answer the {what}: {exc!r}", target=self.url) from exc
            if resp.status_code in (401, 403):
                raise AuthenticationFailedError(
                    f"Data Cloud at {self.instance_url} refused the token for the {what} (HTTP {resp.status_code}: "
                    f"{resp.text[:200]}). Fix: {_AUTH_FIX}"
                )
            if resp.status_code in (429, 503) and attempt < retries:
                try:
                    pause = float(resp.headers.get("Retry-After", 0.5 * 2**attempt))
                except ValueError:  # an HTTP date
                    pause = 1.0
                await asyncio.sleep(min(max(pause, 0.0), 5.0))
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                raise SyncTargetUnavailableError(
                    f"Data Cloud at {self.instance_url} failed the {what} (HTTP {resp.status_code}: {resp.text[:300]})", target=self.url)
            return resp
        raise AssertionError("unreachable")

    def _refused(self, resp: httpx.Response, what: str, object_name: str) -> Exception:
        body = resp.text[:500]
        if resp.status_code == 404:
            return ConfigurationError(
                f"Data Cloud has no {what} target for connector {self.connector}, object {object_name} (HTTP 404: {body}). "
                "Fix: create the Ingestion API connector with DataCloudWarehouse.schema_yaml() and deploy a data stream "
                "per object with the keys of data_streams()")
        return SyncSchemaError(f"Data Cloud refused the {what} for {object_name} (HTTP {resp.status_code}: {body})",
                               table=self.query_objects.get(object_name, object_name), column="*",
                               fix="check that the connector schema and data streams match DataCloudWarehouse.schema_yaml() "
                                   "and data_streams(), and that query_object names the stream's data lake object")

    async def _query(self, sql: str, object_name: str) -> list[dict[str, Any]]:
        """Rows of one Query API V2 query (every batch), keyed by lower-case field name."""
        resp = await self._request("POST", "/api/v2/query", json={"sql": sql}, what="Query API request")
        out: list[dict[str, Any]] = []
        for _ in range(100_000):
            if resp.status_code != 200:
                raise self._refused(resp, "Query API request", object_name)
            body = resp.json()
            meta = body.get("metadata") or {}
            names = [n.lower() for n, _ in sorted(meta.items(), key=lambda kv: kv[1].get("placeInOrder", 0))]
            for row in body.get("data") or []:
                out.append({k.lower(): v for k, v in row.items()} if isinstance(row, dict) else dict(zip(names, row)))
            batch = body.get("nextBatchId")
            if body.get("done", True) or not batch:
                return out
            resp = await self._request("GET", f"/api/v2/query/{quote(str(batch), safe='')}", what="Query API request")
        raise SyncTargetUnavailableError("the Query API kept answering with more batches", target=self.url)

    def _f(self, field: str) -> str:
        return field + self.field_suffix

    # -- ingestion -------------------------------------------------------------------------

    async def _ingest(self, object_name: str, records: list[dict[str, Any]]) -> None:
        """Streaming requests of at most ``streaming_limit_bytes``; the rest through a bulk job."""
        if len(records) >= self.bulk_threshold:
            await self._bulk(object_name, records)
            return
        limit, shell = self.streaming_limit_bytes, len(b'{"data":[]}')
        chunk: list[bytes] = []
        too_big: list[dict[str, Any]] = []
        size = shell
        for record in records:
            raw = _dumps(record).encode()
            if shell + len(raw) > limit:
                too_big.append(record)
                continue
            if chunk and size + 1 + len(raw) > limit:
                too_big += await self._post(object_name, chunk)
                chunk, size = [], shell
            size += len(raw) + (1 if chunk else 0)
            chunk.append(raw)
        if chunk:
            too_big += await self._post(object_name, chunk)
        if too_big:
            await self._bulk(object_name, too_big)

    async def _post(self, object_name: str, chunk: list[bytes]) -> list[dict[str, Any]]:
        body = b'{"data":[' + b",".join(chunk) + b"]}"
        resp = await self._request("POST", f"/api/v1/ingest/sources/{self.connector}/{object_name}", content=body,
                                   headers={"Content-Type": "application/json"}, what="streaming ingestion")
        if resp.status_code in (200, 201, 202):
            return []
        too_large = resp.status_code == 413 or (resp.status_code == 400 and re.search(r"too large|payload size|exceed", resp.text, re.I))
        if too_large:  # the service's limit is lower than ours: halve, or bulk for one record
            if len(chunk) == 1:
                return [json.loads(chunk[0])]
            half = len(chunk) // 2
            return await self._post(object_name, chunk[:half]) + await self._post(object_name, chunk[half:])
        raise self._refused(resp, "streaming ingestion", object_name)

    async def _bulk(self, object_name: str, records: list[dict[str, Any]], file_bytes: int = 100_000_000) -> None:
        """One bulk upsert job: create, upload CSV files (at most 100 of ``file_bytes``), close."""
        header = list(records[0])
        head = _csv_line(header)
        files, current, size = [], [head], len(head)
        for record in records:
            line = _csv_line(["" if record[f] is None else record[f] for f in header])
            if size + len(line) > file_bytes and len(current) > 1:
                files.append("".join(current))
                current, size = [head], len(head)
            current.append(line)
            size += len(line)
        files.append("".join(current))
        for start in range(0, len(files), 100):
            await self._bulk_job(object_name, files[start:start + 100])

    async def _bulk_job(self, object_name: str, files: list[str]) -> None:
        what = "bulk ingestion job"
        resp = await self._request("POST", "/api/v1/ingest/jobs", what=what,
                                   json={"object": object_name, "sourceName": self.connector, "operation": "upsert"})
        if resp.status_code not in (200, 201):
            raise self._refused(resp, what, object_name)
        job = str(resp.json()["id"])
        path = f"/api/v1/ingest/jobs/{quote(job, safe='')}"
        closed = False
        try:
            for text in files:
                resp = await self._request("PUT", path + "/batches", content=text.encode(), what=what,
                                           headers={"Content-Type": "text/csv"}, retries=0)
                if resp.status_code not in (200, 201, 202):
                    raise self._refused(resp, what, object_name)
            resp = await self._request("PATCH", path, json={"state": "UploadComplete"}, what=what)
            if resp.status_code != 200:
                raise self._refused(resp, what, object_name)
            closed = True
            self._jobs.append(job)
        finally:
            if not closed:  # best effort: an open job is deleted by Data Cloud after 7 days anyway
                try:
                    await self._request("PATCH", path, json={"state": "Aborted"}, what=what, retries=0)
                except (SyncTargetUnavailableError, ConfigurationError):
                    pass

    # -- hooks -----------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._http is None:
            self._http = _client(None, self.timeout)
        for object_name, dlo in self.query_objects.items():
            key = {self.object_name: KEY, self.state_object: "state_key"}.get(object_name, "rejected_key")
            await self._query(f"SELECT {self._f(key)} FROM {dlo} LIMIT 1", object_name)

    async def _aclose(self) -> None:
        http, self._http = self._http, self._given_http
        if http is not None and http is not self._given_http:
            await http.aclose()

    def _record(self, row: SyncRow) -> dict[str, Any]:
        n = self.columns.names
        values = {
            "namespace": row.namespace, "id": row.id, "user_id": row.user_id, "session_id": row.session_id,
            "memory_type": row.memory_type, "text": row.text, "topics": _dumps(list(row.topics)),
            "metadata": _dumps(dict(row.metadata)),
            "ttl": None if row.ttl is None else ("inf" if math.isinf(row.ttl) else repr(float(row.ttl))),
            "created_at": _time_text(row.created_at), "updated_at": _time_text(row.updated_at),
            "deleted_at": _time_text(row.deleted_at), "version": row.version, "origin": row.origin,
        }
        record = {KEY: encode_key(row.namespace, row.id), KEYSET: keyset_text(*row.sort_key()), MODIFIED: _modified_text(row.updated_at)}
        record.update({n[c]: v for c, v in values.items()})
        return record

    async def _stored(self, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
        """Visible ``(updated_at µs, version)`` per record key; forgets pending writes now visible."""
        n, out = self.columns.names, {}
        k, u, v = self._f(KEY), self._f(n["updated_at"]), self._f(n["version"])
        for part in _chunks(list(keys), 60_000):
            sql = f"SELECT {k}, {u}, {v} FROM {self.query_objects[self.object_name]} WHERE {k} IN ({', '.join(map(sql_literal, part))})"
            for row in await self._query(sql, self.object_name):
                try:
                    out[row[k.lower()]] = (_us(datetime.fromisoformat(row[u.lower()])), row[v.lower()] or "")
                except (TypeError, ValueError):
                    continue  # a damaged stored row: any incoming row replaces it
        for key, seen in out.items():
            if key in self._pending and seen >= self._pending[key]:
                del self._pending[key]
        return out

    async def _upsert(self, rows: list[SyncRow], state: dict[str, str]) -> int:
        send: list[SyncRow] = []
        if rows:
            stored = await self._stored([encode_key(r.namespace, r.id) for r in rows])
            for row in rows:
                key = encode_key(row.namespace, row.id)
                best = max((x for x in (stored.get(key), self._pending.get(key)) if x is not None), default=None)
                if best is None or (_us(row.updated_at), row.version) > best:
                    send.append(row)
        if send:
            await self._ingest(self.object_name, [self._record(r) for r in send])
            for row in send:
                key = encode_key(row.namespace, row.id)
                self._pending.pop(key, None)
                self._pending[key] = (_us(row.updated_at), row.version)
                self._pending_absent.discard(key)
            while len(self._pending) > _MAX_PENDING:  # only counts suffer: the server still orders writes
                del self._pending[next(iter(self._pending))]
        if state:  # after the data: see the module docstring
            now = datetime.now(_UTC)
            ms = max(_us(now) // 1000, self._last_state_ms + 1)  # per-process monotonic Record Modified
            self._last_state_ms = ms
            modified = _modified_text(_EPOCH + timedelta(milliseconds=ms))
            await self._ingest(self.state_object, [
                {"state_key": quote(k, safe=""), "name": k, "value": v, "saved_at": _time_text(now), MODIFIED: modified}
                for k, v in state.items()])
            self._pending_state.update(state)
        return len(send)

    async def _changes_after(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        return [self._canonical(r) for r in await self._query(self.changes_sql(cursor, limit), self.object_name)]

    def changes_sql(self, cursor: Cursor | None, limit: int) -> str:
        """The Query API SQL of :meth:`changes_after` (only encoded values appear in it)."""
        n, ks = self.columns.names, self._f(KEYSET)
        select = ", ".join(self._f(f) for f in [KEY, KEYSET] + [n[c] for c in COLUMNS if c != "embedding"])
        where = "" if cursor is None else f" WHERE {ks} > {sql_literal(keyset_text(*cursor.key()))}"
        return f"SELECT {select} FROM {self.query_objects[self.object_name]}{where} ORDER BY {ks} LIMIT {int(limit)}"

    def _canonical(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = {c: row.get(self._f(self.columns[c]).lower()) for c in COLUMNS if c != "embedding"}
        try:
            out["namespace"], out["id"] = decode_key(str(row.get(self._f(KEY).lower())))
        except ValueError:
            pass  # not written by this target: the plain fields are checked by row_from_mapping
        for c in ("user_id", "session_id", "memory_type", "ttl", "deleted_at", "origin"):
            out[c] = _blank(out[c])
        if out["text"] is None:
            out["text"] = ""
        if isinstance(out["ttl"], str) and out["ttl"] != "inf":
            try:
                out["ttl"] = float(out["ttl"])
            except ValueError:
                pass  # row_from_mapping names it
        return out

    async def _get_state(self, key: str) -> str | None:
        if key in self._pending_state:  # this object's own write, maybe not queryable yet
            return self._pending_state[key]
        found = await self._state_rows([quote(key, safe="")])
        return found.get(quote(key, safe=""))

    async def _state_rows(self, keys: list[str]) -> dict[str, str]:
        k, v = self._f("state_key"), self._f("value")
        sql = f"SELECT {k}, {v} FROM {self.query_objects[self.state_object]} WHERE {k} IN ({', '.join(map(sql_literal, keys))})"
        return {r[k.lower()]: r[v.lower()] for r in await self._query(sql, self.state_object)}

    async def _set_state(self, key: str, value: str) -> None:
        await self._upsert([], {key: value})

    async def _reject(self, rejected: list[RejectedRow]) -> None:
        records = []
        for r in rejected:
            pk = f"{_us(r.rejected_at) + _US_OFFSET:020d}-{uuid.uuid4().hex}"
            records.append({"rejected_key": pk, "source": r.source, "namespace": r.namespace, "id": r.id, "reason": r.reason,
                            "raw": r.raw, "rejected_at": _time_text(r.rejected_at), MODIFIED: _modified_text(r.rejected_at)})
        await self._ingest(self.rejected_object, records)
        self._pending_rejected.update(r["rejected_key"] for r in records)

    async def _rejected(self, limit: int) -> list[RejectedRow]:
        f = [self._f(x) for x in _REJECTED_FIELDS[:7]]
        sql = f"SELECT {', '.join(f)} FROM {self.query_objects[self.rejected_object]} ORDER BY {f[0]} DESC LIMIT {int(limit)}"
        out = []
        for row in await self._query(sql, self.rejected_object):
            pk, source, ns, id, reason, raw, at = (row.get(x.lower()) for x in f)
            try:
                when = datetime.fromisoformat(at)
            except (TypeError, ValueError):  # damaged: the key starts with the same time in µs
                when = _EPOCH + timedelta(microseconds=int(str(pk)[:20]) - _US_OFFSET)
            out.append(RejectedRow(source or "", _blank(ns), _blank(id), reason or "", raw or "", when))
        return out

    async def _stats(self) -> WarehouseStats:
        d, ks = self._f(self.columns["deleted_at"]), self._f(KEYSET)
        dead = f"{d} IS NOT NULL AND {d} <> ''"
        [row] = await self._query(
            f"SELECT COUNT(CASE WHEN NOT ({dead}) THEN 1 END) AS live_rows, COUNT(CASE WHEN {dead} THEN 1 END) AS tombstones, "
            f"MAX({ks}) AS newest FROM {self.query_objects[self.object_name]}", self.object_name)
        [rej] = await self._query(f"SELECT COUNT(*) AS n FROM {self.query_objects[self.rejected_object]}", self.rejected_object)
        newest = row.get("newest")
        at = _EPOCH + timedelta(microseconds=int(newest[:20]) - _US_OFFSET) if newest else None
        return WarehouseStats(int(row["live_rows"]), int(row["tombstones"]), int(rej["n"]), at)

    # -- beyond the seam -------------------------------------------------------------------

    async def purge(self, keys: Sequence[tuple[str, str]]) -> None:
        """Delete records outright (streaming delete, 200 ids a request). Prefer tombstones
        (upserts with ``deleted_at``), which propagate; purge is for erasure. Data Cloud deletes a
        record only when its Record Modified value is older than the time of the delete.

        Raises:
            InvalidInputError: ``keys`` is not a list of ``(namespace, id)`` identifier pairs.
            SyncTargetUnavailableError, AuthenticationFailedError: as for :meth:`upsert`.
        """
        pairs = check_items(keys, "keys", errors=INPUT)
        encoded = []
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise INPUT[1](f"keys must hold (namespace, id) tuples, got {type(pair).__name__}")
            encoded.append(encode_key(check_identifier(pair[0], "namespace"), check_identifier(pair[1], "id")))
        for part in _chunks(encoded, 6_000, most=200):
            resp = await self._request("DELETE", f"/api/v1/ingest/sources/{self.connector}/{self.object_name}",
                                       params={"ids": ",".join(part)}, what="streaming delete")
            if resp.status_code not in (200, 202, 204):
                raise self._refused(resp, "streaming delete", self.object_name)
            for key in part:
                self._pending.pop(key, None)
                self._pending_absent.add(key)

    async def wait_visible(self, timeout: float = 300.0) -> None:
        """Wait until every write this object made is queryable (or superseded), polling the
        Query API (and bulk jobs) from 20 ms up to 2 s apart.

        Raises:
            DataCloudNotVisibleError: not visible after ``timeout`` seconds, or a bulk job failed.
            SyncTargetUnavailableError, AuthenticationFailedError: as for every read.
        """
        deadline, pause = time.monotonic() + timeout, 0.02
        while True:
            await self._poll_once()
            left = len(self._pending) + len(self._pending_state) + len(self._pending_rejected) + len(self._pending_absent) + len(self._jobs)
            if not left:
                return
            if time.monotonic() + pause > deadline:
                raise DataCloudNotVisibleError(
                    f"{left} writes to {self.url} not queryable after {timeout:g} s ({len(self._jobs)} bulk jobs open); "
                    "Data Cloud processes streaming ingestion about every 3 minutes", target=self.url)
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 2.0)

    async def _poll_once(self) -> None:
        for job in list(self._jobs):
            resp = await self._request("GET", f"/api/v1/ingest/jobs/{quote(job, safe='')}", what="bulk job status")
            state = resp.json().get("state") if resp.status_code == 200 else None
            if state == "JobComplete":
                self._jobs.remove(job)
            elif state in ("Failed", "Aborted") or resp.status_code == 404:
                self._jobs.remove(job)
                raise DataCloudNotVisibleError(f"bulk job {job} ended {state or 'missing'}: {resp.text[:300]}", target=self.url)
        if self._pending:
            await self._stored(list(self._pending))
        if self._pending_state:
            keys = {quote(k, safe=""): k for k in self._pending_state}
            for qk, value in (await self._state_rows(list(keys))).items():
                if self._pending_state.get(keys[qk]) == value:
                    del self._pending_state[keys[qk]]
        if self._pending_rejected:
            k = self._f("rejected_key")
            for part in _chunks(list(self._pending_rejected), 60_000):
                sql = f"SELECT {k} FROM {self.query_objects[self.rejected_object]} WHERE {k} IN ({', '.join(map(sql_literal, part))})"
                self._pending_rejected -= {r[k.lower()] for r in await self._query(sql, self.rejected_object)}
        if self._pending_absent:
            self._pending_absent &= set(await self._stored(list(self._pending_absent)))


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _chunks(items: list[str], chars: int, most: int = 10_000) -> list[list[str]]:
    """``items`` in runs of at most ``most`` items and about ``chars`` characters."""
    out: list[list[str]] = []
    size = 0
    for item in items:
        if not out or len(out[-1]) >= most or size + len(item) > chars:
            out.append([])
            size = 0
        out[-1].append(item)
        size += len(item) + 4
    return out
