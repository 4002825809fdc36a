"""Working memory on Redis: one list per ``(namespace, session_id)`` under
``{prefix}wm:{quote(ns)}:{quote(session)}`` (:func:`~primitives.memory.redis_backend.keys.session_key`),
each item one message as JSON (:func:`~primitives.memory.redis_backend.codec.encode_message`).

An append is one ``MULTI``: ``RPUSH`` the messages, ``LTRIM`` to the last ``size``, ``PEXPIRE``
the list (a sliding lifetime: every append restarts it). A damaged item is skipped on read and
reported; a key of another Redis type is reported on read and refused on append.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone

from redis import exceptions as redis_errors

from primitives.errors import CorruptRecordError
from primitives.memory.backend import report_corrupt
from primitives.memory.record import Message
from primitives.memory.redis_backend.codec import decode_message, encode_message

__all__ = ["append", "clear", "read"]

_FIX = "list damaged data with `memory-primitives doctor`, move it aside with `memory-primitives repair`"


def _wrong_type(exc: redis_errors.ResponseError) -> bool:
    return "WRONGTYPE" in str(exc)


async def append(client: object, key: str, messages: Sequence[Message], *, size: int, ttl: float) -> None:
    """Append ``messages`` (oldest first) to the list at ``key``, keep its last ``size`` items
    and let it live ``ttl`` seconds from now (``math.inf``: the lifetime is left as it is).

    Raises:
        CorruptRecordError: ``key`` holds another Redis type (nothing is appended).
    """
    now = datetime.now(timezone.utc)
    encoded = [encode_message(m, now) for m in messages]
    try:
        async with client.pipeline(transaction=True) as pipe:  # type: ignore[attr-defined]
            pipe.rpush(key, *encoded)
            pipe.ltrim(key, -size, -1)
            if math.isfinite(ttl):
                pipe.pexpire(key, max(1, int(ttl * 1000)))  # sliding: every append restarts it
            await pipe.execute()
    except redis_errors.ResponseError as exc:
        if not _wrong_type(exc):
            raise
        reason = "it is not a list"
        raise CorruptRecordError(
            f"the working memory at {key!r} cannot be appended to: {reason}; {_FIX}", key=key, reason=reason
        ) from None


async def read(client: object, key: str, count: int, backend: str) -> list[Message]:
    """The last ``count`` messages at ``key``, oldest first. A damaged item is left out and
    reported (:func:`~primitives.memory.backend.report_corrupt`, key ``{key}[index]``); a key of
    another Redis type reads as empty and is reported."""
    try:
        raw = await client.lrange(key, -count, -1)  # type: ignore[attr-defined]
    except redis_errors.ResponseError as exc:
        if not _wrong_type(exc):
            raise
        report_corrupt(backend, "get_messages", key, "it is not a list")
        return []
    out = []
    first = -len(raw)
    for i, item in enumerate(raw):
        try:
            out.append(decode_message(item, f"{key}[{first + i}]"))
        except CorruptRecordError as exc:
            report_corrupt(backend, "get_messages", exc.key, exc.reason)
    return out


async def clear(client: object, key: str) -> None:
    """Forget the list at ``key`` (whatever it holds)."""
    await client.delete(key)  # type: ignore[attr-defined]
