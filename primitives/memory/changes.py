"""What changed in a store, in order: the records written and the deletes (tombstones) since a
position. This is what exporting memories to a warehouse reads (:meth:`MemoryBackend.changes`).

Order is keyset order ``(updated_at, namespace, id)`` where a tombstone's ``updated_at`` is its
``deleted_at``; a position is such a triple, and :meth:`MemoryBackend.changes` returns what is
strictly after it. A record that is written again moves to its new place in the order; a record
that expires leaves it (an expiry is not a delete: nothing downstream is told); a delete leaves a
:class:`Tombstone`, kept ``tombstone_ttl`` seconds after the delete (default :data:`TOMBSTONE_TTL`), which also
stops a write older than the delete (``put_if_newer``) from bringing the record back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final, Union

from primitives.memory.record import MemoryRecord
from primitives.validation import INPUT, check_aware_datetime, check_identifier

__all__ = ["TOMBSTONE_TTL", "Change", "Position", "Tombstone", "change_key", "check_position", "select_changes"]

#: How long a delete is remembered, in seconds (30 days): an exporter that falls further behind
#: than this misses deletes (``sync status`` warns).
TOMBSTONE_TTL: Final = 30 * 86_400

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Record ``(namespace, id)`` was deleted at ``deleted_at`` (UTC)."""

    namespace: str
    id: str
    deleted_at: datetime

    @property
    def updated_at(self) -> datetime:
        return self.deleted_at


#: A change: a record as it is now, or a delete.
Change = Union[MemoryRecord, Tombstone]
#: A position in change order: ``(updated_at, namespace, id)``.
Position = tuple[datetime, str, str]


def micros(at: datetime) -> int:
    """Microseconds since the epoch (exact, unlike ``timestamp()``)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def change_key(change: Change) -> tuple[int, str, str]:
    """The sort key of a change: ``(updated_at in µs, namespace, id)``."""
    return (micros(change.updated_at), change.namespace, change.id)  # type: ignore[arg-type]


def check_position(after: object) -> tuple[int, str, str] | None:
    """``after`` as a sort key, or ``None`` for the beginning.

    Raises:
        InvalidInputError: not ``None`` or a ``(datetime, namespace, id)`` triple (the namespace
            and id may be ``""``: before every id of that time).
    """
    if after is None:
        return None
    if not isinstance(after, tuple) or len(after) != 3:
        raise INPUT[1](f"after must be None or a (updated_at, namespace, id) tuple, got {type(after).__name__}")
    at, namespace, id = after
    at = check_aware_datetime(at, "after[0]")
    for value, name in ((namespace, "after[1]"), (id, "after[2]")):
        if not isinstance(value, str):
            raise INPUT[1](f"{name} must be a str, got {type(value).__name__}")
        if value:
            check_text_like(value, name)
    return (micros(at), namespace, id)


def check_text_like(value: str, name: str) -> None:
    # a position's namespace may be longer than an identifier (a cursor past every namespace)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        check_identifier(value, name)


def select_changes(changes: Iterable[Change], after: tuple[int, str, str] | None, limit: int) -> list[Change]:
    """The first ``limit`` of ``changes`` strictly after ``after``, in change order."""
    chosen = [c for c in changes if after is None or change_key(c) > after]
    chosen.sort(key=change_key)
    return chosen[:limit]
