"""CachePrimitive and @cached: hits, TTL, keys, single flight, failures, the cross-process lock
on a real Redis with two separate store instances."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from primitives import LambdaPrimitive, WorkflowContext
from primitives.errors import (
    CompositionError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidKeyError,
    InvalidTTLError,
    PrimitivesError,
    SerializationError,
)
from primitives.store.cache import CachePrimitive, cached, canonical_key
from primitives.redis_connection import connect
from primitives.store.kv import MAX_TTL, InMemoryKeyValueStore, KeyValueStore
from primitives.store.kv_redis import RedisKeyValueStore


class Counting:
    """A step that counts its runs; can be gated on an event and told to fail."""

    def __init__(self, *, gate: asyncio.Event | None = None, fail: BaseException | None = None, output: Any = "default") -> None:
        self.runs = 0
        self.gate = gate
        self.fail = fail
        self.output = output
        self.name = "counting"

    async def execute(self, input: Any, context: WorkflowContext) -> Any:
        self.runs += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {"echo": input} if self.output == "default" else self.output


@pytest.fixture
def store(clock: Any) -> InMemoryKeyValueStore:
    return InMemoryKeyValueStore(clock=clock)


@pytest.fixture
def ctx() -> WorkflowContext:
    return WorkflowContext(session_id="s-1")


async def test_hit_after_miss_and_expiry(store: InMemoryKeyValueStore, clock: Any, ctx: WorkflowContext) -> None:
    step = Counting()
    cache = CachePrimitive(step, store, ttl=60)
    assert await cache.execute({"q": "a"}, ctx) == {"echo": {"q": "a"}}
    assert await cache.execute({"q": "a"}, ctx) == {"echo": {"q": "a"}}
    assert step.runs == 1
    await cache.execute({"q": "b"}, ctx)
    assert step.runs == 2
    clock.advance(59)
    await cache.execute({"q": "a"}, ctx)
    assert step.runs == 2
    clock.advance(2)
    await cache.execute({"q": "a"}, ctx)
    assert step.runs == 3


async def test_default_key_is_canonical_json(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    assert canonical_key({"b": 1, "a": [1, "é"]}) == canonical_key({"a": [1, "é"], "b": 1})
    assert canonical_key({"a": 1}) != canonical_key({"a": "1"})
    assert len(canonical_key("x")) == 64
    step = Counting()
    cache = CachePrimitive(step, store, ttl=60)
    await cache.execute({"b": 1, "a": 2}, ctx)
    await cache.execute({"a": 2, "b": 1}, ctx)
    assert step.runs == 1
    assert await store.exists("cache.counting", canonical_key({"a": 2, "b": 1}))


async def test_cached_none_is_a_hit(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    step = Counting(output=None)
    cache = CachePrimitive(step, store, ttl=60)
    assert await cache.execute("x", ctx) is None
    assert await cache.execute("x", ctx) is None
    assert step.runs == 1


async def test_key_function_gets_input_and_context(store: InMemoryKeyValueStore) -> None:
    step = Counting()
    cache = CachePrimitive(step, store, ttl=60, key=lambda input, context: f"{context.session_id}*{input['q']}")
    await cache.execute({"q": "a", "noise": 1}, WorkflowContext(session_id="s1"))
    await cache.execute({"q": "a", "noise": 2}, WorkflowContext(session_id="s1"))
    await cache.execute({"q": "a"}, WorkflowContext(session_id="s2"))
    assert step.runs == 2
    assert await store.exists("cache.counting", "s1*a")


async def test_non_json_input_needs_a_key_function(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    step = Counting(output=1)
    with pytest.raises(SerializationError):
        await CachePrimitive(step, store, ttl=60).execute(object(), ctx)
    assert step.runs == 0
    with pytest.raises(InvalidKeyError):
        await CachePrimitive(step, store, ttl=60, key=lambda i, c: "").execute(1, ctx)
    assert await CachePrimitive(step, store, ttl=60, key=lambda i, c: "k").execute(object(), ctx) == 1


async def test_non_serializable_output_raises_and_is_not_cached(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    step = Counting(output={1, 2})
    cache = CachePrimitive(step, store, ttl=60)
    with pytest.raises(SerializationError):
        await cache.execute("x", ctx)
    with pytest.raises(SerializationError):
        await cache.execute("x", ctx)
    assert step.runs == 2
    assert not await store.exists("cache.counting", canonical_key("x"))


async def test_hit_returns_the_decoded_form(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    step = Counting(output=(1, 2))
    cache = CachePrimitive(step, store, ttl=60)
    assert await cache.execute("x", ctx) == (1, 2)
    assert await cache.execute("x", ctx) == [1, 2]


async def test_concurrent_misses_run_the_step_once(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    gate = asyncio.Event()
    step = Counting(gate=gate)
    cache = CachePrimitive(step, store, ttl=60)
    tasks = [asyncio.create_task(cache.execute({"q": 1}, ctx)) for _ in range(50)]
    other = asyncio.create_task(cache.execute({"q": 2}, ctx))
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, other)
    assert step.runs == 2  # one per distinct key
    assert results[:50] == [{"echo": {"q": 1}}] * 50


async def test_failure_reaches_every_waiter_and_is_not_cached(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    gate = asyncio.Event()
    step = Counting(gate=gate, fail=RuntimeError("model down"))
    cache = CachePrimitive(step, store, ttl=60)
    tasks = [asyncio.create_task(cache.execute("x", ctx)) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert step.runs == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "model down" for r in results)
    step.fail = None
    assert await cache.execute("x", ctx) == {"echo": "x"}
    assert step.runs == 2


async def test_cancelled_leader_hands_over_to_a_waiter(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    gate = asyncio.Event()
    step = Counting(gate=gate)
    cache = CachePrimitive(step, store, ttl=60)
    leader = asyncio.create_task(cache.execute("x", ctx))
    await asyncio.sleep(0)
    assert step.runs == 1
    waiters = [asyncio.create_task(cache.execute("x", ctx)) for _ in range(3)]
    await asyncio.sleep(0)
    leader.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [{"echo": "x"}] * 3
    assert leader.cancelled()
    assert step.runs == 2  # the cancelled run and one new flight


async def test_construction_errors(store: InMemoryKeyValueStore) -> None:
    with pytest.raises(CompositionError):
        CachePrimitive(object(), store, ttl=60)
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(InvalidTTLError):
            CachePrimitive(Counting(), store, ttl=bad)
        with pytest.raises(InvalidTTLError):
            CachePrimitive(Counting(), store, ttl=1, lock_ttl=bad)
    with pytest.raises(InvalidKeyError):
        CachePrimitive(Counting(), store, ttl=1, entity="")


async def test_composes_in_a_pipeline(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    step = Counting()
    pipeline = CachePrimitive(step, store, ttl=60) >> LambdaPrimitive(lambda out: out["echo"])
    assert await pipeline.execute("x", ctx) == "x"
    assert await pipeline.execute("x", ctx) == "x"
    assert step.runs == 1
    assert CachePrimitive(step, store, ttl=1).name == "Cache(counting)"


async def test_invalidate(store: InMemoryKeyValueStore, ctx: WorkflowContext) -> None:
    step = Counting()
    cache = CachePrimitive(step, store, ttl=60)
    await cache.execute("x", ctx)
    assert await cache.invalidate("x", ctx) is True
    assert await cache.invalidate("x", ctx) is False
    await cache.execute("x", ctx)
    assert step.runs == 2


# -- @cached ----------------------------------------------------------------------------------

async def test_cached_decorator(store: InMemoryKeyValueStore, clock: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    @cached(store, ttl=10)
    async def lookup(a: int, b: str = "x") -> dict[str, Any]:
        calls.append((a, b))
        return {"a": a, "b": b}

    assert await lookup(1) == {"a": 1, "b": "x"}
    assert await lookup(1) == {"a": 1, "b": "x"}
    assert await lookup(1, b="y") == {"a": 1, "b": "y"}
    assert calls == [(1, "x"), (1, "y")]
    clock.advance(11)
    await lookup(1)
    assert len(calls) == 3
    assert lookup.__name__ == "lookup"
    assert await lookup.invalidate(1) is True
    assert lookup.cache.entity.endswith("test_cached_decorator.<locals>.lookup")


async def test_cached_single_flight_and_errors(store: InMemoryKeyValueStore) -> None:
    gate = asyncio.Event()
    runs = 0

    @cached(store, ttl=10, key=lambda who: f"user:{who}")
    async def profile(who: str) -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        if who == "bad":
            raise KeyError(who)
        return who.upper()

    tasks = [asyncio.create_task(profile("*")) for _ in range(20)]
    bad = [asyncio.create_task(profile("bad")) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == ["*"] * 20
    assert all(isinstance(r, KeyError) for r in await asyncio.gather(*bad, return_exceptions=True))
    assert runs == 2
    assert await store.get("cached.bad", "x") is None  # nothing stray written


def test_cached_needs_async(store: InMemoryKeyValueStore) -> None:
    with pytest.raises(TypeError):
        @cached(store, ttl=1)
        def sync(x: int) -> int:
            return x


# -- hostile input: the same typed error whichever store is behind the cache ------------------

def assert_typed(exc: BaseException, cls: type[BaseException]) -> None:
    assert isinstance(exc, cls) and isinstance(exc, PrimitivesError), repr(exc)
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def any_store(request: pytest.FixtureRequest, clock: Any) -> Any:
    """The in-process store, or a Redis one (the twins a cache can sit on)."""
    if request.param == "memory":
        yield InMemoryKeyValueStore(clock=clock)
        return
    client = connect(request.getfixturevalue("plain_redis_server").url)
    store = RedisKeyValueStore(client, namespace=f"c-{uuid.uuid4().hex[:8]}")
    try:
        yield store
        await store.delete_namespace()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ttl": 10**400}, InvalidTTLError),
        ({"ttl": MAX_TTL + 1}, InvalidTTLError),
        ({"ttl": float("inf")}, InvalidTTLError),
        ({"ttl": float("-inf")}, InvalidTTLError),
        ({"ttl": None}, InvalidTTLError),
        ({"ttl": "60"}, InvalidTTLError),
        ({"ttl": 60, "lock_ttl": 10**400}, InvalidTTLError),
        ({"ttl": 60, "lock_ttl": float("inf")}, InvalidTTLError),
        ({"ttl": 60, "lock_ttl": False}, InvalidTTLError),
        ({"ttl": 60, "lock_poll": 0}, InvalidInputError),
        ({"ttl": 60, "lock_poll": float("nan")}, InvalidInputError),
        ({"ttl": 60, "lock_poll": float("inf")}, InvalidInputError),
        ({"ttl": 60, "lock_poll": 10**400}, InvalidInputError),
        ({"ttl": 60, "lock_poll": True}, InvalidInputError),
        ({"ttl": 60, "lock_poll": "0.1"}, InvalidInputError),
        ({"ttl": 60, "entity": "\ud800"}, InvalidKeyError),
        ({"ttl": 60, "entity": 5}, InvalidKeyError),
        ({"ttl": 60, "namespace": "a\udfffb"}, InvalidKeyError),
        ({"ttl": 60, "key": "not callable"}, InvalidInputTypeError),
    ],
)
async def test_hostile_construction(any_store: KeyValueStore, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        CachePrimitive(Counting(), any_store, **kwargs)
    assert_typed(info.value, error)
    with pytest.raises(error):
        cached(any_store, **kwargs)(_async_identity)


async def _async_identity(x: Any) -> Any:
    return x


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "", True, 7, None])
async def test_a_cache_id_that_cannot_be_a_key_fails_before_the_step_runs(
    any_store: KeyValueStore, ctx: WorkflowContext, bad: Any
) -> None:
    step = Counting()
    cache = CachePrimitive(step, any_store, ttl=60, key=lambda i, c: bad)
    with pytest.raises(InvalidKeyError) as info:
        await cache.execute("q", ctx)
    assert_typed(info.value, InvalidKeyError)
    with pytest.raises(InvalidKeyError):
        await cache.invalidate("q", ctx)
    assert step.runs == 0
    with pytest.raises(InvalidKeyError):
        await cached(any_store, ttl=60, key=lambda x: bad)(_async_identity)("q")


async def test_odd_inputs_and_ids_are_cached_exactly(any_store: KeyValueStore, ctx: WorkflowContext) -> None:
    step = Counting()
    by_input = CachePrimitive(step, any_store, ttl=60)
    by_id = CachePrimitive(step, any_store, ttl=60, entity="ids", key=lambda i, c: i)
    odd = ["\x00", " ", "\u2028", "🙂\u200d🙂", "x" * 5000, "%00", "*"]
    for probe in odd:
        for cache in (by_input, by_id):
            assert await cache.execute(probe, ctx) == {"echo": probe}
            assert await cache.execute(probe, ctx) == {"echo": probe}
    assert step.runs == 2 * len(odd)


async def test_an_input_with_a_lone_surrogate_has_a_key_but_its_output_is_not_storable(
    any_store: KeyValueStore, ctx: WorkflowContext
) -> None:
    assert canonical_key("\ud800") != canonical_key("\udc00") != canonical_key("?")
    step = Counting(output="fine")
    cache = CachePrimitive(step, any_store, ttl=60)
    assert await cache.execute("\ud800", ctx) == "fine"
    assert await cache.execute("\ud800", ctx) == "fine"
    assert step.runs == 1
    echo = Counting()
    with pytest.raises(SerializationError) as info:  # {"echo": "\ud800"} cannot be written as UTF-8
        await CachePrimitive(echo, any_store, ttl=60, entity="echo").execute("\ud800", ctx)
    assert_typed(info.value, SerializationError)


# -- on Redis ---------------------------------------------------------------------------------

@pytest.mark.integration
async def test_on_redis_hostile_keys_and_ttl(plain_redis_server: Any, ctx: WorkflowContext) -> None:
    client = connect(plain_redis_server.url)
    try:
        store = RedisKeyValueStore(client, namespace=f"c-{uuid.uuid4().hex[:8]}")
        step = Counting()
        cache = CachePrimitive(step, store, ttl=30, key=lambda i, c: i)
        for probe in ["*", "a:b", "{x}", "é 漢"]:
            assert await cache.execute(probe, ctx) == {"echo": probe}
            assert await cache.execute(probe, ctx) == {"echo": probe}
        assert step.runs == 4
        remaining = await store.ttl("cache.counting", "*")
        assert remaining is not None and 29 < remaining <= 30
        await store.delete_namespace()
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_lock_across_two_store_instances_runs_the_step_once(plain_redis_server: Any, ctx: WorkflowContext) -> None:
    namespace = f"c-{uuid.uuid4().hex[:8]}"
    clients = [connect(plain_redis_server.url), connect(plain_redis_server.url)]
    try:
        gate = asyncio.Event()
        step = Counting(gate=gate)  # one counter for both "processes"
        caches = [
            CachePrimitive(step, RedisKeyValueStore(c, namespace=namespace), ttl=60, lock_ttl=10, lock_poll=0.01)
            for c in clients
        ]
        tasks = [asyncio.create_task(caches[i % 2].execute("q", ctx)) for i in range(20)]
        while step.runs == 0:  # the first flight holds the lock and runs the step
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # let the other instance find the lock taken and poll
        gate.set()
        assert await asyncio.gather(*tasks) == [{"echo": "q"}] * 20
        assert step.runs == 1
        store = caches[0].cache.store
        assert not await store.exists("cache.counting:lock", canonical_key("q"))  # released
        await store.delete_namespace()
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.integration
async def test_without_the_lock_two_instances_both_run(plain_redis_server: Any, ctx: WorkflowContext) -> None:
    namespace = f"c-{uuid.uuid4().hex[:8]}"
    clients = [connect(plain_redis_server.url), connect(plain_redis_server.url)]
    try:
        both_started = asyncio.Event()

        class Step(Counting):
            async def execute(self, input: Any, context: WorkflowContext) -> Any:
                self.runs += 1
                if self.runs == 2:
                    both_started.set()
                await both_started.wait()
                return "done"

        step = Step()
        caches = [CachePrimitive(step, RedisKeyValueStore(c, namespace=namespace), ttl=60) for c in clients]
        assert await asyncio.gather(*(cache.execute("q", ctx) for cache in caches)) == ["done", "done"]
        assert step.runs == 2
        await caches[0].cache.store.delete_namespace()
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.integration
async def test_failed_lock_holder_releases_for_the_other_instance(plain_redis_server: Any, ctx: WorkflowContext) -> None:
    namespace = f"c-{uuid.uuid4().hex[:8]}"
    clients = [connect(plain_redis_server.url), connect(plain_redis_server.url)]
    try:
        failing = Counting(fail=RuntimeError("boom"), output=None)
        working = Counting(output="ok")
        a = CachePrimitive(failing, RedisKeyValueStore(clients[0], namespace=namespace), ttl=60,
                           entity="shared", lock_ttl=30, lock_poll=0.01)
        b = CachePrimitive(working, RedisKeyValueStore(clients[1], namespace=namespace), ttl=60,
                           entity="shared", lock_ttl=30, lock_poll=0.01)
        with pytest.raises(RuntimeError):
            await a.execute("q", ctx)
        assert not await a.cache.store.exists("shared:lock", canonical_key("q"))  # released on failure
        assert await b.execute("q", ctx) == "ok"  # did not wait 30 s for an abandoned lock
        assert await a.execute("q", ctx) == "ok"  # cached by b
        assert (failing.runs, working.runs) == (1, 1)
        await a.cache.store.delete_namespace()
    finally:
        for c in clients:
            await c.aclose()
