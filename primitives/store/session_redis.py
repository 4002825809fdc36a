"""``SessionHistory``: bounded chat history per session in Redis (plain Redis 7+, standalone or
Cluster).

Keys (``ns`` and ``sid`` escaped with ``urllib.parse.quote(part, safe="")``, so a ``{``, ``}``,
``:``, ``*`` or space in them cannot reach another key or break the hash tag)::

    {prefix}{ns:sid}:messages   list of JSON messages, oldest first
    {prefix}{ns:sid}:meta       hash: created_at, updated_at, prev, next

Both keys of a session carry the hash tag ``{ns:sid}``, so they share a Cluster slot and one Lua
script updates them atomically.

Why a list and not a stream: messages are read by position (the last N), never by id, and
``RPUSH`` + ``LTRIM -N -1`` keeps exactly N in O(trimmed) with no stream-id bookkeeping; the
script also refreshes both keys' TTL in the same step.

``rotate`` touches two sessions, which live in different slots (one hash tag per session, so a
busy namespace is not one hot slot), so it cannot be one script on a Cluster. It runs the same two
steps everywhere:

1. create the new session's ``meta`` with ``prev = old`` (refused if the new id exists);
2. set the old session's ``next = new`` unless it already has a ``next`` (the commit point).

A crash between the two leaves a new session whose ``prev`` is not answered by the old session's
``next``; :meth:`chain` counts a link only when both ends agree, so that orphan is invisible and
expires with its TTL. If step 2 finds the old session already rotated (a concurrent ``rotate``
won), step 1 is undone and :class:`~primitives.errors.InvalidInputError` is raised.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from primitives.errors import InvalidInputError
from primitives.redis_connection import RedisClient, redis_errors_mapped
from primitives.store.session import (
    DEFAULT_CHAIN_LIMIT,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_SESSION_TTL,
    BaseSessionHistory,
    check_read_limit,
    check_session_id,
    decode_message,
    encode_messages,
    utc_iso,
    walk_chain,
)
from primitives.validation import check_limit, check_text

__all__ = ["DEFAULT_SESSION_PREFIX", "SessionHistory"]

#: Key prefix of every session key unless configured otherwise.
DEFAULT_SESSION_PREFIX = "primitives:session:"

# KEYS: messages, meta. ARGV: max_messages, ttl_ms (0 = none), now (ISO), messages...
# Pushes in chunks (Lua's unpack has a stack limit of a few thousand values).
_APPEND = """
local n = 0
for i = 4, #ARGV, 1000 do
  n = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('HSET', KEYS[2], 'updated_at', ARGV[3])
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[3])
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return n
"""

# KEYS: messages, meta. ARGV: limit (0 = all), ttl_ms (0 = none).
_READ = """
local limit = tonumber(ARGV[1])
local start = 0
if limit > 0 then start = -limit end
local items = redis.call('LRANGE', KEYS[1], start, -1)
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return items
"""

# Step 1 of rotate, on the NEW session. KEYS: messages, meta. ARGV: prev id, now, ttl_ms.
_ROTATE_NEW = """
if redis.call('EXISTS', KEYS[1]) + redis.call('EXISTS', KEYS[2]) > 0 then return 0 end
redis.call('HSET', KEYS[2], 'prev', ARGV[1], 'created_at', ARGV[2], 'updated_at', ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

# Step 2 of rotate, on the OLD session. KEYS: messages, meta. ARGV: next id, now, ttl_ms.
# Returns the existing next id when the session was already rotated, else false (nil).
_ROTATE_OLD = """
local current = redis.call('HGET', KEYS[2], 'next')
if current then return current end
redis.call('HSET', KEYS[2], 'next', ARGV[1], 'updated_at', ARGV[2])
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return false
"""

# Undo step 1 when step 2 lost a race. KEYS: meta of the new session. ARGV: prev id.
_UNDO_NEW = """
if redis.call('HGET', KEYS[1], 'prev') == ARGV[1] and redis.call('HEXISTS', KEYS[1], 'next') == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class SessionHistory(BaseSessionHistory):
    """Bounded, expiring chat history per session in Redis; see the module doc for keys and
    atomicity. The in-process twin is :class:`~primitives.store.session.InMemorySessionHistory`.

    Commands: one Lua script (``EVALSHA``, loaded on first use) per ``append`` (``RPUSH`` +
    ``LTRIM`` + ``HSET`` + ``PEXPIRE``) and per ``read`` (``LRANGE`` + ``PEXPIRE``); ``UNLINK``
    for ``clear``; two scripts for ``rotate``; one ``HMGET`` per session walked by ``chain``.

    Args:
        client: A ``redis.asyncio.Redis`` or ``RedisCluster`` the caller owns (and closes).
        namespace, max_messages, ttl, clock: See
            :class:`~primitives.store.session.BaseSessionHistory`. ``ttl`` is applied with
            ``PEXPIRE`` (milliseconds, at least 1).
        prefix: Prepended to every key (default ``"primitives:session:"``); not escaped, so it is
            the caller's to choose (and an ACL key pattern can match it).

    Raises:
        InvalidKeyError: ``namespace`` is empty, not a ``str``, or has a lone surrogate.
        InvalidTTLError: ``ttl`` is not ``None`` or a finite number in ``(0, MAX_TTL]``.
        InvalidInputError: ``max_messages`` is not an int in ``[1, MAX_COUNT]``, or ``prefix`` is
            not a ``str`` that UTF-8 can encode.

    Every method maps redis-py errors with
    :func:`~primitives.redis_connection.redis_errors_mapped` (``BackendUnavailableError``,
    ``AuthenticationFailedError``, ``PermissionDeniedError``).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        namespace: str = "default",
        max_messages: int = DEFAULT_MAX_MESSAGES,
        ttl: float | None = DEFAULT_SESSION_TTL,
        prefix: str = DEFAULT_SESSION_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(namespace=namespace, max_messages=max_messages, ttl=ttl, clock=clock)
        self._client = client
        self._prefix = check_text(prefix, "prefix")
        self._ttl_ms = 0 if self.ttl is None else max(1, round(self.ttl * 1000))
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)
        self._rotate_new = client.register_script(_ROTATE_NEW)
        self._rotate_old = client.register_script(_ROTATE_OLD)
        self._undo_new = client.register_script(_UNDO_NEW)

    def keys(self, session_id: str) -> tuple[str, str]:
        """The ``(messages, meta)`` keys of ``session_id``.

        Raises:
            InvalidKeyError: ``session_id`` is empty, not a ``str``, or has a lone surrogate.
        """
        check_session_id(session_id)
        base = f"{self._prefix}{{{quote(self.namespace, safe='')}:{quote(session_id, safe='')}}}"
        return f"{base}:messages", f"{base}:meta"

    async def append(
        self, session_id: str, messages: Mapping[str, Any] | Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        keys = self.keys(session_id)
        now = self._clock()
        encoded = encode_messages(messages, now)
        if not encoded:
            return []
        # Only the last max_messages can survive the trim; do not ship the rest.
        sent = encoded[-self.max_messages :]
        async with redis_errors_mapped("Redis (session history)", self._client):
            await self._append(keys=keys, args=[self.max_messages, self._ttl_ms, utc_iso(now), *sent])
        return [json.loads(m) for m in encoded]

    async def read(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        keys = self.keys(session_id)
        limit = check_read_limit(limit)
        async with redis_errors_mapped("Redis (session history)", self._client):
            raw = await self._read(keys=keys, args=[limit or 0, self._ttl_ms])
        return [decode_message(m) for m in raw]

    async def clear(self, session_id: str) -> None:
        messages, _ = self.keys(session_id)
        async with redis_errors_mapped("Redis (session history)", self._client):
            await self._client.unlink(messages)

    async def rotate(self, session_id: str, new_session_id: str | None = None) -> str:
        old_keys = self.keys(session_id)
        new = self._new_id(session_id, new_session_id)
        new_keys = self.keys(new)
        stamp = utc_iso(self._clock())
        async with redis_errors_mapped("Redis (session history)", self._client):
            created = await self._rotate_new(keys=new_keys, args=[session_id, stamp, self._ttl_ms])
            if not created:
                raise InvalidInputError(f"session {new!r} already exists; rotate needs a new id")
            current = await self._rotate_old(keys=old_keys, args=[new, stamp, self._ttl_ms])
            if current is not None:
                await self._undo_new(keys=[new_keys[1]], args=[session_id])
                raise InvalidInputError(
                    f"session {session_id!r} was already rotated to {_text(current)!r}; "
                    "rotate the newest session of its chain"
                )
        return new

    async def chain(self, session_id: str, *, limit: int = DEFAULT_CHAIN_LIMIT) -> list[str]:
        check_session_id(session_id)
        check_limit(limit)

        async def links(sid: str) -> dict[str, str]:
            async with redis_errors_mapped("Redis (session history)", self._client):
                prev, nxt = await self._client.hmget(self.keys(sid)[1], ["prev", "next"])
            found = {"prev": _text(prev), "next": _text(nxt)}
            return {k: v for k, v in found.items() if v is not None}

        return await walk_chain(session_id, limit, links)
