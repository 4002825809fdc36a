"""The change feed on Redis: pub/sub for low-latency notification, a capped Stream for catch-up.

Keys (``prefix`` default ``"memory:"``): the stream ``{prefix}changes`` and the pub/sub channel of
the same name. Stream entries have the fields ``id, op, namespace, user_id, memory_type,
updated_at, origin`` (``user_id`` empty for shared records; ``updated_at`` ISO 8601 UTC) so other
tools (the later data-cloud export) can read the stream directly.

Publishing is one Lua script per batch, so one round trip and atomic: it ``XADD``\\ s each event,
trims the stream to ``maxlen`` when it exceeds it by more than
:func:`~primitives.sync.feed.trim_slack` (1% of ``maxlen``, at least one; exact ``XTRIM MAXLEN``
plus ``XSETID ... MAXDELETEDID`` recording the newest trimmed id, which is what makes gap
detection exact: Redis's own ``MAXLEN ~`` trimming does not record it), and ``PUBLISH``\\ es one
JSON message ``[[position, id, op, namespace, user_id, memory_type, updated_at, origin], ...]``.
Redis 7.0 or later (``XSETID MAXDELETEDID``, ``XINFO STREAM max-deleted-entry-id``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from primitives.errors import (
    BackendUnavailableError,
    ChangeFeedGapError,
    InvalidStreamIdError,
)
from primitives.redis_connection import (
    RedisClient,
    connect,
    initialize_cluster,
    is_cluster,
    redis_errors_mapped,
)
from primitives.sync.feed import (
    LATEST,
    START,
    ChangeEvent,
    ChangeFeed,
    ChangeSubscription,
    StreamKey,
    _check_events,
    format_position,
    parse_position,
    trim_slack,
)
from primitives.validation import check_int, check_number, check_text

__all__ = ["DEFAULT_MAXLEN", "RedisChangeFeed"]

logger = logging.getLogger(__name__)

#: Events the stream keeps by default: ten times the 10,000-event offline catch-up target.
DEFAULT_MAXLEN = 100_000
#: Events per script call; a larger batch is several calls in one pipeline (one round trip).
_CHUNK = 5_000
_WHAT = "the change feed's Redis"

# KEYS[1] stream. ARGV[1] channel, ARGV[2] maxlen, ARGV[3] slack, then 7 strings per event.
_PUBLISH = """
local key = KEYS[1]
local positions, message = {}, {}
local last
for b = 4, #ARGV, 7 do
  last = redis.call('XADD', key, '*', 'id', ARGV[b], 'op', ARGV[b+1], 'namespace', ARGV[b+2],
    'user_id', ARGV[b+3], 'memory_type', ARGV[b+4], 'updated_at', ARGV[b+5], 'origin', ARGV[b+6])
  positions[#positions+1] = last
  message[#message+1] = {last, ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5], ARGV[b+6]}
end
local maxlen = tonumber(ARGV[2])
local length = redis.call('XLEN', key)
if length > maxlen + tonumber(ARGV[3]) then
  local doomed = redis.call('XRANGE', key, '-', '+', 'COUNT', length - maxlen)
  redis.call('XTRIM', key, 'MAXLEN', maxlen)
  redis.call('XSETID', key, last, 'MAXDELETEDID', doomed[#doomed][1])
end
redis.call('PUBLISH', ARGV[1], cjson.encode(message))
return positions
"""

_FIELDS = ("id", "op", "namespace", "user_id", "memory_type", "updated_at", "origin")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisChangeFeed(ChangeFeed):
    """A :class:`~primitives.sync.feed.ChangeFeed` on Redis (standalone or Cluster).

    Args:
        client: A redis-py asyncio client the caller owns (``redis.asyncio.Redis`` or
            ``RedisCluster``; any ``decode_responses``). Subscriptions take their own pub/sub
            connection from it.
        prefix: Key prefix (any ``str`` UTF-8 can encode); the stream and channel are
            ``{prefix}changes``.
        maxlen: Events the stream keeps (default :data:`DEFAULT_MAXLEN`), an int >= 1; it holds
            up to ``maxlen + trim_slack(maxlen)`` (1%, at least one) between trims.
        max_pending: Events kept for a later publish while Redis is unreachable (default
            10,000), an int >= 1; beyond it the oldest are dropped (counted in :attr:`dropped`,
            logged).
        reconnect_timeout: Seconds a subscription keeps trying to reconnect after losing its
            connection before it raises :class:`BackendUnavailableError` (default 30), a finite
            number > 0.

    Raises:
        InvalidInputError: ``prefix``, ``maxlen``, ``max_pending`` or ``reconnect_timeout`` is
            not accepted (an ``InvalidInputTypeError``, also a ``TypeError``, for a wrong type).

    On a Redis Cluster the stream lives on the node owning its slot; ``PUBLISH`` (from the
    script) reaches subscribers on every node, and subscriptions listen on the node owning the
    channel's slot. Plain ``PUBLISH`` rather than Redis 7's ``SPUBLISH``: it needs no routing
    of the subscriber, and the event volume of a memory store is far below where sharded
    pub/sub pays off.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "memory:",
        maxlen: int = DEFAULT_MAXLEN,
        max_pending: int = 10_000,
        reconnect_timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.prefix = check_text(prefix, "prefix")
        self.key = f"{self.prefix}changes"
        self.channel = f"{self.prefix}changes"
        self.maxlen = check_int(maxlen, "maxlen", minimum=1)
        self.max_pending = check_int(max_pending, "max_pending", minimum=1)
        self.reconnect_timeout = check_number(
            reconnect_timeout, "reconnect_timeout", minimum=0, exclusive_minimum=True
        )
        self.dropped = 0
        self._pending: deque[ChangeEvent] = deque()
        self._unreachable = False  # an outage is going on (said once at INFO; a drop once at WARNING)
        self._dropped_before = 0
        self._script = client.register_script(_PUBLISH)
        self._cluster = is_cluster(client)
        self._head = [self.channel, str(self.maxlen), str(trim_slack(self.maxlen))]
        self._owns_client = False
        self._subscriptions: set[_RedisSubscription] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "memory:",
        maxlen: int = DEFAULT_MAXLEN,
        **connect_kwargs: Any,
    ) -> RedisChangeFeed:
        """A feed on its own client for ``url`` (see :func:`~primitives.redis_connection.connect`),
        closed by :meth:`aclose`. Unless ``retry=`` is given, a command that fails on a broken
        connection is retried once on a fresh one (a pooled socket may predate a server
        restart); should the server have run the publish script before the connection broke,
        that retry publishes the batch twice (consumers apply changes idempotently, last
        writer wins).

        Raises:
            ConfigurationError: ``url`` is not a Redis URL.
        """
        connect_kwargs.setdefault("retry", Retry(NoBackoff(), 1))
        feed = cls(connect(url, cluster=cluster, decode_responses=True, **connect_kwargs), prefix=prefix, maxlen=maxlen)
        feed._owns_client = True
        return feed

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def publish(self, events: Sequence[ChangeEvent]) -> list[str]:
        """Publish ``events`` after any still pending from a failed publish, in one round trip.

        Returns:
            The stream id given to each of ``events``, in input order.

        Raises:
            InvalidInputError: an item is not a :class:`ChangeEvent`; nothing is published.
            BackendUnavailableError: Redis is unreachable; ``events`` are kept (see
                ``max_pending``) and go out ahead of the next publish or :meth:`flush`.
            PermissionDeniedError, AuthenticationFailedError: the ACL user may not run the
                script or the credentials are wrong (events are not kept).
        """
        batch = [*self._pending, *_check_events(events)]
        self._pending.clear()
        if not batch:
            return []
        try:
            positions = await self._send(batch)
        except BackendUnavailableError:
            self._keep(batch)
            raise
        if self._unreachable:
            self._unreachable = False
            logger.info("change feed %s reachable again: published %d held event(s)", self.key, len(batch) - len(events))
        return positions[len(positions) - len(events) :] if events else []

    async def flush(self) -> int:
        """Publish the pending events now; returns how many were sent.

        Raises:
            BackendUnavailableError: still unreachable (the events stay pending).
        """
        count = len(self._pending)
        await self.publish([])
        return count

    def _keep(self, batch: list[ChangeEvent]) -> None:
        # newest-first so that this batch goes back ahead of events a concurrent publish queued
        for event in reversed(batch):
            self._pending.appendleft(event)
        while len(self._pending) > self.max_pending:
            self._pending.popleft()
            self.dropped += 1
        # one line per outage (INFO: the memory's own degrade warning names the outage); a
        # WARNING once when held events start being dropped; DEBUG for every other failed publish
        if not self._unreachable:
            self._unreachable, self._dropped_before = True, self.dropped
            logger.info("change feed %s unreachable: holding up to %d event(s) in memory until it returns",
                        self.key, self.max_pending)
        elif self.dropped > self._dropped_before and self._dropped_before >= 0:
            self._dropped_before = -1
            logger.warning("change feed %s still unreachable: more than %d events held, dropping the oldest",
                           self.key, self.max_pending)
        else:
            logger.debug("change feed: Redis unreachable, %d event(s) pending (%d dropped so far)",
                         len(self._pending), self.dropped)

    async def _send(self, batch: list[ChangeEvent]) -> list[str]:
        if len(batch) <= _CHUNK and not self._cluster:
            return await self._send_one(batch)
        chunks = [batch[i : i + _CHUNK] for i in range(0, len(batch), _CHUNK)]

        def args(chunk: list[ChangeEvent]) -> list[str]:
            return [*self._head, *(f for e in chunk for f in e.fields())]

        async with redis_errors_mapped(_WHAT, self.client):
            if len(chunks) == 1 or self._cluster:  # a cluster pipeline runs no scripts
                results = [await self._script(keys=[self.key], args=args(chunk)) for chunk in chunks]
                return [_s(p) for result in results for p in result]
            async with self.client.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    await self._script(keys=[self.key], args=args(chunk), client=pipe)
                results = await pipe.execute()
        return [_s(p) for result in results for p in result]

    async def _send_one(self, batch: list[ChangeEvent]) -> list[str]:
        """One script call on a standalone client: the live path (one event at a time), kept
        short: ``EVALSHA`` straight on the client (``SCRIPT LOAD`` and again when the server
        does not have the script), errors mapped only when one is raised. Measured against the
        general path: ``bench feed`` and docs/change-feed.md."""
        args = self._head.copy()
        for event in batch:
            args += event.fields()
        try:
            try:
                result = await self.client.evalsha(self._script.sha, 1, self.key, *args)
            except NoScriptError:
                self._script.sha = await self.client.script_load(_PUBLISH)
                result = await self.client.evalsha(self._script.sha, 1, self.key, *args)
        except (RedisError, OSError) as exc:
            async with redis_errors_mapped(_WHAT):
                raise exc
        return [p if p.__class__ is str else _s(p) for p in result]

    async def _info(self) -> tuple[StreamKey, StreamKey, str | None]:
        """``(last generated, max deleted, first kept id)`` of the stream; zeros when missing."""
        async with redis_errors_mapped(_WHAT, self.client):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xinfo_stream(self.key)
                (info,) = await pipe.execute(raise_on_error=False)
        return self._parse_info(info)

    @staticmethod
    def _parse_info(info: Any) -> tuple[StreamKey, StreamKey, str | None]:
        if isinstance(info, Exception):
            if "no such key" in str(info).lower():
                return (0, 0), (0, 0), None
            raise info
        first = info.get("first-entry")
        return (
            parse_position(_s(info["last-generated-id"])),
            parse_position(_s(info.get("max-deleted-entry-id", "0-0"))),
            _s(first[0]) if first else None,
        )

    async def _read(self, after: str, limit: int, *, reset_is_gap: bool = False) -> list[ChangeEvent]:
        """XRANGE then XINFO on one connection: if XINFO (later) shows nothing after ``after``
        was trimmed, the XRANGE (earlier) saw every event after it."""
        if after == LATEST:
            return []
        key = (0, 0) if after == START else parse_position(after)
        async with redis_errors_mapped(_WHAT, self.client):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xrange(self.key, min="-" if after == START else f"({after}", max="+", count=limit)
                pipe.xinfo_stream(self.key)
                entries, info = await pipe.execute(raise_on_error=False)
            last, max_deleted, first = self._parse_info(info)
        if key > last:
            message = (
                f"position {after} is beyond the newest {format_position(last)} of stream "
                f"{self.key!r} (from the future: another stream's position, or the stream was reset)"
            )
            if reset_is_gap:
                raise ChangeFeedGapError(message, after=after, first_available=first or "0-0")
            raise InvalidStreamIdError(message)
        if after != START and key < max_deleted:
            raise ChangeFeedGapError(
                f"events after {after} were trimmed from stream {self.key!r} (it keeps about "
                f"{self.maxlen}; oldest kept {first}); resynchronise",
                after=after,
                first_available=first or format_position(last),
            )
        if isinstance(entries, Exception):
            async with redis_errors_mapped(_WHAT):
                raise entries
        events = []
        for position, fields in entries:
            values = {_s(k): _s(v) for k, v in fields.items()}
            events.append(ChangeEvent.from_fields([values.get(f, "") for f in _FIELDS], _s(position)))
        return events

    async def last_position(self) -> str:
        return format_position((await self._info())[0])

    def subscribe(
        self,
        *,
        after: str | None = None,
        namespace: str | None = None,
        exclude_origin: str | None = None,
    ) -> ChangeSubscription:
        return _RedisSubscription(self, after, namespace=namespace, exclude_origin=exclude_origin)

    async def aclose(self) -> None:
        """Close the subscriptions, and the client when :meth:`from_url` made it."""
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        if self._owns_client:
            await self.client.aclose()


def _parse_message(data: Any) -> list[ChangeEvent]:
    return [ChangeEvent.from_fields(item[1:], _s(item[0])) for item in json.loads(data)]


class _RedisSubscription(ChangeSubscription):
    """Subscribe first, then catch up with XRANGE from the position, then follow pub/sub;
    duplicates (events both read and heard) are dropped by position. After a lost connection
    (redis-py re-subscribes, or this reconnects), catch up again from the last position."""

    _BATCH = 1000

    def __init__(self, feed: RedisChangeFeed, after: str | None, **kwargs: str | None) -> None:
        super().__init__(after, **kwargs)
        self._feed = feed
        self._pubsub: Any = None
        self._buffer: deque[ChangeEvent] = deque()
        self._catching_up = True

    async def _listen(self) -> None:
        client = self._feed.client
        if is_cluster(client):  # its pub/sub routes by the slot map, loaded on first use
            async with redis_errors_mapped(_WHAT):
                await initialize_cluster(client)
        pubsub = client.pubsub()
        try:
            async with redis_errors_mapped(_WHAT):
                await pubsub.subscribe(self._feed.channel)
                # wait for the confirmation: from then on every publish reaches this connection
                while True:
                    message = await pubsub.get_message(timeout=self._feed.reconnect_timeout)
                    if message is None:
                        raise BackendUnavailableError(f"{_WHAT} did not confirm SUBSCRIBE")
                    if _s(message["type"]) == "subscribe":
                        break
                    if _s(message["type"]) == "message":
                        self._buffer.extend(_parse_message(message["data"]))
        except BaseException:
            await pubsub.aclose()
            raise
        self._pubsub = pubsub
        self._feed._subscriptions.add(self)

    async def _open(self, after: str) -> StreamKey:
        await self._listen()
        try:
            if after == LATEST:
                return parse_position(await self._feed.last_position())
            events = await self._feed._read(after, self._BATCH)
        except BaseException:
            await self._close()
            raise
        self._buffer.extend(events)
        self._catching_up = len(events) == self._BATCH
        return (0, 0) if after == START else parse_position(after)

    async def _next(self, *, block: bool) -> ChangeEvent | None:
        while not self._closed:
            if self._buffer:
                return self._buffer.popleft()
            try:
                if self._catching_up:
                    events = await self._feed._read(self.position or START, self._BATCH, reset_is_gap=True)
                    self._buffer.extend(events)
                    self._catching_up = len(events) == self._BATCH
                    continue
                async with redis_errors_mapped(_WHAT):
                    message = await self._pubsub.get_message(timeout=None if block else 0.0)
            except BackendUnavailableError:
                await self._reconnect()
                continue
            if message is None:
                if not block:
                    return None
                continue
            kind = _s(message["type"])
            if kind == "message":
                self._buffer.extend(_parse_message(message["data"]))
            elif kind == "subscribe":  # redis-py reconnected and re-subscribed: events may be lost
                self._catching_up = True
        return None

    async def _reconnect(self) -> None:
        await self._drop_pubsub()
        deadline = time.monotonic() + self._feed.reconnect_timeout
        delay = 0.05
        while not self._closed:
            try:
                await self._listen()
            except BackendUnavailableError:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._catching_up = True
            return

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except (OSError, ConnectionError):  # the connection is already gone
                pass

    async def _close(self) -> None:
        self._feed._subscriptions.discard(self)
        self._buffer.clear()
        await self._drop_pubsub()
