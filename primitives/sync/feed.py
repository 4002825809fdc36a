"""The change feed: what agents sharing a memory store tell each other about their writes.

A :class:`ChangeEvent` says that one memory record was written (``"upsert"``) or deleted
(``"delete"``), by which agent and when. A :class:`ChangeFeed` appends events to a capped,
ordered log whose positions are Redis stream ids (``"<ms>-<seq>"``) and notifies live readers;
a :class:`ChangeSubscription` is an async iterator that first catches up from a position and then
follows live events, with nothing missed and nothing repeated.

Two feeds implement the interface: :class:`InMemoryChangeFeed` here (one process, for the
zero-setup path and tests) and :class:`~primitives.sync.feed_redis.RedisChangeFeed` (Redis
pub/sub for notification, a capped Redis Stream for catch-up). Both pass one contract suite.

This module knows nothing of :mod:`primitives.memory`: events carry plain strings.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from primitives.errors import (
    ChangeFeedGapError,
    InvalidInputError,
    InvalidStreamIdError,
)
from primitives.validation import check_aware_datetime, check_int, check_limit, check_text

__all__ = [
    "LATEST",
    "OPS",
    "START",
    "ChangeEvent",
    "ChangeFeed",
    "ChangeSubscription",
    "InMemoryChangeFeed",
    "format_position",
    "parse_position",
]

#: Values of :attr:`ChangeEvent.op`.
OPS: tuple[str, ...] = ("upsert", "delete")
#: Position meaning "every event still kept" (the oldest kept onwards; never a gap error).
START = "0"
#: Position meaning "only events published after the subscription starts".
LATEST = "$"

_MAX_U64 = 2**64 - 1
_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")

StreamKey = tuple[int, int]


def parse_position(position: object) -> StreamKey:
    """``(ms, seq)`` of a stream id ``"<ms>-<seq>"`` (``"<ms>"`` alone means ``"<ms>-0"``).

    Raises:
        InvalidStreamIdError: ``position`` is not a str of that form with both parts in
            ``0..2**64-1`` (the range Redis accepts).
    """
    match = _ID.fullmatch(position) if isinstance(position, str) else None
    if match is None:
        raise InvalidStreamIdError(
            f"a change-feed position is a stream id '<ms>-<seq>' (or '0' for everything kept, "
            f"'$' for only new events), got {position!r}"
        )
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > _MAX_U64 or seq > _MAX_U64:
        raise InvalidStreamIdError(f"stream id parts must be < 2**64, got {position!r}")
    return ms, seq


def format_position(key: StreamKey) -> str:
    """``"<ms>-<seq>"`` for ``(ms, seq)``."""
    return f"{key[0]}-{key[1]}"


def trim_slack(maxlen: int) -> int:
    """Events a feed keeps beyond ``maxlen`` before it trims back to exactly ``maxlen``: 1%, at
    least one (so a small feed does not trim on every publish). The same for both feeds."""
    return max(1, maxlen // 100)


def _check_filter(value: object, name: str) -> str | None:
    """A subscription filter: ``None`` (no filter) or a non-empty ``str`` UTF-8 can encode."""
    return None if value is None else check_text(value, name, allow_empty=False)


def _check_after(after: object) -> str:
    """``after`` normalised: :data:`LATEST`, :data:`START` or a canonical ``"<ms>-<seq>"``."""
    if after is None or after == LATEST:
        return LATEST
    key = parse_position(after)
    return START if key == (0, 0) else format_position(key)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change to one memory record.

    Attributes:
        id: The memory record's id.
        op: ``"upsert"`` (written or replaced) or ``"delete"``.
        namespace: The record's namespace.
        user_id: The record's user, ``None`` for shared records.
        memory_type: The record's memory type value (``"working"``, ``"episodic"``, ...).
        updated_at: UTC time of the change (the record's ``updated_at`` for an upsert, the time
            of deletion for a delete); a consumer applies changes last-writer-wins by it.
        origin: Id of the agent that made the change.
        position: Stream id the feed gave the event (``None`` until published or read).

    Raises:
        InvalidInputError: a field has the wrong type (an ``InvalidInputTypeError``, also a
            ``TypeError``; a naive ``updated_at`` included), ``op`` is not in :data:`OPS`, or
            ``id``, ``namespace``, ``user_id``, ``memory_type`` or ``origin`` is empty or has a
            lone surrogate (checked with :func:`primitives.validation.check_text`).
    """

    id: str
    op: str
    namespace: str
    user_id: str | None
    memory_type: str
    updated_at: datetime
    origin: str
    position: str | None = None

    def __post_init__(self) -> None:
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None or name != "user_id":
                check_text(value, f"ChangeEvent.{name}", allow_empty=False)
        if self.op not in OPS:
            raise InvalidInputError(f"ChangeEvent.op must be one of {OPS}, got {self.op!r}")
        when = self.updated_at
        if when.__class__ is not datetime or when.tzinfo is not UTC:  # UTC: the common case
            object.__setattr__(self, "updated_at", check_aware_datetime(when, "ChangeEvent.updated_at"))

    def at(self, position: str) -> ChangeEvent:
        """This event with ``position`` set (no re-validation: the fields were checked when it
        was made)."""
        event = object.__new__(ChangeEvent)
        for name in _SLOTS:
            object.__setattr__(event, name, getattr(self, name))
        object.__setattr__(event, "position", position)
        return event

    def fields(self) -> list[str]:
        """The event as the seven strings a feed stores, in this order: ``id, op, namespace,
        user_id ("" for None), memory_type, updated_at (ISO 8601, microseconds, UTC), origin``."""
        return [
            self.id,
            self.op,
            self.namespace,
            self.user_id or "",
            self.memory_type,
            self.updated_at.isoformat(timespec="microseconds"),
            self.origin,
        ]

    @classmethod
    def from_fields(cls, values: Sequence[str], position: str | None = None) -> ChangeEvent:
        """The inverse of :meth:`fields`.

        Raises:
            InvalidInputError: not seven values, or one is not accepted (see the class).
        """
        if len(values) != 7:
            raise InvalidInputError(f"a change event has 7 fields, got {len(values)}")
        id, op, namespace, user_id, memory_type, updated_at, origin = values
        try:
            when = datetime.fromisoformat(updated_at)
        except (TypeError, ValueError):
            raise InvalidInputError(f"ChangeEvent.updated_at is not ISO 8601: {updated_at!r}") from None
        return cls(id, op, namespace, user_id or None, memory_type, when, origin, position)


class ChangeSubscription(ABC):
    """An async iterator of :class:`ChangeEvent`, in feed order, each with its ``position``.

    It first yields the events after ``after`` still kept by the feed, then live events as they
    are published. Positions only grow: an event already passed is never yielded again.
    Events filtered out (``namespace``, ``exclude_origin``) are skipped but still advance
    :attr:`position`, so resuming from it neither repeats nor misses anything.

    The subscription starts (listens for live events, then resolves ``after``) on ``async with``
    entry, :meth:`start`, or the first iteration, whichever comes first: with ``after="$"``
    (the default) events published before that moment are not delivered. Stop it with
    :meth:`aclose` (or leave the ``async with`` block); cancelling the task iterating it is safe.

    Iteration raises:
        InvalidStreamIdError: ``after`` lies beyond the feed's newest position (a position
            "from the future": another feed's, or one that was reset).
        ChangeFeedGapError: events after the position were trimmed by the cap before they were
            read (on start, or later if this reader falls more than the cap behind); the caller
            decides how to resynchronise (for instance a new subscription from ``"0"``).
    """

    def __init__(self, after: str | None, *, namespace: str | None, exclude_origin: str | None) -> None:
        self._after = _check_after(after)
        self._namespace = _check_filter(namespace, "namespace")
        self._exclude_origin = _check_filter(exclude_origin, "exclude_origin")
        self._started = False
        self._closed = False
        self._last: StreamKey | None = None

    @property
    def position(self) -> str | None:
        """Stream id of the last event read (yielded or filtered out); ``"0"`` when started
        from ``"0"`` and nothing was read yet; ``None`` before the start. Resume from it."""
        if self._last is None:
            return None
        return START if self._last == (0, 0) else format_position(self._last)

    async def start(self) -> None:
        """Listen for live events and resolve the start position; idempotent.

        Raises:
            InvalidStreamIdError, ChangeFeedGapError: see the class.
            BackendUnavailableError: the feed's server is unreachable.
        """
        if self._started or self._closed:
            return
        self._last = await self._open(self._after)
        self._started = True

    def _wanted(self, event: ChangeEvent) -> bool:
        if self._namespace is not None and event.namespace != self._namespace:
            return False
        return self._exclude_origin is None or event.origin != self._exclude_origin

    def _advance(self, event: ChangeEvent) -> bool:
        """Record ``event`` as read if it is past the position; ``False`` for a duplicate."""
        key = parse_position(event.position)
        assert self._last is not None
        if key <= self._last:
            return False
        self._last = key
        return True

    def __aiter__(self) -> ChangeSubscription:
        return self

    async def __anext__(self) -> ChangeEvent:
        await self.start()
        while not self._closed:
            event = await self._next(block=True)
            if event is None:
                break
            if self._advance(event) and self._wanted(event):
                return event
        raise StopAsyncIteration

    async def next_batch(self, limit: int = 256) -> list[ChangeEvent]:
        """Wait for the next wanted event, then return it with up to ``limit - 1`` more that
        are already available (no further waiting); ``[]`` once the subscription is closed.

        Raises:
            InvalidInputError: ``limit`` is not an int >= 1 (an ``InvalidInputTypeError``, also a
                ``TypeError``, for a non-int or a ``bool``).
            InvalidStreamIdError, ChangeFeedGapError: see the class.
        """
        check_int(limit, "limit", minimum=1)
        try:
            batch = [await self.__anext__()]
        except StopAsyncIteration:
            return []
        while len(batch) < limit and not self._closed:
            event = await self._next(block=False)
            if event is None:
                break
            if self._advance(event) and self._wanted(event):
                batch.append(event)
        return batch

    async def aclose(self) -> None:
        """Stop listening; iteration ends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    async def __aenter__(self) -> ChangeSubscription:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @abstractmethod
    async def _open(self, after: str) -> StreamKey:
        """Listen for live events, then validate ``after`` (:data:`LATEST`, :data:`START` or a
        canonical id) and return it as a key (``LATEST`` resolved to the newest position)."""

    @abstractmethod
    async def _next(self, *, block: bool) -> ChangeEvent | None:
        """The next event after the position (duplicates allowed, they are skipped); ``None``
        when closed, or when ``block`` is false and nothing is available now."""

    @abstractmethod
    async def _close(self) -> None:
        """Release what :meth:`_open` took."""


class ChangeFeed(ABC):
    """An ordered, capped log of :class:`ChangeEvent` with live notification."""

    @abstractmethod
    async def publish(self, events: Sequence[ChangeEvent]) -> list[str]:
        """Append ``events`` in order and notify live readers, atomically and in one round trip.

        Returns:
            The position given to each event, in input order.

        Raises:
            InvalidInputError: an item is not a :class:`ChangeEvent`; nothing is published.
        """

    @abstractmethod
    def subscribe(
        self,
        *,
        after: str | None = None,
        namespace: str | None = None,
        exclude_origin: str | None = None,
    ) -> ChangeSubscription:
        """Events after position ``after``, then live ones (see :class:`ChangeSubscription`).

        Args:
            after: ``None`` or ``"$"``: only events published after the start; ``"0"``: every
                event still kept; a stream id ``"<ms>-<seq>"``: the events after it.
            namespace: Only events of this namespace (``None``: all).
            exclude_origin: Skip events of this agent (a reader's own changes).

        Raises:
            InvalidStreamIdError: ``after`` is malformed (positions from the future and gaps
                are reported when the subscription starts).
            InvalidInputError: ``namespace`` or ``exclude_origin`` is neither ``None`` nor a
                non-empty ``str`` UTF-8 can encode.
        """

    async def read(self, after: str = START, *, limit: int = 1000) -> list[ChangeEvent]:
        """Up to ``limit`` kept events after position ``after`` (exclusive), oldest first.

        Both arguments are checked here, once, before :meth:`_read` (the feed's own) runs.

        Raises:
            InvalidStreamIdError: ``after`` is malformed or beyond the newest position.
            InvalidInputError: ``limit`` is not an int in ``[1, MAX_LIMIT]`` (10,000; see
                :func:`primitives.validation.check_limit`).
            ChangeFeedGapError: events after ``after`` were trimmed (never for ``"0"``).
        """
        return await self._read(_check_after(after), check_limit(limit))

    @abstractmethod
    async def _read(self, after: str, limit: int) -> list[ChangeEvent]:
        """:meth:`read` with checked arguments: ``after`` is :data:`LATEST`, :data:`START` or a
        canonical ``"<ms>-<seq>"``."""

    @abstractmethod
    async def last_position(self) -> str:
        """The newest position ever given (``"0-0"`` for an empty feed)."""

    @property
    def pending(self) -> int:
        """Events whose publication failed, kept to be sent ahead of the next publish."""
        return 0

    async def aclose(self) -> None:
        """Release the feed's resources (a caller-owned client is left open)."""


_SLOTS = ("id", "op", "namespace", "user_id", "memory_type", "updated_at", "origin")
_TEXT_FIELDS = ("id", "namespace", "user_id", "memory_type", "origin")


def _check_events(events: object) -> list[ChangeEvent]:
    if isinstance(events, ChangeEvent) or not isinstance(events, Sequence):
        raise InvalidInputError("publish takes a sequence of ChangeEvent")
    out = list(events)
    for event in out:
        if not isinstance(event, ChangeEvent):
            raise InvalidInputError(f"publish takes ChangeEvent objects, got {type(event).__name__}")
    return out


class InMemoryChangeFeed(ChangeFeed):
    """A change feed inside one process and one event loop: several ``Memory`` objects sharing
    one in-process backend share one of these to hear each other's changes.

    Positions are generated like Redis stream ids (milliseconds of the wall clock, then a
    sequence number), strictly increasing. Once more than ``maxlen + trim_slack(maxlen)``
    events are kept (1%, at least one), the oldest are dropped down to ``maxlen`` (in chunks,
    exactly as the Redis feed trims); reading after a dropped event raises
    :class:`ChangeFeedGapError`, as with Redis.

    Args:
        maxlen: Events kept (default 100,000), an int ``>= 1``.
        clock: Seconds since the epoch (default ``time.time``), for the position's ms part.

    Raises:
        InvalidInputError: ``maxlen`` is not an int >= 1 (an ``InvalidInputTypeError``, also a
            ``TypeError``, for a non-int or a ``bool``).
    """

    def __init__(self, *, maxlen: int = 100_000, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.maxlen = check_int(maxlen, "maxlen", minimum=1)
        #: events kept beyond ``maxlen`` before a trim, as the Redis feed does
        self._slack = trim_slack(self.maxlen)
        self._clock = clock
        self._keys: list[StreamKey] = []
        self._events: list[ChangeEvent] = []
        self._last: StreamKey = (0, 0)
        self._max_deleted: StreamKey = (0, 0)
        self._wakeup = asyncio.Event()
        self._subscriptions: set[_InMemorySubscription] = set()

    def _next_key(self) -> StreamKey:
        ms = int(self._clock() * 1000)
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self._last

    async def publish(self, events: Sequence[ChangeEvent]) -> list[str]:
        batch = _check_events(events)
        positions = []
        for event in batch:
            key = self._next_key()
            position = format_position(key)
            self._keys.append(key)
            self._events.append(event.at(position))
            positions.append(position)
        excess = len(self._keys) - self.maxlen
        if excess > self._slack:  # trim in chunks: deleting from the list's head is O(maxlen)
            self._max_deleted = self._keys[excess - 1]
            del self._keys[:excess]
            del self._events[:excess]
        if batch:
            self._wakeup.set()
            self._wakeup = asyncio.Event()
        return positions

    def _check(self, after: str, *, gap_check: bool = True) -> StreamKey:
        key = (0, 0) if after == START else parse_position(after)
        if key > self._last:
            raise InvalidStreamIdError(
                f"position {after} is beyond this feed's newest {format_position(self._last)} "
                "(from the future: another feed's position, or the feed was reset)"
            )
        if gap_check and key != (0, 0) and key < self._max_deleted:
            raise ChangeFeedGapError(
                f"events after {after} were trimmed (the feed keeps {self.maxlen}); resynchronise",
                after=after,
                first_available=format_position(self._keys[0]) if self._keys else format_position(self._last),
            )
        return key

    def _after(self, key: StreamKey, limit: int) -> list[ChangeEvent]:
        start = bisect.bisect_right(self._keys, key)
        return self._events[start : start + limit]

    async def _read(self, after: str, limit: int) -> list[ChangeEvent]:
        if after == LATEST:  # nothing is after the newest position (as on Redis)
            return []
        return self._after(self._check(after), limit)

    async def last_position(self) -> str:
        return format_position(self._last)

    def subscribe(
        self,
        *,
        after: str | None = None,
        namespace: str | None = None,
        exclude_origin: str | None = None,
    ) -> ChangeSubscription:
        return _InMemorySubscription(self, after, namespace=namespace, exclude_origin=exclude_origin)

    async def aclose(self) -> None:
        """End every subscription's iteration."""
        for subscription in list(self._subscriptions):
            await subscription.aclose()


class _InMemorySubscription(ChangeSubscription):
    def __init__(self, feed: InMemoryChangeFeed, after: str | None, **kwargs: str | None) -> None:
        super().__init__(after, **kwargs)
        self._feed = feed
        self._buffer: deque[ChangeEvent] = deque()

    async def _open(self, after: str) -> StreamKey:
        self._feed._subscriptions.add(self)
        if after == LATEST:
            return self._feed._last
        return self._feed._check(after)

    async def _next(self, *, block: bool) -> ChangeEvent | None:
        while not self._closed:
            if self._buffer:
                return self._buffer.popleft()
            waiter = self._feed._wakeup
            assert self._last is not None
            if self._last != (0, 0):  # a reader more than the cap behind has a gap
                self._feed._check(format_position(self._last))
            self._buffer.extend(self._feed._after(self._last, 1000))
            if self._buffer:
                continue
            if not block:
                return None
            await waiter.wait()
        return None

    async def _close(self) -> None:
        self._feed._subscriptions.discard(self)
        self._buffer.clear()
        self._feed._wakeup.set()  # wake a pending _next so it sees the close
        self._feed._wakeup = asyncio.Event()
