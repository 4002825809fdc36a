"""``RateLimiter``: atomic rate limits in Redis (plain Redis 7+, standalone or Cluster).

Each ``hit`` / ``peek`` is one Lua script (redis-py ``register_script``: ``EVALSHA``, loading the
script on ``NOSCRIPT``), so concurrent callers cannot both take the last unit. Time is the
server's (``TIME`` for ``sliding`` and ``gcra``, key expiry for ``fixed``), so the callers' clocks
do not matter. The algorithms and their sources are described in :mod:`primitives.store.ratelimit`.

Keys (``key`` escaped with ``urllib.parse.quote(key, safe="")``; one hash tag per limited key, so
a Cluster keeps all of a key's state in one slot)::

    {prefix}fixed:{key}          string counter, PEXPIRE window
    {prefix}sliding:{key}        sorted set of admitted units scored by time (microseconds)
    {prefix}sliding:{key}:seq    counter naming the units (members must be unique)
    {prefix}gcra:{key}           string: theoretical arrival time (microseconds since the epoch)

Every key expires once its state has fully reset, so idle keys cost nothing.
"""

from __future__ import annotations

from urllib.parse import quote

from primitives.redis_connection import RedisClient, redis_errors_mapped
from primitives.store.ratelimit import (
    Algorithm,
    BaseRateLimiter,
    RateLimitResult,
    check_key,
)
from primitives.validation import check_text

__all__ = ["DEFAULT_RATE_LIMIT_PREFIX", "RateLimiter"]

#: Key prefix of every rate-limit key unless configured otherwise.
DEFAULT_RATE_LIMIT_PREFIX = "primitives:ratelimit:"

# Every script: ARGV limit, window (us), cost, dry (1 = peek). Returns {allowed, remaining,
# retry_us, reset_us}.

_FIXED = """
local limit, w_ms, cost, dry = tonumber(ARGV[1]), math.ceil(tonumber(ARGV[2]) / 1000), tonumber(ARGV[3]), ARGV[4] == '1'
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = redis.call('PTTL', KEYS[1])
if left < 0 then left = w_ms end
if count + cost > limit then return {0, limit - count, left * 1000, left * 1000} end
if dry then
  if count == 0 then left = 0 end
  return {1, limit - count - cost, 0, left * 1000}
end
count = redis.call('INCRBY', KEYS[1], cost)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], w_ms) end
return {1, limit - count, 0, left * 1000}
"""

_SLIDING = """
local limit, w, cost, dry = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
local count = redis.call('ZCARD', KEYS[1])
local reset = 0
if count > 0 then
  reset = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]) + w - now
end
if count + cost > limit then
  local i = count + cost - limit - 1
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')[2])
  return {0, limit - count, oldest + w - now, reset}
end
if dry then return {1, limit - count - cost, 0, reset} end
local seq = redis.call('INCRBY', KEYS[2], cost)
local args = {}
for i = 1, cost do
  args[#args + 1] = now
  args[#args + 1] = seq - cost + i
end
redis.call('ZADD', KEYS[1], unpack(args))
local w_ms = math.ceil(w / 1000)
redis.call('PEXPIRE', KEYS[1], w_ms)
redis.call('PEXPIRE', KEYS[2], w_ms)
return {1, limit - count - cost, 0, w}
"""

_GCRA = """
local limit, w, cost, dry = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = w / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = math.ceil(tat + cost * interval)
if new_tat - now > w then
  return {0, math.floor((w - (tat - now)) / interval + 1e-9), new_tat - w - now, tat - now}
end
if dry then
  return {1, math.floor((w - (new_tat - now)) / interval + 1e-9), 0, tat - now}
end
-- at least 1 ms: with more units than microseconds per window, new_tat can equal now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, math.floor((w - (new_tat - now)) / interval + 1e-9), 0, new_tat - now}
"""

_SCRIPTS = {"fixed": _FIXED, "sliding": _SLIDING, "gcra": _GCRA}


class RateLimiter(BaseRateLimiter):
    """Atomic rate limits shared by every process using the same Redis; see the module doc.

    The in-process twin is :class:`~primitives.store.ratelimit.InMemoryRateLimiter`.

    Args:
        client: A ``redis.asyncio.Redis`` or ``RedisCluster`` the caller owns (and closes).
        limit: Units admitted per ``window`` (an int in ``[1, MAX_COUNT]``).
        window: Seconds in ``[0.001, MAX_WINDOW]``; applied in microseconds (``sliding``,
            ``gcra``) or whole milliseconds rounded up (``fixed``, ``PEXPIRE``).
        algorithm: ``"fixed"``, ``"sliding"`` (default) or ``"gcra"``.
        prefix: Prepended to every key (default ``"primitives:ratelimit:"``); not escaped (any
            ``str`` that UTF-8 can encode).

    Raises:
        InvalidInputError: ``limit``, ``window``, ``algorithm`` or ``prefix`` is not accepted.

    Every method maps redis-py errors with
    :func:`~primitives.redis_connection.redis_errors_mapped` (``BackendUnavailableError``,
    ``AuthenticationFailedError``, ``PermissionDeniedError``).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        limit: int,
        window: float,
        algorithm: Algorithm = "sliding",
        prefix: str = DEFAULT_RATE_LIMIT_PREFIX,
    ) -> None:
        super().__init__(limit=limit, window=window, algorithm=algorithm)
        self._client = client
        self._prefix = check_text(prefix, "prefix")
        self._script = client.register_script(_SCRIPTS[algorithm])

    def keys(self, key: str) -> list[str]:
        """The Redis keys holding ``key``'s state (one, or two for ``sliding``).

        Raises:
            InvalidKeyError: ``key`` is empty, not a ``str``, or has a lone surrogate.
        """
        base = f"{self._prefix}{self.algorithm}:{{{quote(check_key(key), safe='')}}}"
        return [base, f"{base}:seq"] if self.algorithm == "sliding" else [base]

    async def _run(self, key: str, cost: int, dry: bool) -> RateLimitResult:
        self._check(key, cost)
        async with redis_errors_mapped("Redis (rate limiter)", self._client):
            reply = await self._script(
                keys=self.keys(key), args=[self.limit, self._window_us, cost, 1 if dry else 0]
            )
        return self._result(*(int(v) for v in reply))

    async def hit(self, key: str, cost: int = 1) -> RateLimitResult:
        return await self._run(key, cost, dry=False)

    async def peek(self, key: str, cost: int = 1) -> RateLimitResult:
        return await self._run(key, cost, dry=True)

    async def reset(self, key: str) -> None:
        keys = self.keys(key)
        async with redis_errors_mapped("Redis (rate limiter)", self._client):
            await self._client.delete(*keys)  # the keys share a hash tag: one slot, one DEL
