"""PostgreSQL as a sync target (extra ``sync-postgres``: psycopg 3, its async API).

Tables (in ``schema`` when given, else the first schema of the search path): the memories table
(default ``memories``: the canonical columns of :mod:`primitives.sync.rows`, primary key
``(namespace, id)``, an index on ``(updated_at, namespace, id)`` for keyset reads), ``sync_state``
(key, value, updated_at) and ``sync_rejected``. Types: ``text COLLATE "C"`` for strings, ``text``
for ``topics``/``metadata`` (the JSON text exactly as written), ``real[]`` for ``embedding``
(float4: float32, exact), ``double precision`` ``ttl`` (``Infinity`` kept), ``timestamptz``
(microseconds) for the times.

**Why JSON is text, not jsonb.** jsonb stores numbers as ``numeric``: ``-0.0`` comes back ``0.0``
and ``1e300`` as a 301-digit integer, so a row read back would hash to another ``version``; and
jsonb refuses the escape ``\\u0000``. Cast in queries (``metadata::jsonb``) where no NUL is held.

**NUL.** PostgreSQL text cannot hold U+0000. Every string column (and state and rejected-row
strings) is stored with one reversible, order-preserving escape whose escape character is U+0001:
U+0001 -> U+0001 U+0002, then U+0000 -> U+0001 U+0001. A string without U+0000 and U+0001 (every
ordinary string) is stored as is, so ``WHERE namespace = 'team-a'`` works in SQL. The escape is
applied to every row alike (not only to rows holding a NUL), so two different keys never share a
stored key (with per-row escaping ``"a\\0"`` escaped would collide with a literal ``"a\\\\0"``),
and since U+0000 < U+0001 < every other character the stored form sorts exactly as the original
does in code point order: keyset cursors compare on the stored form (the cursor is escaped the
same way) and pages follow Python's ``str`` order. JSON text needs no escape: ``json.dumps``
writes U+0000 as ``\\u0000``.

**Order.** ``namespace``, ``id`` and ``version`` compare with ``COLLATE "C"`` (UTF-8 bytes, which
is code point order, the order of Python's ``str``), in the table definition and again in every
comparison, so a table whose columns have another collation still reads in the right order.

**A batch is one transaction**: the rows are copied (``COPY ... FROM STDIN (FORMAT BINARY)``)
into a temporary table dropped at commit, merged by one ``INSERT ... SELECT ... ON CONFLICT
(namespace, id) DO UPDATE ... WHERE <incoming wins> RETURNING`` (written rows are counted from
``RETURNING``), and the state is upserted before ``COMMIT``. A failure anywhere rolls all of it
back. A lost connection during ``COMMIT`` itself cannot tell whether the commit happened; both
outcomes are whole (rows with their state, or neither), and re-sending is harmless.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import sys
from array import array
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from primitives.errors import SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.rows import COLUMNS, Cursor, RejectedRow, SyncRow
from primitives.sync.rows import from_micros_or_raw as _from_us
from primitives.sync.warehouse import Warehouse, WarehouseStats

__all__ = ["PostgresWarehouse", "decode_text", "encode_text", "redact_url"]

_TEXT = 'text COLLATE "C"'
_TYPES = {
    "namespace": _TEXT, "id": _TEXT, "user_id": _TEXT, "session_id": _TEXT, "memory_type": _TEXT,
    "text": _TEXT, "topics": "text", "metadata": "text", "embedding": "real[]", "ttl": "double precision",
    "created_at": "timestamp with time zone", "updated_at": "timestamp with time zone",
    "deleted_at": "timestamp with time zone", "version": _TEXT, "origin": _TEXT,
}  # fmt: skip
#: Column types of the staging table (``COPY ... (FORMAT BINARY)`` target).
_COPY_TYPES = {c: "text" for c in COLUMNS} | {
    "embedding": "real[]", "ttl": "float8", "created_at": "timestamptz", "updated_at": "timestamptz",
    "deleted_at": "timestamptz",
}  # fmt: skip
_TIMES = ("created_at", "updated_at", "deleted_at")
#: Columns that are escaped (see the module docstring); the JSON columns need not be.
_ESCAPED = ("namespace", "id", "user_id", "session_id", "memory_type", "text", "version", "origin")
_STATE = {"key": _TEXT, "value": "text", "updated_at": "timestamp with time zone"}
_REJECTED = {
    "source": "text", "namespace": "text", "id": "text", "reason": "text", "raw": "text",
    "rejected_at": "timestamp with time zone",
}  # fmt: skip
#: Type names ``format_type`` may report for a column declared with the type on the left.
_ACCEPTED = {"text": ("text", "character varying")}
_UTC = timezone.utc
_UNESCAPE = re.compile("\x01([\x01\x02])")
_CONNECT_TIMEOUT = 10
#: The binary ``array_recv`` header of a one-dimensional float4 array without NULLs:
#: ndim, has-nulls flag, element type oid (700 = float4), length, lower bound.
_ARRAY_HEADER = struct.Struct(">iiIii")
#: Each element's 4-byte length prefix (4), read as a native unsigned int.
_FOUR = int.from_bytes(b"\x00\x00\x00\x04", sys.byteorder)
#: An ``array`` typecode of 4-byte unsigned ints.
_U32 = "I" if array("I").itemsize == 4 else "L"


def encode_text(value: str) -> str:
    """The stored form of a string: U+0001 -> U+0001 U+0002, U+0000 -> U+0001 U+0001 (identity
    for strings without either). Injective and order-preserving in code point order."""
    if "\x00" not in value and "\x01" not in value:
        return value
    return value.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


def decode_text(value: str) -> str:
    """Inverse of :func:`encode_text`; a U+0001 not followed by U+0001 or U+0002 (written by
    someone else) is kept as is."""
    if "\x01" not in value:
        return value
    return _UNESCAPE.sub(lambda m: "\x00" if m.group(1) == "\x01" else "\x01", value)


def _float4_array(values: tuple[float, ...]) -> bytes:
    """``values`` in PostgreSQL's binary ``real[]`` form (what ``COPY ... (FORMAT BINARY)``
    reads for a ``real[]`` column), built in C loops: psycopg's own array dumper is pure Python
    and took 90% of a batch's time for 384-dims vectors."""
    floats = array("f", values)
    if not floats:  # an empty array has no dimensions
        return _ARRAY_HEADER.pack(0, 0, 700, 0, 0)[:12]
    if sys.byteorder == "little":
        floats.byteswap()
    words = array(_U32, bytes(8 * len(floats)))
    words[0::2] = array(_U32, [_FOUR]) * len(floats)
    words[1::2] = array(_U32, floats.tobytes())
    return _ARRAY_HEADER.pack(1, 0, 700, len(floats), 1) + words.tobytes()


def _enc(value: str | None) -> str | None:
    return None if value is None else encode_text(value)


def _dec(value: Any) -> Any:
    return decode_text(value) if isinstance(value, str) else value


def redact_url(url: str) -> str:
    """``url`` without its password: a ``postgresql://`` URL loses the password of its user
    part and any ``password=`` query parameter; a ``key=value`` connection string its
    ``password`` key."""
    if "://" in url:
        parts = urlsplit(url)
        userinfo, at, hosts = parts.netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}" if at else hosts
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:  # unparsable: say nothing of it rather than leak a password
        return "postgresql:(unparsable connection string)"
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: ``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)``, built once
#: (``json.dumps`` with arguments builds an encoder per call: a third of a batch's client time).
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _us(column: str) -> str:
    """SQL for ``column`` (timestamptz) as microseconds since the epoch (NULL for +-infinity)."""
    return f"CASE WHEN isfinite({column}) THEN (extract(epoch FROM {column}) * 1000000)::bigint END"


class PostgresWarehouse(Warehouse):
    """A PostgreSQL table as a sync target, through one connection (psycopg 3, async).

    Args:
        url: A libpq connection URL or ``key=value`` string, e.g.
            ``postgresql://user:password@host:5432/db`` (``connect_timeout`` defaults to 10 s).
        table: The memories table's name.
        schema: The schema of all three tables (created when missing); ``None``: the first
            schema of the role's search path (usually ``public``).
        columns: Canonical column -> this table's column names (:class:`ColumnMap`).
        vectors: Store ``embedding`` as ``real[]`` (``False``: the column is left out; imports
            re-embed).

    Attributes:
        url: ``url`` with the password removed (:func:`redact_url`).

    A lost connection is reopened by the next call (the failed call raised
    :class:`SyncTargetUnavailableError`; nothing of it was committed).

    Raises:
        SyncTargetUnavailableError: from :meth:`open`, the server refused or did not answer.
        SyncSchemaError: from :meth:`open`, a table exists without a needed column, with a type
            that cannot hold the values, or without the unique key sync merges on; or the
            database is not UTF-8.
    """

    name = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        table: str = "memories",
        schema: str | None = None,
        columns: Mapping[str, str] | None = None,
        vectors: bool = True,
    ) -> None:
        super().__init__(url=redact_url(url), columns=columns)
        self._conninfo = url
        self.table = table
        self.schema = schema
        self.holds_vectors = vectors
        self._con: Any = None
        self._opened = False
        self._lock = asyncio.Lock()

    # -- helpers ---------------------------------------------------------------------------------

    def _columns(self) -> list[str]:
        return [c for c in COLUMNS if c != "embedding" or self.holds_vectors]

    def _qual(self, name: str) -> str:
        return f"{_q(self.schema)}.{_q(name)}" if self.schema is not None else _q(name)

    def _unavailable(self, exc: BaseException, doing: str) -> SyncTargetUnavailableError:
        state = getattr(exc, "sqlstate", None)
        code = f" (SQLSTATE {state})" if state else ""
        return SyncTargetUnavailableError(f"PostgreSQL {self.url}: {doing} failed{code}: {exc}", target=self.url)

    async def _connect(self) -> Any:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(self._conninfo)
        except psycopg.Error as exc:
            raise SyncTargetUnavailableError(f"not a PostgreSQL connection URL: {self.url}", target=self.url) from exc
        params.setdefault("connect_timeout", _CONNECT_TIMEOUT)
        params.setdefault("application_name", "memory-primitives-sync")
        try:
            con = await psycopg.AsyncConnection.connect(**params, autocommit=True)
            await con.execute("SET TIME ZONE 'UTC'")
            await con.execute("SET client_encoding TO 'UTF8'")
        except psycopg.Error as exc:
            raise SyncTargetUnavailableError(
                f"cannot connect to PostgreSQL {self.url}: {exc}. Fix: check that the server runs and "
                "the host, port, user, password and database are right", target=self.url,
            ) from exc  # fmt: skip
        return con

    async def _run(self, doing: str, fn: Any, *args: Any) -> Any:
        """Run ``fn(connection, *args)`` alone on the connection, reconnecting a lost one first;
        psycopg errors become :class:`SyncTargetUnavailableError`."""
        import psycopg

        if not self._opened:
            raise SyncTargetUnavailableError(f"the PostgreSQL target {self.url} is not open (call open())", target=self.url)
        async with self._lock:
            if self._con is None or self._con.closed or self._con.broken:
                await self._drop()
                self._con = await self._connect()
            try:
                return await fn(self._con, *args)
            except psycopg.Error as exc:
                await self._drop_unless_idle()
                raise self._unavailable(exc, doing) from exc
            except BaseException:
                await self._drop_unless_idle()  # e.g. cancelled mid-COPY: the next call reconnects
                raise

    async def _drop_unless_idle(self) -> None:
        from psycopg.pq import TransactionStatus

        if self._con is not None and self._con.info.transaction_status != TransactionStatus.IDLE:
            await self._drop()

    async def _drop(self) -> None:
        con, self._con = self._con, None
        if con is not None and not con.closed:
            await con.close()

    # -- hooks -----------------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            await self._run("creating the tables", self._create)
        except BaseException:
            self._opened = False
            await self._drop()
            raise

    async def _create(self, con: Any) -> None:
        n = self.columns.names
        encoding = (await (await con.execute("SHOW server_encoding")).fetchone())[0]
        if encoding.upper() not in ("UTF8", "UTF-8"):
            raise SyncSchemaError(
                f"database of {self.url} has encoding {encoding}; sync stores any Unicode text",
                table=self.table, column=n["text"], fix="use a database created with ENCODING 'UTF8'",
            )
        if self.schema is not None:
            found = await (await con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema])).fetchone()
            if found is None:
                await con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(self.schema)}")
        t = self._qual(self.table)
        async with con.transaction():
            if await self._columns_of(con, self.table) is None:
                cols = ", ".join(f"{_q(n[c])} {_TYPES[c]}" for c in self._columns())
                await con.execute(f"CREATE TABLE IF NOT EXISTS {t} ({cols}, PRIMARY KEY ({_q(n['namespace'])}, {_q(n['id'])}))")
                index = _q(f"{self.table[:40]}_sync_keyset")
                await con.execute(
                    f"CREATE INDEX IF NOT EXISTS {index} ON {t} ({_q(n['updated_at'])}, "
                    f'{_q(n["namespace"])} COLLATE "C", {_q(n["id"])} COLLATE "C")'
                )
            for name, types in (("sync_state", _STATE), ("sync_rejected", _REJECTED)):
                if await self._columns_of(con, name) is None:
                    key = ", PRIMARY KEY (key)" if name == "sync_state" else ""
                    cols = ", ".join(f"{c} {typ}" for c, typ in types.items())
                    await con.execute(f"CREATE TABLE IF NOT EXISTS {self._qual(name)} ({cols}{key})")
        await self._check(con, self.table, {n[c]: (c, _TYPES[c]) for c in self._columns()}, [n["namespace"], n["id"]])
        await self._check(con, "sync_state", {c: (c, typ) for c, typ in _STATE.items()}, ["key"])
        await self._check(con, "sync_rejected", {c: (c, typ) for c, typ in _REJECTED.items()}, None)

    async def _columns_of(self, con: Any, table: str) -> dict[str, str] | None:
        """Column name -> ``format_type`` of ``table``, or ``None`` when there is no such table."""
        found = await (await con.execute("SELECT to_regclass(%s)::oid", [self._qual(table)])).fetchone()
        if found is None or found[0] is None:
            return None
        cur = await con.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped", [found[0]],
        )  # fmt: skip
        return dict(await cur.fetchall())

    async def _check(self, con: Any, table: str, want: dict[str, tuple[str, str]], key: list[str] | None) -> None:
        have = await self._columns_of(con, table) or {}
        where = self._qual(table)
        for name, (canonical, declared) in want.items():
            base = declared.split(" COLLATE")[0]
            if name not in have:
                mapped = f", or map {canonical} to an existing column with columns={{{canonical!r}: ...}}" if table == self.table else ""
                raise SyncSchemaError(
                    f"table {where} in {self.url} has no column {name} (canonical {canonical})",
                    table=table, column=name, fix=f"ALTER TABLE {where} ADD COLUMN {_q(name)} {declared}{mapped}",
                )
            if have[name] not in _ACCEPTED.get(base, (base,)):
                raise SyncSchemaError(
                    f"column {name} of {where} is {have[name]}, sync needs {base}",
                    table=table, column=name,
                    fix=f"ALTER TABLE {where} ALTER COLUMN {_q(name)} TYPE {declared} USING {_q(name)}::{base}",
                )
        if key is not None:
            cur = await con.execute(
                "SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL "
                "AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
                "WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s AND i.indnkeyatts = %s",
                [where, sorted(key), len(key)],
            )  # fmt: skip
            if await cur.fetchone() is None:
                cols = ", ".join(_q(k) for k in key)
                raise SyncSchemaError(
                    f"table {where} has no primary key or unique index on ({', '.join(key)}), which sync merges on",
                    table=table, column=key[0], fix=f"ALTER TABLE {where} ADD PRIMARY KEY ({cols})",
                )

    async def _aclose(self) -> None:
        self._opened = False
        async with self._lock:
            await self._drop()

    async def _upsert(self, rows: list[SyncRow], state: dict[str, str]) -> int:
        return await self._run("writing a batch", self._upsert_on, rows, state)

    async def _upsert_on(self, con: Any, rows: list[SyncRow], state: dict[str, str]) -> int:
        n, cols = self.columns.names, self._columns()
        written = 0
        async with con.transaction():
            if rows:
                staging = ", ".join(f"{_q(c)} {_COPY_TYPES[c]}" for c in cols)
                await con.execute(f"CREATE TEMP TABLE sync_incoming ({staging}) ON COMMIT DROP")
                cur = con.cursor()
                async with cur.copy(f"COPY sync_incoming ({', '.join(map(_q, cols))}) FROM STDIN (FORMAT BINARY)") as copy:
                    # the embedding goes as ready-made real[] bytes (sent as they are, like bytea)
                    copy.set_types(["bytea" if c == "embedding" else _COPY_TYPES[c] for c in cols])
                    vectors = self.holds_vectors
                    for r in rows:
                        values: list[Any] = [
                            encode_text(r.namespace), encode_text(r.id), _enc(r.user_id), _enc(r.session_id),
                            encode_text(r.memory_type), encode_text(r.text), _dumps(list(r.topics)) if r.topics else "[]",
                            _dumps(r.metadata if type(r.metadata) is dict else dict(r.metadata)) if r.metadata else "{}",
                        ]  # fmt: skip
                        if vectors:
                            values.append(_float4_array(r.embedding) if r.embedding is not None else None)
                        values += [r.ttl, r.created_at, r.updated_at, r.deleted_at, encode_text(r.version), _enc(r.origin)]
                        await copy.write_row(values)
                u, v = _q(n["updated_at"]), _q(n["version"])
                wins = f'excluded.{u} > cur.{u} OR (excluded.{u} = cur.{u} AND excluded.{v} COLLATE "C" > cur.{v} COLLATE "C")'
                names = ", ".join(_q(n[c]) for c in cols)
                updates = ", ".join(f"{_q(n[c])} = excluded.{_q(n[c])}" for c in cols if c not in ("namespace", "id"))
                merged = await con.execute(
                    f"WITH merged AS (INSERT INTO {self._qual(self.table)} AS cur ({names}) "
                    f"SELECT {', '.join(map(_q, cols))} FROM sync_incoming "
                    f"ON CONFLICT ({_q(n['namespace'])}, {_q(n['id'])}) DO UPDATE SET {updates} WHERE {wins} "
                    "RETURNING 1) SELECT count(*) FROM merged"
                )
                written = (await merged.fetchone())[0]
            if state:
                cur = con.cursor()
                await cur.executemany(
                    f"INSERT INTO {self._qual('sync_state')} (key, value, updated_at) VALUES (%s, %s, now()) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    [(encode_text(k), encode_text(val)) for k, val in state.items()],
                )
        return written

    async def _changes_after(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        return await self._run("reading changes", self._changes_on, cursor, limit)

    async def _changes_on(self, con: Any, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        n, cols = self.columns.names, self._columns()
        select = ", ".join(_us(_q(n[c])) if c in _TIMES else _q(n[c]) for c in cols)
        u, ns, i = _q(n["updated_at"]), _q(n["namespace"]), _q(n["id"])
        sql = f"SELECT {select} FROM {self._qual(self.table)}"
        params: list[Any] = []
        if cursor is not None:
            sql += f' WHERE ({u}, {ns} COLLATE "C", {i} COLLATE "C") > (%s, %s, %s)'
            params = [cursor.updated_at, encode_text(cursor.namespace), encode_text(cursor.id)]
        sql += f' ORDER BY {u}, {ns} COLLATE "C", {i} COLLATE "C" LIMIT {int(limit)}'
        cur = con.cursor(binary=True)
        await cur.execute(sql, params)
        out = []
        for values in await cur.fetchall():
            row = dict(zip(cols, values))
            for c in _ESCAPED:
                row[c] = _dec(row[c])
            for c in _TIMES:
                row[c] = _from_us(row[c])
            out.append(row)
        return out

    async def _get_state(self, key: str) -> str | None:
        async def read(con: Any) -> Any:
            cur = await con.execute(f"SELECT value FROM {self._qual('sync_state')} WHERE key = %s", [encode_text(key)])
            return await cur.fetchone()

        found = await self._run("reading the sync state", read)
        return decode_text(found[0]) if found else None

    async def _set_state(self, key: str, value: str) -> None:
        await self._upsert([], {key: value})

    async def _reject(self, rejected: list[RejectedRow]) -> None:
        async def write(con: Any) -> None:
            async with con.transaction():
                await con.cursor().executemany(
                    f"INSERT INTO {self._qual('sync_rejected')} VALUES (%s, %s, %s, %s, %s, %s)",
                    [(_enc(r.source), _enc(r.namespace), _enc(r.id), _enc(r.reason), _enc(r.raw), r.rejected_at) for r in rejected],
                )

        await self._run("writing rejected rows", write)

    async def _rejected(self, limit: int) -> list[RejectedRow]:
        async def read(con: Any) -> list[Any]:
            cur = await con.execute(
                f"SELECT source, namespace, id, reason, raw, {_us('rejected_at')} FROM {self._qual('sync_rejected')} "
                f"ORDER BY rejected_at DESC LIMIT {int(limit)}"
            )
            return await cur.fetchall()

        found = await self._run("reading rejected rows", read)
        return [
            RejectedRow(_dec(s), _dec(ns), _dec(i), _dec(reason), _dec(raw), _from_us(at))
            for s, ns, i, reason, raw, at in found
        ]

    async def _stats(self) -> WarehouseStats:
        n = self.columns.names
        d, newest_us = _q(n["deleted_at"]), _us(f"max({_q(n['updated_at'])})")

        async def read(con: Any) -> WarehouseStats:
            cur = await con.execute(
                f"SELECT count(*) FILTER (WHERE {d} IS NULL), count(*) FILTER (WHERE {d} IS NOT NULL), "
                f"{newest_us} FROM {self._qual(self.table)}"
            )
            live, dead, newest = await cur.fetchone()
            rejected = (await (await con.execute(f"SELECT count(*) FROM {self._qual('sync_rejected')}")).fetchone())[0]
            return WarehouseStats(live, dead, rejected, _from_us(newest))

        return await self._run("reading stats", read)

    async def execute(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the target and return its rows (for analysis and tests;
        stored strings are in their escaped form, see the module docstring).

        Raises:
            SyncTargetUnavailableError: the statement failed or the server did not answer.
        """

        async def run(con: Any) -> list[tuple[Any, ...]]:
            cur = await con.execute(sql, params or None)
            return await cur.fetchall() if cur.description is not None else []

        return await self._run("a statement", run)
