"""Time in memory: relative dates in a turn resolved against the turn's date, and ``created_at``
ranges in search filters.

**Resolving relative dates** (:func:`resolve_dates`). "I went to a support group yesterday",
said on 8 May 2023, is about 7 May 2023; a question asking about 7 May, or May 2023, finds the
turn only when that date is written out in the indexed text. :class:`~primitives.memory.workflow.RememberPrimitive`
writes the resolved dates of each stored turn under the metadata key :data:`RESOLVED_DATES_KEY`
(``"resolved_dates"``), which every backend indexes for keyword search
(:data:`~primitives.memory.record.INDEXED_METADATA_KEYS`).

The expressions understood are a closed, documented set (case-insensitive, whole words), each
resolved against the calendar date of ``base`` (in ``base``'s own timezone; weeks start on
Monday, ISO 8601):

==============================================  ================================================
expression                                      written out as
==============================================  ================================================
``yesterday``, ``last night``                   the day before: ``7 May 2023``
``the day before yesterday``                    two days before
``tomorrow``, ``the day after tomorrow``        one / two days after
``N days ago``, ``in N days``                   that day (``a few``/``several`` days: the week
                                                of ``base`` -/+ 3 days, ``the week of 1 May 2023``;
                                                a few weeks, months or years: left alone)
``N weeks ago``, ``in N weeks``                 the week: ``the week of 1 May 2023`` (its Monday)
``N months ago``, ``in N months``               the month: ``April 2023``
``N years ago``, ``in N years``                 the year: ``2022``
``last``/``this``/``next`` ``week``             the week before / of / after ``base``'s week
``last``/``this``/``next`` ``month``/``year``   the month or year before / of / after
``last``/``this``/``next`` ``weekend``,         the weekend (Saturday) of the week before / of /
``this past weekend``, ``over the weekend``     after; "this past" and "over the" weekend: the
                                                last Saturday strictly before ``base``'s date
                                                (``base`` itself when it is a Sunday: the day before)
``last <weekday>``                              the latest such day strictly before ``base``
``this <weekday>``                              that day of ``base``'s week
``next <weekday>``                              the first such day strictly after ``base``
==============================================  ================================================

``N`` is ``a``/``an``/``one`` .. ``twelve``, ``a couple of`` (2), or 1 to 3 ASCII digits.
``today``/``tonight`` are not written out: the turn's own date is already indexed. A bare
weekday ("on Friday"), seasons and vague words ("recently", "the other day") are left alone:
which day they mean is a guess. A library was tried first: dateparser 1.5.0's ``search_dates``
read "We" as Wednesday and "May I" as a month, has no "this weekend", returns one instant
for "last week" (no granularity), and took 2-17 ms a turn (against an in-process add of
~50 µs); parsedatetime's ``nlp`` has the same weekday/month false positives. So this is a
small rule set, tested expression by expression (``tests/test_temporal.py``).

**Ranges** (:func:`check_time_range`). ``filter={"created_at": {"gte": t0, "lt": t1}}`` on
every backend's search and count: :class:`TimeRange` is the normalised half-open interval in
exact microseconds since the epoch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

from primitives.errors import InvalidFilterError

__all__ = [
    "MAX_RESOLVED_DATES",
    "MAX_MATCHES_PER_PASS",
    "MAX_SCAN_CHARS",
    "RANGE_OPERATORS",
    "RESOLVED_DATES_KEY",
    "TimeRange",
    "check_time_range",
    "resolve_dates",
    "resolved_dates_text",
    "split_filter",
]

#: The metadata key the written-out resolved dates are stored under (indexed for keyword search).
RESOLVED_DATES_KEY = "resolved_dates"
#: Most distinct resolved dates kept for one text (the first ones found, in order).
MAX_RESOLVED_DATES = 8
#: Characters of a text scanned for relative dates (a conversational turn is far shorter; a longer
#: text has the dates of its first 100,000 characters resolved), bounding the cost of one write.
MAX_SCAN_CHARS = 100_000
#: Most expressions of one family (see ``_PASSES``) looked at in one text: bounds the cost of a
#: text made of nothing but date expressions.
MAX_MATCHES_PER_PASS = 64
#: Operators a ``created_at`` range takes: ``gte``/``gt`` (lower bound), ``lte``/``lt`` (upper).
RANGE_OPERATORS: tuple[str, ...] = ("gte", "gt", "lte", "lt")

_MONTHS = (
    "", "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "couple of": 2,
}
_VAGUE = ("a few", "few", "several")

_NUM = r"[0-9]{1,3}|a couple of|couple of|a few|few|several|an|a|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
_UNIT = r"days?|weeks?|months?|years?"
_DAY = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
# One pattern per family of expressions, each run only when one of its words occurs (a C-level
# substring test: most turns have none). Texts are lowercased first; re.ASCII: \b and \s are
# ASCII-only, so no Unicode digit or space is read as a number or a separator. A pattern has no
# leading \b (it would disable the regex engine's literal-prefix scan, 10x slower): the word start
# is checked on each match instead (:func:`_starts_word`).
_PASSES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("yesterday", "tomorrow", "night"), re.compile(
        r"(?:(?P<dby>the\s+day\s+before\s+yesterday)|(?P<dat>the\s+day\s+after\s+tomorrow)"
        r"|(?P<yesterday>yesterday|last\s+night)|(?P<tomorrow>tomorrow))\b", re.ASCII)),
    (("ago",), re.compile(rf"(?P<n>{_NUM})\s+(?P<unit>{_UNIT})\s+ago\b", re.ASCII)),
    (("in ",), re.compile(rf"in\s+(?P<n2>{_NUM})\s+(?P<unit2>{_UNIT})\b", re.ASCII)),
    (("last", "this", "next", "weekend"), re.compile(
        r"(?:(?P<pastwe>this\s+past\s+weekend|over\s+the\s+weekend)"
        rf"|(?P<rel>last|this|next)\s+(?:(?P<period>week|month|year|weekend)|(?P<wd>{_DAY})))\b", re.ASCII)),
)


def _starts_word(text: str, at: int) -> bool:
    """Whether position ``at`` of ``text`` starts a word (what a leading ``\\b`` would check)."""
    if at == 0:
        return True
    before = text[at - 1]
    return not (before.isascii() and (before.isalnum() or before == "_"))


def _day(d: date) -> str:
    return f"{d.day} {_MONTHS[d.month]} {d.year}"


def _week(d: date) -> str:
    return f"the week of {_day(d - timedelta(days=d.weekday()))}"


def _weekend(saturday: date) -> str:
    return f"the weekend of {_day(saturday)}"


def _month(year: int, month: int) -> str:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    date(year, month, 1)  # range check (ValueError outside years 1..9999)
    return f"{_MONTHS[month]} {year}"


def _year(year: int) -> str:
    if not 1 <= year <= 9999:
        raise ValueError("year out of range")
    return str(year)


def _count(raw: str) -> tuple[int, bool]:
    """``(n, vague)`` for a matched number word or digits."""
    word = " ".join(raw.lower().split())
    if word in _VAGUE:
        return 3, True
    return (_NUMBERS[word] if word in _NUMBERS else int(word)), False


def _offset(today: date, n: int, vague: bool, unit: str, sign: int) -> str:
    unit = unit.lower().rstrip("s")
    if vague and unit != "day":
        raise ValueError("a few weeks/months/years: too vague to write out")
    if unit == "day":
        target = today + timedelta(days=sign * n)
        return _week(target) if vague else _day(target)
    if unit == "week":
        return _week(today + timedelta(weeks=sign * n))
    if unit == "month":
        return _month(today.year, today.month + sign * n)
    return _year(today.year + sign * n)


def _relative(today: date, rel: str, period: str | None, weekday: str | None) -> str:
    shift = {"last": -1, "this": 0, "next": 1}[rel.lower()]
    monday = today - timedelta(days=today.weekday())
    if period is not None:
        period = period.lower()
        if period == "week":
            return _week(monday + timedelta(weeks=shift))
        if period == "weekend":
            return _weekend(monday + timedelta(days=5, weeks=shift))
        if period == "month":
            return _month(today.year, today.month + shift)
        return _year(today.year + shift)
    target = _WEEKDAYS.index(weekday.lower())  # type: ignore[union-attr]
    if shift == 0:
        return _day(monday + timedelta(days=target))
    if shift < 0:
        back = (today.weekday() - target) % 7 or 7
        return _day(today - timedelta(days=back))
    ahead = (target - today.weekday()) % 7 or 7
    return _day(today + timedelta(days=ahead))


def _resolve(match: re.Match[str], today: date) -> str:
    g = match.groupdict().get
    if g("dby"):
        return _day(today - timedelta(days=2))
    if g("dat"):
        return _day(today + timedelta(days=2))
    if g("yesterday"):
        return _day(today - timedelta(days=1))
    if g("tomorrow"):
        return _day(today + timedelta(days=1))
    if g("n") is not None:
        n, vague = _count(g("n"))
        return _offset(today, n, vague, g("unit"), -1)
    if g("n2") is not None:
        n, vague = _count(g("n2"))
        return _offset(today, n, vague, g("unit2"), 1)
    if g("pastwe"):
        back = (today.weekday() - 5) % 7 or 7  # the latest Saturday strictly before today
        return _weekend(today - timedelta(days=back))
    return _relative(today, g("rel"), g("period"), g("wd"))


def resolve_dates(text: str, base: datetime | date) -> list[str]:
    """The relative date expressions of ``text`` resolved against ``base``, written out.

    Args:
        text: Any ``str`` (scanned in one linear pass of one regular expression; NUL, any
            Unicode and any length are fine: Unicode digits and spaces are not read as numbers
            or separators).
        base: When the text was said: its calendar date (in its own timezone) is "today".

    Returns:
        Distinct written-out dates in the order their expressions appear, at most
        :data:`MAX_RESOLVED_DATES`: ``"7 May 2023"`` (a day), ``"the week of 1 May 2023"``
        (Monday of the week), ``"the weekend of 6 May 2023"`` (its Saturday), ``"May 2023"``,
        ``"2022"``. An expression whose date falls outside years 1..9999 is left out. See the
        module docstring for the expressions and rules.

    Raises:
        TypeError: ``text`` is not a ``str`` or ``base`` not a ``date``/``datetime``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(base, date):
        raise TypeError(f"base must be a date or datetime, got {type(base).__name__}")
    head = text[:MAX_SCAN_CHARS].lower()
    today = base.date() if isinstance(base, datetime) else base
    first: dict[str, int] = {}  # written-out date -> where it first appears
    for words, pattern in _PASSES:
        if not any(word in head for word in words):
            continue
        # a pass stops at its own first MAX_RESOLVED_DATES distinct dates (no later one of its
        # dates can be among the first overall), or after MAX_MATCHES_PER_PASS expressions
        mine = 0
        for seen, match in enumerate(pattern.finditer(head)):
            if seen >= MAX_MATCHES_PER_PASS:
                break
            if not _starts_word(head, match.start()):
                continue
            try:
                value = _resolve(match, today)
            except (ValueError, OverflowError):
                continue  # before year 1 or after 9999, or too vague
            if value not in first:
                first[value] = match.start()
                mine += 1
                if mine >= MAX_RESOLVED_DATES:
                    break
    return sorted(first, key=first.__getitem__)[:MAX_RESOLVED_DATES]


def resolved_dates_text(text: str, base: datetime | date) -> str | None:
    """:func:`resolve_dates` joined with ``"; "`` (what is stored under
    :data:`RESOLVED_DATES_KEY`), or ``None`` when ``text`` has no relative date."""
    dates = resolve_dates(text, base)
    return "; ".join(dates) if dates else None


# -- created_at ranges ----------------------------------------------------------------------------

_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class TimeRange(NamedTuple):
    """A normalised ``created_at`` range: ``start_us <= created_at < end_us`` in exact
    microseconds since the epoch (UTC); ``None`` is unbounded on that side. ``gt t`` is
    ``start_us = micros(t) + 1``, ``lte t`` is ``end_us = micros(t) + 1`` (datetimes have
    microsecond resolution, so this is exact)."""

    start_us: int | None
    end_us: int | None

    def contains(self, at: datetime | None) -> bool:
        """Whether an aware datetime falls in the range (``None``, no timestamp: ``False``)."""
        if at is None:
            return False
        us = _micros(at)
        return (self.start_us is None or us >= self.start_us) and (self.end_us is None or us < self.end_us)


def _micros(at: datetime) -> int:
    delta = at - _UTC_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _bound(value: object, op: str) -> int:
    if not isinstance(value, datetime):
        shown = "nan" if isinstance(value, float) and math.isnan(value) else type(value).__name__
        raise InvalidFilterError(
            f"filter 'created_at' {op!r} takes a timezone-aware datetime, got {shown}"
        )
    if value.utcoffset() is None:
        raise InvalidFilterError(
            f"filter 'created_at' {op!r} got a naive datetime ({value.isoformat()}); give a timezone "
            "(e.g. datetime(..., tzinfo=timezone.utc))"
        )
    try:
        return _micros(value)
    except OverflowError:
        raise InvalidFilterError(f"filter 'created_at' {op!r} is out of range: {value!r}") from None


def check_time_range(value: object) -> TimeRange | None:
    """Validate a ``created_at`` filter value and normalise it.

    Args:
        value: A mapping of one or two of :data:`RANGE_OPERATORS` to timezone-aware datetimes
            (at most one lower bound, ``gte`` or ``gt``, and one upper, ``lte`` or ``lt``);
            ``None`` values are absent bounds. ``None`` (or only ``None`` bounds): no restriction.

    Returns:
        The :class:`TimeRange`, or ``None`` for no restriction.

    Raises:
        InvalidFilterError: not a mapping, an unknown operator, both ``gte`` and ``gt`` (or
            ``lte`` and ``lt``), a bound that is not a timezone-aware datetime (a naive one, a
            number, NaN, a string), or a range that holds no instant (start after end, or
            ``gte t, lt t``).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidFilterError(
            f"filter 'created_at' takes a mapping of {', '.join(RANGE_OPERATORS)} to aware datetimes, "
            f"got {type(value).__name__}"
        )
    for op in value:
        if op not in RANGE_OPERATORS:
            raise InvalidFilterError(
                f"filter 'created_at' got operator {op!r}; accepted: {', '.join(RANGE_OPERATORS)}"
            )
    given = {op: v for op, v in value.items() if v is not None}
    if "gte" in given and "gt" in given or "lte" in given and "lt" in given:
        raise InvalidFilterError("filter 'created_at' takes one lower bound (gte or gt) and one upper (lte or lt)")
    start = end = None
    if "gte" in given:
        start = _bound(given["gte"], "gte")
    elif "gt" in given:
        start = _bound(given["gt"], "gt") + 1
    if "lt" in given:
        end = _bound(given["lt"], "lt")
    elif "lte" in given:
        end = _bound(given["lte"], "lte") + 1
    if start is not None and end is not None and start >= end:
        raise InvalidFilterError(
            "filter 'created_at' holds no instant: its lower bound is not before its upper bound"
        )
    if start is None and end is None:
        return None
    return TimeRange(start, end)


def split_filter(tag_filter: Mapping[str, Any]) -> tuple[dict[str, Any], TimeRange | None]:
    """``(tags, created_at range)`` of a normalised filter: backends match the two apart."""
    time_range = tag_filter.get("created_at")
    if time_range is None:
        return dict(tag_filter) if not isinstance(tag_filter, dict) else tag_filter, None
    return {k: v for k, v in tag_filter.items() if k != "created_at"}, time_range
