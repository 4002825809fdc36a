"""Export and import between a memory store and a :class:`~primitives.sync.warehouse.Warehouse`.

**Export** reads the store's changes after the export cursor (records as they are now and
tombstones, in ``(updated_at, namespace, id)`` order; O(changes)), writes them to the target
last-writer-wins, and saves the cursor *in the same commit* as the batch (state key
``export:<store identity>``). A crash anywhere resumes from the last committed batch; a batch sent
twice changes nothing (LWW with equal versions). Effect: exactly once per version on targets with
transactions (DuckDB, PostgreSQL), at least once and idempotent elsewhere.

**Import** reads the target's rows after the import cursor (state key ``import:<store identity>``,
saved after the store applied them), checks each (:func:`~primitives.sync.rows.row_from_mapping`),
puts the bad ones in the rejected-rows table with the reason, and applies the rest with the store's
``put_if_newer`` / ``delete_if_older``: a row older than the stored version or than a delete is
not written, a record whose ttl has run out is not brought back. Rows whose ``origin`` is this
store came from it: they are skipped (no ping-pong between two syncs) unless ``include_own``
(restoring into an emptied store).

This module knows nothing of :mod:`primitives.memory`: a :class:`ChangeSource` adapts a store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from primitives.errors import InvalidInputError
from primitives.sync.rows import Cursor, RejectedRow, SyncRow, row_from_mapping
from primitives.sync.warehouse import Warehouse
from primitives.validation import check_int

__all__ = [
    "ApplyCounts",
    "ChangeSource",
    "ExportReport",
    "ImportReport",
    "export_changes",
    "import_changes",
    "sync_status",
]

DEFAULT_BATCH = 5_000
MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class ApplyCounts:
    """What a store did with imported rows: ``written`` records, ``deleted`` records, and
    ``skipped`` rows (older than the stored version or a delete, or expired)."""

    written: int = 0
    deleted: int = 0
    skipped: int = 0


class ChangeSource(Protocol):
    """A memory store as sync sees it (implemented by the memory layer).

    Attributes:
        identity: Names the store (server, database, prefix), the same however it is reached.
        dims: Vector length the store takes, or ``None``.
    """

    identity: str
    dims: int | None

    async def changes_after(self, cursor: Cursor | None, limit: int) -> tuple[list[SyncRow], Cursor | None]:
        """Rows of the changes strictly after ``cursor`` in the store's order (records and
        tombstones), and the cursor after the last of them (``None`` when there are none). The
        order is the one the store received the changes in, so a late write with an old
        ``updated_at`` is still after every cursor already passed."""
        ...

    async def apply(self, rows: Sequence[SyncRow]) -> ApplyCounts:
        """Write rows last-writer-wins (records by put_if_newer, tombstones by delete_if_older)."""
        ...


@dataclass
class ExportReport:
    """``read`` changes (``tombstones`` of them deletes), ``written`` rows that won on the target,
    ``batches`` committed, the ``cursor`` reached (JSON text or ``None``), ``seconds``."""

    read: int = 0
    tombstones: int = 0
    written: int = 0
    batches: int = 0
    cursor: str | None = None
    seconds: float = 0.0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportReport:
    """``read`` rows, ``written``/``deleted``/``skipped`` by the store, ``own`` rows skipped as
    this store's, ``rejected`` rows (with reasons in the target's rejected-rows table)."""

    read: int = 0
    written: int = 0
    deleted: int = 0
    skipped: int = 0
    own: int = 0
    rejected: int = 0
    batches: int = 0
    cursor: str | None = None
    seconds: float = 0.0
    dry_run: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batch(batch_size: int) -> int:
    size = check_int(batch_size, "batch_size")
    if size > MAX_BATCH:
        raise InvalidInputError(f"batch_size must be 1..{MAX_BATCH}, got {size}")
    return size


def export_key(identity: str) -> str:
    return f"export:{identity}"


def import_key(identity: str) -> str:
    return f"import:{identity}"


async def export_changes(
    source: ChangeSource,
    target: Warehouse,
    *,
    batch_size: int = DEFAULT_BATCH,
    since: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Export the store's changes after the saved cursor (or from ``since``) to ``target``.

    Args:
        batch_size: Rows per committed batch, ``1..10,000``.
        since: Start at this time instead of the saved cursor (re-exporting is harmless).
        dry_run: Read and count, write nothing, leave the cursor.
        progress: Called with the number of rows of each batch done.

    Raises:
        InvalidInputError: ``batch_size`` out of range.
        SyncTargetUnavailableError, BackendUnavailableError: the target or the store failed;
            every batch committed before stays, the cursor is where the last one left it.
    """
    size = _batch(batch_size)
    started = time.perf_counter()
    key = export_key(source.identity)
    cursor = await _start(target, key, since)
    report = ExportReport(dry_run=dry_run, cursor=cursor.to_text() if cursor else None)
    identity = source.identity
    ahead: asyncio.Future[tuple[list[SyncRow], Cursor | None]] | None = None
    try:
        rows, position = await source.changes_after(cursor, size)
        while rows:
            rows = [r if r.origin == identity else r.with_origin(identity) for r in rows]
            cursor = position
            # read the next page from the store while the target writes this one (its driver
            # works in a thread); the cursor below is committed only with this page
            ahead = asyncio.ensure_future(source.changes_after(cursor, size)) if len(rows) == size else None
            report.read += len(rows)
            report.tombstones += sum(r.is_tombstone for r in rows)
            if not dry_run:
                report.written += await target.upsert(rows, state={key: cursor.to_text(), f"{key}:last_run": _last_run(len(rows))})
                report.cursor = cursor.to_text()
            report.batches += 1
            if progress is not None:
                progress(len(rows))
            if ahead is None:
                break
            (rows, position), ahead = await ahead, None
    finally:
        if ahead is not None:
            ahead.cancel()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


async def _start(target: Warehouse, key: str, since: datetime | None) -> Cursor | None:
    """Where a run starts: just before ``since``, else the cursor saved under ``key``."""
    if since is not None:
        return Cursor.after_time(since)
    saved = await target.get_state(key)
    return Cursor.from_text(saved) if saved else None


def _last_run(rows: int) -> str:
    return json.dumps({"at": datetime.now(timezone.utc).isoformat(), "rows": rows})


async def import_changes(
    target: Warehouse,
    source: ChangeSource,
    *,
    batch_size: int = DEFAULT_BATCH,
    since: datetime | None = None,
    dry_run: bool = False,
    include_own: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import the target's rows after the saved import cursor (or from ``since``) into the store.

    Args:
        include_own: Also apply rows this store exported (to restore an emptied store).
        (others as :func:`export_changes`)

    Raises:
        InvalidInputError: ``batch_size`` out of range.
        SyncTargetUnavailableError, BackendUnavailableError: the target or the store failed;
            the cursor stays after the last batch the store applied.
    """
    size = _batch(batch_size)
    started = time.perf_counter()
    key = import_key(source.identity)
    cursor = await _start(target, key, since)
    report = ImportReport(dry_run=dry_run, cursor=cursor.to_text() if cursor else None)
    ahead: asyncio.Future[list[dict[str, Any]]] | None = None
    try:
        raw = await target.changes_after(cursor, size)
        while raw:
            good, rejected, last = _check_page(raw, source, include_own, report)
            more = len(raw) == size and last is not None
            # read the next page (in the target's worker thread) while the store writes this one
            ahead = asyncio.ensure_future(target.changes_after(last, size)) if more else None
            if not dry_run:
                if good:
                    counts = await source.apply(good)
                    report.written += counts.written
                    report.deleted += counts.deleted
                    report.skipped += counts.skipped
                if rejected:
                    await target.reject(rejected)
                if last is not None:
                    await target.set_state(key, last.to_text())
                    report.cursor = last.to_text()
            report.batches += 1
            if progress is not None:
                progress(len(raw))
            if ahead is None:
                break
            raw, ahead = await ahead, None
    finally:
        if ahead is not None:
            ahead.cancel()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _check_page(
    raw: list[dict[str, Any]], source: ChangeSource, include_own: bool, report: ImportReport
) -> tuple[list[SyncRow], list[RejectedRow], Cursor | None]:
    """Rows to apply, rows to reject and the cursor after the page (counted in ``report``)."""
    good: list[SyncRow] = []
    rejected: list[RejectedRow] = []
    last: Cursor | None = None
    for values in raw:
        try:
            row = row_from_mapping(values, dims=source.dims)
        except InvalidInputError as exc:
            rejected.append(_rejected(values, str(exc)))
            last = _place(values) or last
            continue
        last = row.cursor()
        if row.origin == source.identity and not include_own:
            report.own += 1
            continue
        good.append(row)
    report.read += len(raw)
    report.rejected += len(rejected)
    report.reasons += [r.reason for r in rejected][: max(0, 20 - len(report.reasons))]
    return good, rejected, last


def _place(values: dict[str, Any]) -> Cursor | None:
    """Where a rejected row sits in keyset order, when that much of it is readable."""
    try:
        at = values.get("updated_at")
        if isinstance(at, datetime) and isinstance(values.get("namespace"), str) and isinstance(values.get("id"), str):
            return Cursor(at if at.tzinfo else at.replace(tzinfo=timezone.utc), values["namespace"], values["id"])
    except (TypeError, ValueError):
        pass
    return None


def _rejected(values: dict[str, Any], reason: str) -> RejectedRow:
    def plain(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v).hex()
        return v

    raw = json.dumps({k: plain(v) for k, v in values.items()}, default=repr, ensure_ascii=False)
    ns, id = values.get("namespace"), values.get("id")
    return RejectedRow(
        source="import",
        namespace=ns if isinstance(ns, str) else None,
        id=id if isinstance(id, str) else None,
        reason=reason,
        raw=raw,
        rejected_at=datetime.now(timezone.utc),
    )


async def sync_status(source: ChangeSource, target: Warehouse, *, count_limit: int = 100_000) -> dict[str, Any]:
    """Each direction's cursor, lag and last run, and the target's counts.

    Returns:
        ``{"target", "source", "export": {"cursor", "last_run", "lag_records", "lag_seconds"},
        "import": {"cursor", "lag_records"}, "target_rows", "target_tombstones", "rejected"}``;
        lag records are counted up to ``count_limit`` (``"lag_records_capped": True`` beyond).
    """
    out: dict[str, Any] = {"target": target.url, "source": source.identity}
    stats = await target.stats()
    for direction, key in (("export", export_key(source.identity)), ("import", import_key(source.identity))):
        saved = await target.get_state(key)
        cursor = Cursor.from_text(saved) if saved else None
        entry: dict[str, Any] = {"cursor": _show(cursor)}
        if direction == "export":
            last = await target.get_state(f"{key}:last_run")
            entry["last_run"] = json.loads(last) if last else None
            pending = await _count(lambda c, n: _source_page(source, c, n), cursor, count_limit)
            entry["lag_records"], entry["lag_records_capped"], newest = pending
        else:
            pending = await _count(lambda c, n: _target_page(target, c, n), cursor, count_limit)
            entry["lag_records"], entry["lag_records_capped"], newest = pending
        entry["lag_seconds"] = (
            round((newest - cursor.updated_at).total_seconds(), 3) if newest and cursor else
            (round((datetime.now(timezone.utc) - newest).total_seconds(), 3) if newest and not cursor else 0.0)
        )
        out[direction] = entry
    out.update(target_rows=stats.rows, target_tombstones=stats.tombstones, rejected=stats.rejected)
    return out


async def _source_page(source: ChangeSource, cursor: Cursor | None, n: int) -> tuple[int, Cursor | None]:
    rows, last = await source.changes_after(cursor, n)
    return len(rows), last


async def _target_page(target: Warehouse, cursor: Cursor | None, n: int) -> tuple[int, Cursor | None]:
    raw = await target.changes_after(cursor, n)
    places = [p for p in map(_place, raw) if p is not None]
    return len(raw), (places[-1] if places else None)


async def _count(read: Any, cursor: Cursor | None, cap: int) -> tuple[int, bool, datetime | None]:
    """Items after ``cursor`` up to ``cap`` (``read(cursor, n) -> (count, last cursor)``), whether
    the cap was reached, and the last item's time."""
    total, newest = 0, None
    while total < cap:
        wanted = min(MAX_BATCH, cap - total)
        count, last = await read(cursor, wanted)
        total += count
        if last is not None:
            cursor, newest = last, last.updated_at
        if count < wanted or last is None:
            break
    return total, total >= cap, newest


def _show(cursor: Cursor | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    return {"updated_at": cursor.updated_at.isoformat(), "namespace": cursor.namespace, "id": cursor.id}
