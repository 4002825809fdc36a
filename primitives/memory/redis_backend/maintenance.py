"""Whole-store operations of the Redis backend: deleting a store, finding damaged records, and
moving them to quarantine (migration is in :mod:`~primitives.memory.redis_backend.migration`).

Each walks the store with ``SCAN`` (never ``KEYS``) and reads in pipelined batches; each change to
one key is one ``WATCH``/``MULTI`` transaction, so a record written by a client meanwhile is
never overwritten or moved by mistake (the transaction fails and the key is looked at again).

Quarantine: a damaged record (or a key of the wrong Redis type under the record or working-memory
prefix) is renamed to ``{prefix}quarantine:{ms}:{key without prefix}`` (outside the index, its
expiry removed), and the damaged items of a working-memory list are moved to a list there; each
move is recorded in the stream ``{prefix}quarantine:log`` (``key``, ``moved_to``, ``kind``,
``reason``, ``at``, ``pttl_ms``); on a Redis Cluster in ``{prefix}quarantine:log:{tag}``, the
moved key's own tenant tag, so the move and its log entry stay one transaction in one slot.
Nothing is deleted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors

from primitives.errors import ConfigurationError, CorruptRecordError
from primitives.memory.redis_backend.codec import check_stored, decode_message
from primitives.memory.redis_backend.keys import QUARANTINE, glob_escape, quarantine_key, quarantine_log_key

if TYPE_CHECKING:
    from primitives.embeddings.base import Embedder
    from primitives.memory.redis_backend.schema import IndexSpec

__all__ = [
    "RepairReport",
    "ScanReport",
    "Store",
    "create_index",
    "drop",
    "index_info",
    "repair",
    "scan",
]

ATTEMPTS = 5  # WATCH retries per key before it is left for the next run


@dataclass(frozen=True)
class Store:
    """What these operations need of a :class:`~primitives.memory.redis_backend.RedisBackend`.

    Attributes:
        client: Its redis-py asyncio client (``decode_responses=False``).
        prefix: Its key prefix.
        spec: Its index.
        embedder: Its embedder, or ``None``.
        index_dates: Whether records carry the written-out ``date`` field.
        cluster_indexes: On a Redis Cluster, its per-primary indexes
            (:class:`~primitives.memory.redis_backend.cluster.ClusterIndexes`); ``None`` on a
            single Redis.
    """

    client: Any
    prefix: str
    spec: IndexSpec
    embedder: Embedder | None
    index_dates: bool
    cluster_indexes: Any = None

    def meta_key(self) -> str:
        """The hash recording the embedding model (``{prefix}embedding``)."""
        return f"{self.prefix}embedding"

    def log_key(self, key: bytes) -> str | bytes:
        """The quarantine log for a move of ``key``: ``{prefix}quarantine:log``, or on a cluster
        the log in ``key``'s own hash slot (``{prefix}quarantine:log:{tag}``)."""
        if self.cluster_indexes is None:
            return quarantine_log_key(self.prefix)
        start = key.find(b"{")
        end = key.find(b"}", start + 1)
        tag = key[start:end + 1] if start >= 0 and end > start + 1 else b"{" + key + b"}"
        return quarantine_log_key(self.prefix).encode() + b":" + tag


async def index_info(client: Any, name: str) -> dict[str, Any] | None:
    """``FT.INFO name`` as a dict, every bulk string decoded (nested lists kept), or ``None``
    when the index does not exist."""
    try:
        raw = await client.execute_command("FT.INFO", name)
    except redis_errors.ResponseError as exc:
        text = str(exc).lower()
        if "unknown index" in text or "no such index" in text:
            return None
        raise
    info = _text(raw)
    return dict(zip(info[0::2], info[1::2]))


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


async def create_index(client: Any, spec: IndexSpec) -> None:
    """``FT.CREATE`` with ``spec``; an index created meanwhile by another client is fine.

    Raises:
        ConfigurationError: Redis refused it (the message has its reason).
    """
    try:
        await client.execute_command(*spec.create_args())
    except redis_errors.ResponseError as exc:
        if "already exists" not in str(exc).lower():  # a concurrent creator won the race
            raise ConfigurationError(f"Redis refused FT.CREATE for {spec.name!r}: {exc}") from exc


@dataclass
class ScanReport:
    """What :func:`scan` found (more than the seam's
    :class:`~primitives.memory.backend.DamageReport`: the previous layout, the index's counter).

    Attributes:
        scanned_records: Keys under ``{prefix}rec:`` looked at.
        scanned_sessions: Keys under ``{prefix}wm:`` looked at.
        damaged: Damaged keys found (records, keys of another type, lists with damaged items).
        first: The first ``limit`` of them, ``{"key", "kind", "reason"}`` each; ``kind`` is
            ``"record"``, ``"wrong-type"`` or ``"session-items"``.
        legacy_records: Records of the previous layout (``memory-primitives index migrate``
            converts them).
        index_failures: ``hash_indexing_failures`` of ``FT.INFO`` (``None``: no index).
        last_index_error, last_index_error_key: What the index last refused, and where.
    """

    scanned_records: int = 0
    scanned_sessions: int = 0
    damaged: int = 0
    first: list[dict[str, str]] = field(default_factory=list)
    legacy_records: int = 0
    index_failures: int | None = None
    last_index_error: str | None = None
    last_index_error_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class RepairReport:
    """What :func:`repair` moved (or, with ``dry_run``, would move).

    Attributes:
        moved: ``{"key", "moved_to", "kind", "reason"}`` per move, in scan order (``items``:
            how many list items, for ``kind == "session-items"``).
        dry_run: Nothing was changed.
        left: Keys that changed under every attempt (written by another client meanwhile) and
            were left as they are; run again.
    """

    moved: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    left: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def shown(key: bytes) -> str:
    """A key as text for reports (bytes that are not UTF-8 shown as ``\\xNN``)."""
    return key.decode("utf-8", "backslashreplace")


async def batches(client: Any, pattern: str, size: int) -> AsyncIterator[list[bytes]]:
    """The keys matching the glob ``pattern`` (``SCAN MATCH``, never ``KEYS``), ``size`` at a
    time. A key present for the whole scan is yielded at least once (``SCAN``'s guarantee)."""
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=max(size, 100)):
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_legacy(fields: dict[bytes, bytes]) -> bool:
    """A record hash of the previous layout: raw TAG values, no encoded ``tag_*`` fields."""
    return b"tag_namespace" not in fields and b"namespace" in fields and b"id" in fields


def _record_problem(store: Store, key: bytes, fields: dict[bytes, bytes]) -> str | None:
    try:
        text_key = key.decode()
    except UnicodeDecodeError:
        return "its key is not UTF-8"
    return check_stored(fields, text_key, store.spec.prefix, dims=store.spec.dims)


async def read_records(client: Any, keys: list[bytes]) -> list[tuple[bytes, dict[bytes, bytes] | None, bytes]]:
    """``(key, fields, type)`` per key; ``fields`` is ``None`` for a key of another type."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        replies = await pipe.execute(raise_on_error=False)
    wrong = [k for k, r in zip(keys, replies) if isinstance(r, redis_errors.ResponseError)]
    types: dict[bytes, bytes] = {}
    if wrong:
        async with client.pipeline(transaction=False) as pipe:
            for key in wrong:
                pipe.type(key)
            types = dict(zip(wrong, await pipe.execute()))
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, redis_errors.ResponseError):
            raise reply
    return [(k, None if k in types else r, types.get(k, b"hash")) for k, r in zip(keys, replies)]


def _bad_items(key: bytes, items: list[bytes]) -> list[tuple[int, str]]:
    bad = []
    for i, item in enumerate(items):
        try:
            decode_message(item, f"{shown(key)}[{i}]")
        except CorruptRecordError as exc:
            bad.append((i, exc.reason))
    return bad


async def scan(store: Store, *, limit: int = 20, batch_size: int = 200) -> ScanReport:
    """Find damaged data: every key under ``{prefix}rec:`` is read (``HGETALL``, pipelined in
    batches of ``batch_size``) and checked as a direct read checks it
    (:func:`~primitives.memory.redis_backend.codec.check_stored`), every working-memory list under
    ``{prefix}wm:`` item by item; ``FT.INFO``'s ``hash_indexing_failures`` is added. O(store):
    for ``doctor``, not for a hot path.

    Returns:
        A :class:`ScanReport` listing the first ``limit`` damaged keys.
    """
    client = store.client
    report = ScanReport()

    def found(key: bytes, kind: str, reason: str) -> None:
        report.damaged += 1
        if len(report.first) < limit:
            report.first.append({"key": shown(key), "kind": kind, "reason": reason})

    async for keys in batches(client, glob_escape(store.spec.prefix) + "*", batch_size):
        for key, fields, kind in await read_records(client, keys):
            report.scanned_records += 1
            if fields is None:
                found(key, "wrong-type", f"it is a Redis {kind.decode()}, not a hash")
            elif fields and is_legacy(fields):
                report.legacy_records += 1
            elif fields:
                reason = _record_problem(store, key, fields)
                if reason is not None:
                    found(key, "record", reason)
    async for keys in batches(client, glob_escape(f"{store.prefix}wm:") + "*", batch_size):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            replies = await pipe.execute(raise_on_error=False)
        for key, items in zip(keys, replies):
            report.scanned_sessions += 1
            if isinstance(items, redis_errors.ResponseError):
                found(key, "wrong-type", "it is not a list")
                continue
            bad = _bad_items(key, items)
            if bad:
                found(key, "session-items", f"{len(bad)} of {len(items)} messages cannot be decoded; "
                                            f"item {bad[0][0]}: {bad[0][1]}")
    if store.cluster_indexes is None:
        infos = [await index_info(store.client, store.spec.name)]
    else:  # every tenant's index: failures summed, the last error of one that has failures
        infos = list((await store.cluster_indexes.infos()).values())
    for info in infos:
        if info is None:
            continue
        failures = int(info.get("hash_indexing_failures", 0))
        report.index_failures = (report.index_failures or 0) + failures
        errors = info.get("Index Errors")
        if isinstance(errors, list) and failures:
            d = dict(zip(errors[0::2], errors[1::2]))
            report.last_index_error = d.get("last indexing error")
            report.last_index_error_key = d.get("last indexing error key")
    return report


async def move_to_quarantine(pipe: Any, store: Store, key: bytes, kind: str, reason: str) -> dict[str, Any]:
    """On a ``WATCH``-ing pipeline: read ``key``'s remaining lifetime, start the transaction
    (``pipe.multi()``) and queue its move to quarantine (``RENAME``, ``PERSIST``) and the log entry
    (``XADD``); the caller queues anything else and executes. Returns the log entry."""
    at_ms = int(time.time() * 1000)
    dest = quarantine_key(store.prefix, key, at_ms)
    pttl = await pipe.pttl(key)
    pipe.multi()
    # as a raw command: redis-py's cluster pipeline blocks its rename() method even for a
    # same-slot RENAME (the destination keeps the key's hash tag: keys.quarantine_key)
    pipe.execute_command("RENAME", key, dest)
    pipe.persist(dest)
    entry = {"key": shown(key), "moved_to": shown(dest), "kind": kind, "reason": reason}
    pipe.xadd(store.log_key(key), {**entry, "at": _iso(at_ms), "pttl_ms": str(pttl)})
    return entry


def _iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, timezone.utc).isoformat()


async def _quarantine_record(store: Store, key: bytes) -> dict[str, Any] | None | bool:
    """Move the record key ``key`` to quarantine if it is (still) damaged: the entry, ``None``
    when it is sound (or gone) now, ``False`` when it kept changing."""
    for _ in range(ATTEMPTS):
        async with store.client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                kind = await pipe.type(key)
                if kind == b"none":
                    return None
                if kind != b"hash":
                    entry = await move_to_quarantine(pipe, store, key, "wrong-type", f"it is a Redis {kind.decode()}, not a hash")
                else:
                    fields = await pipe.hgetall(key)
                    if is_legacy(fields):
                        return None  # index migrate converts it
                    reason = _record_problem(store, key, fields)
                    if reason is None:
                        return None
                    entry = await move_to_quarantine(pipe, store, key, "record", reason)
                await pipe.execute()
                return entry
            except redis_errors.WatchError:
                continue
    return False


async def _quarantine_items(store: Store, key: bytes) -> dict[str, Any] | None | bool:
    """Move the damaged items of the working-memory list ``key`` (or the whole key, when it is
    not a list) to quarantine, keeping the good ones in order and the list's expiry."""
    for _ in range(ATTEMPTS):
        async with store.client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                kind = await pipe.type(key)
                if kind == b"none":
                    return None
                if kind != b"list":
                    entry = await move_to_quarantine(pipe, store, key, "wrong-type", f"it is a Redis {kind.decode()}, not a list")
                    await pipe.execute()
                    return entry
                items = await pipe.lrange(key, 0, -1)
                bad = _bad_items(key, items)
                if not bad:
                    return None
                at_ms = int(time.time() * 1000)
                dest = quarantine_key(store.prefix, key, at_ms)
                pttl = await pipe.pttl(key)
                bad_index = {i for i, _ in bad}
                good = [item for i, item in enumerate(items) if i not in bad_index]
                reason = f"{len(bad)} of {len(items)} messages cannot be decoded; item {bad[0][0]}: {bad[0][1]}"
                pipe.multi()
                pipe.delete(key)
                if good:
                    pipe.rpush(key, *good)
                    if pttl > 0:
                        pipe.pexpire(key, pttl)
                pipe.rpush(dest, *(items[i] for i, _ in bad))
                entry = {"key": shown(key), "moved_to": shown(dest), "kind": "session-items", "reason": reason,
                         "items": len(bad)}
                pipe.xadd(store.log_key(key),
                          {**{k: str(v) for k, v in entry.items()}, "at": _iso(at_ms), "pttl_ms": str(pttl)})
                await pipe.execute()
                return entry
            except redis_errors.WatchError:
                continue
    return False


async def repair(store: Store, *, dry_run: bool = False, batch_size: int = 200) -> RepairReport:
    """Move every damaged record and working-memory item :func:`scan` would report to
    quarantine (see the module docstring); records of the previous layout are left for
    ``index migrate``. Each key is re-checked under ``WATCH`` right before it is moved, so a
    record repaired or rewritten meanwhile stays where it is.

    Args:
        dry_run: Only report what would be moved.

    Returns:
        A :class:`RepairReport`.
    """
    client = store.client
    report = RepairReport(dry_run=dry_run)

    def keep(result: dict[str, Any] | None | bool, key: bytes) -> None:
        if result is False:
            report.left.append(shown(key))
        elif result:
            report.moved.append(result)  # type: ignore[arg-type]

    async for keys in batches(client, glob_escape(store.spec.prefix) + "*", batch_size):
        for key, fields, kind in await read_records(client, keys):
            if fields is not None and (not fields or is_legacy(fields)):
                continue
            reason = f"it is a Redis {kind.decode()}, not a hash" if fields is None else _record_problem(store, key, fields)
            if reason is None:
                continue
            if dry_run:
                report.moved.append({"key": shown(key), "moved_to": None,
                                     "kind": "wrong-type" if fields is None else "record", "reason": reason})
            else:
                keep(await _quarantine_record(store, key), key)
    async for keys in batches(client, glob_escape(f"{store.prefix}wm:") + "*", batch_size):
        for key in keys:
            if dry_run:
                try:
                    bad = _bad_items(key, await client.lrange(key, 0, -1))
                except redis_errors.ResponseError:
                    report.moved.append({"key": shown(key), "moved_to": None, "kind": "wrong-type", "reason": "it is not a list"})
                    continue
                if bad:
                    report.moved.append({"key": shown(key), "moved_to": None, "kind": "session-items",
                                         "reason": f"item {bad[0][0]}: {bad[0][1]}", "items": len(bad)})
            else:
                keep(await _quarantine_items(store, key), key)
    return report


async def drop(store: Store) -> None:
    """Delete the store: the index with every indexed record (``FT.DROPINDEX ... DD``), then,
    by ``SCAN`` and ``UNLINK`` in batches, whatever is left under ``{prefix}rec:``, ``wm:``,
    ``skill:`` and ``quarantine:``, the tombstones, the change log and the record of its embedding model. For throw-away stores
    (evaluations, tests); irreversible."""
    client = store.client
    if store.cluster_indexes is not None:
        await store.cluster_indexes.drop()
    elif await index_info(store.client, store.spec.name) is not None:
        await client.execute_command("FT.DROPINDEX", store.spec.name, "DD")
    parts = ["rec:", "wm:", "skill:", QUARANTINE]
    if store.cluster_indexes is not None:  # each tenant's bookkeeping (keys.KeyLayout)
        parts += ["changelog:{", "tombstones:{", "deleted_at:{"]
    for part in parts:
        async for keys in batches(client, glob_escape(f"{store.prefix}{part}") + "*", 500):
            await client.unlink(*keys)
    for key in (store.meta_key(), f"{store.prefix}tombstones", f"{store.prefix}deleted_at", f"{store.prefix}changelog",
                f"{store.prefix}tenants"):
        await client.unlink(key)  # one at a time: on a cluster they sit in different slots
