"""Memories and a data cloud: a store as a sync source and sink, and :class:`SyncPrimitive`.

:class:`StoreSource` adapts a :class:`~primitives.memory.backend.MemoryBackend` to
:class:`primitives.sync.engine.ChangeSource`: its :meth:`~MemoryBackend.changes` become
canonical rows (:class:`~primitives.sync.rows.SyncRow`), and imported rows are written with
``put_if_newer`` (records) and ``delete_if_older`` (tombstones), so the store's own last-writer-
wins rules decide. A record whose ttl has run out is not brought back (``put_if_newer`` drops it);
a row without a vector is embedded on write when the store has an embedder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from primitives.core.context import WorkflowContext
from primitives.core.instrumented import InstrumentedPrimitive
from primitives.memory.backend import MemoryBackend
from primitives.memory.changes import Change, Tombstone
from primitives.memory.record import MemoryRecord, MemoryType
from primitives.sync.engine import ApplyCounts, export_changes, import_changes
from primitives.sync.rows import Cursor, SyncRow
from primitives.sync.warehouse import Warehouse
from primitives.validation import INPUT

__all__ = ["StoreSource", "SyncPrimitive", "record_from_row", "row_from_change"]

DIRECTIONS = ("export", "import", "both")


def row_from_change(change: Change, origin: str | None = None) -> SyncRow:
    """A record or tombstone as a canonical row (``version`` from its content), from store
    ``origin``."""
    if isinstance(change, Tombstone):
        return SyncRow(
            namespace=change.namespace, id=change.id, text="", created_at=change.deleted_at,
            updated_at=change.deleted_at, deleted_at=change.deleted_at, origin=origin,
        )
    return SyncRow(
        namespace=change.namespace,
        id=change.id,
        text=change.text,
        user_id=change.user_id,
        session_id=change.session_id,
        memory_type=change.memory_type.value,
        topics=change.topics,
        metadata=dict(change.metadata),
        embedding=change.embedding,
        ttl=change.ttl,
        created_at=change.created_at,  # type: ignore[arg-type]
        updated_at=change.updated_at,  # type: ignore[arg-type]
        origin=origin,
    )


def record_from_row(row: SyncRow) -> MemoryRecord:
    """The record a live row describes (timestamps kept, for ``put_if_newer``).

    Raises:
        InvalidRecordError: the row holds a value a record does not accept.
    """
    return MemoryRecord(
        text=row.text,
        id=row.id,
        user_id=row.user_id,
        session_id=row.session_id,
        namespace=row.namespace,
        memory_type=MemoryType(row.memory_type),
        topics=row.topics,
        metadata=row.metadata,
        embedding=row.embedding,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ttl=row.ttl,
    )


class StoreSource:
    """A memory store as seen by :mod:`primitives.sync.engine`.

    Args:
        backend: A backend that :attr:`~MemoryBackend.supports_changes` (in process, Redis, or
            either behind the resilient wrapper).

    Raises:
        NotImplementedError: the backend cannot list its changes (the Agent Memory Server).
    """

    def __init__(self, backend: MemoryBackend) -> None:
        if not backend.supports_changes:
            raise NotImplementedError(f"{backend.name} cannot list its changes; sync the in-memory or Redis backend")
        self.backend = backend
        self.identity = backend.identity
        embedder = getattr(backend, "embedder", None)
        self.dims: int | None = embedder.dims if embedder is not None else None

    async def changes_after(self, cursor: Cursor | None, limit: int) -> tuple[list[SyncRow], Cursor | None]:
        """Rows of the changes after ``cursor`` (a store position: when the store received the
        change, namespace, id) and the position of the last one."""
        after = (cursor.updated_at, cursor.namespace, cursor.id) if cursor is not None else None
        identity = self.identity
        entries = await self.backend.changes(after, limit=limit)
        rows = [row_from_change(e.change, identity) for e in entries]
        return rows, (Cursor(*entries[-1].position) if entries else None)

    async def apply(self, rows: Sequence[SyncRow]) -> ApplyCounts:
        records: dict[str, list[MemoryRecord]] = defaultdict(list)
        deletes: dict[str, dict[str, datetime]] = defaultdict(dict)
        for row in rows:
            if row.is_tombstone:
                deletes[row.namespace][row.id] = row.deleted_at  # type: ignore[assignment]
            else:
                records[row.namespace].append(record_from_row(row))
        written = deleted = 0
        for batch in records.values():
            written += await self.backend.put_if_newer(batch)
        for namespace, deletions in deletes.items():
            deleted += await self.backend.delete_if_older(deletions, namespace=namespace)
        skipped = len(rows) - written - deleted
        return ApplyCounts(written=written, deleted=deleted, skipped=skipped)


class SyncPrimitive(InstrumentedPrimitive[Any, Any]):
    """A pipeline step that syncs a memory store with a warehouse, then passes its input on
    with ``{"sync": {"export": ExportReport dict, "import": ImportReport dict}}`` added (a
    mapping input is copied and extended; any other input is wrapped as ``{"input": ...}``).

    Args:
        memory: A :class:`~primitives.memory.facade.Memory` or a backend.
        target: An opened :class:`~primitives.sync.warehouse.Warehouse`.
        direction: ``"export"`` (default), ``"import"`` or ``"both"`` (export first).
        batch_size: Rows per batch, ``1..10,000``.

    Raises:
        InvalidInputError: ``direction`` is not one of those.
    """

    name = "sync"

    def __init__(self, memory: Any, target: Warehouse, *, direction: str = "export", batch_size: int = 5_000,
                 **instrumentation: Any) -> None:
        super().__init__(**instrumentation)
        if direction not in DIRECTIONS:
            raise INPUT[0](f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if not isinstance(target, Warehouse):
            raise INPUT[1](f"target must be a Warehouse, got {type(target).__name__}")
        backend = getattr(memory, "backend", memory)
        self.source = StoreSource(backend)
        self.target = target
        self.direction = direction
        self.batch_size = batch_size

    async def _execute_impl(self, input: Any, context: WorkflowContext) -> Any:
        report: dict[str, Any] = {}
        if self.direction in ("export", "both"):
            report["export"] = (await export_changes(self.source, self.target, batch_size=self.batch_size)).to_dict()
        if self.direction in ("import", "both"):
            report["import"] = (await import_changes(self.target, self.source, batch_size=self.batch_size)).to_dict()
        out = dict(input) if isinstance(input, dict) else {"input": input}
        out["sync"] = report
        return out
