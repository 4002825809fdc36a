"""``bench redis``: the ``bench inmemory`` workload against a real Redis, side by side with the
same operations issued directly with redis-py.

Reported: batched ingest rate through ``Memory`` (resilient wrapper included, as
``Memory.from_env()`` builds it), through the bare ``RedisBackend``, and the same hashes written
with raw redis-py pipelines; search p50/p99 of ``RedisBackend.search``; and the cost of the
``MemoryPrimitive`` recall step over the identical ``FT.SEARCH`` issued with redis-py (ratio of
medians, interleaved call by call in one run).
"""

from __future__ import annotations

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
        (p50/p99 of ``RedisBackend.search``), ``hit_rate``, ``recall_step_ms``,
        ``direct_ft_search_ms``, ``direct_ft_search_bytes_ms`` and ``redis_py_search_api_ms``
        (medians), ``recall_step_ratio`` (recall step / raw command, strings back),
        ``recall_step_ratio_vs_bytes`` and ``recall_step_ratio_vs_search_api``.
    """
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    unknown = make_vocabulary(rng, 2_000, prefix="zq")
    texts = [" ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT)) for _ in range(memories)]
    users = [f"user-{i % USERS}" for i in range(memories)]
    report: dict[str, Any] = {"memories": memories}
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
            report.update(await _recall_ratio(url, bare, qs))
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


async def _recall_ratio(url: str, backend: RedisBackend, qs: list[tuple[str, str | None]]) -> dict[str, float]:
    """Median ``MemoryPrimitive`` recall step vs the identical ``FT.SEARCH`` sent with redis-py,
    three ways: the raw command on a client with ``decode_responses=True`` (strings back, as
    before this backend read bytes: the reference ``recall_step_ratio`` is measured against),
    the raw command on a bytes client (``direct_ft_search_bytes_ms``: no decoding at all), and
    redis-py's search API (``ft(index).search(Query(...))``, ``Document`` objects back). The
    four alternate query by query (no session: the step's only Redis call is that search)."""
    import redis.asyncio as aioredis
    from redis.commands.search.query import Query

    # single_user: half the queries carry no user (the same unscoped recall the reference makes)
    step = MemoryPrimitive(Memory(backend, single_user=True), limit=10)
    client = aioredis.from_url(url, decode_responses=True, protocol=2)
    raw_client = aioredis.from_url(url, decode_responses=False, protocol=2)
    search_api = client.ft(backend.spec.name)
    # the command RedisBackend sends (no embedder: a record's own vector is returned too)
    command = Searcher(None, backend.spec.name, backend.name, returns=RETURN_FIELDS, vector_returned=True, dims=None)
    ours, direct, direct_bytes, api = [], [], [], []
    for text, user in qs:
        ctx = WorkflowContext(metadata={"user_id": user} if user else {})
        args = command.keyword_args(query_terms(text), normalize_filter({"namespace": "default", "user_id": user}), 0, 10)
        t0 = time.perf_counter()
        await step.execute({"query": text}, ctx)
        t1 = time.perf_counter()
        await client.execute_command(*args)
        t2 = time.perf_counter()
        await raw_client.execute_command(*args)
        t3 = time.perf_counter()
        await search_api.search(
            Query(args[2]).scorer("BM25STD").with_scores().return_fields(*command.returns).paging(0, 10).dialect(2)
        )
        t4 = time.perf_counter()
        ours.append(t1 - t0)
        direct.append(t2 - t1)
        direct_bytes.append(t3 - t2)
        api.append(t4 - t3)
    await client.aclose()
    await raw_client.aclose()
    m_ours, m_raw, m_bytes, m_api = (statistics.median(x) for x in (ours, direct, direct_bytes, api))
    return {
        "recall_step_ms": round(m_ours * 1e3, 3),
        "direct_ft_search_ms": round(m_raw * 1e3, 3),
        "recall_step_ratio": round(m_ours / m_raw, 3),
        "direct_ft_search_bytes_ms": round(m_bytes * 1e3, 3),
        "recall_step_ratio_vs_bytes": round(m_ours / m_bytes, 3),
        "redis_py_search_api_ms": round(m_api * 1e3, 3),
        "recall_step_ratio_vs_search_api": round(m_ours / m_api, 3),
    }


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
