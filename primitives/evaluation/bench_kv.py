"""``memory-primitives bench kv``: :class:`~primitives.store.kv_redis.RedisKeyValueStore` against
the same Redis command issued with raw redis-py on the same client (same connection pool).

For each timed pair one ``get`` (or ``set``) goes through the store and one identical command
goes through ``client.get(key)`` / ``client.set(key, data)`` with the very bytes the store would
send (serialized before timing), so the ratio is the whole cost of the primitive: key building
and escaping, (de)serialization, error mapping. The two run interleaved, alternating which goes
first, so drift in machine load hits both alike. ``mget`` of 100 keys is timed the same way, and
its round trips are counted from the server's ``INFO commandstats`` (commands processed for one
call; one command is one round trip).
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from primitives.evaluation.locomo import percentile
from primitives.redis_connection import connect
from primitives.store.kv_redis import RedisKeyValueStore

__all__ = ["run_kv_bench", "VALUE"]

#: The value every benchmark op reads and writes: a small memory-like record (~150 bytes as JSON).
VALUE: dict[str, Any] = {
    "user_id": "alice",
    "session_id": "s-42",
    "text": "The user prefers window seats and vegetarian meals.",
    "topics": ["travel", "food"],
    "score": 0.87,
}

_IDS = 1000


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(samples, 50) * 1e6, 2),
        "mean": round(statistics.fmean(samples) * 1e6, 2),
        "p99": round(percentile(samples, 99) * 1e6, 2),
    }


def _compare(ours: list[float], raw: list[float]) -> dict[str, Any]:
    a, b = _stats(ours), _stats(raw)
    return {
        "primitive_us": a,
        "redis_py_us": b,
        "ratio_p50": round(a["p50"] / b["p50"], 3),
        "ratio_mean": round(a["mean"] / b["mean"], 3),
    }


async def _commands(client: Any) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name: int(v["calls"]) for name, v in stats.items() if isinstance(v, dict) and "calls" in v}


async def run_kv_bench(url: str, *, ops: int = 10_000, warmup: int = 500) -> dict[str, Any]:
    """Time ``ops`` interleaved pairs each of get and set, and ``max(ops // 50, 20)`` pairs of
    mget of 100 keys, on the Redis at ``url``. Returns the figures as a JSON-able dict (times in
    microseconds; ratios primitive / redis-py, target <= 1.2)."""
    client = connect(url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    store = RedisKeyValueStore(client, namespace=namespace)
    ids = [f"item:{i}" for i in range(_IDS)]
    keys = [store.key("memory", i) for i in ids]
    data = store.serializer.dumps(VALUE)
    clock = time.perf_counter
    try:
        await store.mset("memory", {i: VALUE for i in ids})
        info = await client.info("server")

        async def pairs(n: int, ours: Any, raw: Any) -> tuple[list[float], list[float]]:
            t_ours: list[float] = []
            t_raw: list[float] = []
            for n_i in range(n):
                j = n_i % _IDS
                for first in ((True, False) if n_i % 2 == 0 else (False, True)):
                    t0 = clock()
                    if first:
                        await ours(j)
                    else:
                        await raw(j)
                    (t_ours if first else t_raw).append(clock() - t0)
            return t_ours, t_raw

        async def our_get(j: int) -> Any:
            return await store.get("memory", ids[j])

        async def raw_get(j: int) -> Any:
            return await client.get(keys[j])

        async def our_set(j: int) -> Any:
            return await store.set("memory", ids[j], VALUE)

        async def raw_set(j: int) -> Any:
            return await client.set(keys[j], data)

        batch = ids[:100]
        batch_keys = keys[:100]

        async def our_mget(_: int) -> Any:
            return await store.mget("memory", batch)

        async def raw_mget(_: int) -> Any:
            return await client.mget(batch_keys)

        await pairs(warmup, our_get, raw_get)
        await pairs(warmup, our_set, raw_set)
        get_ours, get_raw = await pairs(ops, our_get, raw_get)
        set_ours, set_raw = await pairs(ops, our_set, raw_set)
        mget_n = max(ops // 50, 20)
        mget_ours, mget_raw = await pairs(mget_n, our_mget, raw_mget)

        before = await _commands(client)
        values = await store.mget("memory", batch)
        after = await _commands(client)
        # the first INFO is itself counted in the second one's figures
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta["cmdstat_info"] = delta.get("cmdstat_info", 0) - 1
        commands = {k.removeprefix("cmdstat_"): v for k, v in delta.items() if v}
        if values != [VALUE] * 100:
            raise RuntimeError("mget returned other values than were stored")
        return {
            "redis_version": info.get("redis_version"),
            "ops": ops,
            "value_bytes": len(data),
            "get": _compare(get_ours, get_raw),
            "set": _compare(set_ours, set_raw),
            "mget_100": {
                **_compare(mget_ours, mget_raw),
                "pairs": mget_n,
                "server_commands_for_one_call": commands,
                "round_trips": sum(commands.values()),
            },
        }
    finally:
        await store.delete_namespace()
        await client.aclose()
