"""``bench redis``: the ``bench inmemory`` workload against a real Redis, side by side with the
same operations issued directly with redis-py.

Reported: batched ingest rate through ``Memory`` (resilient wrapper included, as
``Memory.from_env()`` builds it), through the bare ``RedisBackend``, and the same hashes written
with raw redis-py pipelines; search p50/p99 of ``RedisBackend.search``; and the cost of the
``MemoryPrimitive`` recall step over the identical ``FT.SEARCH`` issued with redis-py (ratio of
medians, query by query in one run, each query warmed once and the sides in a seeded random
order: :func:`_recall_ratio`; what each side does is reported under ``compared``).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from primitives.core.context import WorkflowContext
from primitives.evaluation.bench import (
    USERS,
    VOCABULARY_SIZE,
    WORDS_PER_TEXT,
    make_queries,
    make_vocabulary,
    time_searches,
)
from primitives.evaluation.locomo import percentile
from primitives.memory.backend import normalize_filter
from primitives.memory.facade import Memory
from primitives.memory.resilient.outbox import Outbox
from primitives.memory.record import MemoryRecord
from primitives.memory.redis_backend import RedisBackend
from primitives.memory.redis_backend.codec import RETURN_FIELDS
from primitives.memory.redis_backend.query import query_terms
from primitives.memory.redis_backend.schema import encode_tag
from primitives.memory.redis_backend.search import Searcher
from primitives.memory.resilient import ResilientBackend
from primitives.memory.workflow import MemoryPrimitive

__all__ = ["run_redis_bench"]

_BATCH = 1000


async def run_redis_bench(url: str, memories: int, *, queries: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Run the workload against ``url`` under throw-away key prefixes (deleted afterwards).

    Returns:
        ``memories``, ``ingest_per_s`` (records/s through ``Memory.add`` with the resilient
        wrapper, batches of 1,000), ``ingest_per_s_backend`` (bare ``RedisBackend.add``),
        ``ingest_per_s_redis_py`` (the same hashes with raw pipelined ``HSET``), ``search_ms``
        (p50/p99 of ``RedisBackend.search``), ``hit_rate``, the recall-step comparison of
        :func:`_recall_ratio` (``recall_step_ratio``: recall step / the same raw ``FT.SEARCH``,
        strings back; what each side does is in ``compared``), and ``load_avg_1m`` (the 1-minute
        load average at the start and at the end: the machine's noise).
    """
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    unknown = make_vocabulary(rng, 2_000, prefix="zq")
    texts = [" ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT)) for _ in range(memories)]
    users = [f"user-{i % USERS}" for i in range(memories)]
    report: dict[str, Any] = {"memories": memories}
    load_start = os.getloadavg()[0]
    run = f"bench-{rng.getrandbits(32):08x}"
    with tempfile.TemporaryDirectory() as tmp:
        wrapped = ResilientBackend(RedisBackend(url, prefix=f"{run}w:"), outbox=Outbox(Path(tmp) / "o.sqlite3"))
        bare = RedisBackend(url, prefix=f"{run}:")
        try:
            small = min(memories, 20_000)  # the wrapper's and raw rates settle well before 100k
            report["ingest_per_s"] = await _ingest(Memory(wrapped), texts[:small], users)
            report["ingest_per_s_backend"] = await _ingest(Memory(bare), texts, users)
            report["ingest_per_s_redis_py"] = await _ingest_raw(url, bare, texts[:small], users)
            sample = [(texts[i], users[i]) for i in range(0, memories, max(1, memories // 500))]
            qs = make_queries(rng, sample, unknown, queries)
            report.update(await time_searches(bare, qs))
            report.update(await _recall_ratio(url, bare, qs, seed))
            report["load_avg_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        finally:
            await bare.drop()
            await wrapped.drop()
            await wrapped.aclose()
            await bare.aclose()
    return report


async def _ingest(memory: Memory, texts: list[str], users: list[str]) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(texts), _BATCH):
        await memory.add(
            [MemoryRecord(text=texts[i], user_id=users[i], id=f"m{i}") for i in range(start, min(start + _BATCH, len(texts)))]
        )
    return round(len(texts) / (time.perf_counter() - t0), 1)


async def _ingest_raw(url: str, backend: RedisBackend, texts: list[str], users: list[str]) -> float:
    """The same hashes (the same indexed fields: terms, the encoded TAG values, timestamps)
    written with plain redis-py pipelines under the backend's indexed prefix, so the server
    indexes them too: the reference for ``ingest_per_s``. They are removed afterwards."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, decode_responses=True, protocol=2)
    now = "1700000000.000000"
    namespace, episodic = encode_tag("default"), encode_tag("episodic")
    t0 = time.perf_counter()
    for start in range(0, len(texts), _BATCH):
        async with client.pipeline(transaction=True) as pipe:
            for i in range(start, min(start + _BATCH, len(texts))):
                key = f"{backend.spec.prefix}raw{i}"
                # "terms" holds the text as is: the server tokenises the same words (the backend's
                # analyzer, client-side, is part of what ingest_per_s_backend measures)
                pipe.hset(key, mapping={"id": f"m{i}", "text": texts[i], "terms": texts[i], "user_id": users[i],
                                        "tag_user_id": encode_tag(users[i]),
                                        "namespace": "default", "tag_namespace": namespace, "memory_type": "episodic",
                                        "tag_memory_type": episodic, "metadata": "{}", "created_at": now, "updated_at": now})
                pipe.pexpire(key, 30 * 86400 * 1000)
            await pipe.execute()
    rate = len(texts) / (time.perf_counter() - t0)
    keys = [k async for k in client.scan_iter(match=f"{backend.spec.prefix}raw*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.unlink(*keys[i : i + 1000])
    await client.aclose()
    return round(rate, 1)


#: What each timed side of ``_recall_ratio`` does, reported with the figures (``compared``).
COMPARED = {
    "recall_step": "MemoryPrimitive(limit=10).execute: validate the input and filter, analyse the query, one "
                   "FT.SEARCH (the command below, sent pre-encoded on the backend's pooled connection), decode "
                   "each hit into a MemoryRecord (every returned field checked), build the step's output dict",
    "direct_ft_search": "redis.asyncio.Redis(decode_responses=True).execute_command(*args) with the same args "
                        "(same query string, tag filter, WITHSCORES SCORER BM25STD, RETURN of the same fields, "
                        "LIMIT 0 10, DIALECT 2); the reply is left as nested lists of str",
    "direct_ft_search_bytes": "the same call on a decode_responses=False client: nested lists of bytes",
    "redis_py_search_api": "client.ft(index).search(Query(query).scorer('BM25STD').with_scores()"
                           ".return_fields(<same fields>).paging(0, 10).dialect(2)): redis-py's Document objects",
    "direct_ft_search_packed": "the recall step's own transport alone: the same pre-encoded command bytes on a "
                               "pooled connection (search.send_packed), bytes back, nothing decoded",
}


async def _recall_ratio(url: str, backend: RedisBackend, qs: list[tuple[str, str | None]],
                        seed: int = 0) -> dict[str, Any]:
    """Median ``MemoryPrimitive`` recall step (no session: the step's only Redis call is its
    search) against the same ``FT.SEARCH`` issued four other ways (:data:`COMPARED`), query by
    query in one run. Each query is first sent once untimed (a search the server has just run
    answers faster: measured 0.33 ms against 0.42 ms for the first run), then the five sides run
    in a seeded random order, so none is always the first, cold, call. Both wall time
    (``*_ms``) and this process's CPU time (``*_cpu_us``, ``time.process_time``) are reported.

    Returns:
        ``recall_step_ms``, ``direct_ft_search_ms``, ``direct_ft_search_bytes_ms``,
        ``redis_py_search_api_ms``, ``direct_ft_search_packed_ms`` (medians, ms), the matching
        ``*_cpu_us`` (medians, µs), ``recall_step_ratio`` (recall step / ``direct_ft_search``,
        the issue's measure), ``recall_step_ratio_vs_bytes``, ``recall_step_ratio_vs_search_api``,
        ``recall_step_ratio_vs_packed``, ``reply_parser`` (the class redis-py parses replies
        with: ``_AsyncHiredisParser`` when hiredis is installed) and ``compared``.
    """
    import redis.asyncio as aioredis
    from redis.asyncio.connection import DefaultParser
    from redis.commands.search.query import Query

    from primitives.memory.redis_backend.search import send_packed

    # single_user: half the queries carry no user (the same unscoped recall the reference makes)
    step = MemoryPrimitive(Memory(backend, single_user=True), limit=10)
    client = aioredis.from_url(url, decode_responses=True, protocol=2)
    raw_client = aioredis.from_url(url, decode_responses=False, protocol=2)
    packed_client = aioredis.from_url(url, decode_responses=False, protocol=2)
    search_api = client.ft(backend.spec.name)
    # the command RedisBackend sends (no embedder: a record's own vector is returned too)
    command = Searcher(None, backend.spec.name, backend.name, returns=RETURN_FIELDS, vector_returned=True, dims=None)
    names = ("recall_step", "direct_ft_search", "direct_ft_search_bytes", "redis_py_search_api", "direct_ft_search_packed")
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    order = random.Random(seed)
    await step.execute({"query": "warm up"}, WorkflowContext())  # the backend's first call checks the index
    # every client here, the backend's too, parses replies with redis-py's default parser
    parser = raw_client.connection_pool.connection_kwargs.get("parser_class", DefaultParser).__name__
    found: list[bool] = []  # whether the query has hits
    for text, user in qs:
        ctx = WorkflowContext(metadata={"user_id": user} if user else {})
        words, flt = query_terms(text), normalize_filter({"namespace": "default", "user_id": user})
        args = command.keyword_args(words, flt, 0, 10)
        packed = command.keyword_packed(words, flt, 0, 10)
        # each side as a call made in this iteration (the closures read this query's values)
        calls = {
            "recall_step": lambda: step.execute({"query": text}, ctx),
            "direct_ft_search": lambda: client.execute_command(*args),
            "direct_ft_search_bytes": lambda: raw_client.execute_command(*args),
            "redis_py_search_api": lambda: search_api.search(
                Query(args[2]).scorer("BM25STD").with_scores().return_fields(*command.returns).paging(0, 10).dialect(2)),
            "direct_ft_search_packed": lambda: send_packed(packed_client.connection_pool, packed),
        }
        # warm: every side then finds the query run once
        found.append(int((await raw_client.execute_command(*args))[0]) > 0)
        sides = list(names)
        order.shuffle(sides)
        for name in sides:
            c0, t0 = time.process_time(), time.perf_counter()
            await calls[name]()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append(t1 - t0)
            cpu[name].append(c1 - c0)
    for c in (client, raw_client, packed_client):
        await c.aclose()
    m = {n: statistics.median(wall[n]) for n in names}
    out: dict[str, Any] = {}
    for n in names:
        out[f"{n}_ms"] = round(m[n] * 1e3, 3)
        out[f"{n}_cpu_us"] = round(statistics.median(cpu[n]) * 1e6, 1)
    out["recall_step_ratio"] = round(m["recall_step"] / m["direct_ft_search"], 3)
    out["recall_step_ratio_vs_bytes"] = round(m["recall_step"] / m["direct_ft_search_bytes"], 3)
    out["recall_step_ratio_vs_search_api"] = round(m["recall_step"] / m["redis_py_search_api"], 3)
    out["recall_step_ratio_vs_packed"] = round(m["recall_step"] / m["direct_ft_search_packed"], 3)
    # the median of all queries falls between the misses (no hit to decode) and the hits:
    # each kind on its own too
    for kind, keep in (("hits", True), ("misses", False)):
        step_k = [t for t, f in zip(wall["recall_step"], found) if f is keep]
        raw_k = [t for t, f in zip(wall["direct_ft_search"], found) if f is keep]
        if step_k:
            out[f"recall_step_ratio_{kind}"] = round(statistics.median(step_k) / statistics.median(raw_k), 3)
            out[f"recall_step_{kind}_ms"] = round(statistics.median(step_k) * 1e3, 3)
            out[f"direct_ft_search_{kind}_ms"] = round(statistics.median(raw_k) * 1e3, 3)
            for name in ("recall_step", "direct_ft_search"):
                out[f"{name}_{kind}_cpu_us"] = round(
                    statistics.median([c for c, f in zip(cpu[name], found) if f is keep]) * 1e6, 1)
    out["reply_parser"] = parser
    out["compared"] = COMPARED
    return out


async def compare_storage(url: str, memories: int = 20_000, *, queries: int = 500, seed: int = 0) -> dict[str, Any]:
    """Hashes vs JSON documents for the same records and the same index fields: write rate
    (pipelined ``HSET`` vs ``JSON.SET``, batches of 1,000), ``FT.SEARCH`` p50 returning the
    record fields, and server memory added (``INFO memory`` ``used_memory``). The evidence for
    storing records as hashes (docs/redis-backend.md)."""
    import json

    import redis.asyncio as aioredis

    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    texts = [" ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT)) for _ in range(memories)]
    client = aioredis.from_url(url, decode_responses=True, protocol=2)
    run = f"store-{rng.getrandbits(32):08x}"
    out: dict[str, Any] = {"memories": memories}
    try:
        for kind in ("hash", "json"):
            prefix = f"{run}{kind}:"
            if kind == "hash":
                schema = ["ON", "HASH", "PREFIX", "1", prefix, "SCHEMA", "text", "TEXT", "user_id", "TAG", "namespace", "TAG",
                          "created_at", "NUMERIC"]
            else:
                schema = ["ON", "JSON", "PREFIX", "1", prefix, "SCHEMA", "$.text", "AS", "text", "TEXT", "$.user_id", "AS",
                          "user_id", "TAG", "$.namespace", "AS", "namespace", "TAG", "$.created_at", "AS", "created_at", "NUMERIC"]
            await client.execute_command("FT.CREATE", f"{prefix}idx", *schema)
            before = int((await client.info("memory"))["used_memory"])
            t0 = time.perf_counter()
            for start in range(0, memories, _BATCH):
                async with client.pipeline(transaction=False) as pipe:
                    for i in range(start, min(start + _BATCH, memories)):
                        doc = {"id": f"m{i}", "text": texts[i], "user_id": f"user-{i % USERS}", "namespace": "default",
                               "metadata": "{}", "created_at": 1_700_000_000 + i}
                        if kind == "hash":
                            pipe.hset(f"{prefix}m{i}", mapping=doc)
                        else:
                            pipe.execute_command("JSON.SET", f"{prefix}m{i}", "$", json.dumps(doc))
                    await pipe.execute()
            write = memories / (time.perf_counter() - t0)
            used = int((await client.info("memory"))["used_memory"]) - before
            fields = ["id", "text", "user_id", "namespace", "metadata", "created_at"]
            latencies = []
            for _ in range(queries):
                words = " | ".join(rng.sample(rng.choice(texts).split(), 2))
                t1 = time.perf_counter()
                await client.execute_command("FT.SEARCH", f"{prefix}idx", f"@user_id:{{user\\-{rng.randrange(USERS)}}} @text:({words})",
                                             "RETURN", str(len(fields)), *fields, "LIMIT", "0", "10", "DIALECT", "2")
                latencies.append(time.perf_counter() - t1)
            out[kind] = {
                "writes_per_s": round(write, 1),
                "search_p50_ms": round(percentile(latencies, 50) * 1e3, 3),
                "server_bytes_per_record": round(used / memories, 1),
            }
            await client.execute_command("FT.DROPINDEX", f"{prefix}idx", "DD")
    finally:
        await client.aclose()
    return out
