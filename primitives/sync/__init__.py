"""The change feed that lets several agents share memory: every write and delete through
``Memory`` becomes a :class:`ChangeEvent` on Redis pub/sub (low-latency notification) and a capped
Redis Stream (catch-up from a position), or on the in-process twin.

``RedisChangeFeed`` (extra ``redis``) is imported lazily, so this package imports without redis-py.
"""

from __future__ import annotations

from typing import Any

from primitives.sync.feed import (
    LATEST,
    START,
    ChangeEvent,
    ChangeFeed,
    ChangeSubscription,
    InMemoryChangeFeed,
)

__all__ = [
    "LATEST",
    "START",
    "ChangeEvent",
    "ChangeFeed",
    "ChangeSubscription",
    "InMemoryChangeFeed",
    "RedisChangeFeed",
]


def __getattr__(name: str) -> Any:
    if name == "RedisChangeFeed":
        from primitives.sync.feed_redis import RedisChangeFeed

        return RedisChangeFeed
    raise AttributeError(name)
