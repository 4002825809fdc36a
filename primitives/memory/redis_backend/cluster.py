"""The Redis backend on a Redis Cluster: records sharded by tenant, one index per tenant.

Sharding: the tenant is the **namespace** (the seam's hard partition, the field every call
names). Every key of one namespace carries ``{quote(namespace)}`` as its hash tag
(:class:`~primitives.memory.redis_backend.keys.KeyLayout` with ``cluster=True``), so a tenant's
records, working memory, skills and change bookkeeping live in one hash slot, on one node, and
every Lua write and ``MULTI`` touches one slot only. (Sharding per user would split a namespace
over nodes, so every namespace search would fan out.)

Indexes: one per tenant, ``{index}:{quote(ns)}`` over ``{prefix}rec:{quote(ns)}:``, in the
tenant's slot (:meth:`ClusterIndexes.name_for`), created on the namespace's first write. Not one
per node, because of what RediSearch does in a cluster without its coordinator (measured on
RediSearch 2.10.5 in Redis 8.2.3, 3 masters): it indexes only its own node's keys, it treats the
index name as the command's key (``FT.CREATE idx`` on a node that does not own ``idx``'s slot
answers ``MOVED``), and ``FT.SEARCH`` returns the *fields* only of documents in the index name's
own slot: a per-node index over many slots gave every hit's key with no fields (``RETURN`` and
``FT.AGGREGATE ... LOAD`` alike), while an index whose name shares the documents' hash tag
returned them whole. A per-tenant index has that property by construction.

Routing: a search whose filter names one namespace is one ``FT.SEARCH`` on that tenant's index,
on the tenant's node: the single-Redis search exactly. Several namespaces, or none (every
tenant in the set ``{prefix}tenants``), fan out: the first page of every tenant's index in one
cluster pipeline (one round trip per node, the nodes in parallel), merged (:func:`search`). What
merged scores mean: keyword scores are RediSearch's BM25 (``BM25STD``) over each tenant's own
term statistics (document frequencies and average length of that tenant's records), so within
a tenant they are what a single store of that tenant would give, and no tenant's data moves
another's scores; across tenants they are comparable only roughly, and hits are merged by raw
score (ties: most recently written first). Vector scores (cosine similarity) are exact and merge
exactly. A hybrid fan-out merges each ranking over tenants first, then fuses once
(:func:`~primitives.memory.embedding.fuse`), as one index does.

Topology changes: an index is not a key and does not move with its slot. After a failover the
promoted replica has the index (``FT.CREATE`` is replicated) and the same slots. When a tenant's
slot moves (resharding, a node added), its keys move (``MIGRATE``) but its index stays behind:
the next search on the new node finds no index (``Unknown index``), creates it there (RediSearch
indexes the moved keys in the background) and runs once more; the old node keeps an empty index.
A namespace never written is never given an index by a read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from redis import exceptions as redis_errors

from primitives.errors import ConfigurationError, QueryEngineUnavailableError
from primitives.memory.changes import ChangeEntry, position_key
from primitives.memory.embedding import HYBRID_CANDIDATES, fuse
from primitives.memory.record import SearchHit
from primitives.memory.redis_backend import changes, maintenance
from primitives.memory.redis_backend.keys import KeyLayout, tenant_tag
from primitives.memory.redis_backend.query import render_query
from primitives.memory.redis_backend.schema import IndexSpec
from primitives.memory.redis_backend.search import Ranking, Searcher
from primitives.redis_connection import initialize_cluster

__all__ = ["ClusterIndexes", "check_cluster_names", "count", "missing_index", "read_changes", "search"]

_MISSING_INDEX = ("unknown index", "no such index")
#: Most per-tenant commands in flight at once in a fan-out (index maintenance, changes).
_IN_FLIGHT = 64
#: Most per-tenant searches in one cluster pipeline.
_PIPELINE = 512


def check_cluster_names(prefix: str, index_name: str) -> None:
    """Refuse a prefix or index name holding a hash-tag brace on a cluster (every tenant would
    share the prefix's tag, or the index name could not be placed on each node).

    Raises:
        ConfigurationError: it holds ``{`` or ``}``.
    """
    for what, value in (("prefix", prefix), ("index_name", index_name)):
        if "{" in value or "}" in value:
            raise ConfigurationError(
                f"{what} {value!r} holds a hash-tag brace; on a Redis Cluster the namespace is "
                "each key's hash tag, so the prefix and index name may not contain '{' or '}'"
            )


def missing_index(exc: Exception) -> bool:
    """``exc`` says an index does not exist on the node that answered."""
    return isinstance(exc, redis_errors.ResponseError) and any(t in str(exc).lower() for t in _MISSING_INDEX)


class Routed:
    """A cluster client whose commands all go to the primary holding ``key``'s hash slot,
    named explicitly (redis-py's ``target_nodes``), with the ``execute_command`` and
    ``pipeline`` a :class:`~primitives.memory.redis_backend.search.Searcher` uses.

    Why not let redis-py route ``FT.*`` by their key: redis-py 8.1's asyncio ``RedisCluster``
    resolves a module command's key through its command table and, measured here, concurrent
    ``FT.SEARCH`` calls routed that way fail with ``AttributeError: 'NoneType' object has no
    attribute 'writelines'`` (30 at once, every time), while the same calls with
    ``target_nodes`` never did. A command goes straight to the node's connection pool
    (``ClusterNode.execute_command``: none of the cluster client's per-command bookkeeping);
    on ``MOVED``/``ASK`` (the slot moved) or a lost connection it is sent once more through the
    cluster client, which refreshes its slot map and follows the redirect.
    """

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.key = key

    def node(self) -> Any:
        """The primary holding ``key``'s slot, by the client's current slot map."""
        return self.client.get_node_from_key(self.key)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        node = self.node()
        try:
            return await node.execute_command(*args, **kwargs)
        except (redis_errors.MovedError, redis_errors.AskError, redis_errors.ConnectionError, redis_errors.TimeoutError):
            return await self.client.execute_command(*args, target_nodes=self.node(), **kwargs)

    def pipeline(self, transaction: bool = False) -> _RoutedPipeline:
        return _RoutedPipeline(self.client.pipeline(transaction=transaction), self.node())


class _RoutedPipeline:
    def __init__(self, pipe: Any, node: Any) -> None:
        self.pipe = pipe
        self.target = node

    async def __aenter__(self) -> _RoutedPipeline:
        await self.pipe.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.pipe.__aexit__(*exc)

    def execute_command(self, *args: Any, **kwargs: Any) -> _RoutedPipeline:
        self.pipe.execute_command(*args, target_nodes=self.target, **kwargs)
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await self.pipe.execute(raise_on_error=raise_on_error)  # type: ignore[no-any-return]


class ClusterIndexes:
    """The per-tenant indexes of one store on a Redis Cluster and the searchers using them.

    Args:
        client: A redis-py ``RedisCluster`` (asyncio, ``decode_responses=False``, RESP2).
        spec: The store's index; its ``name`` is the base of each tenant's index name.
        layout: The store's cluster key layout.
        searcher: Makes the :class:`~primitives.memory.redis_backend.search.Searcher` of one
            index name on a client (``searcher(name, client)``; a :class:`Routed` one here).
    """

    def __init__(self, client: Any, spec: IndexSpec, layout: KeyLayout, searcher: Callable[[str, Any], Searcher]) -> None:
        self.client = client
        self.spec = spec
        self.layout = layout
        self._make_searcher = searcher
        self._searchers: dict[str, Searcher] = {}
        self._known: set[str] = set()  # tenants whose index this process created or checked
        self.check: Callable[[IndexSpec, dict[str, Any]], None] = lambda spec, info: None

    def name_for(self, namespace: str) -> str:
        """The index of ``namespace``: ``{index}:{quote(ns)}`` (the tenant's hash tag, so it
        lives in the tenant's slot, on the tenant's node)."""
        return f"{self.spec.name}:{tenant_tag(namespace)}"

    def spec_for(self, namespace: str) -> IndexSpec:
        """``spec`` under :meth:`name_for`, covering the tenant's record keys only
        (``{prefix}rec:{quote(ns)}:``)."""
        return replace(self.spec, name=self.name_for(namespace), prefix=self.layout.record(namespace, ""))

    def primaries(self) -> list[Any]:
        """The cluster's primaries, by name."""
        return sorted(self.client.get_primaries(), key=lambda n: n.name)

    def node_of(self, namespace: str) -> Any:
        """The primary holding ``namespace``'s hash slot."""
        return self.client.get_node_from_key(self.layout.tenant_key(namespace))

    async def tenants(self) -> list[str]:
        """Every namespace written (the set ``{prefix}tenants``), sorted."""
        return sorted(t.decode("utf-8", "replace") for t in await self.client.smembers(self.layout.tenants()))

    def searcher(self, namespace: str) -> Searcher:
        """The searcher of ``namespace``'s index."""
        name = self.name_for(namespace)
        found = self._searchers.get(name)
        if found is None:
            if len(self._searchers) > 4096:
                self._searchers.clear()
            found = self._searchers[name] = self._make_searcher(name, self.routed(namespace))
        return found

    def routed(self, namespace: str) -> Routed:
        """The client sending each command to ``namespace``'s node."""
        return Routed(self.client, self.layout.tenant_key(namespace))

    async def probe(self) -> None:
        """Probe the Query Engine on every primary (``FT._LIST``).

        Raises:
            QueryEngineUnavailableError: a primary has no Query Engine.
        """
        await initialize_cluster(self.client)
        for node in self.primaries():
            try:
                await self.client.execute_command("FT._LIST", target_nodes=node)
            except redis_errors.ResponseError as exc:
                if "unknown command" in str(exc).lower():
                    raise QueryEngineUnavailableError(
                        f"cluster node {node.name} has no Query Engine (FT.* commands are unknown); "
                        "every primary needs it (Redis 8 with the Query Engine, or the redisearch "
                        "module loaded on each node)"
                    ) from exc
                raise

    async def ensure(self, namespaces: Sequence[str]) -> None:
        """Before a write: add new namespaces to the tenant set, create each one's index when
        missing, and check an existing one against ``spec`` (:attr:`check` raises on a
        mismatch). Once per namespace per process.

        Raises:
            IndexSchemaMismatchError, DimensionMismatchError: from :attr:`check`.
            ConfigurationError: a node refused ``FT.CREATE``.
        """
        new = sorted(set(namespaces) - self._known)
        if not new:
            return
        await self.client.sadd(self.layout.tenants(), *new)
        for ns in new:
            spec = self.spec_for(ns)
            info = await maintenance.index_info(self.routed(ns), spec.name)
            if info is None:
                await maintenance.create_index(self.routed(ns), spec)
            else:
                self.check(spec, info)
            self._known.add(ns)

    async def on(self, namespace: str, run: Callable[[Searcher], Awaitable[Any]], empty: Any) -> Any:
        """``run`` on ``namespace``'s searcher. A missing index (never written, or the slot
        moved to a node without it) gives ``empty`` for a namespace never written, else the
        index is created there and ``run`` tried once more."""
        try:
            return await run(self.searcher(namespace))
        except redis_errors.ResponseError as exc:
            if not missing_index(exc):
                raise
        if not await self.client.sismember(self.layout.tenants(), namespace):
            return empty
        self._known.discard(namespace)
        await self.ensure([namespace])
        return await run(self.searcher(namespace))

    async def _each_tenant(self, run: Callable[[str], Awaitable[Any]], tenants: list[str] | None = None) -> list[Any]:
        out: list[Any] = []
        tenants = await self.tenants() if tenants is None else tenants
        for start in range(0, len(tenants), _IN_FLIGHT):
            out += await asyncio.gather(*(run(ns) for ns in tenants[start:start + _IN_FLIGHT]))
        return out

    async def drop(self) -> None:
        """``FT.DROPINDEX ... DD`` of every tenant's index (with the records it indexes)."""
        async def one(ns: str) -> None:
            routed = self.routed(ns)
            if await maintenance.index_info(routed, self.name_for(ns)) is not None:
                await _dropindex(routed, self.name_for(ns), "DD")
        await self._each_tenant(one)
        self._known.clear()

    async def drop_indexes(self) -> None:
        """``FT.DROPINDEX`` of every tenant's index, records kept (``index migrate``)."""
        async def one(ns: str) -> None:
            routed = self.routed(ns)
            if await maintenance.index_info(routed, self.name_for(ns)) is not None:
                await _dropindex(routed, self.name_for(ns))
        await self._each_tenant(one)
        self._known.clear()

    async def create_all(self) -> None:
        """Create every tenant's index (``index migrate``, after :meth:`drop_indexes`)."""
        async def one(ns: str) -> None:
            await maintenance.create_index(self.routed(ns), self.spec_for(ns))
        await self._each_tenant(one)

    async def spread(self) -> dict[str, dict[str, int]]:
        """Records (each tenant index's ``num_docs``) and tenants per primary, by node name."""
        out = {n.name: {"records": 0, "tenants": 0} for n in self.primaries()}
        for ns, info in (await self.infos()).items():
            node = out.setdefault(self.node_of(ns).name, {"records": 0, "tenants": 0})
            node["records"] += int((info or {}).get("num_docs", 0))
            node["tenants"] += 1
        return out

    async def infos(self) -> dict[str, dict[str, Any] | None]:
        """``FT.INFO`` of each tenant's index by namespace (``None``: missing)."""
        tenants = await self.tenants()
        found = await self._each_tenant(lambda ns: maintenance.index_info(self.routed(ns), self.name_for(ns)), tenants)
        return dict(zip(tenants, found))


async def _dropindex(client: Routed, *args: str) -> None:
    try:
        await client.execute_command("FT.DROPINDEX", *args)
    except redis_errors.ResponseError as exc:
        if not missing_index(exc):  # dropped meanwhile (or by the first try of a resent command)
            raise


def _merged(rankings: Sequence[Ranking], depth: int, *, keyword: bool) -> Ranking:
    hits = [h for r in rankings for h in r.hits]
    if keyword:  # as one index orders them: equal scores, the most recently written first
        hits.sort(key=lambda h: (h.score, h.record.updated_at), reverse=True)
    else:
        hits.sort(key=lambda h: h.score, reverse=True)
    damaged: dict[str, str] = {}
    for r in rankings:
        damaged.update(r.damaged)
    return Ranking(hits[:depth], damaged)


async def _over(indexes: ClusterIndexes, namespaces: Sequence[str], first: Callable[[Searcher], list[Any]],
                finish: Callable[[Searcher, Any], Awaitable[Any]], empty: Any) -> list[Any]:
    """``finish(searcher, reply)`` for each namespace, where ``reply`` answers the command
    ``first(searcher)``; the first commands of every namespace go out in one cluster pipeline
    (one round trip per node, the nodes in parallel), up to :data:`_PIPELINE` at a time. A
    namespace whose index is missing goes through :meth:`ClusterIndexes.on` (``finish(s,
    None)``: the searcher fetches itself)."""
    out: list[Any] = []
    for start in range(0, len(namespaces), _PIPELINE):
        part = namespaces[start:start + _PIPELINE]
        searchers = [indexes.searcher(ns) for ns in part]
        async with indexes.client.pipeline(transaction=False) as pipe:
            for ns, searcher in zip(part, searchers):
                pipe.execute_command(*first(searcher), target_nodes=indexes.routed(ns).node())
            replies = await pipe.execute(raise_on_error=False)
        for ns, searcher, reply in zip(part, searchers, replies):
            if isinstance(reply, Exception):
                if not missing_index(reply):
                    raise reply
                out.append(await indexes.on(ns, lambda s: finish(s, None), empty))
            else:
                out.append(await finish(searcher, reply))
    return out


async def _keyword(indexes: ClusterIndexes, namespaces: Sequence[str], words: Sequence[str],
                   tag_filter: Mapping[str, Sequence[str]], depth: int) -> Ranking:
    rankings = await _over(indexes, namespaces, lambda s: s.keyword_args(words, tag_filter, 0, depth),
                           lambda s, raw: s.keyword(words, tag_filter, depth, first=raw), Ranking([]))
    return _merged(rankings, depth, keyword=True)


async def _knn(indexes: ClusterIndexes, namespaces: Sequence[str], vector: bytes,
               tag_filter: Mapping[str, Sequence[str]], depth: int) -> Ranking:
    rankings = await _over(indexes, namespaces, lambda s: s.knn_args(vector, tag_filter, 0, depth),
                           lambda s, raw: s.knn(vector, tag_filter, depth, first=raw), Ranking([]))
    return _merged(rankings, depth, keyword=False)


async def search(
    indexes: ClusterIndexes, mode: str, words: Sequence[str], vector: bytes | None,
    tag_filter: Mapping[str, Sequence[str]], limit: int,
) -> Ranking:
    """A search on the index of each namespace the filter names, or of every tenant when it
    names none (see the module docstring for what merged scores mean). One namespace: exactly
    the single-Redis search, one round trip to the tenant's node."""
    namespaces = list(tag_filter.get("namespace") or await indexes.tenants())
    if not namespaces:
        return Ranking([])
    if len(namespaces) == 1:
        if mode == "keyword":
            return await indexes.on(namespaces[0], lambda s: s.keyword(words, tag_filter, limit), Ranking([]))
        assert vector is not None
        if mode == "vector":
            return await indexes.on(namespaces[0], lambda s: s.knn(vector, tag_filter, limit), Ranking([]))
        return await indexes.on(namespaces[0], lambda s: s.hybrid(words, vector, tag_filter, limit), Ranking([]))
    if mode == "keyword":
        return await _keyword(indexes, namespaces, words, tag_filter, limit)
    assert vector is not None
    if mode == "vector":
        return await _knn(indexes, namespaces, vector, tag_filter, limit)
    depth = max(limit, HYBRID_CANDIDATES)
    knn = await _knn(indexes, namespaces, vector, tag_filter, depth)
    keyword = await _keyword(indexes, namespaces, words, tag_filter, depth) if words else Ranking([])
    record_of = indexes.searcher(namespaces[0]).record_of
    unusable = {record_of(k) for k in knn.damaged} if record_of is not None else set()
    keyword_hits = [h for h in keyword.hits if (h.record.namespace, h.record.id) not in unusable]
    records = {(h.record.namespace, h.record.id): h.record for h in (*keyword_hits, *knn.hits)}
    fused = fuse([((h.record.namespace, h.record.id), h.score) for h in keyword_hits],  # type: ignore[misc]
                 [((h.record.namespace, h.record.id), h.score) for h in knn.hits], limit=limit)
    return Ranking([SearchHit(records[k], score) for k, score in fused], {**keyword.damaged, **knn.damaged})


async def count(indexes: ClusterIndexes, tag_filter: Mapping[str, Sequence[str]]) -> int:
    """Records matching ``tag_filter``: the sum over the indexes of the namespaces it names (or
    of every tenant); each record is in exactly one tenant's index, so the sum is exact."""
    query = render_query([], tag_filter)

    def args(searcher: Searcher) -> list[Any]:
        return ["FT.SEARCH", searcher.index, query, "LIMIT", "0", "0", "DIALECT", "2"]

    async def total(searcher: Searcher, raw: Any) -> int:
        if raw is None:
            raw = await searcher.client.execute_command(*args(searcher))
        return int(raw[0])

    namespaces = list(tag_filter.get("namespace") or await indexes.tenants())
    return sum(await _over(indexes, namespaces, args, total, 0))


async def read_changes(
    client: Any, spec: IndexSpec, layout: KeyLayout, after: tuple[int, str, str] | None, limit: int, *, backend: str
) -> list[ChangeEntry]:
    """The first ``limit`` changes after ``after`` over every tenant: each namespace in the
    tenant set ``{prefix}tenants`` has its own change log and tombstones in its slot (read as on
    a single Redis, :func:`~primitives.memory.redis_backend.changes.read_changes`), merged by
    position. O(tenants) reads per page. Positions come from each node's clock (``TIME`` in the
    write script), so the order across nodes is as good as their clock sync: keep the nodes on
    NTP, and let an export re-read a window as wide as the skew."""
    tenants = sorted(t.decode("utf-8", "replace") for t in await client.smembers(layout.tenants()))  # type: ignore[union-attr]

    async def one(ns: str) -> list[ChangeEntry]:
        return await changes.read_changes(client, spec, layout.change_log(ns), layout.tombstones(ns),
                                          layout.deleted_at(ns), after, limit, backend=backend)

    merged: list[ChangeEntry] = []
    for start in range(0, len(tenants), _IN_FLIGHT):
        for part in await asyncio.gather(*(one(ns) for ns in tenants[start:start + _IN_FLIGHT])):
            merged += part
    merged.sort(key=lambda e: position_key(e.position))
    return merged[:limit]
