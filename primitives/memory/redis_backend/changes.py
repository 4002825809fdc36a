"""Reading a Redis store's changes in order, for export: O(changes), never a scan of the store.

Every write also scores the record's key in the change log ``{prefix}changelog`` (a sorted set,
score the server's time of the write in µs, set by the write script itself, so the order is the
order Redis received the writes, whatever their ``updated_at``), and every delete in
``{prefix}tombstones`` (same scoring; the delete's own time is kept in the hash
``{prefix}deleted_at``). Reading changes after a position is a ``ZRANGE ... BYSCORE`` of each
(O(log n + k)) and the records' fields in one script call (``HMGET`` of each key); entries
sharing a µs are ordered by ``(namespace, id)``. A record whose hash is gone (expired, deleted) is
passed over and pruned from the log (an expiry is no delete: nothing downstream is told); a
damaged record is skipped and reported, as searches do.
"""

from __future__ import annotations

from typing import Any

from primitives.errors import CorruptRecordError
from primitives.memory.backend import report_corrupt
from primitives.memory.changes import Change, ChangeEntry, Tombstone, from_micros
from primitives.memory.redis_backend.codec import RETURN_FIELDS, decode_record
from primitives.memory.redis_backend.scripts import HMGET_MANY, PRUNE_CHANGE, TRIM_TOMBSTONES
from primitives.memory.redis_backend.keys import split_record_key
from primitives.memory.redis_backend.schema import IndexSpec

__all__ = ["read_changes", "trim_tombstones"]

#: The hash fields a record is decoded from (``HMGET``: the indexed copies are not read).
_FIELDS = [*RETURN_FIELDS, "vector"]
_NAMES = [f.encode() for f in _FIELDS]



def trim_tombstones(pipe: Any, tombstones: str, deleted_at: str, ttl: float) -> None:
    """Queue the removal of deletes that arrived more than ``ttl`` seconds ago (on ``pipe``; one
    reply: how many, at most 1,000 a call)."""
    from time import time

    cutoff = "-inf" if ttl == float("inf") else str(int((time() - ttl) * 1_000_000))
    pipe.eval(TRIM_TOMBSTONES, 2, tombstones, deleted_at, cutoff)


async def read_changes(
    client: Any, spec: IndexSpec, log: str, tombstones: str, deleted_at: str, after: tuple[int, str, str] | None,
    limit: int, *, backend: str,
) -> list[ChangeEntry]:
    """The first ``limit`` changes strictly after ``after`` (see the module docstring)."""
    records = await _records(client, spec, log, after, limit, backend)
    deletes = await _tombstones(client, spec, tombstones, deleted_at, after, limit)
    merged = [*records, *deletes]
    merged.sort(key=lambda e: e[:3])
    return [ChangeEntry((from_micros(us), ns, id), change) for us, ns, id, change in merged[:limit]]


async def _members(client: Any, key: str, after: tuple[int, str, str] | None, limit: int, spec: IndexSpec) -> list[tuple[int, str, str, bytes]]:
    """``(µs, namespace, id, member)`` of the first ``limit`` entries of sorted set ``key``
    strictly after ``after``, in change order. Entries sharing a µs (a batch written at once)
    are ordered by ``(namespace, id)``, so every entry at the boundary's µs is read."""
    if after is None:
        raw = await client.zrange(key, "-inf", "+inf", byscore=True, offset=0, num=limit, withscores=True)
    else:
        # the cursor's own µs in full (entries before and after it), then ``limit`` later ones
        at = str(after[0])
        raw = await client.zrange(key, at, at, byscore=True, withscores=True)
        raw += await client.zrange(key, f"({at}", "+inf", byscore=True, offset=0, num=limit, withscores=True)
    if len(raw) >= limit:
        edge = str(int(raw[-1][1]))
        raw += await client.zrange(key, edge, edge, byscore=True, withscores=True)  # ties at the edge
    seen: set[bytes] = set()
    out = []
    for member, score in raw:
        if member in seen:
            continue
        seen.add(member)
        place = split_record_key(spec.prefix, member.decode("utf-8", "replace"))
        if place is None:
            continue
        entry = (int(score), place[0], place[1], member)
        if after is None or entry[:3] > after:
            out.append(entry)
    out.sort()
    return out[:limit]


async def _records(
    client: Any, spec: IndexSpec, log: str, after: tuple[int, str, str] | None, limit: int, backend: str
) -> list[tuple[int, str, str, Change]]:
    """The first ``limit`` live, sound records after ``after``: entries whose record is gone
    or damaged are passed over, and further entries read in their place."""
    found: list[tuple[int, str, str, Change]] = []
    while len(found) < limit:
        wanted = limit - len(found)
        entries = await _members(client, log, after, wanted, spec)
        if not entries:
            break
        found += await _read(client, spec, log, entries, backend)
        if len(entries) < wanted:
            break  # the log has no more
        after = entries[-1][:3]
    return found


async def _read(
    client: Any, spec: IndexSpec, log: str, entries: list[tuple[int, str, str, bytes]], backend: str
) -> list[tuple[int, str, str, Change]]:
    replies = await client.eval(HMGET_MANY, len(entries), *(e[3] for e in entries), *_FIELDS)
    found: list[tuple[int, str, str, Change]] = []
    gone: list[tuple[int, bytes]] = []
    for (score, ns, id, member), values in zip(entries, replies):
        key = member.decode("utf-8", "replace")
        if not isinstance(values, list):  # another Redis type at a record key
            report_corrupt(backend, "changes", key, "it is not a hash")
            continue
        fields = {name: value for name, value in zip(_NAMES, values) if value is not None}
        if not fields:
            gone.append((score, member))
            continue
        try:
            record = decode_record(fields, key, dims=spec.dims, vector=True)
        except CorruptRecordError as exc:
            report_corrupt(backend, "changes", exc.key, exc.reason)
            continue
        found.append((score, ns, id, record))
    if gone:
        async with client.pipeline(transaction=False) as pipe:
            for score, member in gone:
                pipe.eval(PRUNE_CHANGE, 2, member, log, str(score))
            await pipe.execute(raise_on_error=False)
    return found


async def _tombstones(
    client: Any, spec: IndexSpec, key: str, deleted_at: str, after: tuple[int, str, str] | None, limit: int
) -> list[tuple[int, str, str, Change]]:
    entries = await _members(client, key, after, limit, spec)
    if not entries:
        return []
    times = await client.hmget(deleted_at, [e[3] for e in entries])
    out: list[tuple[int, str, str, Change]] = []
    for (score, ns, id, _), at in zip(entries, times):
        when = int(at) if at is not None and at.isdigit() else score  # a lost time: when it arrived
        out.append((score, ns, id, Tombstone(ns, id, from_micros(when))))
    return out
