"""``bench sync``: export Redis -> DuckDB and import back, full and incremental.

Workload (deterministic for a seed): records of 30 pseudo-words over 50 users and 5 namespaces,
written with ``RedisBackend.add`` in batches of 1,000 under throw-away prefixes of one Redis.

Measured, each in one run on the same server:

- ``full_export``: every record of a ``memories``-record store to an empty DuckDB file, without
  vectors and (``--dims``) with a random float32 vector per record; records/s.
- ``import``: the exported rows back into an empty store (another prefix); records/s.
- ``incremental``: 1,000 records updated after a full export, then read (a dry run: the store's
  side alone) and exported, in a store of ``small`` and one of ``large`` records, side by side.
  The store's side is O(changes) (``read_seconds`` should not grow with the store); the export
  also updates 1,000 rows of a target table as large as the store.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from primitives.evaluation.bench import make_vocabulary
from primitives.memory.datasync import StoreSource
from primitives.memory.record import MemoryRecord
from primitives.memory.redis_backend import RedisBackend
from primitives.sync.duckdb_target import DuckDBWarehouse
from primitives.sync.engine import export_changes, import_changes

__all__ = ["run_sync_bench"]

_BATCH = 1_000


async def _fill(backend: RedisBackend, n: int, rng: random.Random, vocabulary: list[str], dims: int | None) -> None:
    for start in range(0, n, _BATCH):
        batch = []
        for i in range(start, min(n, start + _BATCH)):
            vector = tuple(rng.uniform(-1, 1) for _ in range(dims)) if dims else None
            batch.append(MemoryRecord(
                text=" ".join(rng.choices(vocabulary, k=30)), id=f"m{i}", user_id=f"user-{i % 50}",
                namespace=f"ns-{i % 5}", topics=("bench",), metadata={"i": i}, embedding=vector,
            ))
        await backend.add(batch)


async def _export(url: str, prefix: str, path: Path, n: int, dims: int | None, seed: int, batch_size: int) -> dict[str, Any]:
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, 20_000)
    source = RedisBackend(url, prefix=prefix)
    try:
        await source.drop()
        await _fill(source, n, rng, vocabulary, dims)
        async with DuckDBWarehouse(path, vectors=bool(dims)) as target:
            t0 = time.perf_counter()
            report = await export_changes(StoreSource(source), target, batch_size=batch_size)
            seconds = time.perf_counter() - t0
        return {"records": report.read, "seconds": round(seconds, 3), "records_per_s": round(report.read / seconds, 1)}
    finally:
        await source.drop()
        await source.aclose()


async def _round_trip(url: str, prefix: str, path: Path, n: int, seed: int, batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, 20_000)
    source = RedisBackend(url, prefix=prefix + "src:")
    sink = RedisBackend(url, prefix=prefix + "dst:")
    try:
        await source.drop()
        await sink.drop()
        await _fill(source, n, rng, vocabulary, None)
        async with DuckDBWarehouse(path, vectors=False) as target:
            t0 = time.perf_counter()
            exported = await export_changes(StoreSource(source), target, batch_size=batch_size)
            t1 = time.perf_counter()
            imported = await import_changes(target, StoreSource(sink), batch_size=batch_size)
            t2 = time.perf_counter()
        assert imported.written == n, imported
        export = {"records": exported.read, "seconds": round(t1 - t0, 3), "records_per_s": round(exported.read / (t1 - t0), 1)}
        back = {"records": imported.written, "seconds": round(t2 - t1, 3), "records_per_s": round(imported.written / (t2 - t1), 1)}
        return export, back
    finally:
        for b in (source, sink):
            await b.drop()
            await b.aclose()


async def _incremental(url: str, prefix: str, path: Path, n: int, changes: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, 20_000)
    source = RedisBackend(url, prefix=prefix)
    try:
        await source.drop()
        await _fill(source, n, rng, vocabulary, None)
        async with DuckDBWarehouse(path, vectors=False) as target:
            store = StoreSource(source)
            await export_changes(store, target, batch_size=5_000)
            ids = rng.sample(range(n), changes)
            await source.add([
                MemoryRecord(text=" ".join(rng.choices(vocabulary, k=30)), id=f"m{i}", user_id=f"user-{i % 50}", namespace=f"ns-{i % 5}")
                for i in ids
            ])
            t0 = time.perf_counter()
            dry = await export_changes(store, target, batch_size=5_000, dry_run=True)
            t1 = time.perf_counter()
            report = await export_changes(store, target, batch_size=5_000)
            t2 = time.perf_counter()
        assert dry.read == report.read == changes, report
        return {"store_records": n, "changes": changes, "read_seconds": round(t1 - t0, 4), "seconds": round(t2 - t1, 4)}
    finally:
        await source.drop()
        await source.aclose()


async def run_sync_bench(
    url: str, *, memories: int = 100_000, dims: int = 384, small: int = 10_000, large: int = 500_000,
    changes: int = 1_000, batch_size: int = 5_000, seed: int = 0,
) -> dict[str, Any]:
    """Run the workload on the Redis at ``url`` (prefixes ``bench-sync-*:``, dropped after).

    Returns:
        ``full_export`` (records, seconds, records_per_s), ``full_export_vectors`` (the same
        with ``dims``-d vectors, when ``dims``), ``import`` (records, seconds, records_per_s),
        ``incremental`` (``small`` and ``large``: store_records, changes, read_seconds, seconds),
        ``incremental_ratio`` and ``incremental_read_ratio`` (large / small).
    """
    report: dict[str, Any] = {"memories": memories, "batch_size": batch_size}
    with tempfile.TemporaryDirectory(prefix="memory-primitives-bench-sync-") as tmp:
        base = Path(tmp)
        export, back = await _round_trip(url, "bench-sync-rt:", base / "rt.duckdb", memories, seed, batch_size)
        report["full_export"] = export
        report["import"] = back
        if dims:
            report["full_export_vectors"] = {"dims": dims, **await _export(url, "bench-sync-vec:", base / "vec.duckdb", memories, dims, seed, batch_size)}
        report["incremental"] = {
            "small": await _incremental(url, "bench-sync-small:", base / "small.duckdb", small, changes, seed),
            "large": await _incremental(url, "bench-sync-large:", base / "large.duckdb", large, changes, seed),
        }
        inc = report["incremental"]
        report["incremental_ratio"] = round(inc["large"]["seconds"] / max(inc["small"]["seconds"], 1e-9), 3)
        report["incremental_read_ratio"] = round(inc["large"]["read_seconds"] / max(inc["small"]["read_seconds"], 1e-9), 3)
    return report


def main_sync(url: str, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(run_sync_bench(url, **kwargs))
