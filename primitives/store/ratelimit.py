"""Rate limits: the interface, the in-process twin, and the pipeline step.

Three algorithms, identical in the Redis :class:`~primitives.store.ratelimit_redis.RateLimiter`
(one Lua script per call, the server's ``TIME``) and the in-process :class:`InMemoryRateLimiter`
(an injectable clock), checked by one contract suite. Times are whole microseconds inside both.

``"fixed"`` (fixed window counter)
    The first admitted hit starts a window of ``window`` seconds; at most ``limit`` units are
    admitted until it ends, then the count starts again. Redis: ``GET`` + ``INCRBY`` + ``PEXPIRE``
    on a key without a TTL (the "INCR + EXPIRE NX" pattern of the Redis ``INCR`` docs, "Pattern:
    Rate limiter 1"). Cheapest; a burst of up to ``2 * limit`` can straddle a window boundary.
``"sliding"`` (sliding log)
    At most ``limit`` units in any ``window``-long interval ``(now - window, now]``. Redis: a sorted
    set of admitted units scored by time (``ZREMRANGEBYSCORE`` + ``ZCARD`` + ``ZADD``), the
    "sliding window log" of Redis's rate-limiting tutorials. Exact; memory ``O(limit)`` per key.
``"gcra"`` (generic cell rate algorithm)
    The virtual-scheduling form of the GCRA of ATM Forum Traffic Management 4.1 (ITU-T I.371), as
    written up by Brandur Leach ("Rate limiting, cells, and GCRA", brandur.org, 2015) and used by
    redis-cell/throttled: one stored number, the theoretical arrival time ``tat``. Emission
    interval ``T = window / limit``; a hit of ``cost`` is admitted when
    ``max(tat, now) + cost * T - now <= window``, so a fresh key admits a burst of ``limit`` and
    then one unit every ``T``; in any interval of length ``d`` at most ``limit + d / T`` units
    are admitted. ``tat`` is rounded up to the microsecond (never in the caller's favour).
"""

from __future__ import annotations

import inspect
import math
import time
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from cachetools import TLRUCache
from opentelemetry import metrics, trace

from primitives.core.context import WorkflowContext
from primitives.core.instrumented import InstrumentedPrimitive
from primitives.errors import InvalidInputError, RateLimitExceededError
from primitives.store.keys import KEY_ERRORS
from primitives.validation import MAX_COUNT, check_int, check_number, check_text

__all__ = [
    "ALGORITHMS",
    "MAX_WINDOW",
    "RATE_LIMIT_STATE_KEY",
    "Algorithm",
    "BaseRateLimiter",
    "InMemoryRateLimiter",
    "RateLimitPrimitive",
    "RateLimitResult",
]

Algorithm = Literal["fixed", "sliding", "gcra"]
#: The algorithms every limiter implements.
ALGORITHMS: tuple[str, ...] = ("fixed", "sliding", "gcra")
#: ``context.state`` key where :class:`RateLimitPrimitive` leaves the last :class:`RateLimitResult`.
RATE_LIMIT_STATE_KEY = "rate_limit"
#: The longest ``window``, in seconds (10**9 s, about 31.7 years). The Redis scripts hold times in
#: microseconds as Lua numbers (doubles), exact up to 2**53 µs (about 285 years); a window this
#: long keeps ``now + 2 * window`` below that for two centuries, so both twins compute the same
#: answers to the microsecond.
MAX_WINDOW = 10**9

_US = 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The answer to one ``hit`` or ``peek``.

    Attributes:
        allowed: The hit was admitted (``hit`` consumed ``cost`` units) / would be (``peek``).
        remaining: Units that could still be admitted right now, after this hit (``0..limit``).
        retry_after: Seconds until a hit of the same cost can be admitted; ``0.0`` when allowed.
        reset_after: Seconds until the key is back to its full ``limit`` (``0.0`` when it is).
        limit: The limiter's ``limit`` (units per ``window``).
    """

    allowed: bool
    remaining: int
    retry_after: float
    reset_after: float
    limit: int


def check_key(key: object) -> str:
    """``key`` when it is a non-empty ``str`` that UTF-8 can encode (any character is kept);
    else :class:`~primitives.errors.InvalidKeyError`."""
    return check_text(key, "rate-limit key", allow_empty=False, errors=KEY_ERRORS)


def check_cost(cost: object, limit: int) -> int:
    """``cost`` when it is an int in ``1..limit``; else :class:`InvalidInputError` (an
    ``InvalidInputTypeError``, also a ``TypeError``, for a non-int or a ``bool``)."""
    return check_int(cost, "cost", minimum=1, maximum=limit)


class BaseRateLimiter(ABC):
    """The rate-limiter interface shared by the Redis and in-process implementations.

    Args (of every implementation):
        limit: Units admitted per ``window``: an int in ``[1, MAX_COUNT]`` (2**53 - 1, the
            largest count the Redis scripts' numbers hold exactly).
        window: Seconds, finite, in ``[0.001, MAX_WINDOW]`` (10**9).
        algorithm: ``"fixed"``, ``"sliding"`` (default) or ``"gcra"``; see the module doc.

    Raises:
        InvalidInputError: ``limit``, ``window`` or ``algorithm`` is not accepted (an
            ``InvalidInputTypeError``, also a ``TypeError``, for a non-number or a ``bool``).
    """

    def __init__(self, *, limit: int, window: float, algorithm: Algorithm = "sliding") -> None:
        self.limit = check_int(limit, "limit", minimum=1, maximum=MAX_COUNT)
        self.window = check_number(window, "window", minimum=0.001, maximum=MAX_WINDOW)
        if algorithm not in ALGORITHMS:
            raise InvalidInputError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.algorithm: Algorithm = algorithm
        self._window_us = round(self.window * _US)

    def _check(self, key: object, cost: object) -> None:
        check_key(key)
        check_cost(cost, self.limit)

    def _result(self, allowed: int, remaining: int, retry_us: int, reset_us: int) -> RateLimitResult:
        return RateLimitResult(
            allowed=bool(allowed),
            remaining=max(0, min(self.limit, int(remaining))),
            retry_after=0.0 if allowed else max(int(retry_us), 1) / _US,
            reset_after=max(int(reset_us), 0) / _US,
            limit=self.limit,
        )

    @abstractmethod
    async def hit(self, key: str, cost: int = 1) -> RateLimitResult:
        """Try to consume ``cost`` units of ``key``'s allowance, atomically.

        A refused hit consumes nothing.

        Args:
            key: What is limited (a user id, an API key, ...); any non-empty ``str``.
            cost: Units this call uses, ``1..limit``.

        Raises:
            InvalidKeyError: ``key`` is empty, not a ``str``, or has a lone surrogate.
            InvalidInputError: ``cost`` is not an int in ``1..limit``.
        """

    @abstractmethod
    async def peek(self, key: str, cost: int = 1) -> RateLimitResult:
        """What :meth:`hit` would answer now, without consuming anything. Same errors."""

    @abstractmethod
    async def reset(self, key: str) -> None:
        """Forget ``key``'s usage: its next hit sees the full ``limit``.

        Raises:
            InvalidKeyError: ``key`` is empty, not a ``str``, or has a lone surrogate.
        """

    async def aclose(self) -> None:
        """Release resources this object owns (a Redis client is the caller's; nothing here)."""


class InMemoryRateLimiter(BaseRateLimiter):
    """Rate limits in this process; same algorithms and answers as the Redis ``RateLimiter``.

    State per key lives in a ``cachetools.TLRUCache`` that drops a key once its state has fully
    reset; at most ``max_keys`` keys are kept (the least recently used is dropped beyond that,
    which forgets its usage). Not shared between processes: use the Redis limiter for that.

    Args:
        limit, window, algorithm: See :class:`BaseRateLimiter`.
        clock: Seconds, monotonic; ``time.monotonic`` by default (inject a fake clock in tests).
        max_keys: Keys tracked at once (default 100,000).

    Raises:
        InvalidInputError: ``limit``, ``window``, ``algorithm`` or ``max_keys`` (an int >= 1) is
            not accepted.
    """

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        algorithm: Algorithm = "sliding",
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        super().__init__(limit=limit, window=window, algorithm=algorithm)
        max_keys = check_int(max_keys, "max_keys", minimum=1)
        self._clock = clock
        # value = (state, expires_us); the entry disappears when the state has fully reset.
        self._state: TLRUCache[str, tuple[Any, int]] = TLRUCache(
            maxsize=max_keys, ttu=lambda _k, v, _now: v[1], timer=self._now_us
        )
        self._step = {"fixed": self._fixed, "sliding": self._sliding, "gcra": self._gcra}[algorithm]

    def _now_us(self) -> int:
        return round(self._clock() * _US)

    async def hit(self, key: str, cost: int = 1) -> RateLimitResult:
        self._check(key, cost)
        return self._step(key, cost, dry=False)

    async def peek(self, key: str, cost: int = 1) -> RateLimitResult:
        self._check(key, cost)
        return self._step(key, cost, dry=True)

    async def reset(self, key: str) -> None:
        check_key(key)
        self._state.pop(key, None)

    def _fixed(self, key: str, cost: int, dry: bool) -> RateLimitResult:
        # whole milliseconds rounded up, as Redis's PEXPIRE applies the window
        now, w = self._now_us(), -(-self._window_us // 1000) * 1000
        entry = self._state.get(key)
        count, end = entry[0] if entry is not None else (0, None)
        left = end - now if end is not None else w
        if count + cost > self.limit:
            return self._result(0, self.limit - count, left, left)
        if dry:
            return self._result(1, self.limit - count - cost, 0, left if end is not None else 0)
        count += cost
        end = end if end is not None else now + w
        self._state[key] = ((count, end), end)
        return self._result(1, self.limit - count, 0, left)

    def _sliding(self, key: str, cost: int, dry: bool) -> RateLimitResult:
        now, w = self._now_us(), self._window_us
        entry = self._state.get(key)
        log: list[int] = entry[0] if entry is not None else []
        del log[: bisect_right(log, now - w)]  # window is (now - w, now]
        count = len(log)
        if count + cost > self.limit:
            retry = log[count + cost - self.limit - 1] + w - now
            return self._result(0, self.limit - count, retry, log[-1] + w - now)
        if dry:
            return self._result(1, self.limit - count - cost, 0, log[-1] + w - now if log else 0)
        log.extend([now] * cost)
        self._state[key] = (log, now + w)
        return self._result(1, self.limit - count - cost, 0, w)

    def _gcra(self, key: str, cost: int, dry: bool) -> RateLimitResult:
        now, w = self._now_us(), self._window_us
        interval = w / self.limit
        entry = self._state.get(key)
        tat = max(entry[0] if entry is not None else now, now)
        new_tat = math.ceil(tat + cost * interval)
        if new_tat - now > w:
            remaining = math.floor((w - (tat - now)) / interval + 1e-9)
            return self._result(0, remaining, new_tat - w - now, tat - now)
        if not dry:
            self._state[key] = (new_tat, new_tat)
        remaining = math.floor((w - (new_tat - now)) / interval + 1e-9)
        return self._result(1, remaining, 0, (tat if dry else new_tat) - now)


class RateLimitPrimitive(InstrumentedPrimitive[Any, Any]):
    """A pipeline step that lets its input through while the limit allows, else raises.

    ``RateLimitPrimitive(limiter, key=lambda input, ctx: ctx.user_id or "anonymous") >> next_step``

    Each ``execute`` calls ``limiter.hit(key, cost)``. Allowed: the input is returned unchanged and
    the :class:`RateLimitResult` is left in ``context.state["rate_limit"]``. Refused:
    :class:`~primitives.errors.RateLimitExceededError` with ``key``, ``limit`` and
    ``retry_after`` (seconds, > 0); the next steps do not run.

    Args:
        limiter: Any :class:`BaseRateLimiter` (Redis or in-process).
        key: The limited key: a ``str``, or ``key(input, context)`` returning one (may be async).
        cost: Units each call uses (default 1).
        tracer_provider, meter_provider: See :class:`~primitives.core.InstrumentedPrimitive`.

    Raises:
        InvalidKeyError: ``key`` is neither a non-empty ``str`` nor callable (at construction), or
            ``key(...)`` returns one that is not a non-empty ``str`` (at execute).
        InvalidInputError: ``cost`` is not an int in ``1..limiter.limit``.
    """

    def __init__(
        self,
        limiter: BaseRateLimiter,
        *,
        key: str | Callable[[Any, WorkflowContext], str | Awaitable[str]],
        cost: int = 1,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        super().__init__(tracer_provider=tracer_provider, meter_provider=meter_provider)
        if not callable(key):
            check_key(key)
        check_cost(cost, limiter.limit)
        self.limiter = limiter
        self.key = key
        self.cost = cost

    async def _execute_impl(self, input: Any, context: WorkflowContext) -> Any:
        key = self.key(input, context) if callable(self.key) else self.key
        if inspect.isawaitable(key):
            key = await key
        result = await self.limiter.hit(key, self.cost)
        context.state[RATE_LIMIT_STATE_KEY] = result
        if not result.allowed:
            raise RateLimitExceededError(
                f"rate limit for {key!r} reached ({self.limiter.limit} per {self.limiter.window:g} s); "
                f"retry after {result.retry_after:.3f} s",
                key=key,
                limit=self.limiter.limit,
                retry_after=result.retry_after,
            )
        return input
