"""``KeyValueStore``: async get / set with TTL / mget / mset / delete by namespace, on Redis
(:class:`~primitives.store.kv_redis.RedisKeyValueStore`) or in process
(:class:`InMemoryKeyValueStore`), behind one interface and one contract test suite.

Keys follow :class:`~primitives.store.keys.KeyScheme`: ``kv:{namespace}:{entity}:{id}`` with
every part percent-encoded. Values go through a :class:`~primitives.store.serialization.Serializer`
(JSON by default) in both implementations, so both accept and refuse the same values and a value
mutated after ``set`` is not changed in the store.

TTL convention: ``ttl`` is seconds (``int`` or ``float``), finite and ``> 0`` (at most
:data:`MAX_TTL`, the limit of :mod:`primitives.validation` re-exported here); ``None`` means no
expiry. Redis keeps it in milliseconds, rounded up.
:meth:`KeyValueStore.ttl` returns the seconds remaining, ``math.inf`` for a key without expiry and
``None`` for a missing key.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cachetools import TLRUCache

from primitives.errors import InvalidInputTypeError, InvalidTTLError
from primitives.store.keys import DEFAULT_PREFIX, KeyScheme
from primitives.store.serialization import Serializer
from primitives.validation import MAX_TTL, check_bool, check_int, check_items
from primitives.validation import check_ttl as _check_ttl

__all__ = ["KeyValueStore", "InMemoryKeyValueStore", "MAX_TTL", "DEFAULT_NAMESPACE", "check_ttl"]

# MAX_TTL, the longest accepted ttl (10**12 s, about 31,700 years: well inside Redis's signed
# 64-bit millisecond expiry time), is primitives.validation.MAX_TTL, re-exported (one definition).
#: The namespace a store uses when none is given at construction.
DEFAULT_NAMESPACE: Final = "default"
#: Error family of a bad ``ttl`` (value error, type error): both :class:`InvalidTTLError`.
TTL_ERRORS: Final = (InvalidTTLError, InvalidTTLError)


def check_ttl(ttl: object, name: str = "ttl") -> float:
    """``ttl`` as seconds, after checking it with :func:`primitives.validation.check_ttl`: a finite
    number in ``(0, MAX_TTL]``; the store primitives mean "no expiry" by ``None``, not
    ``math.inf``.

    Raises:
        InvalidTTLError: ``ttl`` is ``None``, a ``bool``, not an ``int``/``float``, NaN, infinite,
            ``<= 0`` or above :data:`MAX_TTL` (a huge ``int`` included).
    """
    return _check_ttl(ttl, name, optional=False, infinite=False, errors=TTL_ERRORS)  # type: ignore[return-value]


def ttl_ms(ttl: float) -> int:
    """Seconds to whole milliseconds, rounded up (so a tiny ttl never becomes 0)."""
    return max(1, math.ceil(ttl * 1000))


class KeyValueStore(ABC):
    """Async key-value store: one value per ``(namespace, entity, id)``.

    The public methods build the key, serialize, and check arguments; an implementation provides
    the ``_raw_*`` operations on keys and bytes. Every method takes ``namespace=`` to override the
    store's own for one call.

    Args:
        namespace: The namespace used when a call names none. Default ``"default"``.
        serializer: How values become bytes; ``Serializer()`` (JSON, zlib above 1 KiB) by default.
        prefix: Written in front of every key. Default ``"kv:"``.

    Raises:
        InvalidKeyError: ``namespace`` is not a non-empty ``str`` UTF-8 can encode, or ``prefix``
            is not a ``str`` it can encode.
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        serializer: Serializer | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.keys = KeyScheme(prefix)
        self.keys.namespace_prefix(namespace)  # validates it
        self.namespace = namespace
        self.serializer = serializer if serializer is not None else Serializer()

    # -- the seam ---------------------------------------------------------------------------
    @abstractmethod
    async def _raw_get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def _raw_mget(self, keys: list[str]) -> list[bytes | None]: ...

    @abstractmethod
    async def _raw_set(self, key: str, data: bytes, ttl: float | None, nx: bool) -> bool: ...

    @abstractmethod
    async def _raw_mset(self, items: dict[str, bytes], ttl: float | None) -> None: ...

    @abstractmethod
    async def _raw_delete(self, key: str) -> bool: ...

    @abstractmethod
    async def _raw_exists(self, key: str) -> bool: ...

    @abstractmethod
    async def _raw_expire(self, key: str, ttl: float) -> bool: ...

    @abstractmethod
    async def _raw_ttl(self, key: str) -> float | None: ...

    @abstractmethod
    async def _raw_delete_prefix(self, namespace: str) -> int: ...

    # -- the public API ---------------------------------------------------------------------
    def key(self, entity: str, id: str, *, namespace: str | None = None) -> str:
        """The backend key of ``(namespace, entity, id)``; see :class:`KeyScheme`.

        Raises:
            InvalidKeyError: a part is not a non-empty ``str`` UTF-8 can encode.
        """
        return self.keys.key(self.namespace if namespace is None else namespace, entity, id)

    async def get(self, entity: str, id: str, *, namespace: str | None = None) -> Any:
        """The value stored for ``(namespace, entity, id)``, or ``None`` on a miss (a stored JSON
        ``null`` also reads as ``None``; :meth:`exists` tells them apart).

        Raises:
            InvalidKeyError: a key part is not a non-empty ``str`` UTF-8 can encode.
            CorruptValueError: the stored bytes cannot be decoded (left as they are).
        """
        data = await self._raw_get(self.key(entity, id, namespace=namespace))
        return None if data is None else self.serializer.loads(data)

    async def set(
        self,
        entity: str,
        id: str,
        value: Any,
        *,
        ttl: float | None = None,
        nx: bool = False,
        namespace: str | None = None,
    ) -> bool:
        """Store ``value``, replacing any value and expiry the key had.

        Args:
            entity: The kind of thing (``"profile"``, ``"cache"``, ...).
            id: The thing's id.
            value: Anything the serializer accepts (JSON types by default).
            ttl: Seconds until the key expires; ``None`` keeps it until deleted.
            nx: Only write when the key does not exist (Redis ``SET NX``).
            namespace: Overrides the store's namespace for this call.

        Returns:
            ``True`` when written; ``False`` only with ``nx=True`` when the key existed.

        Raises:
            InvalidKeyError: a key part is not a non-empty ``str`` UTF-8 can encode.
            InvalidTTLError: ``ttl`` is not seconds in ``(0, MAX_TTL]``.
            InvalidInputTypeError: ``nx`` is not a ``bool``.
            SerializationError: ``value`` cannot be serialized; nothing was written.
        """
        key = self.key(entity, id, namespace=namespace)
        if ttl is not None:
            ttl = check_ttl(ttl)
        check_bool(nx, "nx")
        return await self._raw_set(key, self.serializer.dumps(value), ttl, nx)

    async def delete(self, entity: str, id: str, *, namespace: str | None = None) -> bool:
        """Remove the key. Returns whether it existed.

        Raises:
            InvalidKeyError: a key part is not a non-empty ``str`` UTF-8 can encode.
        """
        return await self._raw_delete(self.key(entity, id, namespace=namespace))

    async def exists(self, entity: str, id: str, *, namespace: str | None = None) -> bool:
        """Whether the key exists (and has not expired).

        Raises:
            InvalidKeyError: a key part is not a non-empty ``str`` UTF-8 can encode.
        """
        return await self._raw_exists(self.key(entity, id, namespace=namespace))

    async def expire(self, entity: str, id: str, ttl: float, *, namespace: str | None = None) -> bool:
        """Set the key to expire ``ttl`` seconds from now. Returns ``False`` when it does not exist.

        Raises:
            InvalidKeyError: a key part is not a non-empty ``str`` UTF-8 can encode.
            InvalidTTLError: ``ttl`` is not seconds in ``(0, MAX_TTL]``.
        """
        key = self.key(entity, id, namespace=namespace)
        return await self._raw_expire(key, check_ttl(ttl))

    async def ttl(self, entity: str, id: str, *, namespace: str | None = None) -> float | None:
        """Seconds until the key expires (Redis ``PTTL`` / 1000); ``math.inf`` when it exists
        without an expiry; ``None`` when it does not exist.

        Raises:
            InvalidKeyError: a key part is not a non-empty ``str`` UTF-8 can encode.
        """
        return await self._raw_ttl(self.key(entity, id, namespace=namespace))

    async def mget(self, entity: str, ids: Sequence[str], *, namespace: str | None = None) -> list[Any]:
        """The values of many ids of one entity, in the order of ``ids``; ``None`` for misses.

        On Redis this is one ``MGET`` (one round trip); on a cluster, one pipelined round trip
        per node holding some of the keys.

        Raises:
            InvalidKeyError: an id is not a non-empty ``str`` UTF-8 can encode.
            InvalidInputError: ``ids`` is not a list or tuple (a ``str`` included; an
                ``InvalidInputTypeError``, also a ``TypeError``).
            CorruptValueError: a stored value cannot be decoded.
        """
        keys = [self.key(entity, i, namespace=namespace) for i in check_items(ids, "ids")]
        if not keys:
            return []
        loads = self.serializer.loads
        return [None if data is None else loads(data) for data in await self._raw_mget(keys)]

    async def mset(
        self,
        entity: str,
        values: Mapping[str, Any],
        *,
        ttl: float | None = None,
        namespace: str | None = None,
    ) -> None:
        """Store many ids of one entity, all with the same ``ttl``, in one round trip.

        Every value is serialized before anything is sent, so a value that cannot be serialized
        leaves the store unchanged. On a standalone Redis the write is atomic (``MSET``, or
        ``SET PX`` per key in ``MULTI``); on a cluster it is one pipeline per node, not atomic
        across nodes.

        Raises:
            InvalidKeyError: an id is not a non-empty ``str`` UTF-8 can encode.
            InvalidTTLError: ``ttl`` is not seconds in ``(0, MAX_TTL]``.
            InvalidInputError: ``values`` is not a mapping (an ``InvalidInputTypeError``, also a
                ``TypeError``).
            SerializationError: a value cannot be serialized; nothing was written.
        """
        if ttl is not None:
            ttl = check_ttl(ttl)
        if not isinstance(values, Mapping):
            raise InvalidInputTypeError(
                f"values must be a mapping of id to value, got {type(values).__name__}"
            )
        dumps = self.serializer.dumps
        items = {self.key(entity, i, namespace=namespace): dumps(v) for i, v in values.items()}
        if items:
            await self._raw_mset(items, ttl)

    async def delete_namespace(self, namespace: str | None = None) -> int:
        """Delete every key of ``namespace`` (the store's own when ``None``); returns how many.

        On Redis: ``SCAN MATCH`` on the glob-escaped namespace prefix (on every primary of a
        cluster) and ``UNLINK`` in batches; never ``KEYS``. Keys written while it runs may
        survive. Other namespaces, including ones whose name starts with this one's, are not
        touched.

        Raises:
            InvalidKeyError: ``namespace`` is not a non-empty ``str`` UTF-8 can encode.
        """
        return await self._raw_delete_prefix(self.namespace if namespace is None else namespace)


class InMemoryKeyValueStore(KeyValueStore):
    """The in-process twin: a :class:`cachetools.TLRUCache` of serialized bytes with per-key
    expiry, least recently used eviction beyond ``maxsize`` keys.

    Args:
        maxsize: Keys kept; the least recently used is evicted beyond it. Default 100,000.
        clock: Seconds (``time.time`` by default); tests pass a fake clock.
        namespace, serializer, prefix: As for :class:`KeyValueStore`.

    Raises:
        InvalidInputError: ``maxsize`` is not an int >= 1 (an ``InvalidInputTypeError``, also a
            ``TypeError``, for a non-``int`` or a ``bool``).
        InvalidKeyError: ``namespace`` is not a non-empty ``str`` UTF-8 can encode, or ``prefix``
            is not a ``str`` it can encode.
    """

    def __init__(
        self,
        *,
        maxsize: int = 100_000,
        clock: Callable[[], float] = time.time,
        namespace: str = DEFAULT_NAMESPACE,
        serializer: Serializer | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        super().__init__(namespace=namespace, serializer=serializer, prefix=prefix)
        maxsize = check_int(maxsize, "maxsize", minimum=1)
        self._clock = clock
        # value = (bytes, absolute expiry in clock seconds or inf)
        self._cache: TLRUCache[str, tuple[bytes, float]] = TLRUCache(
            maxsize, ttu=lambda _key, value, _now: value[1], timer=clock
        )

    def _expiry(self, ttl: float | None) -> float:
        return math.inf if ttl is None else self._clock() + ttl

    async def _raw_get(self, key: str) -> bytes | None:
        item = self._cache.get(key)
        return None if item is None else item[0]

    async def _raw_mget(self, keys: list[str]) -> list[bytes | None]:
        get = self._cache.get
        return [None if (item := get(k)) is None else item[0] for k in keys]

    async def _raw_set(self, key: str, data: bytes, ttl: float | None, nx: bool) -> bool:
        if nx and key in self._cache:
            return False
        self._cache[key] = (data, self._expiry(ttl))
        return True

    async def _raw_mset(self, items: dict[str, bytes], ttl: float | None) -> None:
        expires = self._expiry(ttl)
        for key, data in items.items():
            self._cache[key] = (data, expires)

    async def _raw_delete(self, key: str) -> bool:
        return self._cache.pop(key, None) is not None

    async def _raw_exists(self, key: str) -> bool:
        return key in self._cache

    async def _raw_expire(self, key: str, ttl: float) -> bool:
        item = self._cache.get(key)
        if item is None:
            return False
        self._cache[key] = (item[0], self._expiry(ttl))
        return True

    async def _raw_ttl(self, key: str) -> float | None:
        item = self._cache.get(key)
        if item is None:
            return None
        return math.inf if item[1] == math.inf else item[1] - self._clock()

    async def _raw_delete_prefix(self, namespace: str) -> int:
        prefix = self.keys.namespace_prefix(namespace)
        doomed = [k for k in list(self._cache) if k.startswith(prefix)]
        return sum(self._cache.pop(k, None) is not None for k in doomed)
