"""Delta Lake, the lake sync target: one Delta table on a filesystem or object store, written with
``deltalake`` (delta-rs, https://delta-io.github.io/delta-rs/), readable by any Delta reader
(Spark, Databricks, Snowflake, DuckDB ``delta_scan``, Polars ...). Extra ``sync-delta``.

Layout under ``path``:

- the table itself: the canonical columns of :mod:`primitives.sync.rows` (names configurable),
  no partitions, plain protocol (reader 1, writer 2: no deletion vectors or column mapping);
  strings for ``topics``/``metadata`` (JSON text, exactly as written), ``array<float>`` for
  ``embedding`` (float32: exact), ``double`` for ``ttl`` (``inf`` kept), ``timestamp``
  (microseconds, UTC) for the times;
- ``_sync_rejected/``: a second Delta table the rejected rows are appended to. Delta readers and
  ``VACUUM`` ignore directories starting with ``_``, so it never mixes with the data.

**Rows.** A batch is one MERGE (delta-rs ``DeltaTable.merge``): ``ON t.namespace = s.namespace
AND t.id = s.id``, ``WHEN MATCHED AND <incoming wins> UPDATE *``, ``WHEN NOT MATCHED INSERT *``,
where *incoming wins* is ``s.updated_at > t.updated_at OR (s.updated_at = t.updated_at AND
s.version > t.version)``; rows written = the merge's ``num_target_rows_updated +
num_target_rows_inserted``.

**State, atomic with the rows.** A Delta table has no multi-table transactions, so the sync state
(key -> text, e.g. the export cursor) does not live in a table: every commit this target makes
carries the *whole* state as JSON in the commit's custom metadata (``commitInfo`` field
``primitives.sync.state``, via ``CommitProperties(custom_metadata=...)``). The merge that writes
a batch carries the new cursor, so rows and cursor land in one atomic commit, or neither does.
Reading the state takes the newest commit in the table history that carries the field (commits
of other engines, OPTIMIZE or VACUUM are skipped). Commits are made with
``max_commit_retries=0``: a commit lands exactly on the version its state was read from, or fails
with a conflict, then this target re-reads the table and the state and runs the merge again (last
writer wins makes a rerun safe), at most :data:`COMMIT_ATTEMPTS` times. When a batch writes no
row, delta-rs makes no commit; a changed state then goes into an empty append commit.

Limitation: Delta removes commit files older than ``delta.logRetentionDuration`` (30 days) once a
newer checkpoint exists. If this target made no commit for that long and another engine
checkpointed meanwhile, the state is gone and :meth:`get_state` returns ``None``: the export
restarts from the beginning, which last-writer-wins makes harmless (only slower).

**Upkeep.** Every batch adds at least one small Parquet file (and a merge rewrites the files
holding updated rows); a lost commit race leaves unreferenced files. Run
``DeltaTable(path).optimize.compact()`` now and then to merge small files and
``DeltaTable(path).vacuum(...)`` to delete unreferenced ones; both are out of this target's scope.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from primitives.errors import SyncSchemaError, SyncTargetUnavailableError
from primitives.sync.duckdb_target import arrow_table
from primitives.sync.rows import COLUMNS, Cursor, RejectedRow, SyncRow
from primitives.sync.rows import from_micros as _from_us
from primitives.sync.rows import micros as _micros
from primitives.sync.warehouse import Warehouse, WarehouseStats

__all__ = ["COMMIT_ATTEMPTS", "DeltaWarehouse"]

#: How many times a batch is merged when other writers' commits conflict with it.
COMMIT_ATTEMPTS: Final = 12
#: The ``commitInfo`` field carrying the sync state (JSON object, key -> text).
STATE_FIELD: Final = "primitives.sync.state"
_REJECTED_DIR = "_sync_rejected"
_TIMES = ("created_at", "updated_at", "deleted_at")
_UTC = timezone.utc
_HISTORY_STEPS = (8, 64, 512, None)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'




class DeltaWarehouse(Warehouse):
    """A Delta Lake table as a sync target (see the module docstring for the layout and the
    state design).

    Args:
        path: The table's directory (created with its parents) or an object-store URI
            (``s3://bucket/memories``, ``abfss://...``, ``gs://...``; untested here).
        columns: Canonical column -> this table's column names (:class:`ColumnMap`).
        vectors: Store ``embedding`` as ``array<float>`` (``False``: the column is left out;
            imports re-embed).
        storage_options: Passed to delta-rs for object stores (credentials, region ...).

    Raises:
        SyncTargetUnavailableError: from :meth:`open`, the table cannot be read (a file in the
            way, a damaged ``_delta_log`` file: the message names the file and the fix), or from
            :meth:`upsert`, other writers won :data:`COMMIT_ATTEMPTS` commit races in a row.
        SyncSchemaError: from :meth:`open`, the table exists without a needed column or with a
            column of another type.
    """

    name = "delta"

    def __init__(
        self,
        path: str | Path,
        *,
        columns: Mapping[str, str] | None = None,
        vectors: bool = True,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.path = str(path).rstrip("/") or "/"
        self.local = "://" not in self.path or self.path.startswith("file://")
        super().__init__(url=f"delta:///{self.path}" if self.local else f"delta+{self.path}", columns=columns)
        self.holds_vectors = vectors
        self.storage_options = dict(storage_options or {})
        self.rejected_path = f"{self.path}/{_REJECTED_DIR}"
        self._dt: Any = None
        self._state: tuple[int, dict[str, str]] | None = None  # (table version, state there)
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------------

    def _columns(self) -> list[str]:
        return [c for c in COLUMNS if c != "embedding" or self.holds_vectors]

    def _schema(self) -> Any:
        return arrow_table([], self.columns.names, vectors=self.holds_vectors).schema

    def _opts(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Any, *args: Any) -> Any:
        from deltalake.exceptions import DeltaError

        with self._thread_lock:
            try:
                return fn(*args)
            except SyncTargetUnavailableError:
                raise
            except (DeltaError, OSError) as exc:
                raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> SyncTargetUnavailableError:
        damaged = self._damaged_log()
        if damaged is not None:
            return SyncTargetUnavailableError(
                f"the Delta table {self.path} has a damaged log file {damaged} ({_first_line(exc)}). Fix: restore "
                "_delta_log from a backup (or the object store's versioning); if it is the newest commit, moving "
                "that one file aside drops only that commit, and the next sync run re-sends its rows "
                "(last writer wins makes that harmless). Do not edit the other log files",
                target=self.url,
            )
        return SyncTargetUnavailableError(f"Delta table {self.path}: {_first_line(exc)}", target=self.url)

    def _damaged_log(self) -> str | None:
        """The first ``_delta_log/*.json`` commit file that is empty or not JSON lines (local
        tables only; delta-rs reads an empty commit file as an empty commit)."""
        if not self.local:
            return None
        log = Path(self.path.removeprefix("file://")) / "_delta_log"
        try:
            files = sorted(p for p in log.glob("*.json") if p.stem.isdigit())
        except OSError:
            return None
        for f in files:
            try:
                data = f.read_bytes()
                if not data.strip():
                    return str(f)
                for line in data.splitlines():
                    if line.strip():
                        json.loads(line)
            except (OSError, ValueError):
                return str(f)
        return None

    def _table(self) -> Any:
        """The table at its newest version (other writers' commits included)."""
        if self._dt is None:
            raise SyncTargetUnavailableError(f"the Delta target {self.path} is not open (call open())", target=self.url)
        self._dt.update_incremental()
        return self._dt

    # -- open / close ----------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._dt is None:
            await self._run(self._open_sync)

    def _open_sync(self) -> None:
        from deltalake import DeltaTable

        if self.local:
            where = Path(self.path.removeprefix("file://"))
            if where.exists() and not where.is_dir():
                raise SyncTargetUnavailableError(
                    f"cannot open the Delta table {self.path}: it is a file, not a directory. Fix: move it aside "
                    "or choose another path", target=self.url,
                )
            where.mkdir(parents=True, exist_ok=True)
            damaged = self._damaged_log()
            if damaged is not None:
                raise self._unavailable(ValueError("empty or not JSON"))
        if not DeltaTable.is_deltatable(self.path, self._opts()):
            DeltaTable.create(self.path, self._schema(), mode="ignore", storage_options=self._opts())
        dt = DeltaTable(self.path, storage_options=self._opts())
        self._check_schema(dt)
        self._dt = dt

    def _check_schema(self, dt: Any) -> None:
        import pyarrow as pa

        have = {f.name: f.type for f in pa.schema(dt.schema().to_arrow())}
        for c, want in zip(self._columns(), self._schema()):
            name = self.columns[c]
            if name not in have:
                raise SyncSchemaError(
                    f"Delta table {self.path} has no column {name} (canonical {c})", table=self.path, column=name,
                    fix=f"ALTER TABLE ... ADD COLUMNS ({name} {_delta_type(want.type)}), or map {c} to an "
                    f"existing column with columns={{{c!r}: ...}}",
                )
            if not _same_type(have[name], want.type):
                raise SyncSchemaError(
                    f"column {name} of the Delta table {self.path} is {have[name]}, sync needs {_delta_type(want.type)}",
                    table=self.path, column=name, fix=f"rewrite the table with {name} as {_delta_type(want.type)}",
                )

    async def _aclose(self) -> None:
        self._dt = None
        self._state = None

    # -- state -----------------------------------------------------------------------------------

    def _state_of(self, dt: Any) -> dict[str, str]:
        """The state carried by the newest commit (at or before ``dt``'s version) that has one."""
        version = dt.version()
        if self._state is not None and self._state[0] == version:
            return dict(self._state[1])
        found: dict[str, str] = {}
        for limit in _HISTORY_STEPS:
            history = dt.history(limit)
            hit = next((h[STATE_FIELD] for h in history if STATE_FIELD in h), None)
            if hit is not None:
                found = _parse_state(hit)
                break
            if limit is None or len(history) < limit:
                break
        self._state = (version, found)
        return dict(found)

    async def _get_state(self, key: str) -> str | None:
        return await self._run(lambda: self._state_of(self._table()).get(key))

    async def _set_state(self, key: str, value: str) -> None:
        await self._upsert([], {key: value})

    # -- upsert ----------------------------------------------------------------------------------

    async def _upsert(self, rows: list[SyncRow], state: dict[str, str]) -> int:
        incoming = arrow_table(rows, self.columns.names, vectors=self.holds_vectors) if rows else None
        return await self._run(self._upsert_sync, incoming, state)

    def _upsert_sync(self, incoming: Any, changes: dict[str, str]) -> int:
        from deltalake.exceptions import CommitFailedError

        for attempt in range(COMMIT_ATTEMPTS):
            try:
                return self._commit_once(incoming, changes)
            except CommitFailedError:
                # another writer committed first: nothing of ours landed; re-read and merge again
                self._state = None
                time.sleep(min(1.0, 0.02 * 2**attempt) * random.uniform(0.5, 1.5))
        raise SyncTargetUnavailableError(
            f"the Delta table {self.path}: other writers won {COMMIT_ATTEMPTS} commit races in a row; nothing of "
            "this batch was committed and the state is unchanged. Fix: run the sync again, and avoid running "
            "many writers on one table at once", target=self.url,
        )

    def _commit_once(self, incoming: Any, changes: dict[str, str]) -> int:
        from deltalake import CommitProperties, write_deltalake

        dt = self._table()
        read_version = dt.version()
        state = self._state_of(dt)
        state.update(changes)
        props = CommitProperties(custom_metadata={STATE_FIELD: _dump_state(state)}, max_commit_retries=0)
        written = 0
        if incoming is not None:
            n = {c: _q(self.columns[c]) for c in ("namespace", "id", "updated_at", "version")}
            wins = (
                f"s.{n['updated_at']} > t.{n['updated_at']} OR "
                f"(s.{n['updated_at']} = t.{n['updated_at']} AND s.{n['version']} > t.{n['version']})"
            )
            metrics = (
                dt.merge(
                    source=incoming,
                    predicate=f"t.{n['namespace']} = s.{n['namespace']} AND t.{n['id']} = s.{n['id']}",
                    source_alias="s", target_alias="t", commit_properties=props,
                )
                .when_matched_update_all(predicate=wins)
                .when_not_matched_insert_all()
                .execute()
            )
            written = int(metrics["num_target_rows_updated"]) + int(metrics["num_target_rows_inserted"])
        if dt.version() == read_version and changes:
            # no row won, so delta-rs made no commit: the changed state goes in an empty one
            write_deltalake(dt, self._schema().empty_table(), mode="append", commit_properties=props)
            dt.update_incremental()
        if dt.version() != read_version:
            self._state = (dt.version(), state)
        return written

    # -- reads -----------------------------------------------------------------------------------

    async def _changes_after(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        return await self._run(self._changes_sync, cursor, limit)

    def _changes_sync(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        n, cols = self.columns.names, self._columns()
        u = ds.field(n["updated_at"])
        order = [(n["updated_at"], "ascending"), (n["namespace"], "ascending"), (n["id"], "ascending")]
        dataset = self._table().to_pyarrow_dataset()
        # The scan filters on updated_at only (pruned by the Parquet statistics); the exact keyset
        # test runs on the read rows: delta-rs writes strings as string_view, which pyarrow cannot
        # compare with a string inside a dataset scan.
        scan = u >= _ts(cursor.key()[0]) if cursor is not None else None
        after = self._after(cursor.key()) if cursor is not None else None
        # pass 1: the keys only, to find where this page ends without reading every vector
        keys = dataset.to_table(columns=[n["updated_at"], n["namespace"], n["id"]], filter=scan)
        if after is not None:
            keys = keys.filter(after)
        if keys.num_rows > limit:
            last = keys.sort_by(order).slice(limit - 1, 1).to_pylist()[0]
            end = (_micros(last[n["updated_at"]]), last[n["namespace"]], last[n["id"]])
            scan = u <= _ts(end[0]) if scan is None else scan & (u <= _ts(end[0]))
            after = ~self._after(end) if after is None else after & ~self._after(end)
        table = dataset.to_table(columns=[n[c] for c in cols], filter=scan)
        if after is not None:
            table = table.filter(after)
        table = table.sort_by(order).slice(0, limit)
        times = {c: pc.cast(table[n[c]], "int64").to_pylist() for c in _TIMES}
        values = {c: table[n[c]].to_pylist() for c in cols if c not in _TIMES}
        out = []
        for k in range(table.num_rows):
            row = {c: values[c][k] for c in cols if c not in _TIMES}
            for c in _TIMES:
                us = times[c][k]
                row[c] = None if us is None else _from_us(us)
            out.append({c: row[c] for c in cols})
        return out

    def _after(self, key: tuple[int, str, str]) -> Any:
        """Rows strictly after ``key`` = (updated_at µs, namespace, id); strings compare as UTF-8
        bytes (Arrow), which is code point order."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        n = self.columns.names
        us, ns, id = key
        u, f_ns, f_id = ds.field(n["updated_at"]), ds.field(n["namespace"]), ds.field(n["id"])
        ns, id = pa.scalar(ns, pa.string()), pa.scalar(id, pa.string())
        return (u > _ts(us)) | ((u == _ts(us)) & ((f_ns > ns) | ((f_ns == ns) & (f_id > id))))

    async def _stats(self) -> WarehouseStats:
        return await self._run(self._stats_sync)

    def _stats_sync(self) -> WarehouseStats:
        import pyarrow.compute as pc

        n = self.columns.names
        table = self._table().to_pyarrow_dataset().to_table(columns=[n["deleted_at"], n["updated_at"]])
        dead = table.num_rows - table[n["deleted_at"]].null_count
        newest = pc.max(pc.cast(table[n["updated_at"]], "int64")).as_py() if table.num_rows else None
        rejected = self._rejected_table()
        return WarehouseStats(
            table.num_rows - dead, dead, rejected.num_rows if rejected is not None else 0,
            _from_us(newest) if newest is not None else None,
        )

    # -- rejected rows ---------------------------------------------------------------------------

    async def _reject(self, rejected: list[RejectedRow]) -> None:
        import pyarrow as pa

        ts = pa.timestamp("us", tz="UTC")
        table = pa.table({
            "source": pa.array([r.source for r in rejected], pa.string()),
            "namespace": pa.array([r.namespace for r in rejected], pa.string()),
            "id": pa.array([r.id for r in rejected], pa.string()),
            "reason": pa.array([r.reason for r in rejected], pa.string()),
            "raw": pa.array([r.raw for r in rejected], pa.string()),
            "rejected_at": pa.array([r.rejected_at for r in rejected], ts),
        })

        def write() -> None:
            from deltalake import write_deltalake

            self._table()  # refuses when not open
            # a blind append: delta-rs rebases it over concurrent appends by itself
            write_deltalake(self.rejected_path, table, mode="append", storage_options=self._opts())

        await self._run(write)

    async def _rejected(self, limit: int) -> list[RejectedRow]:
        def read() -> list[RejectedRow]:
            import pyarrow.compute as pc

            self._table()
            table = self._rejected_table()
            if table is None or not table.num_rows:
                return []
            table = table.sort_by([("rejected_at", "descending")]).slice(0, limit)
            at = pc.cast(table["rejected_at"], "int64").to_pylist()
            return [
                RejectedRow(r["source"], r["namespace"], r["id"], r["reason"], r["raw"], _from_us(us))
                for r, us in zip(table.to_pylist(), at)
            ]

        return await self._run(read)

    def _rejected_table(self) -> Any:
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(self.rejected_path, self._opts()):
            return None
        return DeltaTable(self.rejected_path, storage_options=self._opts()).to_pyarrow_dataset().to_table()


def _ts(us: int) -> Any:
    import pyarrow as pa

    return pa.scalar(us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))




def _dump_state(state: dict[str, str]) -> str:
    return json.dumps(state, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def _parse_state(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _same_type(have: Any, want: Any) -> bool:
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_string(want):
        return t.is_string(have) or t.is_large_string(have) or t.is_string_view(have)
    if t.is_list(want):
        return (t.is_list(have) or t.is_large_list(have)) and have.value_type == pa.float32()
    if t.is_timestamp(want):
        return t.is_timestamp(have) and have.tz is not None
    return bool(have == want)


def _delta_type(arrow_type: Any) -> str:
    import pyarrow.types as t

    if t.is_list(arrow_type):
        return "ARRAY<FLOAT>"
    if t.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if t.is_floating(arrow_type):
        return "DOUBLE"
    return "STRING"


def _first_line(exc: BaseException) -> str:
    """delta-rs errors carry a Rust backtrace after the first lines; keep the message."""
    text = str(exc).split("\n   0:")[0].strip()
    return text.splitlines()[0] if text else type(exc).__name__
