"""RateLimiter: one contract suite against the in-process twin (fake clock) and real Redis
(standalone and Cluster); exact in-process answers; the pipeline step; and the over-admission
count: 50 concurrent tasks hammering one key for 2 s on a real Redis, for every algorithm."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from primitives import LambdaPrimitive, WorkflowContext
from primitives.errors import (
    InvalidInputError,
    InvalidKeyError,
    PrimitivesError,
    RateLimitExceededError,
)
from primitives.redis_connection import is_cluster
from primitives.store.ratelimit import (
    ALGORITHMS,
    MAX_WINDOW,
    RATE_LIMIT_STATE_KEY,
    BaseRateLimiter,
    InMemoryRateLimiter,
    RateLimitPrimitive,
    RateLimitResult,
)
from primitives.store.ratelimit_redis import RateLimiter
from primitives.validation import MAX_COUNT

HOSTILE_KEYS = ["*", "?", "[a-z]", "a:b", "{tag}", "}{", "a b", "line\nbreak", "ünï-🔑", "%2A"]


@pytest.fixture(
    params=[
        "in-memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
def make(request, clock) -> Callable[..., BaseRateLimiter]:
    """Builds the limiter under test; Redis ones get a prefix of their own per test."""
    if request.param == "in-memory":
        return lambda **kw: InMemoryRateLimiter(clock=clock, **kw)
    client = request.getfixturevalue("redis_client" if request.param == "redis" else "cluster_client")
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    return lambda **kw: RateLimiter(client, prefix=prefix, **kw)


# --- contract (windows long enough that real time does not move the answers) ---------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_admits_limit_then_refuses(make, algorithm) -> None:
    limiter = make(limit=5, window=600, algorithm=algorithm)
    results = [await limiter.hit("k") for _ in range(5)]
    assert [r.allowed for r in results] == [True] * 5
    assert [r.remaining for r in results] == [4, 3, 2, 1, 0]
    assert all(r.retry_after == 0.0 and r.limit == 5 for r in results)
    assert all(0 < r.reset_after <= 600 for r in results)
    refused = await limiter.hit("k")
    assert refused.allowed is False and refused.remaining == 0
    assert 0 < refused.retry_after <= 600 and 0 < refused.reset_after <= 600
    # a refused hit consumes nothing, and other keys are independent
    assert (await limiter.hit("k")).allowed is False
    assert (await limiter.hit("other")).remaining == 4


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_cost(make, algorithm) -> None:
    limiter = make(limit=10, window=600, algorithm=algorithm)
    assert (await limiter.hit("k", cost=7)).remaining == 3
    refused = await limiter.hit("k", cost=4)
    assert refused.allowed is False and refused.remaining == 3
    assert (await limiter.hit("k", cost=3)).remaining == 0
    with pytest.raises(InvalidInputError):
        await limiter.hit("k", cost=11)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_peek_does_not_consume_and_reset_forgets(make, algorithm) -> None:
    limiter = make(limit=2, window=600, algorithm=algorithm)
    fresh = await limiter.peek("k")
    assert fresh == RateLimitResult(allowed=True, remaining=1, retry_after=0.0, reset_after=0.0, limit=2)
    await limiter.hit("k", cost=2)
    for _ in range(3):
        peeked = await limiter.peek("k")
        assert peeked.allowed is False and peeked.remaining == 0 and peeked.retry_after > 0
    await limiter.reset("k")
    assert (await limiter.hit("k")).remaining == 1
    await limiter.reset("never-used")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_hostile_keys_are_separate(make, algorithm) -> None:
    limiter = make(limit=1, window=600, algorithm=algorithm)
    for key in HOSTILE_KEYS:
        assert (await limiter.hit(key)).allowed, key
    for key in HOSTILE_KEYS:
        assert not (await limiter.hit(key)).allowed, key
    await limiter.reset("{tag}")
    assert (await limiter.hit("{tag}")).allowed
    assert not (await limiter.hit("}{")).allowed


@pytest.mark.parametrize("key", ["", None, 3, b"k"])
async def test_bad_keys(make, key) -> None:
    limiter = make(limit=1, window=1)
    for call in (limiter.hit(key), limiter.peek(key), limiter.reset(key)):
        with pytest.raises(InvalidKeyError):
            await call


@pytest.mark.parametrize("cost", [0, -1, 1.0, True, "1"])
async def test_bad_cost(make, cost) -> None:
    limiter = make(limit=3, window=1)
    with pytest.raises(InvalidInputError):
        await limiter.hit("k", cost=cost)
    with pytest.raises(InvalidInputError):
        await limiter.peek("k", cost=cost)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0, "window": 1},
        {"limit": 1.5, "window": 1},
        {"limit": True, "window": 1},
        {"limit": 1, "window": 0},
        {"limit": 1, "window": -1},
        {"limit": 1, "window": float("inf")},
        {"limit": 1, "window": float("nan")},
        {"limit": 1, "window": "1"},
        {"limit": 1, "window": 1, "algorithm": "token-bucket"},
    ],
)
def test_bad_configuration(make, kwargs) -> None:
    with pytest.raises(InvalidInputError):
        make(**kwargs)


# --- hostile input: the same typed error on both implementations ------------------------------

ODD_KEYS = ["\x00", "a\x00b", " ", "\t", "\u2028", "\ufeff", "🙂\u200d🙂", "k" * 5000, "%00"]
NOT_TEXT = ["\ud800", "a\udfffb"]


def assert_typed(exc: BaseException, cls: type[BaseException]) -> None:
    assert isinstance(exc, cls) and isinstance(exc, PrimitivesError), repr(exc)
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_odd_keys_are_separate(make, algorithm) -> None:
    limiter = make(limit=1, window=600, algorithm=algorithm)
    for key in ODD_KEYS:
        assert (await limiter.hit(key)).allowed, key
    for key in ODD_KEYS:
        assert not (await limiter.hit(key)).allowed, key
    await limiter.reset("\x00")
    assert (await limiter.hit("\x00")).allowed


@pytest.mark.parametrize("key", [*NOT_TEXT, True, 0, 1.5, 10**400])
async def test_a_key_that_cannot_be_stored_is_an_invalid_key_error(make, key) -> None:
    limiter = make(limit=1, window=1)
    for call in (limiter.hit(key), limiter.peek(key), limiter.reset(key)):
        with pytest.raises(InvalidKeyError) as info:
            await call
        assert_typed(info.value, InvalidKeyError)


@pytest.mark.parametrize("cost", [10**400, 4, float("nan"), float("inf"), None, [1]])
async def test_hostile_cost(make, cost) -> None:
    limiter = make(limit=3, window=1)
    for call in (limiter.hit("k", cost=cost), limiter.peek("k", cost=cost)):
        with pytest.raises(InvalidInputError) as info:
            await call
        assert_typed(info.value, InvalidInputError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": MAX_COUNT + 1, "window": 1},
        {"limit": 10**30, "window": 1},
        {"limit": 10**400, "window": 1},
        {"limit": float("inf"), "window": 1},
        {"limit": None, "window": 1},
        {"limit": 1, "window": MAX_WINDOW * 2},
        {"limit": 1, "window": 10**400},
        {"limit": 1, "window": 1e300},
        {"limit": 1, "window": float("-inf")},
        {"limit": 1, "window": 0.0009},
        {"limit": 1, "window": True},
        {"limit": 1, "window": None},
        {"limit": 1, "window": 1, "algorithm": ["fixed"]},
        {"limit": 1, "window": 1, "algorithm": None},
    ],
)
def test_hostile_configuration(make, kwargs) -> None:
    with pytest.raises(InvalidInputError) as info:
        make(**kwargs)
    assert_typed(info.value, InvalidInputError)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_the_largest_limit_and_window_work(make, algorithm) -> None:
    huge = make(limit=MAX_COUNT, window=600, algorithm=algorithm)
    first = await huge.hit("k", cost=5)
    assert first.allowed and first.limit == MAX_COUNT
    if algorithm == "gcra":  # the emission interval is far below a microsecond: a hit costs ~nothing
        assert MAX_COUNT - 10 <= first.remaining <= MAX_COUNT
    else:
        assert first.remaining == MAX_COUNT - 5
    if algorithm == "fixed":  # one counter (a sliding log keeps one entry per unit: not this many)
        assert (await huge.hit("k", cost=MAX_COUNT - 5)).remaining == 0
        assert not (await huge.peek("k")).allowed
    long = make(limit=2, window=MAX_WINDOW, algorithm=algorithm)  # same prefix on Redis: other key
    assert (await long.hit("long")).remaining == 1
    assert (await long.hit("long")).remaining == 0
    refused = await long.hit("long")
    assert not refused.allowed and 0 < refused.retry_after <= MAX_WINDOW
    await long.reset("long")
    assert (await long.peek("long")).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_more_units_than_microseconds_per_window(make, algorithm) -> None:
    """10 million units a second: the GCRA emission interval (0.1 µs) vanishes next to the
    time in µs, so a hit moves nothing; Redis used to refuse the key's zero expiry."""
    limiter = make(limit=10_000_000, window=1, algorithm=algorithm)
    result = await limiter.hit("k")
    assert result.allowed and 9_999_990 <= result.remaining <= 10_000_000


@pytest.mark.parametrize("max_keys", [0, True, 1.5, None, "10"])
def test_in_memory_max_keys_must_be_an_int_of_at_least_one(max_keys) -> None:
    with pytest.raises(InvalidInputError):
        InMemoryRateLimiter(limit=1, window=1, max_keys=max_keys)


async def test_primitive_refuses_hostile_keys_and_costs(clock) -> None:
    limiter = InMemoryRateLimiter(limit=2, window=60, clock=clock)
    with pytest.raises(InvalidKeyError):
        RateLimitPrimitive(limiter, key="\ud800")
    with pytest.raises(InvalidInputError):
        RateLimitPrimitive(limiter, key="k", cost=True)
    with pytest.raises(InvalidInputError):
        RateLimitPrimitive(limiter, key="k", cost=10**400)
    with pytest.raises(InvalidKeyError):
        await RateLimitPrimitive(limiter, key=lambda i, c: "a\udfffb").execute("x", WorkflowContext())


# --- exact answers with the fake clock (in-process) ------------------------------------------


async def test_fixed_window_exact(clock) -> None:
    limiter = InMemoryRateLimiter(limit=3, window=10, algorithm="fixed", clock=clock)
    for _ in range(3):
        assert (await limiter.hit("k")).allowed
        clock.advance(1)
    refused = await limiter.hit("k")  # t = 3, the window started at t = 0
    assert (refused.allowed, refused.retry_after, refused.reset_after) == (False, 7.0, 7.0)
    clock.advance(6.999)
    assert not (await limiter.hit("k")).allowed
    clock.advance(0.001)
    again = await limiter.hit("k")  # t = 10: a new window
    assert (again.allowed, again.remaining, again.reset_after) == (True, 2, 10.0)


async def test_sliding_log_exact(clock) -> None:
    limiter = InMemoryRateLimiter(limit=3, window=10, algorithm="sliding", clock=clock)
    for _ in range(3):  # t = 0, 1, 2
        assert (await limiter.hit("k")).allowed
        clock.advance(1)
    refused = await limiter.hit("k")  # t = 3: the unit of t = 0 leaves at t = 10
    assert (refused.allowed, refused.retry_after, refused.reset_after) == (False, 7.0, 9.0)
    refused2 = await limiter.peek("k", cost=2)  # two must leave: t = 1's unit leaves at 11
    assert refused2.retry_after == 8.0
    clock.advance(7)
    ok = await limiter.hit("k")  # t = 10
    assert (ok.allowed, ok.remaining, ok.reset_after) == (True, 0, 10.0)
    assert not (await limiter.hit("k")).allowed


async def test_gcra_exact(clock) -> None:
    limiter = InMemoryRateLimiter(limit=3, window=3, algorithm="gcra", clock=clock)  # T = 1 s
    assert [(await limiter.hit("k")).remaining for _ in range(3)] == [2, 1, 0]
    refused = await limiter.hit("k")
    assert (refused.allowed, refused.retry_after, refused.reset_after) == (False, 1.0, 3.0)
    clock.advance(0.5)
    assert (await limiter.hit("k")).retry_after == 0.5
    clock.advance(0.5)
    ok = await limiter.hit("k")  # t = 1: one unit has been emitted
    assert (ok.allowed, ok.remaining, ok.reset_after) == (True, 0, 3.0)
    clock.advance(10)
    assert (await limiter.peek("k")).remaining == 2
    assert (await limiter.hit("k", cost=3)).allowed


async def test_in_memory_forgets_reset_keys(clock) -> None:
    limiter = InMemoryRateLimiter(limit=1, window=1, algorithm="gcra", clock=clock, max_keys=10)
    for i in range(10):
        await limiter.hit(f"k{i}")
    assert len(limiter._state) == 10
    clock.advance(1)
    await limiter.hit("new")
    assert len(limiter._state) == 1


# --- Redis specifics ---------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_redis_keys_escaped_tagged_and_expiring(redis_client, algorithm) -> None:
    limiter = RateLimiter(redis_client, limit=3, window=5, algorithm=algorithm, prefix="rl-test:")
    keys = limiter.keys("user:{1} *")
    assert keys[0] == f"rl-test:{algorithm}:{{user%3A%7B1%7D%20%2A}}"
    await limiter.hit("user:{1} *")
    for key in keys:
        assert 0 < await redis_client.pttl(key) <= 5000
    await limiter.reset("user:{1} *")
    assert await redis_client.exists(*keys) == 0


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_redis_refills_with_server_time(redis_client, algorithm) -> None:
    limiter = RateLimiter(redis_client, limit=2, window=0.2, algorithm=algorithm, prefix=f"{uuid.uuid4().hex}:")
    await limiter.hit("k", cost=2)
    refused = await limiter.hit("k")
    assert not refused.allowed and 0 < refused.retry_after <= 0.2
    for _ in range(500):  # bounded wait: the unit comes back within the window
        if (await limiter.peek("k")).allowed:
            break
        await asyncio.sleep(0.01)
    assert (await limiter.hit("k")).allowed


@pytest.mark.integration
async def test_redis_script_reloaded_after_script_flush(redis_client) -> None:
    limiter = RateLimiter(redis_client, limit=2, window=60, prefix=f"{uuid.uuid4().hex}:")
    await limiter.hit("k")
    await redis_client.script_flush()
    assert (await limiter.hit("k")).remaining == 0


# --- the pipeline step --------------------------------------------------------------------------


async def test_primitive_passes_input_through_then_raises(clock) -> None:
    limiter = InMemoryRateLimiter(limit=2, window=60, clock=clock)
    seen: list[Any] = []
    step = RateLimitPrimitive(limiter, key=lambda input, ctx: ctx.user_id or "anonymous")
    pipeline = step >> LambdaPrimitive(lambda x: seen.append(x) or x)
    ctx = WorkflowContext(metadata={"user_id": "alice"})
    assert await pipeline.execute({"q": 1}, ctx) == {"q": 1}
    assert ctx.state[RATE_LIMIT_STATE_KEY].remaining == 1
    await pipeline.execute({"q": 2}, ctx)
    with pytest.raises(RateLimitExceededError) as info:
        await pipeline.execute({"q": 3}, ctx)
    assert (info.value.key, info.value.limit) == ("alice", 2)
    assert info.value.retry_after == pytest.approx(60.0)
    assert seen == [{"q": 1}, {"q": 2}]  # the next step did not run for the refused call
    # another user has their own allowance
    assert await pipeline.execute("x", WorkflowContext(metadata={"user_id": "bob"})) == "x"
    assert await pipeline.execute("y", WorkflowContext()) == "y"


async def test_primitive_with_static_and_async_keys(clock) -> None:
    limiter = InMemoryRateLimiter(limit=3, window=60, algorithm="fixed", clock=clock)

    async def key_of(input: Any, ctx: WorkflowContext) -> str:
        return f"tenant:{input['tenant']}"

    await RateLimitPrimitive(limiter, key=key_of, cost=3).execute({"tenant": "a"}, WorkflowContext())
    with pytest.raises(RateLimitExceededError):
        await RateLimitPrimitive(limiter, key="tenant:a").execute("x", WorkflowContext())
    with pytest.raises(InvalidKeyError):
        RateLimitPrimitive(limiter, key="")
    with pytest.raises(InvalidInputError):
        RateLimitPrimitive(limiter, key="k", cost=4)
    with pytest.raises(InvalidKeyError):
        await RateLimitPrimitive(limiter, key=lambda i, c: None).execute("x", WorkflowContext())


# --- the target: no over-admission under 50 concurrent tasks for 2 s ----------------------------


@dataclass(frozen=True, slots=True)
class Call:
    send: float  # client perf_counter before the call
    recv: float  # ... and after; the server decided in between
    result: RateLimitResult


async def hammer(limiter: BaseRateLimiter, key: str, *, tasks: int = 50, seconds: float = 2.0) -> tuple[list[Call], float]:
    """``tasks`` tasks call ``hit(key)`` back to back for ``seconds``; every call with its time
    bracket, and the elapsed time from the first send to the last receive."""
    calls: list[Call] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            send = time.perf_counter()
            result = await limiter.hit(key)
            calls.append(Call(send, time.perf_counter(), result))

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return calls, max(c.recv for c in calls) - start


def over_admissions(algorithm: str, admitted: list[Call], limit: int, window: float) -> int:
    """Admissions beyond what the algorithm allows, counted only where it is certain from the
    client's time brackets (a server decision lies between ``send`` and ``recv``).

    sliding: admissions j with ``send_j >= recv_i`` and ``recv_j < send_i + window`` were decided
    within ``window`` of admission i, so with it at most ``limit``.
    gcra: those with ``send_j >= recv_i`` and ``recv_j <= x`` lie in an interval of length at most
    ``x - send_i``, so with i at most ``limit + floor((x - send_i) / T)``, ``T = window / limit``.
    fixed: windows are told apart by the end each admission reports: the server decided between
    ``send`` and ``recv``, so the window ends in ``[send + reset_after, recv + reset_after]``; ends
    of one window agree, ends of two windows are ``window`` apart. An admission whose bracket is
    ``window / 2`` or wider (the client stalled around the call: CI under load) cannot be placed
    for certain and is left out; each window at most ``limit``.
    """
    admitted = sorted(admitted, key=lambda c: c.send)
    worst = 0
    if algorithm == "fixed":
        placed = [c for c in admitted if c.recv - c.send < window / 2]
        assert len(placed) >= len(admitted) // 2, "most calls stalled: latency too high to count"
        ends = sorted((c.send + c.recv) / 2 + c.result.reset_after for c in placed)
        groups: list[list[float]] = [[ends[0]]]
        for end in ends[1:]:
            if end - groups[-1][-1] > window / 2:
                groups.append([end])
            else:
                groups[-1].append(end)
        for group in groups:
            assert group[-1] - group[0] < window / 2, "window ends ambiguous: latency too high to count"
            worst = max(worst, len(group) - limit)
        return worst
    interval = window / limit
    for i, first in enumerate(admitted):
        later = sorted(
            (c.recv for c in admitted[i + 1 :] if c.send >= first.recv), key=float
        )
        for k, x in enumerate(later, start=2):  # k admissions: first and k - 1 later ones
            if algorithm == "sliding":
                if x >= first.send + window:
                    break
                worst = max(worst, k - limit)
            else:
                worst = max(worst, k - (limit + int((x - first.send) // interval)))
    return worst


@pytest.fixture(params=["redis", "cluster"])
def server_client(request) -> Any:
    """A client of the standalone server or of the 3-master Cluster."""
    return request.getfixturevalue("redis_client" if request.param == "redis" else "cluster_client")


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_no_over_admission_one_long_window(server_client, algorithm) -> None:
    """The whole 2 s run lies inside one 600 s window: fixed and sliding admit exactly `limit`;
    GCRA admits its burst `limit` plus at most one unit per emission interval of elapsed time."""
    client, backend = server_client, "cluster" if is_cluster(server_client) else "redis"
    limit, window = 100, 600.0
    limiter = RateLimiter(client, limit=limit, window=window, algorithm=algorithm, prefix=f"{uuid.uuid4().hex}:")
    calls, elapsed = await hammer(limiter, "hot")
    admitted = sum(c.result.allowed for c in calls)
    assert len(calls) > 2 * limit  # the key was hammered well past its limit
    bound = limit if algorithm != "gcra" else limit + int(elapsed // (window / limit))
    print(f"{backend} {algorithm}: {len(calls)} calls in {elapsed:.2f} s, {admitted} admitted, bound {bound}")
    assert limit <= admitted <= bound
    if algorithm != "gcra":  # each count from limit - 1 down to 0 was handed out exactly once
        assert sorted(c.result.remaining for c in calls if c.result.allowed) == list(range(limit))


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_no_over_admission_per_window(server_client, algorithm) -> None:
    """Short windows (0.5 s, limit 10) so the 2 s run crosses several; admissions are counted per
    window (see :func:`over_admissions`) and none may exceed the limit."""
    client, backend = server_client, "cluster" if is_cluster(server_client) else "redis"
    limit, window = 10, 0.5
    limiter = RateLimiter(client, limit=limit, window=window, algorithm=algorithm, prefix=f"{uuid.uuid4().hex}:")
    calls, elapsed = await hammer(limiter, "hot")
    admitted = [c for c in calls if c.result.allowed]
    over = over_admissions(algorithm, admitted, limit, window)
    print(f"{backend} {algorithm}: {len(calls)} calls in {elapsed:.2f} s, {len(admitted)} admitted, over-admissions {over}")
    assert len(admitted) > limit  # several windows were used
    assert len(calls) > 2 * len(admitted)  # and the limiter refused most calls
    assert over <= 0


def test_over_admission_counter_sees_a_violation() -> None:
    """The counting itself can fail: limit + 1 admissions well inside one window are reported."""
    fake = [
        Call(send=t, recv=t + 0.0005, result=RateLimitResult(True, 0, 0.0, 0.5 - t, 10))
        for t in [i * 0.001 for i in range(11)]
    ]
    for algorithm in ALGORITHMS:
        assert over_admissions(algorithm, fake, 10, 0.5) == 1, algorithm
        assert over_admissions(algorithm, fake[:10], 10, 0.5) == 0, algorithm


class _NonAtomicFixedLimiter(BaseRateLimiter):
    """A deliberately broken fixed window (GET, then INCRBY in a second round trip) to show that
    the hammer test catches the race an atomic script prevents."""

    def __init__(self, client: Any, key_prefix: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._client, self._prefix = client, key_prefix

    async def hit(self, key: str, cost: int = 1) -> RateLimitResult:
        k = self._prefix + key
        count = int(await self._client.get(k) or 0)
        if count + cost > self.limit:
            left = max(await self._client.pttl(k), 1)
            return self._result(0, self.limit - count, left * 1000, left * 1000)
        count = await self._client.incrby(k, cost)
        if await self._client.pttl(k) < 0:
            await self._client.pexpire(k, round(self.window * 1000))
        left = max(await self._client.pttl(k), 0)
        return self._result(1, self.limit - count, 0, left * 1000)

    async def peek(self, key: str, cost: int = 1) -> RateLimitResult:  # pragma: no cover
        raise NotImplementedError

    async def reset(self, key: str) -> None:  # pragma: no cover
        raise NotImplementedError


@pytest.mark.integration
async def test_hammer_catches_a_non_atomic_limiter(redis_client) -> None:
    limiter = _NonAtomicFixedLimiter(redis_client, f"{uuid.uuid4().hex}:", limit=10, window=0.5, algorithm="fixed")
    calls, _ = await hammer(limiter, "hot", seconds=1.0)
    admitted = [c for c in calls if c.result.allowed]
    over = over_admissions("fixed", admitted, 10, 0.5)
    print(f"non-atomic fixed: {len(calls)} calls, {len(admitted)} admitted, over-admissions {over}")
    assert over > 0


@pytest.mark.integration
@pytest.mark.parametrize("prefix", ["\ud800", None, 5, b"p:"])
def test_redis_prefix_must_be_text(redis_client, prefix) -> None:
    with pytest.raises(InvalidInputError) as info:
        RateLimiter(redis_client, limit=1, window=1, prefix=prefix)
    assert_typed(info.value, InvalidInputError)
