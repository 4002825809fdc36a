"""``RecordStore``: records by key, least recently used evicted first, each expiring at its own time.

What cachetools' ``TLRUCache`` does for the in-process backend, in less memory and time a record:
one ``OrderedDict`` (key -> record, least recently used first: C-level ``move_to_end`` and
``popitem``) and one heap of ``(expires, key)`` tuples, where ``TLRUCache`` keeps a data dict, an
``OrderedDict`` of per-item objects, the items' heap and a size dict, and runs a Python-level
timer context manager, ``expire()`` and the ``ttu`` callback on every write (measured in
docs/in-memory-backend.md: about 200 bytes and 5 µs a record less).

The heap is not updated when a record is rewritten or removed: an entry whose key now holds a
record that expires later (or no record) is skipped when it comes up, and the heap is rebuilt
from the live records when a write makes it hold more than twice as many entries as there are
records (cachetools' own rule) and more than 1,024, so stale entries cost amortised O(1) time and
at most one entry per record in memory.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

from primitives.memory.record import MemoryRecord

__all__ = ["RecordStore"]

#: A heap smaller than this is never rebuilt for its stale entries.
_MIN_REBUILD = 1024


class RecordStore:
    """At most ``maxsize`` records by key; a record expires when the clock reaches its
    ``expires_at(record, now)`` (seconds, ``math.inf`` for never; computed on write).

    Every record that leaves on its own (evicted for room, or expired) is reported through
    ``on_drop(key, record)`` exactly once; ``pop`` and a write that expires on arrival are not
    reported (the caller knows). Reads never expire anything: call :meth:`expire` first (the
    backend does, at the start of every public call), so a read has no hidden side effect.

    Args:
        maxsize: Most records kept, ``>= 1``.
        expires_at: ``(record, now) -> seconds since the epoch`` at which it expires;
            deterministic for a given record (it is computed again to skip stale heap entries).
        clock: Seconds since the epoch.
        on_drop: Called with ``(key, record)`` for each record evicted or expired.
    """

    __slots__ = ("maxsize", "_data", "_heap", "_expires_at", "_clock", "_on_drop")

    def __init__(
        self,
        maxsize: int,
        expires_at: Callable[[MemoryRecord, float], float],
        clock: Callable[[], float],
        on_drop: Callable[[Hashable, MemoryRecord], None],
    ) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, MemoryRecord] = OrderedDict()
        self._heap: list[tuple[float, Hashable]] = []
        self._expires_at = expires_at
        self._clock = clock
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[Hashable]:
        """Keys, least recently used first (a snapshot)."""
        return iter(list(self._data))

    def values(self) -> list[MemoryRecord]:
        """Records, least recently used first (a snapshot)."""
        return list(self._data.values())

    def get(self, key: Hashable) -> MemoryRecord | None:
        """The record at ``key`` (now the most recently used), or ``None``."""
        record = self._data.get(key)
        if record is not None:
            self._data.move_to_end(key)
        return record

    def peek(self, key: Hashable) -> MemoryRecord | None:
        """The record at ``key`` without changing the LRU order, or ``None``."""
        return self._data.get(key)

    def pop(self, key: Hashable) -> MemoryRecord | None:
        """Remove and return the record at ``key`` (``None`` when absent); not reported."""
        return self._data.pop(key, None)

    def set(self, key: Hashable, record: MemoryRecord, now: float) -> bool:
        """Store ``record`` at ``key`` as the most recently used, evicting the least recently
        used records (reported) while the store is full. A record whose expiry is not after
        ``now`` is not stored, and removes (unreported) what ``key`` held: returns ``False``."""
        data = self._data
        expires = self._expires_at(record, now)
        if not now < expires:
            data.pop(key, None)
            return False
        if key in data:
            data[key] = record
            data.move_to_end(key)
        else:
            while len(data) >= self.maxsize:
                old_key, old = data.popitem(last=False)
                self._on_drop(old_key, old)
            data[key] = record
        if expires != math.inf:
            heap = self._heap
            heapq.heappush(heap, (expires, key))
            if len(heap) > _MIN_REBUILD and len(heap) > 2 * len(data):
                self._rebuild(now)
        return True

    def expire(self, now: float | None = None) -> None:
        """Drop (and report) every record whose expiry is not after ``now`` (the clock's time
        by default). O(1) when nothing has expired."""
        heap = self._heap
        if not heap:
            return
        if now is None:
            now = self._clock()
        if now < heap[0][0]:
            return
        data = self._data
        expires_at = self._expires_at
        pop = heapq.heappop
        while heap and not now < heap[0][0]:
            expires, key = pop(heap)
            record = data.get(key)
            # a stale entry: the key was rewritten since (its record expires later) or removed
            if record is not None and not now < expires_at(record, expires):
                del data[key]
                self._on_drop(key, record)

    def _rebuild(self, now: float) -> None:
        expires_at = self._expires_at
        heap = [(expires_at(r, now), k) for k, r in self._data.items()]
        self._heap = [entry for entry in heap if entry[0] != math.inf]
        heapq.heapify(self._heap)

    def clear(self) -> None:
        """Forget every record (not reported)."""
        self._data.clear()
        self._heap.clear()
