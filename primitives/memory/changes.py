"""What changed in a store, in the order the store received it: the records written and the
deletes (tombstones) since a position. This is what exporting memories to a warehouse reads
(:meth:`MemoryBackend.changes`).

Each change has a **position** ``(logged_at, namespace, id)``: ``logged_at`` is when the store
received the write or delete (the Redis server's clock, or the in-process store's), not the
record's ``updated_at``. So a write that arrives late with an old ``updated_at`` (an outbox
replayed after an outage, a writer whose clock runs behind, an import) still comes after every
position an exporter has already passed: nothing is missed. :meth:`MemoryBackend.changes` returns
what is strictly after a position, in position order. A record written again moves to its new
position (if it was read at its old one just before, it is listed again: last writer wins makes
that harmless); a record that expires leaves the order (an expiry is not a delete: nothing
downstream is told); a delete leaves a :class:`Tombstone`, kept ``tombstone_ttl`` seconds after it
arrived (default :data:`TOMBSTONE_TTL`), which also stops a write not newer than the delete
(``put_if_newer``) from bringing the record back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple, Union

from primitives.memory.record import MemoryRecord
from primitives.sync.rows import from_micros, micros
from primitives.validation import INPUT, check_aware_datetime, check_identifier

__all__ = ["TOMBSTONE_TTL", "Change", "ChangeEntry", "Position", "Tombstone", "check_position", "position_key", "select_changes"]

#: How long a delete is remembered, in seconds (30 days): an exporter that falls further behind
#: than this misses deletes (``sync status`` warns).
TOMBSTONE_TTL: Final = 30 * 86_400



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
#: A position in change order: ``(logged_at, namespace, id)``.
Position = tuple[datetime, str, str]


class ChangeEntry(NamedTuple):
    """One change and its position (``position[0]`` is when the store received it)."""

    position: Position
    change: Change




def position_key(position: Position) -> tuple[int, str, str]:
    """A position as a sort key: ``(logged_at in µs, namespace, id)``."""
    return (micros(position[0]), position[1], position[2])


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


def select_changes(
    entries: Iterable[tuple[int, str, str, Change]], after: tuple[int, str, str] | None, limit: int
) -> list[ChangeEntry]:
    """The first ``limit`` of ``(logged µs, namespace, id, change)`` strictly after ``after``,
    in position order."""
    chosen = [e for e in entries if after is None or e[:3] > after]
    chosen.sort(key=_entry_key)
    return [ChangeEntry((from_micros(us), ns, id), change) for us, ns, id, change in chosen[:limit]]


def _entry_key(entry: tuple[int, str, str, Change]) -> tuple[int, str, str]:
    return entry[0], entry[1], entry[2]
