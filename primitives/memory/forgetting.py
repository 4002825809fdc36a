"""Forgetting by policy (:meth:`Memory.forget`): by age, by inactivity, and a per-user budget.

A record is forgotten when any rule of the :class:`ForgetPolicy` selects it:

- ``max_age_s``: ``created_at`` older than this;
- ``max_inactive_s``: neither written (``updated_at``) nor marked accessed
  (``metadata["last_accessed_at"]``) for this long;
- ``max_per_user``: a user keeps this many records, ranked by importance
  (``metadata["importance"]``, 0.5 when absent) and then recency (``updated_at``), highest first
  (the "importance and recency" retention of Generative Agents' memory stream, Park et al. 2023).

Bookkeeping records (session chains, subject indexes, extraction marks) are never selected. The
scan pages through the store's change list (:meth:`MemoryBackend.changes`), so it needs a backend
that lists its records (in process, Redis); the Agent Memory Server raises ``NotImplementedError``.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from primitives.errors import InvalidInputError
from primitives.memory.changes import Tombstone
from primitives.memory.kinds import is_bookkeeping, parse_time
from primitives.memory.record import MemoryRecord, MemoryType
from primitives.validation import check_int, check_number

if TYPE_CHECKING:
    from primitives.memory.facade import Memory

__all__ = ["ForgetPolicy", "ForgetReport", "forget"]

#: Records deleted per call while applying a policy.
DELETE_BATCH = 500


@dataclass(frozen=True, slots=True)
class ForgetPolicy:
    """Which records to forget (see the module docstring); at least one rule must be set.

    Attributes:
        max_age_s: Seconds since ``created_at`` (``> 0``), or ``None``.
        max_inactive_s: Seconds since the last write or access (``> 0``), or ``None``.
        max_per_user: Records each user keeps (``>= 0``), or ``None``.
        memory_types: Only these types (default: every type).

    Raises:
        InvalidInputError: no rule, or a value out of range.
    """

    max_age_s: float | None = None
    max_inactive_s: float | None = None
    max_per_user: int | None = None
    memory_types: tuple[MemoryType, ...] = tuple(MemoryType)

    def __post_init__(self) -> None:
        if self.max_age_s is None and self.max_inactive_s is None and self.max_per_user is None:
            raise InvalidInputError("a ForgetPolicy needs max_age_s, max_inactive_s or max_per_user")
        for name in ("max_age_s", "max_inactive_s"):
            value = getattr(self, name)
            if value is not None:
                check_number(value, name, minimum=0.0, exclusive_minimum=True)
        if self.max_per_user is not None:
            check_int(self.max_per_user, "max_per_user", minimum=0)
        object.__setattr__(self, "memory_types", tuple(MemoryType(t) for t in self.memory_types))


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What :meth:`Memory.forget` found (and, unless ``dry_run``, deleted).

    Attributes:
        dry_run: ``True``: nothing was deleted.
        scanned: Records examined.
        selected: ``(id, user_id, reason)`` of each record the policy selects, reason one of
            ``"max_age"``, ``"inactive"``, ``"over_budget"``.
        deleted: Records deleted (0 on a dry run).
    """

    dry_run: bool
    scanned: int
    selected: tuple[tuple[str, str | None, str], ...] = field(default_factory=tuple)
    deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "scanned": self.scanned, "deleted": self.deleted,
                "selected": [{"id": i, "user_id": u, "reason": r} for i, u, r in self.selected]}


def _importance(record: MemoryRecord) -> float:
    value = record.metadata.get("importance") if record.metadata else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.5


def _last_active(record: MemoryRecord) -> datetime | None:
    touched = parse_time(record.metadata.get("last_accessed_at")) if record.metadata else None
    written = record.updated_at
    if touched is None or written is None:
        return touched or written
    return max(touched, written)


async def forget(memory: Memory, policy: ForgetPolicy, *, namespace: str, user_id: str | None,
                 dry_run: bool, now: datetime | None = None, page: int = 1000) -> ForgetReport:
    """Apply ``policy`` to ``namespace`` (one user's records when ``user_id`` is given)."""
    now = now or datetime.now(timezone.utc)
    selected: dict[str, tuple[str | None, str]] = {}
    budget: dict[str | None, list[tuple[float, float, str]]] = defaultdict(list)
    scanned = 0
    after = None
    while True:
        entries = await memory.backend.changes(after, limit=page)
        for position, change in entries:
            if isinstance(change, Tombstone) or change.namespace != namespace:
                continue
            if (user_id is not None and change.user_id != user_id) or change.memory_type not in policy.memory_types:
                continue
            if change.metadata and is_bookkeeping(change.metadata):
                continue
            scanned += 1
            if policy.max_age_s is not None and change.created_at is not None and (now - change.created_at).total_seconds() > policy.max_age_s:
                selected[change.id] = (change.user_id, "max_age")
                continue
            active = _last_active(change)
            if policy.max_inactive_s is not None and active is not None and (now - active).total_seconds() > policy.max_inactive_s:
                selected[change.id] = (change.user_id, "inactive")
                continue
            if policy.max_per_user is not None:
                stamp = change.updated_at.timestamp() if change.updated_at else 0.0
                budget[change.user_id].append((_importance(change), stamp, change.id))
        if len(entries) < page:
            break
        after = entries[-1].position
    if policy.max_per_user is not None:
        for owner, ranked in budget.items():
            keep = {i for _, _, i in heapq.nlargest(policy.max_per_user, ranked)}
            for _, _, rid in ranked:
                if rid not in keep:
                    selected[rid] = (owner, "over_budget")
    rows = tuple((rid, owner, reason) for rid, (owner, reason) in selected.items())
    deleted = 0
    if not dry_run:
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), DELETE_BATCH):
            deleted += await memory.delete(ids[start:start + DELETE_BATCH], namespace=namespace)
    return ForgetReport(dry_run, scanned, rows, deleted)
