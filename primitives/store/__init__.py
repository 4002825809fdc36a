"""Store primitives for agents: a key-value store, session history, rate limits and caching, each
on Redis (or a Redis Cluster) with an in-process twin behind the same interface.

The Redis implementations (extra ``redis``) are imported lazily, so this package imports without
redis-py: ``RedisKeyValueStore``, ``SessionHistory``, ``RateLimiter``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from primitives.store.cache import CachePrimitive, SingleFlightCache, cached, canonical_key
from primitives.store.keys import KeyScheme
from primitives.store.kv import InMemoryKeyValueStore, KeyValueStore
from primitives.store.ratelimit import (
    ALGORITHMS,
    BaseRateLimiter,
    InMemoryRateLimiter,
    RateLimitPrimitive,
    RateLimitResult,
)
from primitives.store.serialization import Serializer
from primitives.store.session import BaseSessionHistory, InMemorySessionHistory

__all__ = [
    "ALGORITHMS",
    "BaseRateLimiter",
    "BaseSessionHistory",
    "CachePrimitive",
    "InMemoryKeyValueStore",
    "InMemoryRateLimiter",
    "InMemorySessionHistory",
    "KeyScheme",
    "KeyValueStore",
    "RateLimitPrimitive",
    "RateLimitResult",
    "RateLimiter",
    "RedisKeyValueStore",
    "Serializer",
    "SessionHistory",
    "SingleFlightCache",
    "cached",
    "canonical_key",
]

_LAZY = {
    "RedisKeyValueStore": "primitives.store.kv_redis",
    "SessionHistory": "primitives.store.session_redis",
    "RateLimiter": "primitives.store.ratelimit_redis",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)
