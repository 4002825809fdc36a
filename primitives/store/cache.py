"""Caching of expensive steps and calls on a :class:`~primitives.store.kv.KeyValueStore`:
:class:`CachePrimitive` wraps any workflow step, :func:`cached` decorates an async function.

Both share one read-through algorithm (:class:`SingleFlightCache`):

1. **Single flight in process.** Concurrent calls for one cache key join one *flight*: the first
   reads the store and, on a miss, runs the step once and stores the output; the others await that
   flight's outcome (the pattern of Go's ``golang.org/x/sync/singleflight``). A step that raises
   is not cached: the exception goes to the caller and every caller waiting on the same flight.
   If the leading call is cancelled, one waiter starts a new flight.
2. **Optional lock across processes** (``lock_ttl=`` seconds). On a miss the flight takes a lock
   key with ``SET NX PX`` (``store.set(..., nx=True, ttl=lock_ttl)``) before running the step,
   re-reads the value after getting it, and releases it after storing. A flight that finds the
   lock taken polls the value every ``lock_poll`` seconds until it appears or the lock is free.
   The lock expires after ``lock_ttl`` seconds, so a crashed holder blocks others at most that
   long; a step that runs longer than ``lock_ttl`` may run a second time elsewhere. Release reads
   the lock and deletes it if it still holds this flight's token (two commands, not atomic).

Values are stored as a one-element list ``[output]`` so a cached ``None`` is a hit. The output is
stored through the store's serializer (JSON by default): an output it cannot serialize raises
:class:`~primitives.errors.SerializationError` to the caller (and every waiter) and nothing is
cached; a hit returns the decoded form (with JSON, tuples come back as lists). Errors of the
store (e.g. ``BackendUnavailableError``) propagate: the cache does not silently bypass Redis.

Default cache key: the SHA-256 hex digest of the *canonical JSON* of the input (``sort_keys``,
compact separators, UTF-8, NaN refused), so equal JSON inputs share an entry whatever their
dict order. For :func:`cached` the input is ``[list(args), kwargs]`` (so ``f(1)`` and ``f(x=1)``
are different entries). A non-JSON input needs a ``key=`` function.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from opentelemetry import metrics, trace

from primitives.core.context import WorkflowContext
from primitives.core.instrumented import InstrumentedPrimitive
from primitives.errors import CompositionError, InvalidInputTypeError, SerializationError
from primitives.store.kv import KeyValueStore, check_ttl
from primitives.validation import check_number

__all__ = ["CachePrimitive", "cached", "SingleFlightCache", "canonical_key"]

P = ParamSpec("P")
R = TypeVar("R")

_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_key(value: Any) -> str:
    """SHA-256 hex digest (64 chars) of the canonical JSON of ``value``. A string with a lone
    surrogate is hashed by its ``surrogatepass`` bytes, which no valid string shares, so any
    ``str`` input has a key (its output may still not be storable).

    Raises:
        SerializationError: ``value`` is not JSON-serializable (pass a ``key=`` function).
    """
    try:
        text = _canonical(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"cannot make a cache key from a {type(value).__name__} input ({exc}); pass key= a "
            "function that returns a str"
        ) from exc
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _check_key_function(key: object) -> None:
    if key is not None and not callable(key):
        raise InvalidInputTypeError(
            f"key must be a function returning the cache id, or None; got {type(key).__name__}"
        )


class SingleFlightCache:
    """Read-through cache of one entity in a store, with single flight and an optional lock
    (the algorithm of the module docstring).

    Args:
        store: Where outputs live.
        entity: Key entity of the cached outputs; the lock keys use ``entity + ":lock"``.
        ttl: Seconds a cached output lives.
        namespace: Store namespace; the store's own when ``None``.
        lock_ttl: Seconds a cross-process lock lives; ``None`` (default) for no lock.
        lock_poll: Seconds between reads while another process holds the lock. Default 0.05.

    Raises:
        InvalidTTLError: ``ttl`` or ``lock_ttl`` is not seconds in ``(0, MAX_TTL]``.
        InvalidInputError: ``lock_poll`` is not a finite number > 0 (an ``InvalidInputTypeError``,
            also a ``TypeError``, for a non-number or a ``bool``).
        InvalidKeyError: ``entity`` or ``namespace`` is not a non-empty ``str`` UTF-8 can encode.
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        entity: str,
        ttl: float,
        namespace: str | None = None,
        lock_ttl: float | None = None,
        lock_poll: float = 0.05,
    ) -> None:
        self.store = store
        self.entity = entity
        self.lock_entity = f"{entity}:lock"
        self.ttl = check_ttl(ttl)
        self.lock_ttl = None if lock_ttl is None else check_ttl(lock_ttl, "lock_ttl")
        self.lock_poll = check_number(lock_poll, "lock_poll", minimum=0, exclusive_minimum=True)
        self.namespace = namespace
        store.key(entity, "probe", namespace=namespace)  # validates entity and namespace
        self._flights: dict[str, asyncio.Future[Any]] = {}

    async def get_or_compute(self, id: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        """The cached output for ``id``, else ``await compute()`` stored for :attr:`ttl` seconds.

        Raises:
            InvalidKeyError: ``id`` is not a non-empty ``str`` UTF-8 can encode.
            SerializationError: the output cannot be serialized; nothing was cached.
            Exception: whatever ``compute`` raised (not cached).
        """
        self.store.key(self.entity, id, namespace=self.namespace)  # a bad id fails every caller alike
        while (flight := self._flights.get(id)) is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                if flight.cancelled():  # the leader was cancelled: start a new flight
                    continue
                raise
        flight = asyncio.get_running_loop().create_future()
        self._flights[id] = flight
        try:
            value = await self._lookup_or_fill(id, compute)
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            flight.set_result(value)
            return value
        finally:
            if self._flights.get(id) is flight:
                del self._flights[id]

    async def invalidate(self, id: str) -> bool:
        """Delete the cached output for ``id``; returns whether there was one.

        Raises:
            InvalidKeyError: ``id`` is not a non-empty ``str`` UTF-8 can encode.
        """
        return await self.store.delete(self.entity, id, namespace=self.namespace)

    async def _read(self, id: str) -> list[Any] | None:
        hit = await self.store.get(self.entity, id, namespace=self.namespace)
        return hit if isinstance(hit, list) and len(hit) == 1 else None

    async def _store(self, id: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        value = await compute()
        await self.store.set(self.entity, id, [value], ttl=self.ttl, namespace=self.namespace)
        return value

    async def _lookup_or_fill(self, id: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        hit = await self._read(id)
        if hit is not None:
            return hit[0]
        if self.lock_ttl is None:
            return await self._store(id, compute)
        token = uuid.uuid4().hex
        ns = self.namespace
        while True:
            if await self.store.set(self.lock_entity, id, token, ttl=self.lock_ttl, nx=True, namespace=ns):
                try:
                    hit = await self._read(id)  # filled while we waited for the lock?
                    if hit is not None:
                        return hit[0]
                    return await self._store(id, compute)
                finally:
                    if await self.store.get(self.lock_entity, id, namespace=ns) == token:
                        await self.store.delete(self.lock_entity, id, namespace=ns)
            await asyncio.sleep(self.lock_poll)
            hit = await self._read(id)
            if hit is not None:
                return hit[0]


class CachePrimitive(InstrumentedPrimitive[Any, Any]):
    """A workflow step that returns the cached output of ``wrapped`` for an input seen within
    ``ttl`` seconds, and runs ``wrapped`` once for concurrent misses (see the module docstring).

    Args:
        wrapped: Any step with ``async execute(input, context)``.
        store: Where outputs are cached.
        ttl: Seconds an output stays cached.
        key: ``key(input, context) -> str``, the cache id; default :func:`canonical_key` of the
            input (the context is ignored, so all sessions share entries: include
            ``context.session_id`` or a user id in ``key`` to scope them).
        entity: Key entity; default ``"cache." + wrapped.name`` (name two caches of same-named
            steps apart).
        namespace: Store namespace; the store's own when ``None``.
        lock_ttl: Seconds of a cross-process lock (``SET NX PX``); ``None`` for in-process single
            flight only.
        lock_poll: Seconds between reads while another process holds the lock.
        tracer_provider, meter_provider: As for :class:`InstrumentedPrimitive`.

    Raises:
        CompositionError: ``wrapped`` has no ``async execute(input, context)``.
        InvalidTTLError: ``ttl`` or ``lock_ttl`` is not seconds in ``(0, MAX_TTL]``.
        InvalidInputError: ``lock_poll`` is not a finite number > 0.
        InvalidInputTypeError: ``key`` is neither ``None`` nor callable.
        InvalidKeyError: ``entity`` or ``namespace`` is not a non-empty ``str`` UTF-8 can encode.

    ``execute`` raises :class:`SerializationError` when the input is not JSON and no ``key`` is
    given or the output cannot be serialized, :class:`InvalidKeyError` when ``key`` returns
    something other than a non-empty ``str``, and whatever ``wrapped`` raises.
    """

    def __init__(
        self,
        wrapped: Any,
        store: KeyValueStore,
        *,
        ttl: float,
        key: Callable[[Any, WorkflowContext], str] | None = None,
        entity: str | None = None,
        namespace: str | None = None,
        lock_ttl: float | None = None,
        lock_poll: float = 0.05,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        execute = getattr(wrapped, "execute", None)
        if execute is None or not inspect.iscoroutinefunction(execute):
            raise CompositionError(
                f"CachePrimitive wraps a step with `async execute(input, context)`, got "
                f"{type(wrapped).__name__!r}; wrap a function in LambdaPrimitive(fn)"
            )
        self.wrapped = wrapped
        self._wrapped_name = str(getattr(wrapped, "name", type(wrapped).__name__))
        super().__init__(tracer_provider=tracer_provider, meter_provider=meter_provider)
        _check_key_function(key)
        self._key = key
        self.cache = SingleFlightCache(
            store,
            entity=entity if entity is not None else f"cache.{self._wrapped_name}",
            ttl=ttl,
            namespace=namespace,
            lock_ttl=lock_ttl,
            lock_poll=lock_poll,
        )

    @property
    def name(self) -> str:
        return f"Cache({self._wrapped_name})"

    def cache_id(self, input: Any, context: WorkflowContext) -> str:
        """The cache id of ``input`` (``key(input, context)`` or :func:`canonical_key`)."""
        return self._key(input, context) if self._key is not None else canonical_key(input)

    async def invalidate(self, input: Any, context: WorkflowContext) -> bool:
        """Drop the cached output for ``input``; returns whether there was one."""
        return await self.cache.invalidate(self.cache_id(input, context))

    async def _execute_impl(self, input: Any, context: WorkflowContext) -> Any:
        return await self.cache.get_or_compute(
            self.cache_id(input, context), lambda: self.wrapped.execute(input, context)
        )


def cached(
    store: KeyValueStore,
    *,
    ttl: float,
    key: Callable[..., str] | None = None,
    entity: str | None = None,
    namespace: str | None = None,
    lock_ttl: float | None = None,
    lock_poll: float = 0.05,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Cache an async function's results in ``store`` for ``ttl`` seconds, with the single flight
    (and optional lock) of :class:`CachePrimitive`.

    Args:
        store: Where results are cached.
        ttl: Seconds a result stays cached.
        key: Called with the function's arguments, returns the cache id; default
            :func:`canonical_key` of ``[list(args), kwargs]`` (for a method, whose ``self`` is not
            JSON, pass ``key``).
        entity: Key entity; default ``"cached." + module + "." + qualname`` of the function.
        namespace, lock_ttl, lock_poll: As for :class:`CachePrimitive`.

    The decorated function gains ``.cache`` (its :class:`SingleFlightCache`) and
    ``await fn.invalidate(*args, **kwargs)``.

    Raises:
        InvalidInputTypeError: (also a ``TypeError``) the decorated function is not
            ``async def``, or ``key`` is neither ``None`` nor callable.
        InvalidTTLError: ``ttl`` or ``lock_ttl`` is not seconds in ``(0, MAX_TTL]``.
        InvalidInputError: ``lock_poll`` is not a finite number > 0.
        InvalidKeyError: ``entity`` or ``namespace`` is not a non-empty ``str`` UTF-8 can encode.
    """
    _check_key_function(key)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise InvalidInputTypeError(f"@cached needs an async def function, got {fn!r}")
        cache = SingleFlightCache(
            store,
            entity=entity if entity is not None else f"cached.{fn.__module__}.{fn.__qualname__}",
            ttl=ttl,
            namespace=namespace,
            lock_ttl=lock_ttl,
            lock_poll=lock_poll,
        )

        def cache_id(*args: Any, **kwargs: Any) -> str:
            return key(*args, **kwargs) if key is not None else canonical_key([list(args), kwargs])

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return await cache.get_or_compute(cache_id(*args, **kwargs), lambda: fn(*args, **kwargs))

        async def invalidate(*args: Any, **kwargs: Any) -> bool:
            return await cache.invalidate(cache_id(*args, **kwargs))

        wrapper.cache = cache  # type: ignore[attr-defined]
        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        return wrapper

    return decorate
