"""The Redis backend (extra ``redis``): records as hashes, one RediSearch index, escaping in
:mod:`~primitives.memory.redis_backend.query`, the schema in
:mod:`~primitives.memory.redis_backend.schema`. ``RedisBackend`` loads lazily, so the query and
schema modules import without redis-py."""

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
