"""``bench ams``: the Agent Memory Server backend side by side with the same operations issued
directly through agent-memory-client, in one run.

Workload: the ``bench inmemory`` one (30 pseudo-words per memory, 50 users; queries of 2-3 words
in a question frame, half hits, half misses, half filtered by a user). Measured:

- create: records/s through ``Memory.add`` on ``AgentMemoryServerBackend`` (batches of 100; it
  returns once AMS has indexed them) and through ``MemoryAPIClient.create_long_term_memory``
  (returns at AMS's acknowledgement, before indexing), plus the latter until every record is
  searchable; the client sends the same records in the form the backend writes (derived ids,
  the carrier), so both sides search the same data;
- index lag: for single records, AMS's acknowledgement to the record being readable (each read
  is one request, so the resolution is one request's time);
- the recall step: ``MemoryPrimitive.execute`` (working memory of the session + a filtered
  long-term search, ``mode="vector"``) against ``get_or_create_working_memory`` +
  ``search_long_term_memory`` with the same filters (AMS's ``semantic`` mode, recency re-ranking
  off on both sides so the server does the same work), interleaved call by call, the first of
  each pair alternating, after one untimed pass that warms the embeddings endpoint's cache for
  every query (it caches text -> vector; otherwise the second caller of a text gets the first's
  work for free); the ratio of medians is the target (<= 1.1x);
- the working-memory read alone, both ways;
- search p50/p99 of the backend per mode, and the request cost with and without token auth
  (``GET /v1/health`` needs none).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from primitives.core.context import WorkflowContext
from primitives.evaluation.bench import (
    USERS,
    VOCABULARY_SIZE,
    WORDS_PER_TEXT,
    make_queries,
    make_vocabulary,
)
from primitives.evaluation.locomo import percentile
from primitives.memory.ams_backend import AgentMemoryServerBackend
from primitives.memory.ams_backend import mapping as amap
from primitives.memory.facade import Memory
from primitives.memory.record import MemoryRecord, Message, with_timestamps
from primitives.memory.workflow import MemoryPrimitive

__all__ = ["local_ams_stack", "run_ams_bench"]

_BATCH = 100
_NAMESPACE = "default"


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50) * 1e3, 2), "p99": round(percentile(values, 99) * 1e3, 2)}


def _direct_client(url: str, token: str | None) -> Any:
    """A ``MemoryAPIClient`` as a user of agent-memory-client 0.14 would build it with token auth
    (the client has no auth option: the header goes on its HTTP client)."""
    from agent_memory_client import MemoryAPIClient, MemoryClientConfig

    client = MemoryAPIClient(MemoryClientConfig(base_url=url, timeout=30.0))
    if token:
        client._client.headers["Authorization"] = f"Bearer {token}"
    return client


async def run_ams_bench(
    url: str, token: str | None = None, *, memories: int = 1000, queries: int = 100, seed: int = 0
) -> dict[str, Any]:
    """Run the workload against the AMS at ``url`` in a throw-away partition (deleted after).

    Returns:
        A JSON-ready dict: ``server_version``, ``token_auth``, ``memories``, ``queries``,
        ``create`` (records/s: ``backend``, ``client_ack``, ``client_until_searchable``),
        ``add_one_ms`` (p50/p99 of ``Memory.add`` of one record, until it is searchable),
        ``index_lag_ms`` (p50/p99, single records), ``request_ms`` (``no_auth_health`` and
        ``authenticated_get``, p50), ``recall_step_ms`` / ``direct_recall_ms`` (medians) and
        ``recall_step_ratio``, ``working_memory_get_ms`` / ``direct_working_memory_get_ms`` and
        ``working_memory_ratio``, ``search_ms`` (per mode, p50/p99), ``hit_rate`` (share of
        queries with a hit, vector mode excluded since it always returns the nearest records).
    """
    from agent_memory_client.filters import Namespace, UserId
    from agent_memory_client.models import RecencyConfig

    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    unknown = make_vocabulary(rng, 2_000, prefix="zq")
    texts = [" ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT)) for _ in range(memories)]
    users = [f"user-{i % USERS}" for i in range(memories)]
    prefix = f"bench-{rng.getrandbits(32):08x}:"
    backend = AgentMemoryServerBackend(url, token=token, prefix=prefix, index_timeout=60.0)
    client = _direct_client(url, token)
    memory = Memory(backend, single_user=True)  # half the queries are unfiltered, as in bench inmemory
    report: dict[str, Any] = {"memories": memories, "queries": queries, "token_auth": bool(token)}
    try:
        report["server_version"] = await backend.server_version()
        half = max(1, memories // 2)

        t0 = time.perf_counter()
        for start in range(0, half, _BATCH):
            await memory.add([MemoryRecord(text=texts[i], user_id=users[i], id=f"m{i}") for i in range(start, min(start + _BATCH, half))])
        backend_rate = half / (time.perf_counter() - t0)

        rest = range(half, memories)
        t0 = time.perf_counter()
        for start in range(half, memories, _BATCH):
            now = datetime.now(timezone.utc)
            await client.create_long_term_memory(
                [_as_stored(MemoryRecord(text=texts[i], user_id=users[i], id=f"m{i}"), prefix, now)
                 for i in range(start, min(start + _BATCH, memories))],
                deduplicate=False,
            )
        ack = time.perf_counter() - t0
        for start in range(half, memories, _BATCH):  # each batch's last record, read by id
            await _until_readable(backend, f"m{min(start + _BATCH, memories) - 1}", _NAMESPACE)
        searchable = time.perf_counter() - t0
        report["create"] = {
            "backend_records_per_s": round(backend_rate, 1),
            "client_ack_records_per_s": round(len(rest) / ack, 1) if len(rest) else None,
            "client_until_searchable_records_per_s": round(len(rest) / searchable, 1) if len(rest) else None,
        }

        adds = []
        for i in range(10):  # what RememberPrimitive pays per turn: one record, until searchable
            t0 = time.perf_counter()
            await memory.add([MemoryRecord(text=f"single record {i}", id=f"one{i}")])
            adds.append(time.perf_counter() - t0)
        report["add_one_ms"] = _ms(adds)

        lags = []
        for i in range(10):
            now = datetime.now(timezone.utc)
            await client.create_long_term_memory(
                [_as_stored(MemoryRecord(text=f"lag probe {i}", id=f"lag{i}", namespace="lag"), prefix, now)],
                deduplicate=False)
            t0 = time.perf_counter()
            await _until_readable(backend, f"lag{i}", "lag")
            lags.append(time.perf_counter() - t0)
        report["index_lag_ms"] = _ms(lags)

        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        health, authed = [], []
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as http:
            for _ in range(10):
                t0 = time.perf_counter()
                await http.get("/v1/health")
                t1 = time.perf_counter()
                await http.get("/v1/long-term-memory/none")
                health.append(t1 - t0)
                authed.append(time.perf_counter() - t1)
        report["request_ms"] = {"no_auth_health": _ms(health)["p50"], "authenticated_get": _ms(authed)["p50"]}

        session = "bench-session"
        await backend.append_messages(session, [Message("user", f"turn {i}") for i in range(10)])
        await client.put_working_memory(f"{prefix}direct", _working_memory(f"{prefix}direct"))
        sample = [(texts[i], users[i]) for i in range(0, memories, max(1, memories // 200))]
        qs = make_queries(rng, sample, unknown, queries)

        step = MemoryPrimitive(memory, limit=10, mode="vector")
        off = RecencyConfig(recency_boost=False)

        async def recall_ours(text: str, user: str | None) -> float:
            ctx = WorkflowContext(session_id=session, metadata={"user_id": user} if user else {})
            t0 = time.perf_counter()
            await step.execute({"query": text}, ctx)
            return time.perf_counter() - t0

        async def recall_direct(text: str, user: str | None) -> float:
            t0 = time.perf_counter()
            await client.get_or_create_working_memory(f"{prefix}direct")
            await client.search_long_term_memory(
                text, namespace=Namespace(eq=prefix + _NAMESPACE), user_id=UserId(eq=user) if user else None,
                limit=10, recency=off)
            return time.perf_counter() - t0

        # The embeddings endpoint caches text -> vector: warm it with every query first, and
        # alternate which side goes first, so neither side gets the other's cache hits.
        for text, user in qs:
            await recall_direct(text, user)
        ours, direct, wm_ours, wm_direct = [], [], [], []
        for n, (text, user) in enumerate(qs):
            if n % 2:
                direct.append(await recall_direct(text, user))
                ours.append(await recall_ours(text, user))
            else:
                ours.append(await recall_ours(text, user))
                direct.append(await recall_direct(text, user))
            t2 = time.perf_counter()
            await backend.get_messages(session, 20)
            t3 = time.perf_counter()
            await client.get_or_create_working_memory(f"{prefix}direct")
            t4 = time.perf_counter()
            wm_ours.append(t3 - t2)
            wm_direct.append(t4 - t3)
        m_ours, m_direct = statistics.median(ours), statistics.median(direct)
        report["recall_step_ms"] = round(m_ours * 1e3, 2)
        report["direct_recall_ms"] = round(m_direct * 1e3, 2)
        report["recall_step_ratio"] = round(m_ours / m_direct, 3)
        report["working_memory_get_ms"] = round(statistics.median(wm_ours) * 1e3, 2)
        report["direct_working_memory_get_ms"] = round(statistics.median(wm_direct) * 1e3, 2)
        report["working_memory_ratio"] = round(statistics.median(wm_ours) / statistics.median(wm_direct), 3)

        report["search_ms"] = {}
        hits = 0
        for mode in ("keyword", "vector", "hybrid"):
            latencies = []
            for text, user in qs:
                flt = {"namespace": _NAMESPACE, "user_id": user}
                t0 = time.perf_counter()
                result = await backend.search(text, filter=flt, limit=10, mode=mode)
                latencies.append(time.perf_counter() - t0)
                hits += bool(result.hits) if mode == "keyword" else 0
            report["search_ms"][mode] = _ms(latencies)
        report["hit_rate"] = round(hits / len(qs), 3)
    finally:
        try:
            await backend.drop()
            await client.delete_working_memory(f"{prefix}direct")
        finally:
            await backend.aclose()
            await client.close()
    return report


def _as_stored(record: MemoryRecord, prefix: str, now: datetime) -> Any:
    """``record`` as the client's model, in the form the backend writes (its derived id, the
    carrier), so both sides of the comparison hold the same records and the backend reads the
    client's."""
    from agent_memory_client.models import ClientMemoryRecord

    return ClientMemoryRecord(**amap.record_to_ams(with_timestamps(record, now, now), prefix))


async def _until_readable(backend: AgentMemoryServerBackend, id: str, namespace: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while await backend.get(id, namespace=namespace) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"record {id!r} was not searchable {timeout:.0f} s after AMS acknowledged it")
        await asyncio.sleep(0.002)


def _working_memory(session_id: str) -> Any:
    from agent_memory_client.models import MemoryMessage, WorkingMemory

    now = datetime.now(timezone.utc)
    return WorkingMemory(session_id=session_id,
                         messages=[MemoryMessage(role="user", content=f"turn {i}", created_at=now) for i in range(10)])


@contextmanager
def local_ams_stack(*, token_auth: bool = True) -> Iterator[tuple[str, str | None]]:
    """A throw-away Agent Memory Server for one run: a local Redis with the Query Engine, the
    local MiniLM embeddings endpoint (``memory-primitives embeddings serve``) and
    :class:`~primitives.tooling.localams.LocalAMS` (installed into its cache on first use: minutes),
    all on free loopback ports and stopped afterwards. Yields ``(url, token)``.

    Raises:
        ConfigurationError: a part could not be installed or started (from ``LocalAMS``).
        TimeoutError: the embeddings endpoint did not answer within 180 s.
    """
    from primitives.tooling.localams import LocalAMS
    from primitives.tooling.localredis import LocalRedis, free_port

    with tempfile.TemporaryDirectory(prefix="memory-primitives-bench-ams-") as tmp:
        redis = LocalRedis(dir=Path(tmp) / "redis", persistent=False)
        redis.start()
        embeddings: subprocess.Popen[bytes] | None = None
        ams: LocalAMS | None = None
        try:
            port = free_port()
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            with open(Path(tmp) / "embeddings.log", "wb") as log:
                embeddings = subprocess.Popen([sys.executable, "-m", "primitives.cli", "embeddings", "serve", "--port", str(port)],
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            _wait_http(f"http://127.0.0.1:{port}/health", 180.0)
            ams = LocalAMS(redis_url=redis.url, embeddings_url=f"http://127.0.0.1:{port}/v1", token_auth=token_auth,
                           run_dir=Path(tmp) / "ams")
            if not ams.installed():
                ams.install()
            token = ams.create_token(description="memory-primitives bench") if token_auth else None
            yield ams.start(), token
        finally:
            if ams is not None:
                ams.stop()
            if embeddings is not None:
                embeddings.terminate()
                try:
                    embeddings.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    embeddings.kill()
                    embeddings.wait()
            redis.stop()


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
