"""``index migrate`` for the Redis backend: convert records of the previous layout, re-embed,
re-create the index. A one-time O(store) step (``SCAN``, pipelined reads, one ``WATCH``/``MULTI``
transaction per converted record); running it again converts nothing more."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import exceptions as redis_errors

from primitives.errors import CorruptRecordError, PrimitivesError
from primitives.memory.embedding import embedding_text
from primitives.memory.record import MemoryRecord
from primitives.memory.redis_backend.codec import dt_from_us, encode_record, pack_vector
from primitives.memory.redis_backend.keys import glob_escape, record_key
from primitives.memory.redis_backend.maintenance import (
    ATTEMPTS,
    Store,
    batches,
    create_index,
    index_info,
    is_legacy,
    move_to_quarantine,
    read_records,
    shown,
)
from primitives.memory.redis_backend.schema import LEGACY_TAG_SEPARATOR

__all__ = ["MigrationReport", "decode_legacy", "migrate"]


@dataclass
class MigrationReport:
    """What :func:`migrate` did.

    Attributes:
        converted: Records of the previous layout rewritten in this one.
        quarantined: Records moved aside instead (``{"key", "moved_to", "kind", "reason"}``):
            undecodable ones, and the older of two versions of one ``(namespace, id)``.
        reembedded: Records given a new vector (0 without an embedder).
    """

    converted: int = 0
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    reembedded: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def decode_legacy(fields: dict[bytes, bytes], key: str) -> MemoryRecord:
    """A record hash of the previous layout (raw TAG values, topics joined by ``\\x1f``) as a
    validated record (its ``vector`` is carried over separately).

    Raises:
        CorruptRecordError: it does not decode or is not a valid record.
    """
    def opt(name: bytes) -> str | None:
        raw = fields.get(name)
        return None if raw is None else raw.decode()

    try:
        topics, metadata, ttl = opt(b"topics"), opt(b"metadata"), opt(b"ttl")
        return MemoryRecord(
            text=opt(b"text") or "",
            id=fields[b"id"].decode(),
            user_id=opt(b"user_id"),
            session_id=opt(b"session_id"),
            namespace=fields[b"namespace"].decode(),
            memory_type=fields[b"memory_type"].decode(),
            topics=tuple(topics.split(LEGACY_TAG_SEPARATOR)) if topics else (),
            metadata=json.loads(metadata) if metadata else {},
            created_at=dt_from_us(fields[b"created_at_us"]),
            updated_at=dt_from_us(fields[b"updated_at_us"]),
            ttl=float(ttl) if ttl is not None else None,
        )
    except KeyError as exc:
        reason = f"field {exc.args[0].decode()!r} is missing"
    except (ValueError, TypeError, OverflowError, PrimitivesError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
    raise CorruptRecordError(f"the record at {key!r} (previous layout) cannot be converted: {reason}", key=key, reason=reason)


def _updated_us(fields: dict[bytes, bytes]) -> int:
    raw = fields.get(b"updated_at_us", b"")
    return int(raw) if raw.isdigit() else -1


async def _convert(store: Store, key: bytes) -> tuple[bool, list[dict[str, Any]]] | None:
    """Rewrite one record of the previous layout at its new key, in one transaction. Returns
    ``(converted, quarantined entries)``, or ``None`` when it kept changing."""
    client = store.client
    for _ in range(ATTEMPTS):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                fields = await pipe.hgetall(key)
                if not fields or not is_legacy(fields):
                    return False, []
                try:
                    record = decode_legacy(fields, shown(key))
                except CorruptRecordError as exc:
                    entry = await move_to_quarantine(pipe, store, key, "legacy-record", exc.reason)
                    await pipe.execute()
                    return False, [entry]
                new_key = record_key(store.spec.prefix, record.namespace, record.id).encode()
                moved: list[dict[str, Any]] = []
                new_type = b"none"
                if new_key != key:
                    await pipe.watch(new_key)
                    new_type = await pipe.type(new_key)
                existing = await pipe.hgetall(new_key) if new_type == b"hash" else {}
                if existing and _updated_us(existing) >= _updated_us(fields):
                    entry = await move_to_quarantine(pipe, store, key, "legacy-record",
                                        f"superseded by the newer version at {shown(new_key)}")
                    await pipe.execute()
                    return False, [entry]
                pttl = await pipe.pttl(key)
                pairs = encode_record(record, index_dates=store.index_dates)
                if new_type == b"hash":
                    moved.append(await move_to_quarantine(pipe, store, new_key, "record",
                                             f"superseded by the newer version of the previous layout at {shown(key)}"))
                elif new_type != b"none":
                    moved.append(await move_to_quarantine(pipe, store, new_key, "wrong-type",
                                             f"it is a Redis {new_type.decode()}, not a hash"))
                else:
                    pipe.multi()
                pipe.delete(key)
                pipe.hset(new_key, mapping=dict(zip(pairs[0::2], pairs[1::2])))
                if fields.get(b"vector"):
                    pipe.hset(new_key, b"vector", fields[b"vector"])
                if pttl > 0:
                    pipe.pexpire(new_key, pttl)
                await pipe.execute()
                return True, moved
            except redis_errors.WatchError:
                continue
    return None


async def migrate(store: Store, *, batch_size: int = 256) -> MigrationReport:
    """Drop the index (never the records: ``FT.DROPINDEX`` without ``DD``), convert records of
    the previous layout (keys ``{prefix}rec:{id}``, raw TAG values, topics joined by ``\\x1f``)
    to this one (one transaction each, expiry kept; see :class:`MigrationReport` for what is
    quarantined instead), re-embed every record when an embedder is configured, and create the
    index with this configuration's schema; Redis then re-indexes every record under the prefix
    in the background (``FT.INFO`` ``indexing`` is 1 until it is done). A one-time O(store)
    step; running it again converts nothing more. On a Redis Cluster every primary's index is
    dropped and re-created: every tenant's index (the cluster layout has no previous layout to convert).
    """
    client = store.client
    report = MigrationReport()
    indexes = store.cluster_indexes
    if indexes is not None:
        await indexes.drop_indexes()
    elif await index_info(store.client, store.spec.name) is not None:
        await client.execute_command("FT.DROPINDEX", store.spec.name)
    async for keys in batches(client, glob_escape(store.spec.prefix) + "*", batch_size):
        for key, fields, _ in await read_records(client, keys):
            if not fields or not is_legacy(fields):
                continue
            result = await _convert(store, key)
            if result is not None:
                converted, moved = result
                report.converted += converted
                report.quarantined += moved
    if store.embedder is not None:
        report.reembedded = await _reembed(store, batch_size)
        await client.hset(store.meta_key(), mapping={"model": store.embedder.model, "dims": str(store.embedder.dims)})
    if indexes is not None:
        await indexes.create_all()
    else:
        await create_index(store.client, store.spec)
    return report


async def _reembed(store: Store, batch_size: int) -> int:
    """A new vector for every record that decodes (damaged ones are left for ``repair``)."""
    assert store.embedder is not None
    client = store.client
    done = 0
    async for keys in batches(client, glob_escape(store.spec.prefix) + "*", batch_size):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "id", "text", "metadata")
            rows = await pipe.execute(raise_on_error=False)
        live: list[tuple[bytes, MemoryRecord]] = []
        for key, row in zip(keys, rows):
            if isinstance(row, Exception) or row[0] is None or row[1] is None:
                continue
            try:
                metadata = json.loads(row[2].decode()) if row[2] else {}
                live.append((key, MemoryRecord(text=row[1].decode(), id=row[0].decode(), metadata=metadata)))
            except (ValueError, TypeError, PrimitivesError):
                continue
        if not live:
            continue
        vectors = await store.embedder.embed_documents([embedding_text(r) for _, r in live])
        async with client.pipeline(transaction=False) as pipe:
            for (key, _), vector in zip(live, vectors):
                pipe.hset(key, "vector", pack_vector(vector))
            await pipe.execute()
        done += len(live)
    return done
