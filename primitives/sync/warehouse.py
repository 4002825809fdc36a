"""The seam between sync and a data cloud: :class:`Warehouse`.

A target (a DuckDB file, PostgreSQL, a Delta Lake table, Salesforce Data Cloud, ...) implements a
few protected hooks; the public methods here check arguments once, so every target refuses the
same input the same way. What every target guarantees:

- **Last writer wins against the stored row.** :meth:`Warehouse.upsert` replaces the stored row of
  a ``(namespace, id)`` only when the incoming row wins (:meth:`SyncRow.wins_over`: later
  ``updated_at``, or equal and larger ``version``); an older row never overwrites a newer one, and
  re-sending a batch changes nothing.
- **State commits with the data.** The ``state`` given to :meth:`Warehouse.upsert` (an export
  cursor) is saved in the same transaction as the rows (or, where the target has no
  transactions, after them: re-sending is harmless), so a crash anywhere resumes without loss.
- **Keyset reads.** :meth:`Warehouse.changes_after` returns raw rows strictly after a cursor in
  ``(updated_at, namespace, id)`` order, canonical column names, values as the target holds them
  (the caller checks them with :func:`~primitives.sync.rows.row_from_mapping` and rejects the
  bad ones with :meth:`Warehouse.reject`).

Blocking drivers run in a worker thread (``asyncio.to_thread``); a target is used by one task at
a time.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from primitives.sync.rows import ColumnMap, Cursor, RejectedRow, SyncRow
from primitives.validation import INPUT, check_identifier, check_items, check_limit

__all__ = ["Warehouse", "WarehouseStats"]


@dataclass(frozen=True, slots=True)
class WarehouseStats:
    """What a target holds: ``rows`` (live records), ``tombstones``, ``rejected`` (rows in the
    rejected-rows table) and ``max_updated_at`` (the newest row's ``updated_at``, or ``None``)."""

    rows: int
    tombstones: int
    rejected: int
    max_updated_at: datetime | None


class Warehouse(ABC):
    """A sync target. Subclasses implement the ``_hooks``; use it as an async context manager or
    call :meth:`open` and :meth:`aclose`.

    Attributes:
        name: The target's kind (``"duckdb"``, ``"postgresql"``, ``"delta"``, ``"datacloud"``).
        url: Where it is, with any password removed.
        holds_vectors: Whether ``embedding`` is stored (when not, imports re-embed).
        columns: Canonical column name -> the target's name.
    """

    name: str = "warehouse"
    holds_vectors: bool = True

    def __init__(self, *, url: str, columns: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.columns = ColumnMap(columns)

    async def __aenter__(self) -> Warehouse:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public API: checks once, then the hooks ------------------------------------------------

    async def open(self) -> None:
        """Connect, create the tables when missing, check them when present.

        Raises:
            SyncTargetUnavailableError: the target does not answer.
            SyncSchemaError: an existing table lacks a column or has an unusable type.
        """
        await self._open()

    async def aclose(self) -> None:
        """Release connections (idempotent)."""
        await self._aclose()

    async def upsert(self, rows: Sequence[SyncRow], *, state: Mapping[str, str] | None = None) -> int:
        """Write ``rows`` last-writer-wins and save ``state`` with them.

        Args:
            rows: Canonical rows, any order; two rows of one key in a batch: the winner counts.
            state: Sync state (key -> text) committed with the rows, e.g. an export cursor.

        Returns:
            How many rows were written (won against the stored version or were new).

        Raises:
            InvalidInputError: ``rows`` is not a list of :class:`SyncRow` or a state key is
                not an identifier; nothing is written.
            SyncTargetUnavailableError: the target failed; nothing of the batch is committed
                (on targets with transactions) and the state is unchanged.
        """
        items = check_items(rows, "rows", errors=INPUT)
        for row in items:
            if not isinstance(row, SyncRow):
                raise INPUT[1](f"rows must hold SyncRow, got {type(row).__name__}")
        checked = {check_identifier(k, "state key"): _state_value(v) for k, v in (state or {}).items()}
        if not items and not checked:
            return 0
        return await self._upsert(_winners(items), checked)

    async def changes_after(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` raw rows strictly after ``cursor`` (all rows when ``None``), in keyset
        order, keyed by canonical column names.

        Raises:
            InvalidInputError: ``limit`` is not in ``1..10,000`` or ``cursor`` not a Cursor.
            SyncTargetUnavailableError: the target failed.
        """
        if cursor is not None and not isinstance(cursor, Cursor):
            raise INPUT[1](f"cursor must be a Cursor or None, got {type(cursor).__name__}")
        return await self._changes_after(cursor, check_limit(limit))

    async def get_state(self, key: str) -> str | None:
        """The sync state saved under ``key``, or ``None``."""
        return await self._get_state(check_identifier(key, "state key"))

    async def set_state(self, key: str, value: str) -> None:
        """Save one state value (outside a batch: e.g. an import cursor after the store wrote)."""
        await self._set_state(check_identifier(key, "state key"), _state_value(value))

    async def reject(self, rejected: Sequence[RejectedRow]) -> None:
        """Append rows that could not be used to the rejected-rows table."""
        items = check_items(rejected, "rejected", errors=INPUT)
        if items:
            await self._reject(list(items))

    async def rejected(self, limit: int = 100) -> list[RejectedRow]:
        """The newest ``limit`` rejected rows, newest first."""
        return await self._rejected(check_limit(limit))

    async def stats(self) -> WarehouseStats:
        """Counts and the newest ``updated_at`` (for ``sync status``)."""
        return await self._stats()

    # -- hooks -----------------------------------------------------------------------------------

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _aclose(self) -> None: ...

    @abstractmethod
    async def _upsert(self, rows: list[SyncRow], state: dict[str, str]) -> int: ...

    @abstractmethod
    async def _changes_after(self, cursor: Cursor | None, limit: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def _get_state(self, key: str) -> str | None: ...

    @abstractmethod
    async def _set_state(self, key: str, value: str) -> None: ...

    @abstractmethod
    async def _reject(self, rejected: list[RejectedRow]) -> None: ...

    @abstractmethod
    async def _rejected(self, limit: int) -> list[RejectedRow]: ...

    @abstractmethod
    async def _stats(self) -> WarehouseStats: ...

    @staticmethod
    async def _in_thread(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


def _state_value(value: object) -> str:
    if not isinstance(value, str):
        raise INPUT[1](f"state values must be str, got {type(value).__name__}")
    return value


def _winners(rows: Sequence[SyncRow]) -> list[SyncRow]:
    """One row per key: the last-writer-wins winner of the batch, in keyset order."""
    best: dict[tuple[str, str], SyncRow] = {}
    for row in rows:
        key = (row.namespace, row.id)
        current = best.get(key)
        if current is None or row.wins_over(current):
            best[key] = row
    return sorted(best.values(), key=SyncRow.sort_key)
