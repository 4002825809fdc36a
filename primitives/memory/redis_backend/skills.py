"""Skill execution statistics on Redis: one hash per skill, updated in one ``MULTI``.

Key: ``{prefix}skill:{namespace}:{name}`` with both parts percent-encoded
(``urllib.parse.quote(part, safe="")``), so no user string can reach another key. Fields:
``executions``, ``successes`` (``HINCRBY``), ``total_duration_s`` (``HINCRBYFLOAT``),
``last_executed_at`` (epoch seconds). The transaction increments, stamps, re-arms the key's
``EXPIRE`` and reads the totals back (``HGETALL``) atomically, so concurrent recorders on any
number of processes never lose an update and each gets the totals its own execution produced.
On a Redis Cluster the same steps run as one Lua script (:data:`RECORD_SCRIPT`, one key, so one
slot): redis-py 8.1's asyncio cluster pipeline in transaction mode fails reading the reply of
``HINCRBYFLOAT`` (``TypeError: <lambda>() got an unexpected keyword argument 'keys'``).
"""

from __future__ import annotations

import math
import time
from urllib.parse import quote

from primitives.errors import CorruptRecordError
from primitives.memory.skills import SkillStats, stats_from_totals

__all__ = ["RECORD_SCRIPT", "skill_key", "record_execution", "read_stats"]

# KEYS[1] the skill hash. ARGV: success (0/1), duration_s, now (epoch seconds, repr), pexpire ms
# ("inf": PERSIST). Returns HGETALL after the update.
RECORD_SCRIPT = """
redis.call('HINCRBY', KEYS[1], 'executions', 1)
redis.call('HINCRBY', KEYS[1], 'successes', tonumber(ARGV[1]))
redis.call('HINCRBYFLOAT', KEYS[1], 'total_duration_s', ARGV[2])
redis.call('HSET', KEYS[1], 'last_executed_at', ARGV[3])
if ARGV[4] == 'inf' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return redis.call('HGETALL', KEYS[1])
"""


def skill_key(prefix: str, namespace: str, name: str) -> str:
    """The hash holding ``name``'s statistics in ``namespace``."""
    return f"{prefix}skill:{quote(namespace, safe='')}:{quote(name, safe='')}"


async def record_execution(
    client: object, key: str, name: str, namespace: str, success: bool, duration_s: float, ttl: float,
    *, script: bool = False,
) -> SkillStats:
    """Fold one execution into the hash at ``key`` (``ttl`` seconds of life after it;
    ``math.inf``: no expiry) and return the totals, in one round trip (``script``: as
    :data:`RECORD_SCRIPT`, for a Redis Cluster)."""
    if script:
        expiry = "inf" if math.isinf(ttl) else str(max(1, int(ttl * 1000)))
        flat = await client.eval(RECORD_SCRIPT, 1, key, "1" if success else "0", repr(duration_s),  # type: ignore[attr-defined]
                                 repr(time.time()), expiry)
        return _stats(key, name, namespace, dict(zip(flat[0::2], flat[1::2])))
    pipe = client.pipeline(transaction=True)  # type: ignore[attr-defined]
    pipe.hincrby(key, "executions", 1)
    pipe.hincrby(key, "successes", 1 if success else 0)
    pipe.hincrbyfloat(key, "total_duration_s", duration_s)
    pipe.hset(key, "last_executed_at", repr(time.time()))
    if math.isinf(ttl):
        pipe.persist(key)
    else:
        pipe.pexpire(key, max(1, int(ttl * 1000)))
    pipe.hgetall(key)
    results = await pipe.execute()
    return _stats(key, name, namespace, results[-1])


async def read_stats(client: object, key: str, name: str, namespace: str) -> SkillStats | None:
    """The totals at ``key``, or ``None`` when the hash does not exist (never recorded, or
    expired).

    Raises:
        CorruptRecordError: the hash holds something that is not such totals.
    """
    totals = await client.hgetall(key)  # type: ignore[attr-defined]
    return _stats(key, name, namespace, totals) if totals else None


def _stats(key: str, name: str, namespace: str, totals: dict[bytes, bytes]) -> SkillStats:
    """Totals read with a bytes client, decoded strictly."""
    try:
        return stats_from_totals(name, namespace, {k.decode(): v.decode() for k, v in totals.items()})
    except (KeyError, ValueError, OverflowError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise CorruptRecordError(f"the skill statistics at {key!r} cannot be decoded: {reason}", key=key, reason=reason) from None
