"""Operations on a whole Agent Memory Server store, for ``doctor``, tests and benchmarks rather
than for a pipeline: dropping a partition, scanning it for damaged records, and the indexing
probe. Each is also a method of
:class:`~primitives.memory.ams_backend.backend.AgentMemoryServerBackend`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from primitives.errors import BackendUnavailableError, ConfigurationError, CorruptRecordError
from primitives.memory.ams_backend import mapping as amap
from primitives.memory.ams_backend.transport import path_id
from primitives.memory.record import MemoryRecord

if TYPE_CHECKING:
    from primitives.memory.ams_backend.backend import AgentMemoryServerBackend

__all__ = ["Scan", "drop", "probe_indexing", "scan"]

_PAGE = 100  # AMS SearchRequest.limit maximum
PROBE_NAMESPACE = "__memory_primitives_probe__"


async def _partition_pages(store: AgentMemoryServerBackend, max_records: int | None = None):  # type: ignore[no-untyped-def]
    """Pages of AMS's filter-only listing of the store's partition (every record whose namespace
    starts with its prefix), raw."""
    offset = 0
    while max_records is None or offset < max_records:
        memories = await store._search_page(amap.search_payload("", "keyword", {}, limit=_PAGE, offset=offset,
                                                                prefix=store.prefix))
        yield memories
        if len(memories) < _PAGE:
            return
        offset += _PAGE


async def drop(store: AgentMemoryServerBackend) -> int:
    """Delete the store's partition: every record (the store's, damaged or not, and any other
    written under its prefix) and working-memory session under its prefix. Refused without a
    prefix. Returns the number of records deleted.

    Raises:
        ConfigurationError: the store has no prefix (it would empty the whole server).
    """
    if not store.prefix:
        raise ConfigurationError("drop() needs a prefix: without one it would empty the whole server")
    ids: list[str] = []
    async for memories in _partition_pages(store):
        ids.extend(m["id"] for m in memories if isinstance(m, dict) and isinstance(m.get("id"), str))
    deleted = await store._delete_ams(amap.unique(ids)) if ids else 0
    offset = 0
    while True:
        listing = await store._request("GET", "/v1/working-memory/", params={"limit": 100, "offset": offset})
        sessions = listing.get("sessions") if isinstance(listing, dict) else None
        sessions = sessions if isinstance(sessions, list) else []
        for sid in sessions:
            if isinstance(sid, str) and sid.startswith(store.prefix):
                await store._request("DELETE", f"/v1/working-memory/{path_id(sid)}")
        if len(sessions) < 100:
            return deleted
        offset += 100


@dataclass(frozen=True, slots=True)
class Scan:
    """What :func:`scan` read.

    Attributes:
        records: The store's records read (damaged ones included; other clients' not).
        damaged: One error per damaged record (``key``: its AMS id, ``reason``), at most 100.
        damaged_count: How many damaged records were seen (legacy ones not included).
        legacy_count: Records an earlier version wrote (ids not namespace-scoped).
        complete: Whether the whole partition was read (else ``max_records`` cut it).
    """

    records: int
    damaged: list[CorruptRecordError] = field(default_factory=list)
    damaged_count: int = 0
    legacy_count: int = 0
    complete: bool = True


async def scan(store: AgentMemoryServerBackend, max_records: int = 1_000) -> Scan:
    """Read up to ``max_records`` of the store's partition and find its damaged records (which
    searches skip and ``get`` refuses). One request per 100 records; nothing is written."""
    records = damaged_count = legacy_count = 0
    damaged: list[CorruptRecordError] = []
    complete = False
    async for memories in _partition_pages(store, max_records):
        for data in memories:
            try:
                ours = isinstance(data, dict) and amap.record_from_ams(data, store.prefix) is not None
            except amap.LegacyRecordError:
                legacy_count += 1
                ours = True
            except CorruptRecordError as exc:
                damaged_count += 1
                if len(damaged) < 100:
                    damaged.append(exc)
                ours = True
            records += ours
        complete = len(memories) < _PAGE
    return Scan(records, damaged, damaged_count, legacy_count, complete)


async def probe_indexing(store: AgentMemoryServerBackend, probe_id: str, timeout: float = 5.0) -> float:
    """Write one probe record (namespace ``__memory_primitives_probe__``), wait until AMS has
    indexed it, delete it; returns the seconds that took. The only way to see over HTTP that
    AMS's embedding pipeline works: with an embedding model whose dims differ from its index
    (``REDISVL_VECTOR_DIMENSIONS``), RediSearch answers vector queries with no hits rather than
    an error, and leaves every write unindexed.

    Raises:
        BackendUnavailableError: the probe was not indexed within ``timeout`` seconds (or AMS is
            unreachable); AuthenticationFailedError, LongTermMemoryDisabledError.
    """
    probe = MemoryRecord(text="memory-primitives indexing probe", id=probe_id, namespace=PROBE_NAMESPACE)
    saved, store.index_timeout = store.index_timeout, timeout
    try:
        await store.add([probe])
        return store.last_index_wait or 0.0
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"the Agent Memory Server at {store.url} acknowledged a write but did not index it "
            f"within {timeout:g} s: its embedding endpoint fails, or the model's vectors have other "
            "dims than its index (REDISVL_VECTOR_DIMENSIONS); check its log"
        ) from exc
    finally:
        store.index_timeout = saved
        await store.delete([probe.id], namespace=probe.namespace)
