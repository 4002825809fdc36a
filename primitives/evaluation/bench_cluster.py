"""``bench cluster``: the Redis backend sharded by tenant on a Redis Cluster, side by side with
the same backend on one Redis, in one run on the same data.

Workload: ``memories`` synthetic records (the ``bench inmemory`` vocabulary, 30 words each) spread
round-robin over ``tenants`` namespaces, written in batches of 1,000 to both stores. Reported:
how the records spread over the cluster's primaries (records per node, from each tenant's index),
ingest rate on each store, and search latency measured call by call, interleaved (one search on
the single Redis, the same on the cluster, ...): a **tenant search** (namespace filter: one
``FT.SEARCH`` on the tenant's node) and a **cross-tenant search** (no namespace filter: one
``FT.SEARCH`` on the single Redis, one per tenant index on the cluster, merged). Ratios are of
medians (cluster / single). ``load_avg_1m`` at the start and end says how busy the machine was.

By default both servers are started locally for the run: the same Redis 8.2 binary with the
Query Engine modules, a 3-master cluster (:class:`~primitives.tooling.localcluster.LocalRedisCluster`)
and one server (:class:`~primitives.tooling.localredis.LocalRedis`), on loopback, no persistence.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from typing import Any

from primitives.evaluation.bench import WORDS_PER_TEXT, make_vocabulary
from primitives.evaluation.locomo import percentile
from primitives.memory.record import MemoryRecord
from primitives.memory.redis_backend import RedisBackend

__all__ = ["run_cluster_bench", "run_local_cluster_bench"]

_BATCH = 1000


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50) * 1000, 3), "p99": round(percentile(values, 99) * 1000, 3)}


async def _ingest(backend: RedisBackend, records: list[MemoryRecord]) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(records), _BATCH):
        await backend.add(records[start:start + _BATCH])
    return len(records) / (time.perf_counter() - t0)


async def run_cluster_bench(single_url: str, cluster_url: str, *, memories: int = 30_000, tenants: int = 30,
                            queries: int = 500, seed: int = 0) -> dict[str, Any]:
    """Run the workload on ``single_url`` (one Redis) and ``cluster_url`` (a node of a Redis
    Cluster), both with the Query Engine, under a throw-away prefix dropped afterwards.

    Returns:
        ``memories``, ``tenants``, ``nodes`` (primaries), ``records_per_node`` (node -> records
        and tenants), ``ingest_per_s`` (``single`` / ``cluster``, records/s), ``tenant_search_ms``
        and ``cross_tenant_search_ms`` (``single`` / ``cluster`` p50 and p99, ``ratio_p50``
        cluster / single), ``hit_rate`` (tenant searches with a hit, per store),
        ``load_avg_1m`` (``start``, ``end``).
    """
    load_start = os.getloadavg()[0]
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, 5_000)
    namespaces = [f"tenant-{i:04d}" for i in range(tenants)]
    records = [MemoryRecord(text=" ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT)), id=f"m{i}",
                            namespace=namespaces[i % tenants]) for i in range(memories)]
    prefix = f"benchcluster{os.getpid()}:"
    single = RedisBackend(single_url, prefix=prefix, index_dates=False)
    cluster = RedisBackend(cluster_url, prefix=prefix, index_dates=False, cluster=True)
    try:
        ingest = {"single": await _ingest(single, records), "cluster": await _ingest(cluster, records)}
        spread = await cluster.cluster_spread()
        qs = []
        for i in range(queries):
            text = records[rng.randrange(memories)].text.split()
            qs.append((" ".join(rng.sample(text, 3)), namespaces[rng.randrange(tenants)]))
        tenant: dict[str, list[float]] = {"single": [], "cluster": []}
        hits = {"single": 0, "cluster": 0}
        for query, ns in qs:  # interleaved, call by call
            for name, backend in (("single", single), ("cluster", cluster)):
                t0 = time.perf_counter()
                result = await backend.search(query, filter={"namespace": ns}, limit=10, mode="keyword")
                tenant[name].append(time.perf_counter() - t0)
                hits[name] += bool(result.hits)
        cross: dict[str, list[float]] = {"single": [], "cluster": []}
        for query, _ in qs[: max(1, queries // 5)]:
            for name, backend in (("single", single), ("cluster", cluster)):
                t0 = time.perf_counter()
                await backend.search(query, limit=10, mode="keyword")
                cross[name].append(time.perf_counter() - t0)

        def summary(times: dict[str, list[float]]) -> dict[str, Any]:
            out: dict[str, Any] = {name: _ms(v) for name, v in times.items()}
            out["ratio_p50"] = round(out["cluster"]["p50"] / out["single"]["p50"], 3) if out["single"]["p50"] else None
            out["calls"] = len(times["single"])
            return out

        server = await cluster.server_info()
        return {
            "memories": memories,
            "tenants": tenants,
            "nodes": len(spread),
            "records_per_node": spread,
            "ingest_per_s": {k: round(v) for k, v in ingest.items()},
            "tenant_search_ms": summary(tenant),
            "cross_tenant_search_ms": summary(cross),
            "hit_rate": {k: round(v / len(qs), 3) for k, v in hits.items()},
            "redis_version": server.get("redis_version"),
            "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        }
    finally:
        for backend in (single, cluster):
            await backend.drop()
            await backend.aclose()


def run_local_cluster_bench(**kwargs: Any) -> dict[str, Any]:
    """:func:`run_cluster_bench` on a local 3-master cluster and a local single Redis (the same
    Redis 8.2 with the Query Engine), both started for the run and stopped afterwards."""
    import asyncio

    from primitives.tooling.localcluster import LocalRedisCluster
    from primitives.tooling.localredis import LocalRedis

    with tempfile.TemporaryDirectory(prefix="memory-primitives-bench-cluster-") as tmp:
        cluster = LocalRedisCluster(dir=f"{tmp}/cluster", modules=True)
        single = LocalRedis(dir=f"{tmp}/single", modules=True, persistent=False)
        cluster.start()
        try:
            single.start()
            try:
                report = asyncio.run(run_cluster_bench(single.url, cluster.url, **kwargs))
            finally:
                single.stop()
        finally:
            cluster.stop()
    report["server"] = "local Redis 8.2 + Query Engine: a 3-master cluster and one server, started for this run"
    return report
