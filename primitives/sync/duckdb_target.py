"""DuckDB, the embedded default sync target: one local file, no server (extra ``sync``).

Tables (names configurable): ``memories`` (the canonical columns of :mod:`primitives.sync.rows`,
primary key ``(namespace, id)``), ``sync_state`` (key, value, updated_at) and ``sync_rejected``.
Types: VARCHAR for strings and for ``topics``/``metadata`` (JSON text, exactly as written),
``FLOAT[]`` for ``embedding`` (float32: exact), DOUBLE ``ttl`` (``inf`` kept), TIMESTAMPTZ
(microseconds) for the times.

A batch is one transaction: the rows arrive as an Arrow table and are merged by one
``INSERT ... ON CONFLICT (namespace, id) DO UPDATE ... WHERE <incoming wins>`` (DuckDB's upsert,
https://duckdb.org/docs/sql/statements/insert#on-conflict-clause), and the export cursor is
written in the same transaction. Why plain DuckDB and not dlt: see docs/sync.md ("Choosing the
loader").
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from primitives.errors import SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.rows import COLUMNS, Cursor, RejectedRow, SyncRow
from primitives.sync.rows import from_micros as _from_us
from primitives.sync.warehouse import Warehouse, WarehouseStats

__all__ = ["DuckDBWarehouse"]

_TYPES = {
    "namespace": "VARCHAR", "id": "VARCHAR", "user_id": "VARCHAR", "session_id": "VARCHAR",
    "memory_type": "VARCHAR", "text": "VARCHAR", "topics": "VARCHAR", "metadata": "VARCHAR",
    "embedding": "FLOAT[]", "ttl": "DOUBLE", "created_at": "TIMESTAMP WITH TIME ZONE",
    "updated_at": "TIMESTAMP WITH TIME ZONE", "deleted_at": "TIMESTAMP WITH TIME ZONE",
    "version": "VARCHAR", "origin": "VARCHAR",
}
_TIMES = ("created_at", "updated_at", "deleted_at")
_UTC = timezone.utc


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _vector_column(rows: list[SyncRow]) -> Any:
    """``list<float32>`` column built from one flat float32 buffer (nested Python lists cost ~10x)."""
    import array

    import pyarrow as pa

    flat = array.array("f")
    offsets = array.array("i", [0])
    missing = []
    for r in rows:
        if r.embedding is not None:
            flat.extend(r.embedding)
        missing.append(r.embedding is None)
        offsets.append(len(flat))
    values = pa.Array.from_buffers(pa.float32(), len(flat), [None, pa.py_buffer(flat)])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=pa.array(missing, pa.bool_()))


def arrow_table(rows: list[SyncRow], names: Mapping[str, str], *, vectors: bool = True) -> Any:
    """Rows as a ``pyarrow.Table`` with the target's column names (shared by Arrow-fed targets)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    cols: dict[str, Any] = {
        "namespace": pa.array([r.namespace for r in rows], pa.string()),
        "id": pa.array([r.id for r in rows], pa.string()),
        "user_id": pa.array([r.user_id for r in rows], pa.string()),
        "session_id": pa.array([r.session_id for r in rows], pa.string()),
        "memory_type": pa.array([r.memory_type for r in rows], pa.string()),
        "text": pa.array([r.text for r in rows], pa.string()),
        "topics": pa.array([_dumps(list(r.topics)) for r in rows], pa.string()),
        "metadata": pa.array([_dumps(dict(r.metadata)) for r in rows], pa.string()),
        "embedding": _vector_column(rows) if vectors else None,
        "ttl": pa.array([r.ttl for r in rows], pa.float64()),
        "created_at": pa.array([r.created_at for r in rows], ts),
        "updated_at": pa.array([r.updated_at for r in rows], ts),
        "deleted_at": pa.array([r.deleted_at for r in rows], ts),
        "version": pa.array([r.version for r in rows], pa.string()),
        "origin": pa.array([r.origin for r in rows], pa.string()),
    }
    if not vectors:
        del cols["embedding"]
    return pa.table({names[c]: v for c, v in cols.items()})


class DuckDBWarehouse(Warehouse):
    """A DuckDB database file as a sync target.

    Args:
        path: The database file (created with its parent directories), or ``":memory:"``.
        table: The memories table's name.
        columns: Canonical column -> this table's column names (:class:`ColumnMap`).
        vectors: Store ``embedding`` (``False``: the column is left out; imports re-embed).

    Raises:
        SyncTargetUnavailableError: the file cannot be opened (locked by another process,
            not a DuckDB file, a directory ...), from :meth:`open`.
        SyncSchemaError: the table exists without a needed column, from :meth:`open`.
    """

    name = "duckdb"

    def __init__(
        self,
        path: str | Path,
        *,
        table: str = "memories",
        columns: Mapping[str, str] | None = None,
        vectors: bool = True,
    ) -> None:
        super().__init__(url=f"duckdb:///{path}", columns=columns)
        self.path = str(path)
        self.table = table
        self.holds_vectors = vectors
        self._con: Any = None
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------------

    def _columns(self) -> list[str]:
        return [c for c in COLUMNS if c != "embedding" or self.holds_vectors]

    async def _run(self, fn: Any, *args: Any) -> Any:
        import duckdb

        async with self._lock:
            try:
                return await asyncio.to_thread(self._locked, fn, *args)
            except duckdb.Error as exc:
                if isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)):
                    raise SyncTargetUnavailableError(f"DuckDB {self.path}: {exc}", target=self.url) from exc
                raise

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self._thread_lock:
            return fn(*args)

    # -- hooks -----------------------------------------------------------------------------------

    async def _open(self) -> None:
        import duckdb

        if self._con is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = await asyncio.to_thread(duckdb.connect, self.path)
        except duckdb.Error as exc:
            raise SyncTargetUnavailableError(
                f"cannot open the DuckDB file {self.path}: {exc}. Fix: if another process holds it, stop "
                "that process (DuckDB allows one writer); if it is damaged, move it aside and export again", target=self.url,
            ) from exc
        await self._run(self._create)

    def _create(self) -> None:
        con, n = self._con, self.columns.names
        cols = ", ".join(f"{_q(n[c])} {_TYPES[c]}" for c in self._columns())
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(self.table)} ({cols}, PRIMARY KEY ({_q(n['namespace'])}, {_q(n['id'])}))"
        )
        con.execute("CREATE TABLE IF NOT EXISTS sync_state (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL, updated_at TIMESTAMP WITH TIME ZONE)")
        con.execute(
            "CREATE TABLE IF NOT EXISTS sync_rejected (source VARCHAR, namespace VARCHAR, id VARCHAR, "
            "reason VARCHAR, raw VARCHAR, rejected_at TIMESTAMP WITH TIME ZONE)"
        )
        have = {
            name: dtype.upper()
            for name, dtype in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [self.table]
            ).fetchall()
        }
        for c in self._columns():
            name = n[c]
            if name not in have:
                raise SyncSchemaError(
                    f"table {self.table} in {self.path} has no column {name} (canonical {c})",
                    table=self.table, column=name,
                    fix=f"ALTER TABLE {self.table} ADD COLUMN {name} {_TYPES[c]}, or map {c} to an existing column with columns={{{c!r}: ...}}",
                )
            want = _TYPES[c].split("(")[0]
            if not have[name].startswith(want.split()[0]):
                raise SyncSchemaError(
                    f"column {name} of {self.table} is {have[name]}, sync needs {_TYPES[c]}",
                    table=self.table, column=name, fix=f"ALTER TABLE {self.table} ALTER {name} TYPE {_TYPES[c]}",
                )

    async def _aclose(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            await asyncio.to_thread(con.close)

    def _require(self) -> Any:
        if self._con is None:
            raise SyncTargetUnavailableError(f"the DuckDB target {self.path} is not open (call open())", target=self.url)
        return self._con

    async def _upsert(self, rows: list[SyncRow], state: dict[str, str]) -> int:
        self._require()
        return await self._run(self._upsert_sync, rows, state)

    def _upsert_sync(self, rows: list[SyncRow], state: dict[str, str]) -> int:
        con, n, t = self._con, self.columns.names, _q(self.table)
        cols = self._columns()
        con.execute("BEGIN TRANSACTION")
        try:
            written = 0
            if rows:
                incoming = arrow_table(rows, n, vectors=self.holds_vectors)
                con.register("sync_incoming", incoming)
                try:
                    wins = (
                        f"s.{_q(n['updated_at'])} > {t}.{_q(n['updated_at'])} OR (s.{_q(n['updated_at'])} = {t}.{_q(n['updated_at'])} "
                        f"AND s.{_q(n['version'])} > {t}.{_q(n['version'])})"
                    )
                    names = ", ".join(_q(n[c]) for c in cols)
                    updates = ", ".join(f"{_q(n[c])} = excluded.{_q(n[c])}" for c in cols if c not in ("namespace", "id"))
                    where = wins.replace("s.", "excluded.")
                    # RETURNING lists the rows inserted or updated (not those the WHERE kept out)
                    written = len(con.execute(
                        f"INSERT INTO {t} ({names}) SELECT {names} FROM sync_incoming "
                        f"ON CONFLICT ({_q(n['namespace'])}, {_q(n['id'])}) DO UPDATE SET {updates} WHERE {where} "
                        f"RETURNING 1"
                    ).fetchall())
                finally:
                    con.unregister("sync_incoming")
            now = datetime.now(_UTC)
            for key, value in state.items():
                con.execute(
                    "INSERT INTO sync_state VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    [key, value, now],
                )
            con.execute("COMMIT")
            return written
        except BaseException:
            con.execute("ROLLBACK")
            raise

    async def _changes_after(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        self._require()
        return await self._run(self._changes_sync, cursor, limit)

    def _changes_sync(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        n, cols = self.columns.names, self._columns()
        select = ", ".join(
            f"epoch_us({_q(n[c])})" if c in _TIMES else _q(n[c]) for c in cols
        )
        u, ns, i = _q(n["updated_at"]), _q(n["namespace"]), _q(n["id"])
        sql = f"SELECT {select} FROM {_q(self.table)}"
        params: list[Any] = []
        if cursor is not None:
            us, cns, cid = cursor.key()
            sql += f" WHERE epoch_us({u}) > ? OR (epoch_us({u}) = ? AND ({ns} > ? OR ({ns} = ? AND {i} > ?)))"
            params = [us, us, cns, cns, cid]
        sql += f" ORDER BY epoch_us({u}), {ns}, {i} LIMIT {int(limit)}"
        out = []
        for values in self._con.execute(sql, params).fetchall():
            row = dict(zip(cols, values))
            for c in _TIMES:
                if row[c] is not None:
                    row[c] = _from_us(row[c])
            out.append(row)
        return out

    async def _get_state(self, key: str) -> str | None:
        self._require()
        found = await self._run(lambda: self._con.execute("SELECT value FROM sync_state WHERE key = ?", [key]).fetchone())
        return found[0] if found else None

    async def _set_state(self, key: str, value: str) -> None:
        await self._upsert([], {key: value})

    async def _reject(self, rejected: list[RejectedRow]) -> None:
        self._require()

        def write() -> None:
            self._con.executemany(
                "INSERT INTO sync_rejected VALUES (?, ?, ?, ?, ?, ?)",
                [[r.source, r.namespace, r.id, r.reason, r.raw, r.rejected_at] for r in rejected],
            )

        await self._run(write)

    async def _rejected(self, limit: int) -> list[RejectedRow]:
        self._require()
        found = await self._run(
            lambda: self._con.execute(
                "SELECT source, namespace, id, reason, raw, epoch_us(rejected_at) FROM sync_rejected "
                f"ORDER BY rejected_at DESC LIMIT {int(limit)}"
            ).fetchall()
        )
        return [RejectedRow(s, ns, i, reason, raw, _from_us(at)) for s, ns, i, reason, raw, at in found]

    async def _stats(self) -> WarehouseStats:
        self._require()
        n, t = self.columns.names, _q(self.table)

        def read() -> WarehouseStats:
            live, dead, newest = self._con.execute(
                f"SELECT count(*) FILTER (WHERE {_q(n['deleted_at'])} IS NULL), count(*) FILTER (WHERE {_q(n['deleted_at'])} IS NOT NULL), "
                f"epoch_us(max({_q(n['updated_at'])})) FROM {t}"
            ).fetchone()
            rejected = self._con.execute("SELECT count(*) FROM sync_rejected").fetchone()[0]
            return WarehouseStats(live, dead, rejected, _from_us(newest) if newest is not None else None)

        return await self._run(read)

    async def execute(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the target and return its rows (for analysis and tests)."""
        self._require()
        return await self._run(lambda: self._con.execute(sql, params or []).fetchall())
