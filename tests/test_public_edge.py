"""Every public call of the memory layer, fed garbage: it either works or raises a typed error
(a ``PrimitivesError`` that is also a ``ValueError`` or ``TypeError``), and a refused call
changes nothing. Run on the in-process backend, the resilient wrapper and a real Redis.

The figure "untyped exceptions at the public edge" is what these tests count (it must be 0):
``python -m pytest tests/test_public_edge.py -s`` prints the calls made and refused per backend.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives import WorkflowContext
from primitives.errors import PrimitivesError
from primitives.memory import InMemoryBackend, Memory, MemoryBackend, MemoryPrimitive, MemoryRecord, Message, RememberPrimitive

HOSTILE_TEXT = [
    "", " ", "\t", "\n", "\x00", "a\x00b", "alice,bob", "alice ", "{x}", "@user_id:{alice}", "=>[KNN 5 @v $b]",
    "*", "-", "|", "\\", '"', "%", "\ud800", "a\udfffb", "ünïcødé 😀", "\u202e", "x" * 1025, "default", "alice",
]


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def _garbage() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, -1, 1, 10**7, 10**20, 2**63]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e300]),
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=12),
        st.binary(max_size=6),
        st.just(_Opaque()),
        st.sampled_from([datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=timezone.utc), timedelta(seconds=1)]),
        st.sampled_from(["episodic", "semantic", "working", "skill", "dream", "keyword", "vector", "hybrid"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.tuples(inner, inner),
            st.frozensets(st.sampled_from(["a", "b", 1]), max_size=2),
            st.dictionaries(st.one_of(st.sampled_from(HOSTILE_TEXT), st.integers(), st.none()), inner, max_size=3),
        ),
        max_leaves=6,
    )


GARBAGE = _garbage()


def _valid_record() -> MemoryRecord:
    return MemoryRecord(text="a valid note about apples", id=uuid.uuid4().hex, user_id="u")


#: name -> (callable taking the memory and drawn kwargs, the parameter names it draws)
CALLS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "remember": (lambda m, **k: m.remember(k.pop("text", "x"), **k),
                 ("text", "user_id", "session_id", "namespace", "memory_type", "topics", "metadata", "ttl", "created_at", "id")),
    "add": (lambda m, **k: m.add(k.get("records", [])), ("records",)),
    "get": (lambda m, **k: m.get(k.get("id", "x"), **{n: v for n, v in k.items() if n != "id"}), ("id", "namespace")),
    "delete": (lambda m, **k: m.delete(k.get("ids", ["x"]), **{n: v for n, v in k.items() if n != "ids"}), ("ids", "namespace")),
    "search": (lambda m, **k: m.search(k.pop("query", "apples"), **k),
               ("query", "user_id", "session_id", "namespace", "memory_type", "topics", "limit", "mode")),
    "count": (lambda m, **k: m.count(**k), ("namespace", "user_id")),
    "recall": (lambda m, **k: m.recall(k.pop("query", "apples"), **k),
               ("query", "session_id", "user_id", "namespace", "limit", "working_memory_limit", "mode")),
    "append_messages": (lambda m, **k: m.append_messages(k.get("session_id", "s"), k.get("messages", []),
                                                         **({"namespace": k["namespace"]} if "namespace" in k else {})),
                        ("session_id", "messages", "namespace")),
    "get_messages": (lambda m, **k: m.get_messages(k.get("session_id", "s"), k.get("limit"),
                                                   **({"namespace": k["namespace"]} if "namespace" in k else {})),
                     ("session_id", "limit", "namespace")),
    "clear_session": (lambda m, **k: m.clear_session(k.get("session_id", "s"), **({"namespace": k["namespace"]} if "namespace" in k else {})),
                      ("session_id", "namespace")),
    "record_skill_execution": (lambda m, **k: m.record_skill_execution(k.get("name", "skill"), success=k.get("success", True),
                                                                       duration_s=k.get("duration_s", 1.0),
                                                                       **({"namespace": k["namespace"]} if "namespace" in k else {})),
                               ("name", "success", "duration_s", "namespace")),
    "skill_stats": (lambda m, **k: m.skill_stats(k.get("name", "skill"), **({"namespace": k["namespace"]} if "namespace" in k else {})),
                    ("name", "namespace")),
    "put_if_newer": (lambda m, **k: m.backend.put_if_newer(k.get("records", [])), ("records",)),
    "delete_if_older": (lambda m, **k: m.backend.delete_if_older(k.get("deletions", {}), **({"namespace": k["namespace"]} if "namespace" in k else {})),
                        ("deletions", "namespace")),
    "backend_search": (lambda m, **k: m.backend.search(k.get("query", "apples"), filter=k.get("filter"),
                                                       **({"limit": k["limit"]} if "limit" in k else {})),
                       ("query", "filter", "limit")),
    "memory_primitive": (lambda m, **k: MemoryPrimitive(m).execute(k.get("input", "apples"), WorkflowContext(
        session_id=k.get("session_id") if isinstance(k.get("session_id"), str) else None, metadata=k.get("metadata") if isinstance(k.get("metadata"), dict) else {})),
                         ("input", "session_id", "metadata")),
    "remember_primitive": (lambda m, **k: RememberPrimitive(m).execute(k.get("input", "apples"), WorkflowContext(
        session_id=k.get("session_id") if isinstance(k.get("session_id"), str) else None, metadata=k.get("metadata") if isinstance(k.get("metadata"), dict) else {})),
                           ("input", "session_id", "metadata")),
}

#: Some draws are made of valid pieces, so calls get past the first check and reach the backend.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "records": st.one_of(st.builds(lambda: [_valid_record()]), st.builds(lambda: [_valid_record(), None])),
    "messages": st.one_of(st.just([Message("user", "hello")]), st.just([Message("user", "hi"), "not a message"])),
    "deletions": st.one_of(st.just({"x": datetime.now(timezone.utc)}), st.just({"x": datetime(2024, 1, 1)})),
    "filter": st.one_of(st.just({"user_id": "u"}), st.dictionaries(st.sampled_from(["user_id", "namespace", "topics", "colour"]), GARBAGE, max_size=2)),
}


def _kwargs(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {}, optional={n: st.one_of(GARBAGE, VALID[n]) if n in VALID else st.one_of(GARBAGE, st.sampled_from(["u", "s", "ns"]))
                      for n in names}
    )


CALL = st.sampled_from(sorted(CALLS)).flatmap(lambda name: st.tuples(st.just(name), _kwargs(CALLS[name][1])))

STATS: dict[str, dict[str, int]] = {}


async def _check_one(memory: Memory, name: str, kwargs: dict[str, Any], stats: dict[str, int]) -> None:
    before = await memory.backend.count()
    stats["calls"] += 1
    try:
        await CALLS[name][0](memory, **dict(kwargs))
    except NotImplementedError:
        stats["not_implemented"] += 1
    except PrimitivesError as exc:
        if not isinstance(exc, (ValueError, TypeError)):
            if type(exc).__name__ in ("BackendUnavailableError",):  # pragma: no cover - a server outage
                raise
            return  # a typed error of another meaning (e.g. a configuration refusal): still typed
        stats["refused"] += 1
        assert await memory.backend.count() == before, (name, kwargs, exc)
    except Exception as exc:  # noqa: BLE001 - the point: anything untyped is a defect
        stats["untyped"] += 1
        raise AssertionError(f"{name}({kwargs!r}) raised untyped {type(exc).__name__}: {exc}") from exc
    else:
        stats["ok"] += 1


def _run(memory_factory: Callable[[], Memory], label: str, examples: int) -> None:
    stats = STATS.setdefault(label, {"calls": 0, "ok": 0, "refused": 0, "not_implemented": 0, "untyped": 0})
    loop = asyncio.new_event_loop()
    memory = memory_factory()

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(CALL)
    def check(call: tuple[str, dict[str, Any]]) -> None:
        loop.run_until_complete(_check_one(memory, call[0], call[1], stats))

    try:
        check()
    finally:
        loop.run_until_complete(memory.aclose())
        loop.close()
    print(f"\npublic edge on {label}: {stats}")
    assert stats["untyped"] == 0
    assert stats["refused"] > 0 and stats["ok"] > 0  # both paths were exercised


def test_public_edge_in_process() -> None:
    _run(lambda: Memory(InMemoryBackend()), "in-memory", 600)


def test_public_edge_single_user_in_process() -> None:
    _run(lambda: Memory(InMemoryBackend(), single_user=True), "in-memory single-user", 200)


def test_public_edge_resilient_in_process(tmp_path) -> None:
    from primitives.memory.resilient import Outbox, ResilientBackend

    _run(lambda: Memory(ResilientBackend(InMemoryBackend(), outbox=Outbox(tmp_path / "o.sqlite3"))), "resilient", 300)


@pytest.mark.integration
def test_public_edge_on_redis(redis_server) -> None:
    from primitives.memory.redis_backend import RedisBackend

    prefix = f"edge-{uuid.uuid4().hex[:8]}:"
    _run(lambda: Memory(RedisBackend(redis_server.url, prefix=prefix)), "redis", 300)


def test_garbage_strategy_covers_the_hostile_classes() -> None:
    """Sanity: the strategy draws what the docstring promises (NaN, lone surrogates, sets...)."""
    seen: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, float) and math.isnan(value):
            seen.add("nan")
        if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            seen.add("surrogate")
        if isinstance(value, frozenset):
            seen.add("set")
        if isinstance(value, bytes):
            seen.add("bytes")
        if isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)

    @settings(max_examples=500, deadline=None)
    @given(GARBAGE)
    def draw(value: Any) -> None:
        walk(value)

    draw()
    assert {"nan", "surrogate", "set", "bytes"} <= seen
