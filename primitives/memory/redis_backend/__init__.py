"""The Redis backend (extra ``redis``): records as hashes, one RediSearch index.

Modules: ``backend`` (:class:`RedisBackend`), ``keys`` (the key scheme), ``schema`` (the index and
the TAG encoding that makes filters exact), ``codec`` (records and messages to and from hashes,
damage detection), ``query`` (every user string reaching ``FT.SEARCH``), ``search`` (running
searches, skipping damaged hits), ``scripts`` (the Lua writes), ``working`` (working memory),
``skills`` (skill statistics), ``maintenance`` (scan, quarantine, drop) and ``migration``
(``index migrate``). ``RedisBackend`` loads lazily, so ``keys``, ``schema``, ``codec`` and
``query`` import without redis-py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from primitives.memory.redis_backend.backend import RedisBackend

__all__ = ["RedisBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from primitives.memory.redis_backend.backend import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
