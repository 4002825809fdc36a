"""Time-aware recall: relative dates resolved at write time (``primitives.memory.temporal``,
``RememberPrimitive``) and ``created_at`` ranges in every backend's search and count."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from primitives.core.context import WorkflowContext
from primitives.errors import InvalidFilterError, InvalidInputError
from primitives.memory import Memory, MemoryBackend, MemoryRecord, RememberPrimitive
from primitives.memory.backend import normalize_filter
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import INDEXED_METADATA_KEYS
from primitives.memory.temporal import (
    MAX_RESOLVED_DATES,
    MAX_SCAN_CHARS,
    RESOLVED_DATES_KEY,
    TimeRange,
    check_time_range,
    resolve_dates,
)

UTC = timezone.utc
#: A Monday: 8 May 2023 (LoCoMo's first session date is "1:56 pm on 8 May, 2023").
MONDAY = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
SUNDAY = datetime(2023, 5, 14, 9, 0, tzinfo=UTC)


# -- resolving relative dates ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("I went to a support group yesterday.", ["7 May 2023"]),
    ("Last night was fun", ["7 May 2023"]),
    ("the day before yesterday", ["6 May 2023"]),
    ("see you tomorrow", ["9 May 2023"]),
    ("the day after tomorrow", ["10 May 2023"]),
    ("two days ago I ran a race", ["6 May 2023"]),
    ("I ran 3 days ago", ["5 May 2023"]),
    ("a couple of days ago", ["6 May 2023"]),
    ("a few days ago", ["the week of 1 May 2023"]),
    ("a week ago", ["the week of 1 May 2023"]),
    ("three weeks ago", ["the week of 17 April 2023"]),
    ("5 months ago", ["December 2022"]),
    ("a year ago", ["2022"]),
    ("in 2 weeks", ["the week of 22 May 2023"]),
    ("in a month", ["June 2023"]),
    ("in ten days", ["18 May 2023"]),
    ("Last week I painted a sunset", ["the week of 1 May 2023"]),
    ("this week", ["the week of 8 May 2023"]),
    ("next week", ["the week of 15 May 2023"]),
    ("last month", ["April 2023"]),
    ("next month I go to Paris", ["June 2023"]),
    ("last year", ["2022"]),
    ("this year", ["2023"]),
    ("next year", ["2024"]),
    ("last weekend", ["the weekend of 6 May 2023"]),
    ("this weekend", ["the weekend of 13 May 2023"]),
    ("next weekend", ["the weekend of 20 May 2023"]),
    ("this past weekend", ["the weekend of 6 May 2023"]),
    ("over the weekend", ["the weekend of 6 May 2023"]),
    ("We went camping last Saturday!", ["6 May 2023"]),
    ("last Monday", ["1 May 2023"]),  # strictly before: a week ago on a Monday
    ("last Friday", ["5 May 2023"]),
    ("this Friday", ["12 May 2023"]),
    ("next Friday", ["12 May 2023"]),
    ("next Monday", ["15 May 2023"]),
    ("LAST WEEK and Yesterday", ["the week of 1 May 2023", "7 May 2023"]),
])
def test_each_expression_resolves_against_the_turn_date(text: str, expected: list[str]) -> None:
    assert resolve_dates(text, MONDAY) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("last weekend", ["the weekend of 6 May 2023"]),  # the week before this Sunday's week
    ("this weekend", ["the weekend of 13 May 2023"]),
    ("over the weekend", ["the weekend of 13 May 2023"]),  # the Saturday before a Sunday
    ("last Sunday", ["7 May 2023"]),
    ("this Sunday", ["14 May 2023"]),
    ("last year", ["2022"]),
])
def test_a_sunday_base(text: str, expected: list[str]) -> None:
    assert resolve_dates(text, SUNDAY) == expected


@pytest.mark.parametrize("text", [
    "We went hiking", "May I ask something?", "I ran on Monday", "today was fine", "tonight we eat",
    "recently", "the other day", "blast week", "notyesterday", "within 2 weeks", "lastweek", "ago", "days ago",
    "last\u00a0week",  # a no-break space is not read as a separator
    "\u0663 days ago", "\uff13 days ago",  # Arabic-Indic and full-width digits are not numbers here
    "", "\x00", "last weekday", "in 2 daysx",
    "a few weeks ago", "several months ago", "a few years ago", "in a few years",  # too vague to write out
])
def test_no_date_is_invented(text: str) -> None:
    assert resolve_dates(text, MONDAY) == []


def test_order_repeats_and_cap() -> None:
    assert resolve_dates("yesterday, then last week, then yesterday again", MONDAY) == [
        "7 May 2023", "the week of 1 May 2023"]
    many = " ".join(f"{n} days ago" for n in range(1, 40))
    out = resolve_dates(many, MONDAY)
    assert len(out) == MAX_RESOLVED_DATES and out[0] == "7 May 2023"


def test_dates_outside_years_1_to_9999_are_left_out() -> None:
    assert resolve_dates("999 years ago and yesterday", datetime(500, 1, 2, tzinfo=UTC)) == ["1 January 500"]
    assert resolve_dates("next year, tomorrow, next month, next week", datetime(9999, 12, 31, tzinfo=UTC)) == []
    assert resolve_dates("yesterday", date(1, 1, 1)) == []


def test_the_base_is_the_date_in_its_own_timezone() -> None:
    late = datetime(2023, 5, 8, 23, 30, tzinfo=timezone(timedelta(hours=-7)))  # 9 May in UTC
    assert resolve_dates("yesterday", late) == ["7 May 2023"]
    assert resolve_dates("yesterday", date(2023, 5, 8)) == ["7 May 2023"]


def test_hostile_text_never_crashes() -> None:
    for text in ["yesterday\x00tomorrow", "\x00" * 1000 + "last week", "İn 2 days yesterday", "ﬁ last year",
                 "😀 a few days ago 👩‍👩‍👧", "\u202elast week", "1" * 10_000 + " days ago", "in 999 years"]:
        resolve_dates(text, MONDAY)
    huge = "blah " * 400_000 + "yesterday"  # 2 MB: the date past MAX_SCAN_CHARS is not read
    assert len(huge) > MAX_SCAN_CHARS and resolve_dates(huge, MONDAY) == []
    assert resolve_dates("yesterday " + "x" * 5_000_000, MONDAY) == ["7 May 2023"]
    assert resolve_dates("\x00yesterday\x00", MONDAY) == ["7 May 2023"]
    # a text of nothing but expressions: each family stops early (MAX_MATCHES_PER_PASS)
    assert resolve_dates("in 2 days " * 50_000, MONDAY) == ["10 May 2023"]
    assert resolve_dates("last week in 2 days ago yesterday " * 60_000, MONDAY)[:2] == [
        "the week of 1 May 2023", "10 May 2023"]


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError):
        resolve_dates(b"yesterday", MONDAY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        resolve_dates("yesterday", "2023-05-08")  # type: ignore[arg-type]


def test_resolved_dates_is_an_indexed_key() -> None:
    assert RESOLVED_DATES_KEY == "resolved_dates" and RESOLVED_DATES_KEY in INDEXED_METADATA_KEYS


# -- RememberPrimitive writes them ------------------------------------------------------------------


async def _remember(memory: Memory, text: str, **options: object) -> MemoryRecord:
    ctx = WorkflowContext(session_id="s1", metadata={"user_id": "alice"})
    await RememberPrimitive(memory, **options).execute(  # type: ignore[arg-type]
        {"query": text, "speaker": "Caroline", "created_at": MONDAY}, ctx)
    (hit,) = (await memory.search(text, user_id="alice", limit=1)).hits
    return hit.record


async def test_remember_writes_the_resolved_dates_and_search_finds_the_turn_by_them() -> None:
    memory = Memory(InMemoryBackend())
    record = await _remember(memory, "I went to a support group yesterday")
    assert record.metadata[RESOLVED_DATES_KEY] == "7 May 2023"
    assert record.created_at == MONDAY
    hits = (await memory.search("what happened on 7 May 2023", user_id="alice")).hits
    assert [h.record.id for h in hits] == [record.id]


async def test_remember_can_opt_out_and_keeps_a_given_value() -> None:
    memory = Memory(InMemoryBackend())
    record = await _remember(memory, "I went hiking yesterday", resolve_dates=False)
    assert RESOLVED_DATES_KEY not in record.metadata
    ctx = WorkflowContext(session_id="s2", metadata={"user_id": "alice"})
    await RememberPrimitive(memory).execute(
        {"query": "a swim yesterday", "created_at": MONDAY, "metadata": {RESOLVED_DATES_KEY: "mine"}}, ctx)
    (hit,) = (await memory.search("swim", user_id="alice")).hits
    assert hit.record.metadata[RESOLVED_DATES_KEY] == "mine"
    with pytest.raises(InvalidInputError):
        RememberPrimitive(memory, resolve_dates="yes")  # type: ignore[arg-type]


async def test_remember_without_a_date_resolves_against_now() -> None:
    memory = Memory(InMemoryBackend())
    ctx = WorkflowContext(session_id="s1", metadata={"user_id": "alice"})
    await RememberPrimitive(memory).execute("a party yesterday", ctx)
    (hit,) = (await memory.search("party", user_id="alice")).hits
    yesterday = hit.record.created_at.date() - timedelta(days=1)  # type: ignore[union-attr]
    assert hit.record.metadata[RESOLVED_DATES_KEY] == f"{yesterday.day} {yesterday:%B} {yesterday.year}"


async def test_a_text_without_dates_gets_no_key() -> None:
    memory = Memory(InMemoryBackend())
    record = await _remember(memory, "I like painting")
    assert RESOLVED_DATES_KEY not in record.metadata


# -- created_at ranges: validation at the edge --------------------------------------------------------


T0 = datetime(2023, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", [
    {"gte": datetime(2023, 5, 1)},  # naive
    {"lt": datetime(2023, 5, 1)},
    {"after": T0},  # unknown operator
    {"gte": T0, "gt": T0},  # two lower bounds
    {"lte": T0, "lt": T0},
    {"gte": T0 + timedelta(days=1), "lt": T0},  # reversed
    {"gte": T0, "lt": T0},  # holds no instant
    {"gt": T0, "lte": T0},
    {"gte": math.nan},
    {"gte": float("inf")},
    {"gte": 1683000000},
    {"gte": "2023-05-01T00:00:00+00:00"},
    {"gte": True},
    {"gte": date(2023, 5, 1)},
    "2023-05-01",
    [T0, T0],
    (T0, T0 + timedelta(days=1)),
    42,
])
def test_bad_ranges_are_refused_with_a_typed_error(value: object) -> None:
    with pytest.raises(InvalidFilterError) as info:
        normalize_filter({"created_at": value})
    assert isinstance(info.value, ValueError)


def test_ranges_are_normalised_to_half_open_microseconds() -> None:
    us = 1_682_899_200_000_000  # T0
    assert check_time_range({"gte": T0}) == TimeRange(us, None)
    assert check_time_range({"gt": T0}) == TimeRange(us + 1, None)
    assert check_time_range({"lt": T0}) == TimeRange(None, us)
    assert check_time_range({"lte": T0}) == TimeRange(None, us + 1)
    assert check_time_range({"gte": T0, "lte": T0}) == TimeRange(us, us + 1)  # one instant
    plus2 = T0.astimezone(timezone(timedelta(hours=2)))
    assert check_time_range({"gte": plus2}) == TimeRange(us, None)  # zones do not matter
    assert check_time_range(None) is None and check_time_range({}) is None
    assert check_time_range({"gte": None, "lt": None}) is None
    assert normalize_filter({"created_at": None, "user_id": "a"}) == {"user_id": ("a",)}
    pre_epoch = datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC)
    assert check_time_range({"gte": pre_epoch}) == TimeRange(-1_500_000, None)


async def test_nothing_is_searched_or_counted_on_a_bad_range() -> None:
    backend = InMemoryBackend()
    await backend.add([MemoryRecord("apple", created_at=T0)])
    for call in (lambda: backend.search("apple", filter={"created_at": {"gte": datetime(2023, 1, 1)}}),
                 lambda: backend.count({"created_at": {"since": T0}})):
        with pytest.raises(InvalidFilterError):
            await call()


# -- created_at ranges on every backend ----------------------------------------------------------------


from tests.test_differential import any_backend  # noqa: E402,F401  (a fresh backend of each kind)


#: created_at of the records ``r0``..``r5``: before 1970, at the epoch, microseconds apart, in
#: other zones (the same instants in UTC), and far in the future.
TIMES = [
    datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2023, 5, 7, 12, 0, 0, 1, tzinfo=UTC),
    datetime(2023, 5, 7, 12, 0, 0, 2, tzinfo=timezone(timedelta(hours=5, minutes=30))).replace(hour=17, minute=30),
    datetime(2023, 5, 8, 0, 0, tzinfo=timezone(timedelta(hours=-7))),
    datetime(2090, 1, 1, tzinfo=UTC),
]


async def _fill(backend: MemoryBackend) -> None:
    await backend.add([
        MemoryRecord(f"apple pie number {i}", id=f"r{i}", user_id="alice", created_at=at) for i, at in enumerate(TIMES)
    ] + [MemoryRecord("apple pie of bob", id="b", user_id="bob", created_at=TIMES[2])])


async def _ids(backend: MemoryBackend, created_at: dict[str, datetime], user: str | None = "alice") -> set[str]:
    flt: dict[str, object] = {"created_at": created_at}
    if user is not None:
        flt["user_id"] = user
    hits = (await backend.search("apple pie", filter=flt, limit=50, mode="keyword")).hits
    found = {h.record.id for h in hits}
    assert await backend.count(flt) == len(found), created_at
    assert all(h.record.user_id == user for h in hits) or user is None
    return found


async def test_ranges_select_the_same_records_on_every_backend(any_backend: MemoryBackend) -> None:
    await _fill(any_backend)
    t2 = TIMES[2]
    assert await _ids(any_backend, {"gte": t2}) == {"r2", "r3", "r4", "r5"}
    assert await _ids(any_backend, {"gt": t2}) == {"r3", "r4", "r5"}  # one microsecond later counts
    assert await _ids(any_backend, {"lte": t2}) == {"r0", "r1", "r2"}
    assert await _ids(any_backend, {"lt": t2}) == {"r0", "r1"}
    assert await _ids(any_backend, {"gte": t2, "lte": t2}) == {"r2"}
    assert await _ids(any_backend, {"gte": t2, "lte": t2}, user=None) == {"r2", "b"}
    assert await _ids(any_backend, {"lt": TIMES[1]}) == {"r0"}  # before the epoch
    assert await _ids(any_backend, {"gte": TIMES[0], "lt": TIMES[1]}) == {"r0"}
    day = datetime(2023, 5, 8, tzinfo=UTC)
    assert await _ids(any_backend, {"gte": day - timedelta(days=1), "lt": day}) == {"r2", "r3"}
    assert await _ids(any_backend, {"gte": day}) == {"r4", "r5"}  # 8 May 00:00 at -07:00 is 07:00 UTC
    assert await _ids(any_backend, {"gt": TIMES[5]}) == set()
    assert await _ids(any_backend, {"gte": datetime(2100, 1, 1, tzinfo=UTC)}, user=None) == set()


async def test_a_range_takes_the_best_hits_inside_it_not_the_best_hits_then_filtered(any_backend: MemoryBackend) -> None:
    """More records match the words than ``limit``: the range must be applied before the cut."""
    old = datetime(2020, 1, 1, tzinfo=UTC)
    new = datetime(2023, 1, 1, tzinfo=UTC)
    await any_backend.add(
        [MemoryRecord("pie pie pie pie", id=f"o{i}", created_at=old + timedelta(days=i)) for i in range(6)]
        + [MemoryRecord("pie and a long tail of many other words here", id="n", created_at=new)])
    hits = (await any_backend.search("pie", filter={"created_at": {"gte": new}}, limit=1, mode="keyword")).hits
    assert [h.record.id for h in hits] == ["n"]


async def test_memory_search_and_recall_take_a_range() -> None:
    memory = Memory(InMemoryBackend(), single_user=True)
    await memory.remember("apple in spring", created_at=datetime(2023, 4, 1, tzinfo=UTC), id="spring")
    await memory.remember("apple in summer", created_at=datetime(2023, 7, 1, tzinfo=UTC), id="summer")
    may = {"gte": datetime(2023, 5, 1, tzinfo=UTC)}
    assert [h.record.id for h in (await memory.search("apple", created_at=may)).hits] == ["summer"]
    assert [h.record.id for h in (await memory.recall("apple", created_at=may)).hits] == ["summer"]
    with pytest.raises(InvalidFilterError):
        await memory.search("apple", created_at={"gte": datetime(2023, 5, 1)})


def test_the_redis_query_renders_ranges_as_numbers_only() -> None:
    from primitives.memory.redis_backend.query import render_filter, render_query

    flt = normalize_filter({"created_at": {"gt": TIMES[0], "lte": T0}, "user_id": "alice"})
    assert render_filter(flt) == "@created_at:[-1.499999 (1682899200.000001] @tag_user_id:{616c696365}"
    assert render_query([], normalize_filter({"created_at": {"lt": T0}})) == "@created_at:[-inf (1682899200.000000]"
    assert render_query(["appl"], normalize_filter({"created_at": {"gte": T0}})) == (
        "(@created_at:[1682899200.000000 +inf] @terms|date:(appl))")


def test_the_ams_filter_is_a_whole_second_superset() -> None:
    from primitives.memory.ams_backend.mapping import matches, server_filter

    flt = normalize_filter({"created_at": {"gt": T0 + timedelta(microseconds=5), "lt": T0 + timedelta(seconds=1, microseconds=1)}})
    assert server_filter(flt)["created_at"] == {"between": ["2023-05-01T00:00:00+00:00", "2023-05-01T00:00:02+00:00"]}
    assert server_filter(normalize_filter({"created_at": {"gte": T0}}))["created_at"] == {"gte": "2023-05-01T00:00:00+00:00"}
    inside = MemoryRecord("x", created_at=T0 + timedelta(microseconds=6))
    edge = MemoryRecord("x", created_at=T0 + timedelta(microseconds=5))
    assert matches(inside, flt) and not matches(edge, flt)


class _IgnoresRanges(InMemoryBackend):
    """A deliberately broken backend: it drops the ``created_at`` range."""

    async def _search(self, query, tag_filter, limit, mode):  # type: ignore[no-untyped-def]
        return await super()._search(query, {k: v for k, v in tag_filter.items() if k != "created_at"}, limit, mode)


def test_the_differential_machine_catches_a_backend_that_ignores_ranges() -> None:
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.stateful import run_state_machine_as_test

    from tests.differential import TALLIES, BackendSpec, Disagreement, machine_for

    async def make() -> MemoryBackend:
        return _IgnoresRanges(working_memory_size=4)

    async def close(backend: MemoryBackend) -> None:
        await backend.aclose()

    spec = BackendSpec("planted-range", make, close, working_memory_size=4)
    try:
        with pytest.raises(Disagreement):
            run_state_machine_as_test(machine_for(spec), settings=settings(
                max_examples=500, stateful_step_count=30, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
            ))
    finally:
        TALLIES.pop(spec.name, None)
