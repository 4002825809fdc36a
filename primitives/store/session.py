"""Bounded chat history per session, with a sliding TTL and linked sessions.

:class:`BaseSessionHistory` is the interface; :class:`InMemorySessionHistory` is the in-process
twin (cachetools, injectable clock) and :class:`~primitives.store.session_redis.SessionHistory`
the Redis implementation. One contract suite runs against both.

Messages are mappings with a non-empty ``str`` ``role``, a ``str`` ``content`` and any other
JSON-serializable fields; ``created_at`` (UTC ISO 8601) is stamped when absent. They are stored
as JSON and returned as new ``dict``\\ s, oldest first.

Activity (what refreshes a session's sliding TTL): :meth:`~BaseSessionHistory.append`,
:meth:`~BaseSessionHistory.read` and :meth:`~BaseSessionHistory.rotate` (on both the old and the
new session). :meth:`~BaseSessionHistory.chain` and :meth:`~BaseSessionHistory.clear` are not
activity.

Sessions are linked by :meth:`~BaseSessionHistory.rotate`: the old session keeps a ``next`` link,
the new one a ``prev`` link. A link counts only when both ends agree, so a rotation that stopped
half-way (a crash between its two writes) is invisible to :meth:`~BaseSessionHistory.chain`.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache

from primitives.errors import (
    CorruptValueError,
    InvalidInputError,
    SerializationError,
)
from primitives.store.keys import KEY_ERRORS
from primitives.store.kv import TTL_ERRORS
from primitives.validation import (
    MAX_COUNT,
    check_aware_datetime,
    check_int,
    check_limit,
    check_text,
    check_ttl,
)

__all__ = [
    "DEFAULT_CHAIN_LIMIT",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_SESSION_TTL",
    "BaseSessionHistory",
    "InMemorySessionHistory",
]

#: Messages kept per session unless configured otherwise (the oldest are dropped first).
DEFAULT_MAX_MESSAGES = 100
#: Seconds of inactivity after which a session expires unless configured otherwise (one day).
DEFAULT_SESSION_TTL = 86_400.0
#: Most sessions :meth:`BaseSessionHistory.chain` returns unless told otherwise.
DEFAULT_CHAIN_LIMIT = 1_000


def check_session_id(session_id: object, what: str = "session_id") -> str:
    """``session_id`` when it is a non-empty ``str`` that UTF-8 can encode (any character is
    kept: separators, whitespace, braces); else :class:`InvalidKeyError`."""
    return check_text(session_id, what, allow_empty=False, errors=KEY_ERRORS)


def check_read_limit(limit: object) -> int | None:
    """``limit`` of :meth:`BaseSessionHistory.read`: ``None`` (every kept message) or an int in
    ``[1, MAX_LIMIT]`` (:func:`primitives.validation.check_limit`)."""
    return None if limit is None else check_limit(limit)


def utc_iso(ts: float) -> str:
    """``ts`` (seconds since the epoch) as UTC ISO 8601 with microseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def encode_messages(messages: Mapping[str, Any] | Iterable[Mapping[str, Any]], now: float) -> list[str]:
    """Validate ``messages`` and return them as JSON strings, ``created_at`` stamped with ``now``.

    Raises:
        InvalidInputError: ``messages`` is not a mapping or an iterable of mappings; a ``role``
            is not a non-empty ``str``; ``content`` is not a ``str``; a field name is not a
            ``str``; ``created_at`` is not a ``str`` or a timezone-aware ``datetime``; a string
            anywhere in the message has a lone surrogate (UTF-8 cannot encode it).
        SerializationError: An extra field cannot be encoded as JSON (objects, ``NaN``, ...).
    """
    if isinstance(messages, Mapping):
        messages = [messages]
    elif isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise InvalidInputError(
            f"messages must be a mapping or an iterable of mappings, got {type(messages).__name__}"
        )
    stamp = utc_iso(now)
    encoded: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidInputError(f"message {i} must be a mapping, got {type(message).__name__}")
        body = dict(message)
        if any(not isinstance(k, str) for k in body):
            raise InvalidInputError(f"message {i} has a field name that is not a str: {list(body)!r}")
        check_text(body.get("role"), f"message {i}: role", allow_empty=False)
        check_text(body.get("content"), f"message {i}: content")
        created = body.get("created_at")
        if created is None:
            body["created_at"] = stamp
        elif isinstance(created, datetime):
            when = check_aware_datetime(created, f"message {i}: created_at")
            body["created_at"] = when.isoformat(timespec="microseconds")
        elif not isinstance(created, str):
            raise InvalidInputError(
                f"message {i}: created_at must be an ISO 8601 str or an aware datetime, got {created!r}"
            )
        try:
            text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"message {i} is not JSON-serializable: {exc}") from exc
        encoded.append(check_text(text, f"message {i}"))  # a lone surrogate in any field
    return encoded


def decode_message(raw: str | bytes) -> dict[str, Any]:
    """One stored message back as a ``dict``; :class:`CorruptValueError` when it is not one."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptValueError(f"a stored session message is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CorruptValueError(f"a stored session message is not a JSON object: {value!r:.80}")
    return value


class BaseSessionHistory(ABC):
    """The session-history interface shared by the Redis and in-process implementations.

    Args (of every implementation):
        namespace: Separates applications sharing one store; sessions of different namespaces
            never see each other. Default ``"default"``.
        max_messages: Messages kept per session (an int in ``[1, MAX_COUNT]``, 2**53 - 1; default
            100); an append that goes over drops the oldest, in the same atomic step.
        ttl: Seconds of inactivity after which a session (messages and links) expires, finite,
            in ``(0, MAX_TTL]`` (10**12); ``None`` keeps sessions forever. Default one day.
            Refreshed by ``append``, ``read`` and ``rotate``.
        clock: Seconds since the epoch; stamps ``created_at`` / ``updated_at`` (and, in process,
            drives expiry). ``time.time`` by default.
    """

    def __init__(
        self,
        *,
        namespace: str = "default",
        max_messages: int = DEFAULT_MAX_MESSAGES,
        ttl: float | None = DEFAULT_SESSION_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = check_session_id(namespace, "namespace")
        self.max_messages = check_int(max_messages, "max_messages", minimum=1, maximum=MAX_COUNT)
        self.ttl = check_ttl(ttl, optional=True, infinite=False, errors=TTL_ERRORS)
        self._clock = clock

    @abstractmethod
    async def append(
        self, session_id: str, messages: Mapping[str, Any] | Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Append one message or several (in order) to a session, keeping the last ``max_messages``.

        Atomic: the push, the trim and the TTL refresh happen together or not at all.

        Returns:
            The stored messages (with ``created_at`` stamped), in the order given. An empty
            iterable writes nothing and returns ``[]``.

        Raises:
            InvalidKeyError: ``session_id`` is empty, not a ``str``, or has a lone surrogate.
            InvalidInputError: A message is not a mapping with a non-empty ``str`` ``role`` and a
                ``str`` ``content`` (see :func:`encode_messages`); nothing is written.
            SerializationError: An extra field is not JSON-serializable; nothing is written.
        """

    @abstractmethod
    async def read(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The session's last ``limit`` messages (all kept ones when ``None``), oldest first.

        Refreshes the session's TTL. An unknown or expired session reads as ``[]``.

        Raises:
            InvalidKeyError: ``session_id`` is empty, not a ``str``, or has a lone surrogate.
            InvalidInputError: ``limit`` is not ``None`` or an int in ``[1, MAX_LIMIT]``
                (10,000; an ``InvalidInputTypeError``, also a ``TypeError``, for a non-int).
            CorruptValueError: A stored message is not a JSON object.
        """

    @abstractmethod
    async def clear(self, session_id: str) -> None:
        """Delete the session's messages. Its links (``prev`` / ``next``) stay until they expire.

        Raises:
            InvalidKeyError: ``session_id`` is empty, not a ``str``, or has a lone surrogate.
        """

    @abstractmethod
    async def rotate(self, session_id: str, new_session_id: str | None = None) -> str:
        """Start a new, empty session linked after ``session_id`` and return its id.

        The old session gets ``next = new``, the new one ``prev = old``; both TTLs are refreshed.

        Args:
            session_id: The session to continue from (it need not have messages).
            new_session_id: The id to use; a random 32-hex-digit id when ``None``.

        Raises:
            InvalidKeyError: An id is empty, not a ``str``, or has a lone surrogate.
            InvalidInputError: ``new_session_id`` already exists or equals ``session_id``, or
                ``session_id`` was already rotated (rotate the newest session of its chain).
        """

    @abstractmethod
    async def chain(self, session_id: str, *, limit: int = DEFAULT_CHAIN_LIMIT) -> list[str]:
        """The ids of the sessions linked with ``session_id`` (itself included), oldest first.

        Follows ``prev`` links back, then ``next`` links forward; a link counts only when both
        ends agree, a session seen twice stops the walk (cycle-safe), and a session that expired
        ends the walk on its side. Not activity: TTLs are not refreshed.

        Args:
            limit: Most ids returned (an int in ``[1, MAX_LIMIT]``, default 1000): up to
                ``limit - 1`` back, then forward until ``limit``.

        Raises:
            InvalidKeyError: ``session_id`` is empty, not a ``str``, or has a lone surrogate.
            InvalidInputError: ``limit`` is not an int in ``[1, MAX_LIMIT]`` (``None`` included).
        """

    async def aclose(self) -> None:
        """Release resources this object owns (the Redis client is the caller's; nothing here)."""

    def _new_id(self, session_id: str, new_session_id: str | None) -> str:
        new = uuid.uuid4().hex if new_session_id is None else check_session_id(new_session_id, "new_session_id")
        if new == session_id:
            raise InvalidInputError(f"new_session_id must differ from session_id ({session_id!r})")
        return new


@dataclass(slots=True)
class _Session:
    messages: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)


class InMemorySessionHistory(BaseSessionHistory):
    """Session history in this process: a ``cachetools.TTLCache`` of sessions.

    Same behaviour as the Redis :class:`~primitives.store.session_redis.SessionHistory`, checked
    by one contract suite. Expiry is driven by ``clock`` (inject a fake clock in tests).

    Args:
        namespace, max_messages, ttl, clock: See :class:`BaseSessionHistory`.
        max_sessions: Sessions kept in memory; beyond it the least recently used one is dropped
            (cachetools LRU order within the TTL cache). Default 10,000.

    Raises:
        InvalidKeyError: ``namespace`` is empty, not a ``str``, or has a lone surrogate.
        InvalidTTLError: ``ttl`` is not ``None`` or a finite number in ``(0, MAX_TTL]``.
        InvalidInputError: ``max_messages`` is not an int in ``[1, MAX_COUNT]``, or
            ``max_sessions`` not an int >= 1.
    """

    def __init__(
        self,
        *,
        namespace: str = "default",
        max_messages: int = DEFAULT_MAX_MESSAGES,
        ttl: float | None = DEFAULT_SESSION_TTL,
        clock: Callable[[], float] = time.time,
        max_sessions: int = 10_000,
    ) -> None:
        super().__init__(namespace=namespace, max_messages=max_messages, ttl=ttl, clock=clock)
        check_int(max_sessions, "max_sessions", minimum=1)
        self._sessions: TTLCache[str, _Session] = TTLCache(
            maxsize=max_sessions, ttl=self.ttl if self.ttl is not None else math.inf, timer=clock
        )

    def _touch(self, session_id: str, session: _Session) -> None:
        # Re-inserting restarts the entry's TTL in cachetools' TTLCache: the sliding expiry.
        self._sessions[session_id] = session

    async def append(
        self, session_id: str, messages: Mapping[str, Any] | Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        check_session_id(session_id)
        now = self._clock()
        encoded = encode_messages(messages, now)
        if not encoded:
            return []
        session = self._sessions.get(session_id) or _Session()
        session.messages.extend(encoded)
        del session.messages[: -self.max_messages]
        stamp = utc_iso(now)
        session.meta.setdefault("created_at", stamp)
        session.meta["updated_at"] = stamp
        self._touch(session_id, session)
        return [json.loads(m) for m in encoded]

    async def read(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        check_session_id(session_id)
        limit = check_read_limit(limit)
        session = self._sessions.get(session_id)
        if session is None:
            return []
        self._touch(session_id, session)
        kept = session.messages if limit is None else session.messages[-limit:]
        return [decode_message(m) for m in kept]

    async def clear(self, session_id: str) -> None:
        check_session_id(session_id)
        session = self._sessions.get(session_id)
        if session is not None:
            session.messages.clear()

    async def rotate(self, session_id: str, new_session_id: str | None = None) -> str:
        check_session_id(session_id)
        new = self._new_id(session_id, new_session_id)
        if new in self._sessions:
            raise InvalidInputError(f"session {new!r} already exists; rotate needs a new id")
        old = self._sessions.get(session_id) or _Session()
        if "next" in old.meta:
            raise InvalidInputError(
                f"session {session_id!r} was already rotated to {old.meta['next']!r}; "
                "rotate the newest session of its chain"
            )
        stamp = utc_iso(self._clock())
        old.meta["next"] = new
        old.meta.setdefault("created_at", stamp)
        old.meta["updated_at"] = stamp
        self._touch(session_id, old)
        self._touch(new, _Session(meta={"prev": session_id, "created_at": stamp, "updated_at": stamp}))
        return new

    async def chain(self, session_id: str, *, limit: int = DEFAULT_CHAIN_LIMIT) -> list[str]:
        check_session_id(session_id)
        check_limit(limit)

        async def links(sid: str) -> dict[str, str]:
            session = self._sessions.get(sid)
            return session.meta if session is not None else {}

        return await walk_chain(session_id, limit, links)


async def walk_chain(
    session_id: str, limit: int, links: Callable[[str], Awaitable[Mapping[str, str]]]
) -> list[str]:
    """The chain walk of :meth:`BaseSessionHistory.chain` over an async ``links(session_id)``
    lookup returning ``{"prev": ..., "next": ...}`` (missing keys = no link)."""
    seen = {session_id}
    back: list[str] = []
    current, meta = session_id, await links(session_id)
    start_meta = meta
    while len(back) + 1 < limit:
        prev = meta.get("prev")
        if prev is None or prev in seen:
            break
        prev_meta = await links(prev)
        if prev_meta.get("next") != current:
            break
        seen.add(prev)
        back.append(prev)
        current, meta = prev, prev_meta
    ids = [*reversed(back), session_id]
    current, meta = session_id, start_meta
    while len(ids) < limit:
        nxt = meta.get("next")
        if nxt is None or nxt in seen:
            break
        next_meta = await links(nxt)
        if next_meta.get("prev") != current:
            break
        seen.add(nxt)
        ids.append(nxt)
        current, meta = nxt, next_meta
    return ids
