"""Snowflake as a sync target (the official ``snowflake-connector-python``, blocking, run in a worker
thread).

Tables, in ``database.schema`` (the schema is created when missing; the database must exist): the
memories table (default ``MEMORIES``: the canonical columns of :mod:`primitives.sync.rows`, primary
key ``(namespace, id)``, which Snowflake records but does not enforce: only sync's ``MERGE`` keeps
keys unique), ``SYNC_STATE`` (key, value, updated_at) and ``SYNC_REJECTED``.

**Names.** Identifiers are resolved as Snowflake resolves what a person types: a name of letters,
digits, ``_`` and ``$`` is the upper-case name (``table="memories"`` is ``MEMORIES``; column
``text`` is ``TEXT``, so ``SELECT text FROM memories`` works unquoted); any other name (``"agent
memory"``) is taken exactly, case and all. Every identifier is quoted in SQL, every value is bound
(``paramstyle="qmark"``, server-side binding): no value is ever part of a statement's text.

**Types.** ``VARCHAR`` for the strings, stored as they are, U+0000 included (Snowflake's VARCHAR
holds any UTF-8 and its literals accept ``\\0``; no escape as in the PostgreSQL target). ``VARCHAR``
for ``topics``/``metadata`` (the JSON text exactly as written, so ``-0.0`` and large numbers come
back unchanged and hash to the same ``version``; ``PARSE_JSON(metadata)`` in queries) and for
``embedding``: the JSON text of the float32 values (each written with Python's shortest ``repr``
of the float32-exact double, so it reads back exactly; ``PARSE_JSON(embedding)::VECTOR(FLOAT, n)``
makes a vector). Not ``ARRAY``: a VARIANT holds a double and its text form is the server's, not a
documented exact round trip. Not ``VECTOR``: its dimension is fixed per column. ``FLOAT`` ``ttl``
(``'inf'`` is a Snowflake FLOAT value). ``TIMESTAMP_NTZ(6)`` holding UTC for the times (an existing
``TIMESTAMP_TZ``/``TIMESTAMP_LTZ`` column is accepted: the session runs with ``TIMEZONE='UTC'``).
Times travel as integer microseconds since the epoch, ``TO_TIMESTAMP_NTZ(us, 6)`` in and
``DATE_PART(EPOCH_MICROSECOND, ...)`` out: the connector binds a ``datetime`` through a float of
seconds, which can be off by a microsecond.

**Order.** ``namespace``, ``id`` and ``version`` must have no collation (or ``'utf8'``): Snowflake
then compares strings by their UTF-8 bytes, which is code point order, the order of Python's
``str``, so keyset pages and the ``version`` tiebreak agree with every other target. A column with
another collation (``'en-ci'``, or one a ``DEFAULT_DDL_COLLATION`` parameter gave it) would merge
``"A"`` and ``"a"`` into one key: :meth:`~SnowflakeWarehouse.open` refuses it.

**A batch**: ``CREATE OR REPLACE TEMPORARY TABLE SYNC_INCOMING``
(DDL, so outside the transaction: in Snowflake DDL commits an open transaction), one
``executemany`` ``INSERT`` into it (the connector sends all rows as one array binding, and uploads
them to a temporary stage past ``CLIENT_STAGE_ARRAY_BINDING_THRESHOLD`` values), then ``BEGIN``,
one ``MERGE INTO t USING (SELECT ... FROM SYNC_INCOMING) s ON t.namespace = s.namespace AND t.id =
s.id WHEN MATCHED AND <incoming wins> THEN UPDATE ... WHEN NOT MATCHED THEN INSERT ...`` (written
rows are the inserted plus updated counts it returns), the state ``MERGE``, ``COMMIT``. A failure
anywhere rolls all of it back (Snowflake keeps a transaction open after a failed statement, so the
target sends ``ROLLBACK``). A lost connection during ``COMMIT`` cannot tell whether the commit
happened; both outcomes are whole, and re-sending is harmless.

**Tested against fakesnow, not against Snowflake** (no account here). fakesnow emulates Snowflake
on DuckDB; where the two differ this module is written for Snowflake:

- fakesnow refuses a qualified temporary table name; the staging table is unqualified, in the
  session's schema (``USE SCHEMA`` after open), which is also correct in Snowflake.
- fakesnow's ``MERGE`` copies only plain source columns; conversions happen in the ``USING``
  subquery, so ``SET`` and ``INSERT`` read ``s.col`` only (valid Snowflake either way).
- fakesnow runs a ``MERGE`` as several DuckDB statements that also write its own metadata database,
  and DuckDB lets one transaction write one database: inside ``BEGIN`` this fails unless the target
  database is fakesnow's own (the tests use it). Snowflake has no such limit.
- fakesnow has no ``DATETIME_PRECISION`` column in ``INFORMATION_SCHEMA.COLUMNS`` and no collations
  (nor VARCHAR lengths in that database): those checks run only where the server reports them.
- fakesnow runs ``executemany`` one row at a time (about 10 s per 1,000 rows; one ``INSERT ...
  SELECT FROM VALUES`` takes 0.4 s there), where Snowflake takes one array-bound request: the
  speed of the write path is not measured here.
- Not exercised at all: authentication, the connector's stage upload of large bindings, real
  Snowflake type coercions, NUL through a real server, concurrency between sessions.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from primitives.errors import ConfigurationError, SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.rows import COLUMNS, Cursor, RejectedRow, SyncRow
from primitives.sync.rows import from_micros_or_raw as _from_us
from primitives.sync.warehouse import Warehouse, WarehouseStats
from primitives.validation import MAX_IDENTIFIER_CHARS

__all__ = ["SnowflakeWarehouse", "check_columns", "merge_sql", "quote_identifier", "stored_name"]

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_TIMES = ("created_at", "updated_at", "deleted_at")
_JSON = ("topics", "metadata", "embedding")
#: Kind of each canonical column: ``text`` (VARCHAR), ``float`` (FLOAT) or ``time`` (TIMESTAMP).
_KIND = {c: "time" if c in _TIMES else "float" if c == "ttl" else "text" for c in COLUMNS}
#: The type a created column gets, by kind.
_DECLARE = {"text": "VARCHAR", "float": "FLOAT", "time": "TIMESTAMP_NTZ(6)"}
#: ``INFORMATION_SCHEMA.COLUMNS.DATA_TYPE`` values accepted for each kind.
_ACCEPT = {"text": ("TEXT",), "float": ("FLOAT",), "time": ("TIMESTAMP_NTZ", "TIMESTAMP_TZ", "TIMESTAMP_LTZ")}
#: Smallest VARCHAR length (characters) each text column needs; the default VARCHAR is 16,777,216.
_MIN_CHARS = {"text": 16_777_216, "topics": 16_777_216, "metadata": 16_777_216, "embedding": 16_777_216,
              "version": 64, "memory_type": 16}  # fmt: skip
#: Columns compared as strings for keys, keyset order and the tiebreak: no collation allowed.
_BINARY = ("namespace", "id", "version", "key")
#: Staging column types: times as microseconds, ``ttl`` as text (``'inf'``), the rest VARCHAR.
_STAGE_TYPE = {"created_at": "BIGINT", "updated_at": "BIGINT", "deleted_at": "BIGINT"}
_STATE = {"key": "text", "value": "text", "updated_at": "time"}
_REJECTED = {"source": "text", "namespace": "text", "id": "text", "reason": "text", "raw": "text", "rejected_at": "time"}
_UNQUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_LOGIN_TIMEOUT = 30

#: ``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)``, built once.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def stored_name(name: str) -> str:
    """The name Snowflake stores for ``name`` as typed: upper case when it is a valid unquoted
    identifier (letters, digits, ``_``, ``$``, not starting with a digit or ``$``), else as is."""
    return name.upper() if _UNQUOTED.fullmatch(name) else name


def quote_identifier(name: str) -> str:
    """``name`` (see :func:`stored_name`) as a quoted Snowflake identifier, ``"`` doubled."""
    return '"' + stored_name(name).replace('"', '""') + '"'


_q = quote_identifier


def _micros(at: datetime | None) -> int | None:
    if at is None:
        return None
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _ttl_text(ttl: float | None) -> str | None:
    if ttl is None:
        return None
    return "inf" if math.isinf(ttl) else repr(float(ttl))


def _us_sql(column: str) -> str:
    return f"DATE_PART(EPOCH_MICROSECOND, {column})"


def merge_sql(table: str, names: Mapping[str, str], cols: list[str], staging: str) -> str:
    """The one ``MERGE`` of a batch: ``table`` (quoted, qualified) from ``staging`` (quoted), for
    canonical ``cols`` with target column ``names``. Incoming wins when its ``updated_at`` is later,
    or equal with a larger ``version`` (byte order: a tombstone's ``t...`` beats every hex digest)."""
    n = {c: _q(names[c]) for c in cols}
    source = []
    for c in cols:
        src = _q(c)
        if c in _TIMES:
            src = f"TO_TIMESTAMP_NTZ({src}, 6)"
        elif c == "ttl":
            src = f"CAST({src} AS FLOAT)"
        source.append(f"{src} AS {n[c]}")
    u, v = n["updated_at"], n["version"]
    wins = f"s.{u} > t.{u} OR (s.{u} = t.{u} AND s.{v} > t.{v})"
    updates = ", ".join(f"{n[c]} = s.{n[c]}" for c in cols if c not in ("namespace", "id"))
    return (
        f"MERGE INTO {table} t USING (SELECT {', '.join(source)} FROM {staging}) s "
        f"ON t.{n['namespace']} = s.{n['namespace']} AND t.{n['id']} = s.{n['id']} "
        f"WHEN MATCHED AND ({wins}) THEN UPDATE SET {updates} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(n[c] for c in cols)}) VALUES ({', '.join(f's.{n[c]}' for c in cols)})"
    )


def check_columns(
    table: str, have: Mapping[str, Mapping[str, Any]], want: Mapping[str, tuple[str, str]], *, mapped: bool = False
) -> None:
    """Check a table's columns as ``INFORMATION_SCHEMA.COLUMNS`` reports them.

    Args:
        table: The qualified, quoted table name (for messages and fixes).
        have: Stored column name -> its ``INFORMATION_SCHEMA.COLUMNS`` row (upper-case keys:
            ``DATA_TYPE``, ``CHARACTER_MAXIMUM_LENGTH``, ``COLLATION_NAME``, and
            ``DATETIME_PRECISION`` where the server has it).
        want: Stored column name -> (canonical name, kind: ``text``, ``float`` or ``time``).
        mapped: Whether the canonical names may be mapped to other columns (the memories table).

    Raises:
        SyncSchemaError: the first column missing, of another type, too short, collated or of a
            precision below microseconds; the message names it and the fix.
    """
    for name, (canonical, kind) in want.items():
        col = _q(name)
        info = have.get(name)
        if info is None:
            hint = f", or map {canonical} to an existing column with columns={{{canonical!r}: ...}}" if mapped else ""
            raise SyncSchemaError(
                f"table {table} has no column {name} (canonical {canonical})",
                table=table, column=name, fix=f"ALTER TABLE {table} ADD COLUMN {col} {_DECLARE[kind]}{hint}",
            )
        dtype = str(info.get("DATA_TYPE") or "").upper()
        if dtype not in _ACCEPT[kind]:
            raise SyncSchemaError(
                f"column {name} of {table} is {dtype}, sync needs {_DECLARE[kind]}",
                table=table, column=name,
                fix=f"ALTER TABLE {table} RENAME COLUMN {col} TO {_q(name + '_OLD')}, then ADD COLUMN {col} "
                f"{_DECLARE[kind]} and copy the values over",
            )
        length = info.get("CHARACTER_MAXIMUM_LENGTH")
        need = _MIN_CHARS.get(canonical, MAX_IDENTIFIER_CHARS)
        if kind == "text" and length is not None and int(length) < need:
            raise SyncSchemaError(
                f"column {name} of {table} is VARCHAR({length}), sync writes up to {need} characters",
                table=table, column=name, fix=f"ALTER TABLE {table} ALTER COLUMN {col} SET DATA TYPE VARCHAR",
            )
        collation = info.get("COLLATION_NAME")
        if canonical in _BINARY and collation and str(collation).lower() != "utf8":
            raise SyncSchemaError(
                f"column {name} of {table} has collation {collation!r}; sync compares keys by UTF-8 bytes",
                table=table, column=name,
                fix=f"recreate {col} as VARCHAR COLLATE 'utf8' (or without a collation; ALTER cannot change one) "
                "and copy the values over; check DEFAULT_DDL_COLLATION on the account, database and schema",
            )
        precision = info.get("DATETIME_PRECISION")
        if kind == "time" and precision is not None and int(precision) < 6:
            raise SyncSchemaError(
                f"column {name} of {table} keeps {precision} fractional digits, sync needs microseconds",
                table=table, column=name,
                fix=f"ALTER TABLE {table} RENAME COLUMN {col} TO {_q(name + '_OLD')}, then ADD COLUMN {col} "
                "TIMESTAMP_NTZ(6) and copy the values over",
            )


class SnowflakeWarehouse(Warehouse):
    """A Snowflake table as a sync target, through one connection.

    Args:
        account: The account identifier (``orgname-accountname`` or a locator).
        user: The login name.
        password: Its password; ``None``: the connector's other settings authenticate.
        database: The database (must exist).
        schema: The schema of all three tables (created when missing).
        warehouse: The virtual warehouse that runs the statements; ``None``: the user's default.
        role: The role; ``None``: the user's default.
        table: The memories table (see the module docstring for how names resolve).
        columns: Canonical column -> this table's column names (:class:`ColumnMap`).
        vectors: Store ``embedding`` (``False``: the column is left out; imports re-embed).
        connect: ``snowflake.connector.connect`` or a stand-in taking the same keyword arguments
            (tests pass fakesnow's); called with ``paramstyle="qmark"``, ``autocommit=True`` and
            the session parameter ``TIMEZONE='UTC'``.

    Attributes:
        url: ``snowflake://user@account/database/schema`` (no password).

    A lost connection is reopened by the next call (the failed call raised
    :class:`SyncTargetUnavailableError`; nothing of it was committed).

    Raises:
        ConfigurationError: ``account``, ``user``, ``database``, ``schema`` or ``table`` is empty.
        SyncTargetUnavailableError: from :meth:`open`, the login failed or Snowflake did not answer.
        SyncSchemaError: from :meth:`open`, a table lacks a column, has one of an unusable type,
            length, precision or collation.
    """

    name = "snowflake"

    def __init__(
        self,
        *,
        account: str,
        user: str,
        password: str | None = None,
        database: str,
        schema: str = "PUBLIC",
        warehouse: str | None = None,
        role: str | None = None,
        table: str = "MEMORIES",
        columns: Mapping[str, str] | None = None,
        vectors: bool = True,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        for label, value in (("account", account), ("user", user), ("database", database), ("schema", schema), ("table", table)):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"Snowflake target: {label} must be a non-empty string, got {value!r}")
        super().__init__(url=f"snowflake://{user}@{account}/{database}/{schema}", columns=columns)
        self.account, self.user, self.database, self.schema = account, user, database, schema
        self.warehouse, self.role, self.table = warehouse, role, table
        self.holds_vectors = vectors
        self._password = password
        self._connect_fn = connect
        self._con: Any = None
        self._opened = False
        self._ready = False  # the schema exists (set by open)
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SnowflakeWarehouse({self.url!r}, table={self.table!r})"

    # -- helpers ---------------------------------------------------------------------------------

    def _columns(self) -> list[str]:
        return [c for c in COLUMNS if c != "embedding" or self.holds_vectors]

    def _qual(self, name: str) -> str:
        return f"{_q(self.database)}.{_q(self.schema)}.{_q(name)}"

    def _errors(self) -> tuple[type[BaseException], ...]:
        from snowflake.connector import errors

        return (errors.Error,)

    def _unavailable(self, exc: BaseException, doing: str) -> SyncTargetUnavailableError:
        # the connector's message starts with its errno and SQLSTATE: "002003 (42S02): ..."
        return SyncTargetUnavailableError(f"Snowflake {self.url}: {doing} failed: {exc}", target=self.url)

    def _connect(self) -> Any:
        connect = self._connect_fn
        if connect is None:
            import snowflake.connector

            connect = snowflake.connector.connect
        options: dict[str, Any] = {
            "account": self.account, "user": self.user, "database": self.database, "schema": self.schema,
            "paramstyle": "qmark", "autocommit": True, "login_timeout": _LOGIN_TIMEOUT,
            "session_parameters": {"TIMEZONE": "UTC"},
        }  # fmt: skip
        for key, value in (("password", self._password), ("warehouse", self.warehouse), ("role", self.role)):
            if value is not None:
                options[key] = value
        try:
            return connect(**options)
        except self._errors() as exc:
            raise SyncTargetUnavailableError(
                f"cannot connect to Snowflake {self.url}: {exc}. Fix: check the account identifier, user, "
                "password, role and warehouse, and that the account is reachable", target=self.url,
            ) from exc  # fmt: skip

    async def _run(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(cursor, *args)`` in a worker thread, alone on the connection, reconnecting a
        lost one first; connector errors become :class:`SyncTargetUnavailableError`."""
        if not self._opened:
            raise SyncTargetUnavailableError(f"the Snowflake target {self.url} is not open (call open())", target=self.url)
        async with self._lock:
            return await asyncio.to_thread(self._call, doing, fn, *args)

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        # a cancelled caller leaves its thread running: the next call waits for it here
        with self._thread_lock:
            return self._call_locked(doing, fn, *args)

    def _call_locked(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            if self._con is None or self._con.is_closed():
                self._drop()
                self._con = self._connect()
                if self._ready:  # a reconnect: the staging tables go in the target's schema
                    self._use_schema(self._con.cursor())
            return fn(self._con.cursor(), *args)
        except self._errors() as exc:
            raise self._unavailable(exc, doing) from exc

    def _drop(self) -> None:
        con, self._con = self._con, None
        if con is not None and not con.is_closed():
            try:
                con.close()
            except self._errors():
                pass  # closing a broken session: Snowflake ends it and rolls its transaction back

    def _locked_drop(self) -> None:
        with self._thread_lock:
            self._drop()

    def _use_schema(self, cur: Any) -> None:
        cur.execute(f"USE SCHEMA {_q(self.database)}.{_q(self.schema)}")

    def _columns_of(self, cur: Any, table: str) -> dict[str, dict[str, Any]]:
        """Stored column name -> its ``INFORMATION_SCHEMA.COLUMNS`` row; empty: no such table."""
        cur.execute(
            f"SELECT * FROM {_q(self.database)}.INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            [stored_name(self.schema), stored_name(table)],
        )
        names = [str(d[0]).upper() for d in cur.description]
        rows = [dict(zip(names, values)) for values in cur.fetchall()]
        return {r["COLUMN_NAME"]: r for r in rows}

    # -- hooks -----------------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            await self._run("creating the tables", self._create)
        except BaseException:
            self._opened = False
            async with self._lock:
                await asyncio.to_thread(self._locked_drop)
            raise

    def _create(self, cur: Any) -> None:
        db = _q(self.database)
        cur.execute(f'SELECT COUNT(*) AS "N" FROM {db}.INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = ?', [stored_name(self.schema)])
        if not cur.fetchone()[0]:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {db}.{_q(self.schema)}")
        self._use_schema(cur)
        self._ready = True
        n = self.columns.names
        tables = {
            self.table: ({stored_name(n[c]): (c, _KIND[c]) for c in self._columns()}, ("namespace", "id")),
            "SYNC_STATE": ({stored_name(c): (c, k) for c, k in _STATE.items()}, ("key",)),
            "SYNC_REJECTED": ({stored_name(c): (c, k) for c, k in _REJECTED.items()}, None),
        }
        for table, (want, key) in tables.items():
            have = self._columns_of(cur, table)
            if not have:
                cols = ", ".join(f"{_q(name)} {_DECLARE[kind]}{' NOT NULL' if key and c in key else ''}" for name, (c, kind) in want.items())
                if key:
                    by = {c: name for name, (c, _) in want.items()}
                    cols += f", PRIMARY KEY ({', '.join(_q(by[c]) for c in key)})"
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self._qual(table)} ({cols})")
                have = self._columns_of(cur, table)
            check_columns(self._qual(table), have, want, mapped=table == self.table)

    async def _aclose(self) -> None:
        self._opened = False
        async with self._lock:
            await asyncio.to_thread(self._locked_drop)

    def _stage(self, cur: Any, staging: str, types: Mapping[str, str], rows: list[list[Any]]) -> None:
        """A fresh session-private ``staging`` table holding ``rows`` (one array-bound INSERT)."""
        cur.execute(f"CREATE OR REPLACE TEMPORARY TABLE {staging} ({', '.join(f'{_q(c)} {t}' for c, t in types.items())})")
        marks = ", ".join("?" for _ in types)
        cur.executemany(f"INSERT INTO {staging} ({', '.join(map(_q, types))}) VALUES ({marks})", rows)

    async def _upsert(self, rows: list[SyncRow], state: dict[str, str]) -> int:
        return await self._run("writing a batch", self._upsert_on, rows, state)

    def _upsert_on(self, cur: Any, rows: list[SyncRow], state: dict[str, str]) -> int:
        cols, staging = self._columns(), _q("SYNC_INCOMING")
        if rows:
            vectors = self.holds_vectors
            params = []
            for r in rows:
                values: list[Any] = [
                    r.namespace, r.id, r.user_id, r.session_id, r.memory_type, r.text, _dumps(list(r.topics)),
                    _dumps(r.metadata if type(r.metadata) is dict else dict(r.metadata)),
                ]  # fmt: skip
                if vectors:
                    values.append(None if r.embedding is None else _dumps(list(r.embedding)))
                values += [_ttl_text(r.ttl), _micros(r.created_at), _micros(r.updated_at), _micros(r.deleted_at), r.version, r.origin]
                params.append(values)
            self._stage(cur, staging, {c: _STAGE_TYPE.get(c, "VARCHAR") for c in cols}, params)
        written = 0
        cur.execute("BEGIN")
        try:
            if rows:
                cur.execute(merge_sql(self._qual(self.table), self.columns.names, cols, staging))
                written = sum(int(v) for v in cur.fetchone())
            if state:
                now = _micros(datetime.now(_UTC))
                marks = ", ".join("(?, ?, ?)" for _ in state)
                cur.execute(
                    f"MERGE INTO {self._qual('SYNC_STATE')} t USING (SELECT column1 AS \"KEY\", column2 AS \"VALUE\", "
                    f"TO_TIMESTAMP_NTZ(column3, 6) AS \"UPDATED_AT\" FROM VALUES {marks}) s ON t.\"KEY\" = s.\"KEY\" "
                    'WHEN MATCHED THEN UPDATE SET "VALUE" = s."VALUE", "UPDATED_AT" = s."UPDATED_AT" '
                    'WHEN NOT MATCHED THEN INSERT ("KEY", "VALUE", "UPDATED_AT") VALUES (s."KEY", s."VALUE", s."UPDATED_AT")',
                    [v for key, value in state.items() for v in (key, value, now)],
                )
            cur.execute("COMMIT")
        except BaseException:
            self._rollback(cur)
            raise
        return written

    def _rollback(self, cur: Any) -> None:
        try:
            cur.execute("ROLLBACK")
        except self._errors():
            self._drop()  # the session ends and Snowflake rolls its open transaction back

    async def _changes_after(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        return await self._run("reading changes", self._changes_on, cursor, limit)

    def _changes_on(self, cur: Any, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        n, cols = self.columns.names, self._columns()
        select = ", ".join(f"{_us_sql(_q(n[c]))} AS {_q(n[c])}" if c in _TIMES else _q(n[c]) for c in cols)
        u, ns, i = _q(n["updated_at"]), _q(n["namespace"]), _q(n["id"])
        sql = f"SELECT {select} FROM {self._qual(self.table)}"
        params: list[Any] = []
        if cursor is not None:
            us, cns, cid = cursor.key()
            at = "TO_TIMESTAMP_NTZ(?, 6)"
            sql += f" WHERE {u} > {at} OR ({u} = {at} AND ({ns} > ? OR ({ns} = ? AND {i} > ?)))"
            params = [us, us, cns, cns, cid]
        sql += f" ORDER BY {u}, {ns}, {i} LIMIT {int(limit)}"
        cur.execute(sql, params)
        out = []
        for values in cur.fetchall():
            row = dict(zip(cols, values))
            for c in _TIMES:
                row[c] = _from_us(row[c])
            if isinstance(row.get("embedding"), str):
                try:
                    row["embedding"] = json.loads(row["embedding"])
                except ValueError:
                    pass  # left as text: the row check rejects it, naming embedding
            out.append(row)
        return out

    async def _get_state(self, key: str) -> str | None:
        def read(cur: Any) -> Any:
            cur.execute(f'SELECT "VALUE" FROM {self._qual("SYNC_STATE")} WHERE "KEY" = ?', [key])
            return cur.fetchone()

        found = await self._run("reading the sync state", read)
        return found[0] if found else None

    async def _set_state(self, key: str, value: str) -> None:
        await self._upsert([], {key: value})

    async def _reject(self, rejected: list[RejectedRow]) -> None:
        def write(cur: Any) -> None:
            staging = _q("SYNC_INCOMING_REJECTED")
            types = {c: "BIGINT" if c == "rejected_at" else "VARCHAR" for c in _REJECTED}
            rows = [[r.source, r.namespace, r.id, r.reason, r.raw, _micros(r.rejected_at)] for r in rejected]
            self._stage(cur, staging, types, rows)
            names = ", ".join(map(_q, _REJECTED))
            source = ", ".join(f"TO_TIMESTAMP_NTZ({_q(c)}, 6)" if c == "rejected_at" else _q(c) for c in _REJECTED)
            cur.execute(f"INSERT INTO {self._qual('SYNC_REJECTED')} ({names}) SELECT {source} FROM {staging}")

        await self._run("writing rejected rows", write)

    async def _rejected(self, limit: int) -> list[RejectedRow]:
        def read(cur: Any) -> list[Any]:
            cur.execute(
                f'SELECT "SOURCE", "NAMESPACE", "ID", "REASON", "RAW", {_us_sql(_q("rejected_at"))} AS "AT" '
                f'FROM {self._qual("SYNC_REJECTED")} ORDER BY "REJECTED_AT" DESC LIMIT {int(limit)}'
            )
            return cur.fetchall()

        found = await self._run("reading rejected rows", read)
        return [RejectedRow(s, ns, i, reason, raw, _from_us(at)) for s, ns, i, reason, raw, at in found]

    async def _stats(self) -> WarehouseStats:
        n = self.columns.names
        d, u = _q(n["deleted_at"]), _q(n["updated_at"])

        def read(cur: Any) -> WarehouseStats:
            cur.execute(
                f'SELECT COUNT(*) AS "ALL_ROWS", COUNT({d}) AS "DEAD", {_us_sql(f"MAX({u})")} AS "NEWEST" '
                f"FROM {self._qual(self.table)}"
            )
            total, dead, newest = cur.fetchone()
            cur.execute(f'SELECT COUNT(*) AS "N" FROM {self._qual("SYNC_REJECTED")}')
            rejected = cur.fetchone()[0]
            return WarehouseStats(int(total) - int(dead), int(dead), int(rejected), _from_us(newest))

        return await self._run("reading stats", read)

    async def execute(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement (``?`` placeholders) and return its rows (for analysis and tests).

        Raises:
            SyncTargetUnavailableError: the statement failed or Snowflake did not answer.
        """

        def run(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(sql, params or None)
            return [tuple(r) for r in cur.fetchall()]

        return await self._run("a statement", run)
