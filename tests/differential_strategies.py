"""Strategies of the differential test (``tests/test_differential.py``): identifiers from one pool of
plain and hostile strings with near-duplicates of "alice", texts, metadata, timestamps, records and
messages, and the budgets. See ``tests/differential.py`` for what is compared."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from hypothesis import strategies as st
from primitives.memory import MemoryRecord, MemoryType, Message
from primitives.memory.record import DEFAULT_TTLS
from primitives.validation import MAX_IDENTIFIER_CHARS

# -- budgets and known disagreements -----------------------------------------------------------


#: Known disagreements to steer around while looking for new ones (``DIFFERENTIAL_AVOID=D2,D3``;
#: see docs/testing.md). Empty by default: CI runs the full test, so a known bug keeps failing it.
AVOID: frozenset[str] = frozenset(x.strip() for x in os.environ.get("DIFFERENTIAL_AVOID", "").split(",") if x.strip())


def env_int(name: str, default: int) -> int:
    """An int from the environment (``DIFFERENTIAL_EXAMPLES=5000``), else ``default``."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# -- hostile strings -----------------------------------------------------------------------------

#: Near-duplicates of "alice": each is its own tenant, exactly.
NEAR_ALICE: list[str] = [
    "alice ", " alice", "alice\t", "\talice", "alice\n", "alice\r\n", "al ice", "ALICE", "Alice", "aLice",
    "alice,bob", "bob,alice", "alice|bob", "alice;bob", "alice:bob", "alice\x1fbob", "alice\x00", "\x00alice",
    "alice\x01", "alice\x7f", "{alice}", "[alice]", "(alice)", "@alice", "alice*", "ali*", "ali?e", "-alice",
    "~alice", '"alice"', "'alice'", "alice\\", "alice/", "alice%", "%alice%", "@user_id:{alice}",
    "alice\u0301", "alicé", "ålice", "\u0430lice",  # Cyrillic а
    "alice\u200b", "\u202ealice", "alice😀", "alice alice", "alice-bob", "alice_bob", "alice.bob", "ali`ce", "alice`",
]
#: Plain identifiers, so that most operations meet each other.
PLAIN: list[str] = ["alice", "bob", "carol", "default", "ns1", "s1", "work", "home"]
#: Query-syntax fragments and lone separators.
SYNTAX: list[str] = [
    "@user_id:{x}", "@namespace:{alice}", "=>[KNN 5 @v $b]", "-x", "x*", "%x%", "*", "|", ",", ";", ":", "{", "}",
    "[", "]", "(", ")", "@", "?", "-", "~", '"', "'", "\\", "/", "$b", "a:b", "a|b", "{}", "()", "..", ".",
    "\\x", "x\\", "\\*", "TAG", "@text:(a|b)", "ismissing(@user_id)", "*=>[KNN 3 @embedding $v]", "_", "`", "a`b", "a?b",
    "w'*alice*'", "mp64:YWxpY2U", "mp64:",
]
UNICODE: list[str] = [
    "ünïcødé 😀", "e\u0301", "é", "\u202eevil", "مرحبا", "עברית", "😀", "👩‍👩‍👧",
    "ß", "ǅ", "İ", "ﬁ", "Ω", "\u2126",
    "\ufeffbom", "x\u0000y", "\u3000x", "x\u00a0y", "\U0001f600\u0301",
]
CONTROL: list[str] = ["\x00", "a\x00b", "\x01x", "x\x7f", "\x1b[31mred", "tab\there", "new\nline", "\r\nx", "x\x0b", "x\x1e"]

#: The longest identifiers (1,024 characters, up to 4 KiB of UTF-8), two of them differing only
#: in the last character: a store that shortens or hashes long values must keep them apart.
LONG: list[str] = ["x" * MAX_IDENTIFIER_CHARS, "x" * (MAX_IDENTIFIER_CHARS - 1) + "y", "é" * MAX_IDENTIFIER_CHARS,
                   "😀" * (MAX_IDENTIFIER_CHARS - 1) + "a", "😀" * (MAX_IDENTIFIER_CHARS - 1) + "b"]

IDENTIFIER_POOL: list[str] = PLAIN + NEAR_ALICE + SYNTAX + UNICODE + CONTROL + LONG

#: Characters random identifiers are made of: letters of "alice" and hostile ones.
_ID_ALPHABET = list("alicebALICE ,|;:{}[]()@*?-~\"'\\/%$=>.`_\t\n\r\x00\x01\x1f\x7f") + [
    "\u0301", "\u0430", "\u200b", "\u202e", "😀", "é", "\u00a0", "\u3000",
]


def valid_identifier(value: str) -> bool:
    """What :func:`primitives.validation.check_identifier` accepts."""
    if not value.strip() or len(value) > MAX_IDENTIFIER_CHARS:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@functools.cache
def identifiers(pool: tuple[str, ...] = tuple(IDENTIFIER_POOL)) -> st.SearchStrategy[str]:
    """Valid identifiers: "alice" or one of its near-duplicates (so that two records of one
    sequence often hold "alice" and "alice " or "ALICE"), any of ``pool``, or a string made of
    hostile characters."""
    family = st.sampled_from(["alice"] * len(NEAR_ALICE) + NEAR_ALICE)
    made = st.text(alphabet=st.sampled_from(_ID_ALPHABET), min_size=1, max_size=8).filter(valid_identifier)
    pooled = st.sampled_from(pool)
    return st.one_of(family, st.one_of(pooled, pooled, pooled, st.sampled_from(LONG)), made)


#: Ways to turn any identifier into a near-duplicate of it (another tenant, exactly).
NEAR_MUTATIONS: dict[str, Callable[[str], str]] = {
    "trailing space": lambda v: v + " ",
    "leading space": lambda v: " " + v,
    "trailing tab": lambda v: v + "\t",
    "trailing newline": lambda v: v + "\n",
    "upper case": str.upper,
    "lower case": str.lower,
    "swapped case": str.swapcase,
    "casefolded": str.casefold,
    "comma list": lambda v: v + ",x",
    "comma list before": lambda v: "x," + v,
    "pipe": lambda v: v + "|x",
    "semicolon": lambda v: v + ";x",
    "unit separator": lambda v: v + "\x1fx",
    "trailing NUL": lambda v: v + "\x00",
    "leading NUL": lambda v: "\x00" + v,
    "braces": lambda v: "{" + v + "}",
    "star suffix": lambda v: v + "*",
    "last char star": lambda v: v[:-1] + "*",
    "last char ?": lambda v: v[:-1] + "?",
    "Cyrillic a": lambda v: v.replace("a", "\u0430"),
    "combining acute": lambda v: v + "\u0301",
    "zero-width space": lambda v: v + "\u200b",
    "tag query": lambda v: "@user_id:{" + v + "}",
    "trailing backslash": lambda v: v + "\\",
    "negation": lambda v: "-" + v,
    "underscore": lambda v: v + "_",
    "digest neighbour": lambda v: (v + "x" * MAX_IDENTIFIER_CHARS)[: MAX_IDENTIFIER_CHARS],
    "last character": lambda v: v[:-1] + ("y" if v[-1] != "y" else "z"),
}


def near_duplicate(value: str, mutation: str) -> str | None:
    """``value`` changed by ``NEAR_MUTATIONS[mutation]``, or ``None`` when that gives no other
    valid identifier."""
    out = NEAR_MUTATIONS[mutation](value)
    return out if out != value and valid_identifier(out) else None


IDS: list[str] = ["r1", "r2", "r3", "alice", "alice ", "ALICE", "alice,bob", "*", "a:b", "\x00", "é", "e\u0301"]
NAMESPACES: list[str] = ["default", "ns1", "alice", "alice ", "ALICE", "alice,bob", "a:b", "*", "{alice}", "аlice"]
SESSIONS: list[str] = ["s1", "s2", "alice", "alice ", "alice,bob", "*", "@user_id:{x}", "s\x00"]
ROLES: list[str] = ["user", "assistant", "system", "tool", "user ", "USER", "a,b", "😀", "\x00"]


@functools.cache
def ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(IDS), identifiers())


@functools.cache
def namespaces() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NAMESPACES), identifiers())


@functools.cache
def sessions() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(SESSIONS), identifiers())


#: Identifiers that every public method must refuse (and the values that are not str at all).
INVALID_IDENTIFIERS: list[Any] = [
    "", " ", "\t\n", "\r\n", "\x1c\x1d\x1e\x1f", "\u2003", "\u3000", "\x85", "\u2028", "x" * (MAX_IDENTIFIER_CHARS + 1),
    "\ud800", "al\udc80ice", None, 7, b"alice", ["alice"], 1.5,
]

# -- texts ---------------------------------------------------------------------------------------

#: Content words (and word forms) queries are made of, so searches hit. No month names, no digits,
#: no stop words: those meet the written-out dates every backend indexes with a record.
VOCAB: list[str] = [
    "apple", "apples", "river", "rivers", "garden", "gardening", "music", "coffee", "mountain", "mountains",
    "winter", "guitar", "paint", "painting", "painted", "blue", "travel", "travelled", "book", "books",
    "Apple", "RIVER", "Garden", "caf\u00e9", "zürich", "naïve",
]
STOP = ["the", "and", "of", "is", "a", "to", "my", "what", "did"]
_TEXT_SEPARATORS = [" ", " ", " ", " ", ", ", ". ", "\n", "\t", "  ", "-", "|", "/", "; ", "'s ", "_", "’s "]
#: Hostile fragments of text (free text, not identifiers: anything goes).
TEXT_FRAGMENTS: list[str] = SYNTAX + UNICODE + CONTROL + [
    "", "\x00", "it's", "don't", "caroline's", "l'été", "\u2028", "<script>", "%s", "{0}", "\\n", "NULL",
]


def tokenizer_safe(text: str) -> bool:
    """Whether RediSearch's tokenizer and the in-process analyzer split ``text`` the same way
    (D2: they do not for line breaks, control characters, backslashes, apostrophes, non-Latin-1
    letters, unicode spaces and punctuation, emoji, combining marks): ASCII printable characters
    and tabs except ``\\`` and ``'``, and Latin-1 letters other than ``ß``."""
    for c in text:
        if c.isascii():
            if not (c.isprintable() or c == "\t") or c in "\\'":
                return False
        elif not ("\u00c0" <= c <= "\u00ff" and c.isalpha() and c != "\u00df"):
            return False
    return True


@functools.cache
def texts(*, allow_empty: bool = True) -> st.SearchStrategy[str]:
    """Short sentences over :data:`VOCAB`, with stop words, hostile fragments and separators."""
    fragments, separators = TEXT_FRAGMENTS, _TEXT_SEPARATORS
    if "D2" in AVOID:
        fragments = [f for f in fragments if tokenizer_safe(f)]
        separators = [f for f in separators if tokenizer_safe(f)]
    token = st.one_of(st.sampled_from(VOCAB), st.sampled_from(VOCAB), st.sampled_from(STOP), st.sampled_from(fragments))
    sentence = st.lists(st.tuples(token, st.sampled_from(separators)), min_size=0 if allow_empty else 1, max_size=8)
    out = sentence.map(lambda parts: "".join(t + s for t, s in parts))
    return out if allow_empty else out.filter(lambda s: s.strip() != "")


@functools.cache
def queries() -> st.SearchStrategy[str]:
    """Search queries: 1-3 vocabulary words, sometimes with stop words, syntax or separators."""
    word = st.sampled_from(VOCAB)
    extra = st.one_of(st.sampled_from(STOP), st.sampled_from(SYNTAX), st.sampled_from(["?", "!", "*", " ", "\t"]))
    plain = st.lists(word, min_size=1, max_size=3).map(" ".join)
    mixed = st.lists(st.one_of(word, word, extra), min_size=1, max_size=4).map(" ".join)
    hostile = st.sampled_from(TEXT_FRAGMENTS + NEAR_ALICE + ["alice", "bob", "user_id alice"])
    return st.one_of(plain, mixed, hostile)


# -- metadata --------------------------------------------------------------------------------------

_JSON_TEXT = st.one_of(texts(), st.sampled_from(IDENTIFIER_POOL), st.just(""))
_JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([-0.0, 0.0, 5e-324, 1.7976931348623157e308, 1, 1.0]),
    _JSON_TEXT,
)


@functools.cache
def metadata(*, searchable_keys: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with hostile keys and values, nested a few levels; ``speaker`` and
    ``context`` (indexed for search on the in-process and Redis backends) only when
    ``searchable_keys``."""
    keys = st.one_of(st.sampled_from(IDENTIFIER_POOL + ["", " ", "a.b", "$x", "\x00", "__proto__", "0"]),
                     st.text(max_size=4))
    if searchable_keys and "D2" not in AVOID:  # D2: indexed as text, tokenized differently
        keys = st.one_of(st.sampled_from(["speaker", "context"]), keys)
    else:
        keys = keys.filter(lambda k: k not in ("speaker", "context"))
    value = st.recursive(
        _JSON_SCALAR,
        lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)),
        max_leaves=6,
    )
    return st.one_of(st.just({}), st.dictionaries(keys, value, max_size=4))


# -- timestamps ------------------------------------------------------------------------------------

UTC = timezone.utc
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7, minutes=-30)),
         timezone(timedelta(hours=14))]


@functools.cache
def explicit_datetimes() -> st.SearchStrategy[datetime]:
    """Aware datetimes far from now (so they never meet a backend's own clock), any zone."""
    return st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2019, 12, 30), timezones=st.sampled_from(ZONES))


@functools.cache
def _far_from_now() -> st.SearchStrategy[datetime]:
    """Bounds a stamped ``created_at`` (now, within the test run) can never sit on: explicit
    datetimes (before 2020), or a day or more from now, either way."""
    import time

    now = time.time()
    around = st.sampled_from([-400 * 86400, -86400, 86400, 400 * 86400]).map(
        lambda offset: datetime.fromtimestamp(now + offset, UTC))
    return st.one_of(explicit_datetimes(), around)


def time_ranges(anchors: list[datetime]) -> st.SearchStrategy[dict[str, Any]]:
    """``created_at`` filter values: one or two bounds (``gte``/``gt``, ``lte``/``lt``), each an
    explicit datetime, a time a day or more from now, or exactly one of ``anchors`` (stored
    records' explicit ``created_at``, so the boundary itself is tested), in any zone; sometimes
    reversed or empty (both backends must refuse it the same way)."""
    bound = st.one_of(_far_from_now(), st.sampled_from(anchors)) if anchors else _far_from_now()
    zoned = st.tuples(bound, st.sampled_from(ZONES)).map(lambda bz: bz[0].astimezone(bz[1]))
    lower = st.one_of(st.none(), st.tuples(st.sampled_from(["gte", "gt"]), zoned))
    upper = st.one_of(st.none(), st.tuples(st.sampled_from(["lte", "lt"]), zoned))
    return st.tuples(lower, upper).filter(lambda lu: lu != (None, None)).map(
        lambda lu: dict(b for b in lu if b is not None))


#: Offsets from now (seconds) for timestamps of last-writer-wins writes: each at least minutes
#: away from now, so it is clearly older or newer than a write a backend stamps with its clock.
LWW_OFFSETS = [-3 * 365 * 86400, -40 * 86400, -20 * 86400, -86400, -2 * 3600, -1800, 1800, 86400, 2 * 365 * 86400]
#: ``ttl`` values of records: none expires while a test runs.
LONG_TTLS = [None, None, math.inf, 7200.0, 10.5 * 86400, 365 * 86400.0]
#: ``ttl`` values of last-writer-wins writes (with an old ``updated_at``, some have run out).
LWW_TTLS = [None, math.inf, 3600.0, 30 * 86400.0, 400 * 86400.0]
#: The shortest distance from now of a record's expiry that the test lets happen: a record
#: never expires (or stops being expired) while a test sequence runs.
EXPIRY_MARGIN_S = 900.0


def effective_ttl(record: MemoryRecord, default_ttls: Mapping[MemoryType, float | None] = DEFAULT_TTLS) -> float:
    if record.ttl is not None:
        return record.ttl
    value = default_ttls.get(record.memory_type)
    return math.inf if value is None else value


def away_from_expiry(record: MemoryRecord, now: float) -> MemoryRecord:
    """``record`` with ``ttl=inf`` when its expiry would fall within :data:`EXPIRY_MARGIN_S` of now."""
    assert record.updated_at is not None
    expires = record.updated_at.timestamp() + effective_ttl(record)
    if abs(expires - now) < EXPIRY_MARGIN_S:
        return dataclasses.replace(record, ttl=math.inf)
    return record


# -- records ---------------------------------------------------------------------------------------

MEMORY_TYPES = [t.value for t in MemoryType]


@dataclass(frozen=True)
class Flavour:
    """What a backend can hold, so generated input stays within what it documents."""

    allow_empty_text: bool = True
    searchable_metadata: bool = True
    embeddings: bool = True


@functools.cache
def _records(flavour: Flavour) -> st.SearchStrategy[MemoryRecord]:
    embedding = st.none()
    if flavour.embeddings:
        vector = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=4)
        embedding = st.one_of(st.none(), vector)
    return st.builds(
        MemoryRecord,
        text=texts(allow_empty=flavour.allow_empty_text),
        id=ids(),
        user_id=st.one_of(st.none(), identifiers()),
        session_id=st.one_of(st.none(), sessions()),
        namespace=namespaces(),
        memory_type=st.sampled_from(MEMORY_TYPES),
        topics=st.lists(identifiers(), max_size=3).map(tuple),  # repeats are kept (D1 was about them)
        metadata=metadata(searchable_keys=flavour.searchable_metadata),
        embedding=embedding,
        created_at=st.one_of(st.none(), explicit_datetimes()),
        updated_at=st.one_of(st.none(), explicit_datetimes()),  # ignored by add: stamped now
        ttl=st.sampled_from(LONG_TTLS),
    )


def records(flavour: Flavour, key: Key | None = None) -> st.SearchStrategy[MemoryRecord]:
    """Records within ``flavour``; with ``key``, records of that ``(namespace, id)``."""
    base = _records(flavour)
    if key is None:
        return base
    return base.map(lambda r: dataclasses.replace(r, namespace=key[0], id=key[1]))


@functools.cache
def messages(*, allow_empty: bool = True) -> st.SearchStrategy[Message]:
    """Messages; an explicit ``created_at`` is always before 2020 (a stamped one is now)."""
    return st.builds(
        Message,
        role=st.one_of(st.sampled_from(ROLES), identifiers()),
        content=texts(allow_empty=allow_empty),
        created_at=st.one_of(st.none(), explicit_datetimes()),
        metadata=metadata(),
    )
