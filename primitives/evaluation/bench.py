"""``bench inmemory``: add and search cost of the in-process backend on synthetic memories.

Workload (deterministic for a seed): ``memories`` records of 30 words drawn uniformly from a
20,000-word vocabulary of pseudo-words, spread over 50 users. Queries are natural-language-like:
a question frame ("what did I say about ... and ...?") around 2-3 words; half take their words from
a stored record (hits), half from words never stored (misses); half filter by a user.
"""

from __future__ import annotations

import gc
import os
import random
import resource
import time
from typing import Any

from primitives.core.context import WorkflowContext
from primitives.evaluation.locomo import percentile
from primitives.evaluation.naive import NaiveStore
from primitives.memory.backend import MemoryBackend
from primitives.memory.facade import Memory
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import MemoryRecord, Message
from primitives.memory.workflow import MemoryPrimitive, RememberPrimitive

__all__ = ["make_queries", "make_vocabulary", "rss_mb", "run_inmemory_bench", "time_searches"]

VOCABULARY_SIZE = 20_000
_ONE_RECORD_ADDS = 2_000
_OVERHEAD_BLOCKS = 5
WORDS_PER_TEXT = 30
USERS = 50
_FRAMES = (
    "what did I say about {} and {}?",
    "do you remember the {} with {} {}",
    "when was the last time we talked about {} {}?",
    "tell me everything about {} and {} from before",
)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def make_vocabulary(rng: random.Random, size: int, prefix: str = "") -> list[str]:
    """``size`` distinct pseudo-words of 4-10 letters (``prefix`` keeps two vocabularies apart)."""
    words: set[str] = set()
    while len(words) < size:
        words.add(prefix + "".join(rng.choices(_LETTERS, k=rng.randint(4, 10))))
    return sorted(words)


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux ``/proc/self/statm``; else peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_queries(
    rng: random.Random, sample: list[tuple[str, str]], unknown: list[str], n: int
) -> list[tuple[str, str | None]]:
    """``n`` (query, user filter or None) pairs: even ones built from a stored ``(text, user)``
    (filtered by that user, if at all, so they hit), odd ones from words never stored."""
    queries = []
    for i in range(n):
        frame = _FRAMES[i % len(_FRAMES)]
        slots = frame.count("{}")
        filtered = i % 4 < 2
        if i % 2 == 0:
            text, user = rng.choice(sample)
            words = rng.sample(text.split(), slots)
        else:
            words = rng.sample(unknown, slots)
            user = f"user-{rng.randrange(USERS)}"
        queries.append((frame.format(*words), user if filtered else None))
    return queries


async def time_searches(backend: MemoryBackend, qs: list[tuple[str, str | None]]) -> dict[str, Any]:
    """``search_ms`` (p50/p99 of ``backend.search(query, limit=10)`` with the user filter when
    given) and ``hit_rate`` (share of queries with at least one hit)."""
    latencies: list[float] = []
    hits = 0
    for text, user in qs:
        flt = {"user_id": user} if user else None
        t0 = time.perf_counter()
        result = await backend.search(text, filter=flt, limit=10)
        latencies.append(time.perf_counter() - t0)
        hits += bool(result.hits)
    return {
        "search_ms": {
            "p50": round(percentile(latencies, 50) * 1e3, 4),
            "p99": round(percentile(latencies, 99) * 1e3, 4),
        },
        "hit_rate": round(hits / len(qs), 3),
    }


async def run_inmemory_bench(
    memories: int,
    *,
    queries: int = 1000,
    baseline: bool = False,
    baseline_queries: int = 50,
    pipeline_runs: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the workload and return a JSON-ready report.

    Returns:
        ``memories``, ``add_us`` (mean µs per record, ``add()`` in batches of 1000, record
        construction included), ``add_cpu_us`` (the same in this process's CPU time: less
        sensitive to other processes on a shared machine), ``add_one_us`` (mean µs of a one-record ``add()`` call),
        ``search_ms`` (``{"p50", "p99"}`` over ``queries``), ``hit_rate`` (queries with at
        least one hit: about half are built to miss), ``rss_mb`` (resident memory added by the
        filled store), ``pipeline_overhead_us`` (``MemoryPrimitive >> RememberPrimitive``
        execute minus the same backend calls made directly, mean µs) and, with ``baseline``,
        ``baseline`` (the naive store's ``add_us``, ``search_ms``, ``hit_rate``, ``rss_mb``)
        and ``search_p50_speedup`` (naive p50 / ours).
    """
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    unknown = make_vocabulary(rng, 2_000, prefix="zq")
    gc.collect()
    rss_before = rss_mb()
    # room for the one-record adds timed below, so they evict none of the workload
    backend = InMemoryBackend(maxsize=memories + _ONE_RECORD_ADDS)
    sample: list[tuple[str, str]] = []
    batch: list[MemoryRecord] = []
    t_add = cpu_add = 0.0
    for i in range(memories):
        text = " ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT))
        if i % max(1, memories // 500) == 0:
            sample.append((text, f"user-{i % USERS}"))
        t0, c0 = time.perf_counter(), time.process_time()
        batch.append(MemoryRecord(text=text, user_id=f"user-{i % USERS}", id=f"m{i}"))
        if len(batch) == 1000 or i == memories - 1:
            await backend.add(batch)
            batch = []
        t_add += time.perf_counter() - t0
        cpu_add += time.process_time() - c0
    del batch
    gc.collect()
    rss_added = rss_mb() - rss_before
    report: dict[str, Any] = {
        "memories": memories,
        "add_us": round(t_add / max(memories, 1) * 1e6, 2),
        "add_cpu_us": round(cpu_add / max(memories, 1) * 1e6, 2),
    }
    one = [MemoryRecord(text=" ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT)), id=f"one{i}") for i in range(_ONE_RECORD_ADDS)]
    t0 = time.perf_counter()
    for record in one:
        await backend.add([record])
    report["add_one_us"] = round((time.perf_counter() - t0) / len(one) * 1e6, 2)
    await backend.delete([r.id for r in one])

    qs = make_queries(rng, sample, unknown, queries)
    report.update(await time_searches(backend, qs))
    report["rss_mb"] = round(rss_added, 1)
    report["pipeline_overhead_us"] = await _pipeline_overhead(pipeline_runs)

    if baseline:
        report["baseline"] = _naive_bench(memories, seed, baseline_queries)
        report["search_p50_speedup"] = round(
            report["baseline"]["search_ms"]["p50"] / max(report["search_ms"]["p50"], 1e-9), 1
        )
    await backend.aclose()
    return report


async def _pipeline_overhead(runs: int) -> float:
    """Mean µs a ``MemoryPrimitive >> RememberPrimitive`` execute costs over the same backend
    calls made directly, on a fresh store of 1,000 records.

    Each run asks about a word of its own, so every search matches only that run's memories and
    the store's growth does not drift the comparison; the pipeline and the direct calls alternate
    which goes first. The runs are split in blocks and the median block is reported, so one
    burst of load on a shared machine does not decide the figure.
    """
    backend = InMemoryBackend()
    await backend.add([MemoryRecord(text=f"background memory {i} about the weather") for i in range(1000)])
    memory = Memory(backend, single_user=True)  # the direct calls below search the whole namespace
    pipeline = MemoryPrimitive(memory) >> RememberPrimitive(memory)

    async def via_pipeline(query: str, session: str) -> None:
        await pipeline.execute({"query": query}, WorkflowContext(session_id=session))

    async def direct(query: str, session: str) -> None:
        await backend.get_messages(session, 20)
        await backend.search(query, filter={"namespace": "default"}, limit=5)
        last = await backend.get_messages(session, 1)
        meta: dict[str, Any] = {"role": "user"}
        if last:
            meta["context"] = last[0].content
        await backend.add([MemoryRecord(text=query, session_id=session, metadata=meta)])
        await backend.append_messages(session, [Message("user", query, metadata=meta)])

    blocks: list[float] = []
    per_block = max(1, runs // _OVERHEAD_BLOCKS)
    for block in range(_OVERHEAD_BLOCKS):
        totals = {via_pipeline: 0.0, direct: 0.0}
        for i in range(block * per_block, (block + 1) * per_block):
            order = (via_pipeline, direct) if i % 2 == 0 else (direct, via_pipeline)
            for j, step in enumerate(order):
                query = f"topic{i}x{j}?"
                t0 = time.perf_counter()
                await step(query, f"bench-{i % 100}")
                totals[step] += time.perf_counter() - t0
        blocks.append((totals[via_pipeline] - totals[direct]) / per_block * 1e6)
    await backend.aclose()
    return round(percentile(blocks, 50), 2)


def _naive_bench(memories: int, seed: int, n_queries: int) -> dict[str, Any]:
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    unknown = make_vocabulary(rng, 2_000, prefix="zq")
    gc.collect()
    rss_before = rss_mb()
    store = NaiveStore(maxsize=max(memories, 1))
    sample: list[tuple[str, str]] = []
    add_s = add_cpu_s = 0.0
    for i in range(memories):
        text = " ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT))
        if i % max(1, memories // 500) == 0:
            sample.append((text, f"user-{i % USERS}"))
        # timed as ours is: building the item and storing it, not generating the text
        t0, c0 = time.perf_counter(), time.process_time()
        store.add(f"m{i}", {"id": f"m{i}", "text": text, "user_id": f"user-{i % USERS}"})
        add_s += time.perf_counter() - t0
        add_cpu_s += time.process_time() - c0
    gc.collect()
    rss_added = rss_mb() - rss_before
    qs = make_queries(rng, sample, unknown, n_queries)
    lat = []
    hits = 0
    for text, _user in qs:
        t1 = time.perf_counter()
        found = store.search(text, limit=10)
        lat.append(time.perf_counter() - t1)
        hits += bool(found)
    return {
        "add_us": round(add_s / max(memories, 1) * 1e6, 2),
        "add_cpu_us": round(add_cpu_s / max(memories, 1) * 1e6, 2),
        "search_ms": {"p50": round(percentile(lat, 50) * 1e3, 3), "p99": round(percentile(lat, 99) * 1e3, 3)},
        "hit_rate": round(hits / len(qs), 3),
        "rss_mb": round(rss_added, 1),
        "queries": len(qs),
    }
