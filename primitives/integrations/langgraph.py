"""A LangGraph ``BaseStore`` over :class:`~primitives.memory.Memory` (``pip install
'memory-primitives[langgraph]'``), so a LangGraph agent's long-term store gets this package's
backends (in process, Redis, the Agent Memory Server) and its fallback: build it on
``Memory.from_env()``.

How an item is stored (one :class:`~primitives.memory.MemoryRecord` per item, all in one
``Memory`` namespace, the store's ``namespace``, the memory's by default):

- ``id``: the item's namespace tuple and key, JSON-encoded (``lg[["users","alice"],"prefs"]``;
  any string is allowed in a label except what LangGraph forbids, and the encoding is injective);
  an encoding longer than 1,000 characters is replaced by ``lg#`` and its SHA-256.
- ``topics``: one per leading part of the namespace tuple, encoded the same way (``lg[]``,
  ``lg["users"]``, ``lg["users","alice"]``): a prefix search is an exact tag match on one topic,
  so ``("users", "al")`` never matches ``("users", "alice")``. A namespace is at most 255 labels.
- ``metadata``: ``lg_namespace`` (the tuple as a list), ``lg_key``, ``lg_value`` (the value
  dict, exactly as given: a JSON object, nested at most 31 levels) and ``lg_updated_at``.
- ``text``: the indexed fields' text (every string and number of the value by default; the
  ``index`` paths of ``put``; nothing with ``index=False``) plus one listing term that every item
  carries: ``Memory`` has no filter-only listing, so listings are keyword searches for that term
  within a topic, ``limit`` 10,000 a call, split by ``created_at`` range when a page is full.
- ``memory_type`` ``semantic``; ``ttl``: LangGraph's ``ttl`` is in **minutes**, stored as
  seconds (``ttl * 60``); no ttl is stored as never expiring (not the memory type's default).

An item's ``created_at`` is kept when it is put again (as LangGraph's Postgres store does; its
``InMemoryStore`` resets it) and ``updated_at`` is the time of the last put.

Reads in a batch see the state before the batch's writes; of several writes to one item in a
batch the last wins (as LangGraph's own stores do). ``search`` with a ``query`` ranks by the
memory's search (keyword BM25, or hybrid with an embedder; ``score`` on that backend's scale,
higher is better) and then lists the remaining matching items without a score, so a query orders
results and never hides an item the filter allows. Without a query, items come newest
``updated_at`` first (ties by namespace, then key). ``filter`` matches the value's top-level keys
exactly, or with ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte`` (the comparisons match
numbers only, booleans excluded); it is applied in this process after the listing.

A read that refreshes a ttl (LangGraph's default for items with a ttl) rewrites the item; a
``put`` of the same item by another process between that read and the rewrite is undone (``Memory``
has no compare-and-set), so pass ``refresh_ttl=False`` where concurrent writers share items.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from primitives.errors import (
    ConfigurationError,
    CorruptRecordError,
    InvalidInputError,
    InvalidInputTypeError,
)
from primitives.integrations._langgraph_mapping import (
    ListingLimitError,
    check_filter,
    item_id,
    leaves,
    matches,
    path_matches,
    split_window,
    topic,
)
from primitives.integrations._sync import LoopBridge, SyncCallInEventLoopError
from primitives.memory.backend import report_corrupt
from primitives.memory.facade import Memory
from primitives.memory.filters import check_mode, check_query
from primitives.memory.record import MemoryRecord, MemoryType
from primitives.validation import (
    MAX_LIMIT,
    MAX_METADATA_DEPTH,
    MAX_TOPICS,
    MAX_TTL,
    check_identifier,
    check_int,
    check_json_object,
    check_text,
)

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        InvalidNamespaceError,
        Item,
        ListNamespacesOp,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        get_text_at_path,
        tokenize_path,
        validate_op_namespace,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError(
        "the LangGraph store needs langgraph: python -m pip install 'memory-primitives[langgraph]'"
    ) from exc

__all__ = [
    "LISTING_TERM",
    "MAX_NAMESPACE_DEPTH",
    "MAX_VALUE_DEPTH",
    "InvalidStoreNamespaceError",
    "ListingLimitError",
    "MemoryStore",
    "SyncCallInEventLoopError",
]

#: The word every item's text carries, searched for to list the items of a namespace prefix.
LISTING_TERM = "lgstoreitem"
#: Deepest namespace: one topic per leading part, plus the empty prefix, within MAX_TOPICS.
MAX_NAMESPACE_DEPTH = MAX_TOPICS - 1
#: Deepest value: it sits one level inside the record's metadata (MAX_METADATA_DEPTH, 32).
MAX_VALUE_DEPTH = MAX_METADATA_DEPTH - 1
_NS, _KEY, _VALUE, _UPDATED = "lg_namespace", "lg_key", "lg_value", "lg_updated_at"
#: Reads of one batch that run at once (a server backend's connection pool is bounded).
_READS_AT_ONCE = 8


class InvalidStoreNamespaceError(InvalidInputError, InvalidNamespaceError):
    """A namespace this store cannot hold beyond LangGraph's own rules: deeper than 255 labels,
    a label with a lone surrogate (UTF-8 cannot encode it), or an empty namespace for a write."""


def _check_namespace(namespace: tuple[str, ...], *, write: bool) -> tuple[str, ...]:
    namespace = tuple(namespace)
    if write and not namespace:
        raise InvalidStoreNamespaceError("a namespace to write to must have at least one label")
    if len(namespace) > MAX_NAMESPACE_DEPTH:
        raise InvalidStoreNamespaceError(f"a namespace has at most {MAX_NAMESPACE_DEPTH} labels, got {len(namespace)}")
    for label in namespace:
        check_text(label, "a namespace label", errors=(InvalidStoreNamespaceError, InvalidStoreNamespaceError))
    return namespace


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a JSON value nests lists and objects more than ``limit`` levels (itself level 1)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _check_key(key: object) -> str:
    return check_text(key, "key")


@dataclass(frozen=True, slots=True)
class _Stored:
    item: Item
    record: MemoryRecord


class _Damaged(Exception):
    pass


def _decode(record: MemoryRecord) -> Item:
    """The item a record holds; :class:`_Damaged` when it is not one this store wrote intact."""
    md = record.metadata
    namespace, key, value, updated = md.get(_NS), md.get(_KEY), md.get(_VALUE), md.get(_UPDATED)
    if not isinstance(namespace, list) or not all(isinstance(label, str) and label for label in namespace):
        raise _Damaged(f"{_NS} is not a list of labels")
    if not isinstance(key, str) or not isinstance(value, dict) or not isinstance(updated, str):
        raise _Damaged(f"{_KEY}, {_VALUE} or {_UPDATED} is missing or of the wrong type")
    namespace = tuple(namespace)
    if record.id != item_id(namespace, key):
        raise _Damaged("its id does not match its namespace and key")
    try:
        updated_at = datetime.fromisoformat(updated)
    except ValueError:
        raise _Damaged(f"{_UPDATED} is not an ISO 8601 time") from None
    if updated_at.utcoffset() is None:
        raise _Damaged(f"{_UPDATED} has no time zone")
    created_at = record.created_at or updated_at
    return Item(
        value=copy.deepcopy(value),
        key=key,
        namespace=namespace,
        created_at=min(created_at, updated_at),
        updated_at=updated_at,
    )


class MemoryStore(BaseStore):
    """LangGraph's ``BaseStore`` over a :class:`~primitives.memory.Memory` (see the module doc
    for the mapping, ordering and filter rules).

    Args:
        memory: The memory to keep items in; ``None``: ``Memory.from_env()``, closed by
            :meth:`aclose`.
        namespace: The ``Memory`` namespace (an identifier) holding every item of this store;
            default the memory's. Two stores with different namespaces never see each other.
        mode: Search mode of ``search(query=...)``: ``"keyword"``, ``"vector"``, ``"hybrid"`` or
            ``None`` (the backend's default).
        fields: Value paths indexed for ``query`` by default (LangGraph's path syntax, e.g.
            ``["text", "notes[*].body"]``; ``"$"`` is every string and number of the value);
            default ``["$"]``. ``put(..., index=[...])`` overrides it per item.
        ttl: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes) for puts without ``ttl``,
            ``refresh_on_read`` (default ``True``). Expiry is the backend's own.

    ``supports_ttl`` is the backend's (the Agent Memory Server has no per-record expiry: a put
    with a ttl raises ``NotImplementedError`` there). The sync methods (``get``, ``put``,
    ``search``...) run through :class:`~primitives.integrations._sync.LoopBridge`: from a worker
    thread of a running loop or from plain sync code; inside a running loop they raise
    :class:`SyncCallInEventLoopError` (use ``aget``, ``aput``...).

    Raises:
        InvalidInputError: ``namespace`` is not an identifier, ``mode`` unknown, ``fields`` not
            a list of str.
        InvalidInputTypeError: ``memory`` is not a ``Memory``.
    """

    def __init__(
        self,
        memory: Memory | None = None,
        *,
        namespace: str | None = None,
        mode: str | None = None,
        fields: Sequence[str] | None = None,
        ttl: Mapping[str, Any] | None = None,
    ) -> None:
        if memory is not None and not isinstance(memory, Memory):
            raise InvalidInputTypeError(f"memory must be a primitives Memory, got {type(memory).__name__}")
        if fields is not None and (
            isinstance(fields, str) or not isinstance(fields, Sequence) or not all(isinstance(f, str) for f in fields)
        ):
            raise InvalidInputTypeError(f"fields must be a list of value paths (str), got {fields!r}")
        if ttl is not None and not isinstance(ttl, Mapping):
            raise InvalidInputTypeError(f"ttl must be a TTLConfig mapping or None, got {type(ttl).__name__}")
        self._owns_memory = memory is None
        self.memory = Memory.from_env() if memory is None else memory
        self.namespace = self.memory.namespace if namespace is None else check_identifier(namespace, "namespace")
        self.mode = check_mode(mode)
        self.fields: tuple[str, ...] = tuple(fields) if fields is not None else ("$",)
        self._paths = [(f, f if f == "$" else tokenize_path(f)) for f in self.fields]
        self.ttl_config = dict(ttl) if ttl is not None else None  # type: ignore[assignment]
        self.supports_ttl = bool(self.memory.backend.supports_ttl)
        self._bridge = LoopBridge()
        #: Most hits one listing search asks for (a full page splits the search by created_at).
        self._page = MAX_LIMIT

    # -- the two batch entry points ------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`abatch` for sync callers (see the class doc for where it may be called).

        Raises:
            SyncCallInEventLoopError: called inside a running event loop.
        """
        ops = list(ops)
        return self._bridge.run(lambda: self.abatch(ops), "batch", "abatch")

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run LangGraph operations: every one is checked before anything is read or written;
        then the reads (gets, searches, namespace listings) run concurrently on the state before
        this batch, then the writes (one ``Memory.add`` for the puts and ttl refreshes, one
        ``Memory.delete`` for the deletes). A read that fails leaves the batch's writes undone; a
        process killed between the two write calls leaves the puts done and the deletes not
        (``Memory`` has no transaction across them; each call is the backend's own).

        Returns:
            One result per operation, in order: an ``Item`` or ``None``, a list of
            ``SearchItem``, a list of namespace tuples, ``None`` for a put or delete.

        Raises:
            InvalidNamespaceError: a label LangGraph forbids (``InvalidStoreNamespaceError``,
                also an ``InvalidInputError``, for what this store cannot hold).
            InvalidInputError: a key, value, ttl, ``index``, limit, offset or query that is not
                accepted (``InvalidInputTypeError`` for a wrong type; ``InvalidFilterError`` for
                a filter); nothing is read or written.
            NotImplementedError: a ttl on a backend without expiry.
            CorruptRecordError: a get whose stored record cannot be decoded (its id is named).
        """
        self._bridge.note_loop()
        ops = list(ops)
        writes: dict[tuple[tuple[str, ...], str], MemoryRecord | None] = {}
        now = datetime.now(timezone.utc)
        for op in ops:
            if not isinstance(op, (GetOp, SearchOp, ListNamespacesOp, PutOp)):
                raise InvalidInputTypeError(f"unknown store operation {type(op).__name__}")
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                namespace = _check_namespace(op.namespace, write=True)
                key = _check_key(op.key)
                writes[(namespace, key)] = None if op.value is None else self._record(namespace, key, op, now)
            elif isinstance(op, GetOp):
                _check_namespace(op.namespace, write=False)
                _check_key(op.key)
            elif isinstance(op, SearchOp):
                self._check_search(op)
            else:
                self._check_listing(op)
        refresh: dict[str, MemoryRecord] = {}
        gate = asyncio.Semaphore(_READS_AT_ONCE)

        async def read(op: Op) -> Result:
            async with gate:
                return await self._read(op, refresh)

        answers = iter(await asyncio.gather(*(read(op) for op in ops if not isinstance(op, PutOp))))
        results: list[Result] = [None if isinstance(op, PutOp) else next(answers) for op in ops]
        records = [r for r in writes.values() if r is not None]
        written = {r.id for r in records} | {item_id(*k) for k, r in writes.items() if r is None}
        records += [r for id, r in refresh.items() if id not in written]
        if records:
            await self.memory.add(records)
        deletes = [item_id(*k) for k, r in writes.items() if r is None]
        if deletes:
            await self.memory.delete(deletes, namespace=self.namespace)
        return results

    # -- checks and the record of an item --------------------------------------------------------

    def _record(self, namespace: tuple[str, ...], key: str, op: PutOp, now: datetime) -> MemoryRecord:
        if not isinstance(op.value, Mapping):
            raise InvalidInputTypeError(f"value must be a dict (a JSON object) or None, got {type(op.value).__name__}")
        value = check_json_object(op.value, "value", errors=(InvalidInputError, InvalidInputTypeError))
        if _deeper_than(value, MAX_VALUE_DEPTH):
            raise InvalidInputError(
                f"value nests deeper than {MAX_VALUE_DEPTH} levels (the value itself is level 1); "
                "it is kept inside the record's metadata, which holds 32"
            )
        index = op.index
        if index is None:
            paths = self._paths
        elif index is False:
            paths = []
        elif isinstance(index, (list, tuple)) and all(isinstance(p, str) for p in index):
            paths = [(p, p if p == "$" else tokenize_path(p)) for p in index]
        else:
            raise InvalidInputTypeError(f"index must be None, False or a list of value paths (str), got {index!r}")
        texts: list[str] = []
        for path, tokens in paths:
            texts.extend(leaves(value) if path == "$" else get_text_at_path(value, tokens))
        return MemoryRecord(
            text="\n".join([*texts, LISTING_TERM]),
            id=item_id(namespace, key),
            namespace=self.namespace,
            memory_type=MemoryType.SEMANTIC,
            topics=tuple(topic(namespace[:depth]) for depth in range(len(namespace) + 1)),
            metadata={_NS: list(namespace), _KEY: key, _VALUE: value, _UPDATED: now.isoformat()},
            ttl=self._ttl_seconds(op.ttl),
            created_at=now,
        )

    def _ttl_seconds(self, ttl: object) -> float:
        """LangGraph's ttl (minutes, or ``None`` for never) as this package's seconds."""
        if ttl is None:
            return math.inf
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise InvalidInputTypeError(f"ttl must be a number of minutes or None, got {type(ttl).__name__} {ttl!r}")
        if not self.supports_ttl:
            raise NotImplementedError(
                f"the {self.memory.backend.name} backend has no per-record expiry; put without ttl "
                "or use the in-memory or Redis backend"
            )
        if ttl == math.inf:
            return math.inf
        if not 0 < ttl <= MAX_TTL / 60:
            raise InvalidInputError(f"ttl must be minutes in (0, {MAX_TTL / 60:g}] or None, got {ttl!r}")
        return float(ttl) * 60.0

    def _check_search(self, op: SearchOp) -> None:
        _check_namespace(op.namespace_prefix, write=False)
        check_int(op.limit, "limit", minimum=0)
        check_int(op.offset, "offset", minimum=0)
        if op.filter is not None:
            check_filter(op.filter)
        if op.query is not None:
            check_query(op.query)

    def _check_listing(self, op: ListNamespacesOp) -> None:
        for condition in op.match_conditions or ():
            if condition.match_type not in ("prefix", "suffix"):
                raise InvalidInputError(f"match_type must be 'prefix' or 'suffix', got {condition.match_type!r}")
            _check_namespace(condition.path, write=False)
        if op.max_depth is not None:
            check_int(op.max_depth, "max_depth", minimum=1)
        check_int(op.limit, "limit", minimum=0)
        check_int(op.offset, "offset", minimum=0)

    # -- reads -------------------------------------------------------------------------------------

    async def _read(self, op: Op, refresh: dict[str, MemoryRecord]) -> Result:
        if isinstance(op, GetOp):
            return await self._get(op, refresh)
        if isinstance(op, SearchOp):
            return await self._search(op, refresh)
        assert isinstance(op, ListNamespacesOp)
        return await self._list_namespaces(op)

    def _refresh(self, record: MemoryRecord, wanted: bool, refresh: dict[str, MemoryRecord]) -> None:
        """Queue a rewrite that restarts the record's ttl (the stored value and timestamps kept)."""
        if wanted and record.ttl is not None and math.isfinite(record.ttl):
            refresh[record.id] = record

    async def _get(self, op: GetOp, refresh: dict[str, MemoryRecord]) -> Item | None:
        id = item_id(tuple(op.namespace), op.key)
        record = await self.memory.get(id, namespace=self.namespace)
        if record is None:
            return None
        try:
            item = _decode(record)
        except _Damaged as exc:
            raise CorruptRecordError(
                f"the stored item {op.key!r} of {tuple(op.namespace)!r} (record {id!r} in namespace "
                f"{self.namespace!r}) cannot be read: {exc}; move it aside with `memory-primitives repair` "
                "or delete it",
                key=f"{self.namespace}/{id}",
                reason=str(exc),
            ) from None
        if item.namespace != tuple(op.namespace) or item.key != op.key:  # pragma: no cover - hash collision
            return None
        self._refresh(record, op.refresh_ttl, refresh)
        return item

    def _accept(self, record: MemoryRecord, prefix: tuple[str, ...], operation: str) -> Item | None:
        """The item of a listed or ranked record, or ``None`` (reported) for a damaged one."""
        try:
            item = _decode(record)
        except _Damaged as exc:
            report_corrupt(self.memory.backend_name, operation, f"{self.namespace}/{record.id}", str(exc))
            return None
        if item.namespace[: len(prefix)] != prefix:
            report_corrupt(self.memory.backend_name, operation, f"{self.namespace}/{record.id}",
                           "its topics do not match its namespace")
            return None
        return item

    async def _scan(self, prefix: tuple[str, ...], operation: str) -> list[_Stored]:
        """Every intact item under ``prefix``: keyword searches for :data:`LISTING_TERM` within
        the prefix's topic, the ``created_at`` range split while a page comes back full."""
        tag = topic(prefix)
        out: list[_Stored] = []
        windows: list[tuple[datetime | None, datetime | None]] = [(None, None)]
        while windows:
            low, high = windows.pop()
            span = {k: v for k, v in (("gte", low), ("lt", high)) if v is not None} or None
            result = await self.memory.search(
                LISTING_TERM, namespace=self.namespace, topics=[tag], limit=self._page, mode="keyword",
                created_at=span,
            )
            if len(result.hits) >= self._page:
                windows.extend(split_window(low, high, [h.record.created_at for h in result.hits]))
                continue
            for hit in result.hits:
                item = self._accept(hit.record, prefix, operation)
                if item is not None:
                    out.append(_Stored(item, hit.record))
        return out

    async def _search(self, op: SearchOp, refresh: dict[str, MemoryRecord]) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        need = op.offset + op.limit
        if op.limit == 0:
            return []
        wanted = op.filter or {}
        found: list[tuple[_Stored, float | None]] = []
        seen: set[str] = set()
        if op.query is not None and op.query.strip():
            fetch = min(MAX_LIMIT, need)
            while True:
                result = await self.memory.search(
                    op.query, namespace=self.namespace, topics=[topic(prefix)], limit=fetch, mode=self.mode
                )
                found, seen = [], set()
                for hit in result.hits:
                    item = self._accept(hit.record, prefix, "langgraph search")
                    if item is not None and matches(item.value, wanted):
                        found.append((_Stored(item, hit.record), hit.score))
                        seen.add(hit.record.id)
                if len(found) >= need or len(result.hits) < fetch or fetch >= MAX_LIMIT:
                    break
                fetch = min(MAX_LIMIT, fetch * 4)
        if len(found) < need:
            rest = [s for s in await self._scan(prefix, "langgraph search")
                    if s.record.id not in seen and matches(s.item.value, wanted)]
            rest.sort(key=lambda s: (-s.item.updated_at.timestamp(), s.item.namespace, s.item.key))
            found += [(s, None) for s in rest]
        page = found[op.offset:need]
        for stored, _ in page:
            self._refresh(stored.record, op.refresh_ttl, refresh)
        return [
            SearchItem(
                namespace=s.item.namespace, key=s.item.key, value=s.item.value,
                created_at=s.item.created_at, updated_at=s.item.updated_at, score=score,
            )
            for s, score in page
        ]

    async def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = list(op.match_conditions or ())
        literal: tuple[str, ...] = ()
        for condition in conditions:
            if condition.match_type == "prefix":
                path = tuple(condition.path)
                cut = path.index("*") if "*" in path else len(path)
                if cut > len(literal):
                    literal = path[:cut]
        namespaces = {s.item.namespace for s in await self._scan(literal, "langgraph list_namespaces")}
        kept = [
            ns for ns in namespaces
            if all(path_matches(ns, tuple(c.path), c.match_type == "suffix") for c in conditions)
        ]
        if op.max_depth is not None:
            kept = list({ns[: op.max_depth] for ns in kept})
        kept.sort()
        return kept[op.offset: op.offset + op.limit]

    # -- lifecycle ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the sync bridge's thread (if one was started) and close the memory when this store
        made it (``memory=None``)."""
        self._bridge.close()
        if self._owns_memory:
            await self.memory.aclose()

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

