"""Comparison helpers of the differential test: canonical forms, exact record and message
comparison, leak and ghost errors, counters, the backend-under-test description and the bad-call
strategies. See ``tests/differential.py``."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from hypothesis import strategies as st
from primitives.memory import MemoryBackend, MemoryRecord, Message
from primitives.validation import MAX_LIMIT
from tests.differential_strategies import (
    Flavour,
    INVALID_IDENTIFIERS,
    UTC,
    identifiers,
)

# -- comparison ------------------------------------------------------------------------------------


def canon(value: Any) -> Any:
    """A comparable form of a JSON value that tells ``True`` from ``1``, ``1`` from ``1.0`` and
    ``-0.0`` from ``0.0`` (Python's ``==`` does not)."""
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((k, canon(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(canon(v) for v in value))
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


Key = tuple[str, str]


def key_of(record: MemoryRecord) -> Key:
    return (record.namespace, record.id)


def matches(record: MemoryRecord, flt: Mapping[str, Sequence[str]]) -> bool:
    """Whether ``record`` matches a normalised filter (exact string equality, any of the values;
    ``created_at``: within the range, compared here on exact datetimes, not microseconds)."""
    for field_name, values in flt.items():
        if field_name == "created_at":
            start, end = values
            epoch = datetime(1970, 1, 1, tzinfo=record.created_at.tzinfo) if record.created_at else None
            if epoch is None:
                return False
            at = record.created_at
            if start is not None and at < epoch + timedelta(microseconds=start):
                return False
            if end is not None and not at < epoch + timedelta(microseconds=end):
                return False
        elif field_name == "topics":
            if not set(record.topics) & set(values):
                return False
        elif field_name == "memory_type":
            if record.memory_type.value not in values:
                return False
        elif getattr(record, field_name) not in values:
            return False
    return True


def normalised(flt: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    from primitives.memory.backend import normalize_filter

    return normalize_filter(flt)


@dataclass
class Stamps:
    """Which timestamps of a stored record the test gave (exact) and which the backend stamped."""

    created_explicit: bool
    updated_explicit: bool


class Disagreement(AssertionError):
    """The backend under test showed something the oracle did not."""


class Leak(Disagreement):
    """A search or count showed a record outside its filter: another tenant's record."""


def assert_same_time(what: str, oracle: datetime | None, subject: datetime | None, explicit: bool, tolerance: float) -> None:
    if oracle is None or subject is None:
        if oracle is not subject:
            raise Disagreement(f"{what}: oracle {oracle!r}, backend {subject!r}")
        return
    if subject.utcoffset() != timedelta(0):
        raise Disagreement(f"{what}: backend returned a non-UTC datetime {subject!r}")
    if explicit:
        if subject != oracle:
            raise Disagreement(f"{what} (given explicitly): oracle {oracle.isoformat()}, backend {subject.isoformat()}")
    elif abs((subject - oracle).total_seconds()) > tolerance:
        raise Disagreement(f"{what} (stamped by each backend): oracle {oracle.isoformat()}, backend {subject.isoformat()}")


def record_fields(record: MemoryRecord, keeps_embedding: bool) -> dict[str, Any]:
    return {
        "id": record.id,
        "text": record.text,
        "user_id": record.user_id,
        "session_id": record.session_id,
        "namespace": record.namespace,
        "memory_type": record.memory_type.value,
        "topics": record.topics,
        "metadata": canon(dict(record.metadata)),
        "embedding": canon(record.embedding) if keeps_embedding and record.embedding is not None else None,
        "ttl": repr(record.ttl),
    }


def assert_same_record(what: str, oracle: MemoryRecord | None, subject: MemoryRecord | None, stamps: Stamps | None,
                       *, keeps_embedding: bool, tolerance: float) -> None:
    if oracle is None or subject is None:
        if oracle is not subject:
            raise Disagreement(f"{what}: oracle {oracle!r}, backend {subject!r}")
        return
    if not isinstance(subject, MemoryRecord):
        raise Disagreement(f"{what}: backend returned a {type(subject).__name__}")
    o, s = record_fields(oracle, keeps_embedding), record_fields(subject, keeps_embedding)
    if not keeps_embedding:
        s["embedding"] = None
    diff = {k: (o[k], s[k]) for k in o if o[k] != s[k]}
    if diff:
        raise Disagreement(f"{what}: fields differ (oracle, backend): {diff!r}")
    stamps = stamps or Stamps(False, False)
    assert_same_time(f"{what} created_at", oracle.created_at, subject.created_at, stamps.created_explicit, tolerance)
    assert_same_time(f"{what} updated_at", oracle.updated_at, subject.updated_at, stamps.updated_explicit, tolerance)


def message_fields(m: Message) -> tuple[Any, ...]:
    return (m.role, m.content, canon(dict(m.metadata)))


def assert_same_messages(what: str, oracle: list[Message], subject: list[Message], tolerance: float) -> None:
    if [message_fields(m) for m in oracle] != [message_fields(m) for m in subject]:
        raise Disagreement(f"{what}: oracle {[message_fields(m) for m in oracle]!r}, "
                           f"backend {[message_fields(m) for m in subject]!r}")
    for i, (o, s) in enumerate(zip(oracle, subject)):
        explicit = o.created_at is not None and o.created_at.year < 2020
        assert_same_time(f"{what} message {i} created_at", o.created_at, s.created_at, explicit, tolerance)


# -- counters --------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one backend's differential runs executed (examples include Hypothesis's shrinking)."""

    examples: int = 0
    steps: int = 0
    calls: int = 0
    searches: int = 0
    full_membership: int = 0
    bad_inputs: int = 0
    refused: int = 0
    leaks: int = 0
    ghosts: int = 0
    seconds: float = 0.0
    rules: collections.Counter[str] = field(default_factory=collections.Counter)


TALLIES: dict[str, Tally] = defaultdict(Tally)


# -- the backend under test ------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSpec:
    """A backend under test and what it documents.

    Attributes:
        name: The pytest id.
        make: Builds a fresh, empty backend (called inside the machine's event loop).
        close: Drops what it stored and closes it.
        flavour: What generated records may contain.
        exact_ranking: The backend ranks with the oracle's own engine: hits and scores must be
            identical, in order.
        keeps_embedding: ``get`` returns the embedding given.
        hits_carry_embedding: search hits carry the embedding too.
        check_every_step: compare ``count()`` after every step (cheap backends only).
        clock_tolerance: seconds between two backends' "now" stamps of the same write.
        working_memory: exercise append/get/clear of working memory.
        working_memory_size: messages kept per session (the oracle gets the same).
        final_check: more assertions on the backend after a clean sequence (the resilient
            wrapper: its outbox holds nothing pending and no dead letter).
    """

    name: str
    make: Callable[[], Awaitable[MemoryBackend]]
    close: Callable[[MemoryBackend], Awaitable[None]]
    flavour: Flavour = Flavour()
    exact_ranking: bool = False
    keeps_embedding: bool = True
    hits_carry_embedding: bool = True
    check_every_step: bool = True
    clock_tolerance: float = 30.0
    working_memory: bool = True
    working_memory_size: int = 4
    final_check: Callable[[MemoryBackend], None] | None = None


Outcome = tuple[Any, BaseException | None]


_WORD = re.compile(r"\w+")


# -- bad calls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadCall:
    """One call that every backend must refuse with the same typed error, changing nothing."""

    description: str
    call: Callable[[MemoryBackend], Awaitable[Any]] = field(repr=False, compare=False)

    def __str__(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"BadCall({self.description})"


def _ok_record() -> MemoryRecord:
    return MemoryRecord(text="apple river", id="bad-input-probe", created_at=datetime(2019, 1, 1, tzinfo=UTC),
                        updated_at=datetime(2019, 1, 1, tzinfo=UTC), ttl=math.inf)


def _calls(values: st.SearchStrategy[Any], describe: Callable[[Any], str],
           call: Callable[[MemoryBackend, Any], Awaitable[Any]]) -> st.SearchStrategy[BadCall]:
    """A :class:`BadCall` per drawn value: ``describe(v)`` names it, ``call(backend, v)`` makes it."""
    return values.map(lambda v: BadCall(describe(v), lambda b: call(b, v)))


@functools.cache
def bad_calls(spec: BackendSpec) -> st.SearchStrategy[BadCall]:
    bad = st.sampled_from(INVALID_IDENTIFIERS)
    hashable_bad = bad.filter(lambda v: not isinstance(v, list))
    good = identifiers()
    aware = datetime(2030, 1, 1, tzinfo=UTC)
    no_timestamps = MemoryRecord(text="no timestamps", id="bad-input-probe-2")
    out: list[st.SearchStrategy[BadCall]] = [
        _calls(bad, lambda v: f"get({v!r})", lambda b, v: b.get(v)),
        _calls(st.tuples(good, bad), lambda p: f"get({p[0]!r}, namespace={p[1]!r})",
               lambda b, p: b.get(p[0], namespace=p[1])),
        _calls(st.tuples(st.lists(good, max_size=2), bad), lambda p: f"delete({p[0] + [p[1]]!r})",
               lambda b, p: b.delete(p[0] + [p[1]])),
        _calls(st.tuples(st.lists(good, min_size=1, max_size=2), bad), lambda p: f"delete({p[0]!r}, namespace={p[1]!r})",
               lambda b, p: b.delete(p[0], namespace=p[1])),
        _calls(st.sampled_from(["single", None, {"a"}, {"a": 1}, 7]), lambda v: f"delete({v!r})", lambda b, v: b.delete(v)),
        _calls(hashable_bad, lambda v: f"delete_if_older({{{v!r}: {aware!r}}})", lambda b, v: b.delete_if_older({v: aware})),
        _calls(st.sampled_from([datetime(2030, 1, 1), "2030-01-01", 1.0, None]),
               lambda v: f"delete_if_older({{'r1': {v!r}}})", lambda b, v: b.delete_if_older({"r1": v})),
        _calls(st.sampled_from([None, ["r1"], "r1"]), lambda v: f"delete_if_older({v!r})",
               lambda b, v: b.delete_if_older(v)),
        _calls(bad, lambda v: f"delete_if_older({{'r1': {aware!r}}}, namespace={v!r})",
               lambda b, v: b.delete_if_older({"r1": aware}, namespace=v)),
        _calls(st.sampled_from([None, 42, b"apple", "\ud800", ["apple"]]), lambda v: f"search({v!r})",
               lambda b, v: b.search(v, mode="keyword")),
        _calls(st.sampled_from([0, -1, MAX_LIMIT + 1, True, 2.0, "5", None]), lambda v: f"search('apple', limit={v!r})",
               lambda b, v: b.search("apple", limit=v, mode="keyword")),
        _calls(st.sampled_from(["fuzzy", "", "KEYWORD", 1]), lambda v: f"search('apple', mode={v!r})",
               lambda b, v: b.search("apple", mode=v)),
        _calls(bad_filters(), lambda f: f"search('apple', filter={f!r})",
               lambda b, f: b.search("apple", filter=f, mode="keyword")),
        _calls(bad_filters(), lambda f: f"count({f!r})", lambda b, f: b.count(f)),
        _calls(st.sampled_from([None, "a record", [None], {"text": "x"}, [_ok_record(), None], (_ok_record(), "x")]),
               lambda v: f"add({v!r})", lambda b, v: b.add(v)),
        _calls(st.sampled_from([None, [dataclasses.replace(no_timestamps, id="bad-input-probe")],
                                [_ok_record(), no_timestamps],
                                [MemoryRecord(text="x", id="bad-input-probe", created_at=aware)]]),
               lambda v: f"put_if_newer({v!r})", lambda b, v: b.put_if_newer(v)),
    ]
    if spec.working_memory:
        msg = [Message("user", "apple")]
        out += [
            _calls(bad, lambda v: f"append_messages({v!r}, [...])", lambda b, v: b.append_messages(v, msg)),
            _calls(bad, lambda v: f"append_messages('s1', [...], namespace={v!r})",
                   lambda b, v: b.append_messages("s1", msg, namespace=v)),
            _calls(st.sampled_from([None, "hi", [None], [{"role": "user", "content": "x"}], (Message("user", "ok"), "x")]),
                   lambda v: f"append_messages('s1', {v!r})", lambda b, v: b.append_messages("s1", v)),
            _calls(bad, lambda v: f"get_messages({v!r})", lambda b, v: b.get_messages(v)),
            _calls(st.sampled_from([0, -1, MAX_LIMIT + 1, True, 1.5, "3"]), lambda v: f"get_messages('s1', limit={v!r})",
                   lambda b, v: b.get_messages("s1", v)),
            _calls(bad, lambda v: f"get_messages('s1', namespace={v!r})", lambda b, v: b.get_messages("s1", namespace=v)),
            _calls(bad, lambda v: f"clear_session({v!r})", lambda b, v: b.clear_session(v)),
            _calls(bad, lambda v: f"clear_session('s1', namespace={v!r})", lambda b, v: b.clear_session("s1", namespace=v)),
        ]
    return st.one_of(*out)


@functools.cache
def bad_filters() -> st.SearchStrategy[Any]:
    # not None: a None filter value is no restriction (normalize_filter drops it)
    bad = st.sampled_from([v for v in INVALID_IDENTIFIERS if v is not None and not isinstance(v, list)])
    field_name = st.sampled_from(["user_id", "session_id", "namespace", "topics"])
    return st.one_of(
        st.sampled_from([["user_id"], "user_id", 7, {"colour": "blue"}, {"user_id": []}, {"topics": ()},
                         {"memory_type": "dream"}, {"memory_type": ["episodic", "dream"]}, {"memory_type": "EPISODIC"},
                         {"user_id": ["x"] * 1001}, {"user_id": {"a": 1}}, {"namespace": 7}, {None: "x"}]),
        st.tuples(field_name, bad).map(lambda p: {p[0]: p[1]}),
        st.tuples(field_name, identifiers(), bad).map(lambda p: {p[0]: [p[1], p[2]]}),
    )
