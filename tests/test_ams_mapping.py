"""The Agent Memory Server backend without a server: its encoding and mapping (ids derived
injectively from ``(namespace, id)``, TAG values and the carrier read back exactly, damaged
records recognised field by field, working-memory messages with their extras, the search
requests built from a filter), its configuration and its transport's error mapping. The backend
against a real server: ``tests/test_ams_backend.py``."""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    CorruptRecordError,
    InvalidInputError,
    LongTermMemoryDisabledError,
)
from primitives.memory import Memory, MemoryRecord, MemoryType, Message
from primitives.memory.ams_backend import AgentMemoryServerBackend
from primitives.memory.ams_backend import codec
from primitives.memory.ams_backend import mapping as amap
from primitives.memory.ams_backend import session as wm
from primitives.memory.record import written_date
from primitives.memory.resilient import ResilientBackend
from tests.contract import HOSTILE

T0 = datetime(2024, 5, 8, 13, 56, 7, 123456, tzinfo=timezone.utc)

#: Identifiers that stress the id derivation: separators of every kind, case, the encoding's own
#: marks, whitespace, control characters, unicode, the longest accepted.
IDENTIFIERS = [
    *HOSTILE, "a", "A", "a.b", "a:b", "a~b", "~a", "mp.x.y", "mp64:x", ".", "..", "a/b", "a b", " a", "a ",
    "tab\t", "nul\x00", "new\nline", "a,b", "a|b", "ünïcødé 😀", "ß", "SS", "İ", "default", "x" * 1024, "😀" * 1024,
    "ali?e", "a`b", "_", "?", "`",  # RediSearch syntax RedisVL's TokenEscaper leaves alone
]


def short(value: object) -> str:
    """A test id for a parameter: its repr, cut."""
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:16]}...{len(text)}"


def through_json(data: dict) -> dict:
    """What the server hands back: the same JSON, datetimes as strings."""
    return json.loads(json.dumps(data))


def wire(record: MemoryRecord, prefix: str = "p:", **options: object) -> dict:
    return through_json(amap.record_to_ams(record, prefix, **options))


# -- identity ----------------------------------------------------------------------------------


def test_ams_ids_are_injective_case_insensitively_and_parse_back() -> None:
    pairs = [(ns, i) for ns in IDENTIFIERS[:20] for i in IDENTIFIERS] + [("a.b", "c"), ("a", "b.c"), ("a:b", "c")]
    ids = {codec.ams_id(ns, i, "p:"): (ns, i) for ns, i in pairs}
    assert len(ids) == len(set(pairs))
    assert len({k.casefold() for k in ids}) == len(ids)  # AMS finds ids by a case-insensitive TAG
    for key, pair in ids.items():
        assert set(key[2:]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_:-~.#"), key
        assert key not in (".", "..") and "/" not in key
        assert len(key) <= 2 + codec.DIGEST_AFTER  # RediSearch matches no TAG over 4,096 bytes
        if codec.is_digest(key[2:]):  # too long to write out: its identity travels in the carrier
            with pytest.raises(ValueError, match="digest"):
                codec.parse_ams_id(key, "p:")
        else:
            assert codec.parse_ams_id(key, "p:") == pair
    assert codec.ams_id("default", "3f2a9c", "p:") == "p:mp.default.3f2a9c"  # the usual case stays readable
    assert codec.is_digest(codec.ams_id("😀" * 1024, "😀" * 1024))


@pytest.mark.parametrize("value", ["😀\t" * 512, "é" * 1024, "\x00" * 1024, "mp#abc", "x" * 1024], ids=short)
def test_tag_values_too_long_to_match_become_digests_and_plain_ones_never_look_like_one(value: str) -> None:
    stored = codec.tag_out(value)
    assert len(stored.encode()) <= codec.DIGEST_AFTER
    if codec.is_digest(stored):
        assert len(stored) == 67 and stored == codec.tag_out(value)
        with pytest.raises(ValueError, match="digest"):
            codec.tag_in(stored)
    else:
        assert codec.tag_in(stored) == value


@pytest.mark.parametrize("value", ["p:mp.~ME.x", "p:mp.~mfrgg.x", "p:mp.a.b.c", "p:mp.a", "p:mp.A.b", "p:mp.~.x",
                                   "p:mp.~mf.x", "p:mp.~gu.x", "p:mp.~ea.x"])
def test_ids_not_in_the_canonical_form_are_damaged(value: str) -> None:
    # upper case, an encoded value that would be written plain, three parts, too few parts, a
    # char the plain form never has, empty base32, a bit pattern no encoder writes, blank ids
    with pytest.raises(ValueError):
        codec.parse_ams_id(value, "p:")


def test_ids_of_other_clients_or_partitions_are_not_ours() -> None:
    assert codec.parse_ams_id("01JABC", "") is None
    assert codec.parse_ams_id("q:mp.a.b", "p:") is None


@pytest.mark.parametrize("value", [*IDENTIFIERS, "plain", "a b"], ids=short)
def test_tag_values_come_back_exact_and_unsafe_ones_travel_encoded(value: str) -> None:
    stored = codec.tag_out(value)
    if codec.is_digest(stored):
        assert len(value.encode()) > codec.DIGEST_AFTER // 2
        return
    assert codec.tag_in(stored) == value
    if any(ch in value for ch in ",|?`\t\n\x00") or value in ("_", "") or value != value.strip() or value.startswith("mp64:"):
        assert stored.startswith(codec.ENCODED_MARK)
        assert all(ch.isalnum() or ch in "-_:" for ch in stored)


@pytest.mark.parametrize("stored", ["mp64:!!", "mp64:_w", " alice", "a,b", "mp64:YWxpY2U"])
def test_tag_values_not_in_the_written_form_are_refused(stored: str) -> None:
    # bad base64, bytes that are not UTF-8, outer space, a comma, "alice" encoded though plain
    with pytest.raises(ValueError):
        codec.tag_in(stored)


# -- records -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        MemoryRecord(text="plain", id="p", created_at=T0, updated_at=T0),
        MemoryRecord(text="a skill", id="s", memory_type=MemoryType.SKILL, created_at=T0, updated_at=T0),
        MemoryRecord(text="working", id="w", memory_type=MemoryType.WORKING, created_at=T0, updated_at=T0),
        MemoryRecord(text="rich 😀", id="r", user_id="u", session_id="s1", namespace="ns", topics=("a b", "c", "c"),
                     metadata={"speaker": "Caroline", "n": [1, {"x": None}]}, ttl=math.inf,
                     created_at=T0, updated_at=T0 + timedelta(seconds=3)),
        MemoryRecord(text="short", id="t", ttl=2.5, created_at=T0, updated_at=T0),
        MemoryRecord(text="", id="empty", created_at=T0, updated_at=T0),
        MemoryRecord(text="  \n\t", id="blank", created_at=T0, updated_at=T0),
        MemoryRecord(text=" padded\r\n\x00 ", id="odd", created_at=T0, updated_at=T0),
        MemoryRecord(text="far", id="f", created_at=datetime(1, 1, 1, tzinfo=timezone.utc),
                     updated_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
    ],
)
@pytest.mark.parametrize("prefix", ["", "p1:"])
def test_records_round_trip_through_the_ams_format(record: MemoryRecord, prefix: str) -> None:
    data = wire(record, prefix)
    assert data["id"] == codec.ams_id(record.namespace, record.id, prefix)
    assert data["namespace"] == prefix + record.namespace
    assert data["memory_type"] in ("episodic", "semantic", "message")
    assert data["text"].strip()  # AMS refuses an empty text and embedding endpoints a blank one
    assert "\x00" not in data["text"]  # RediSearch would index the text only up to it
    assert data["updated_at"] <= "9999-12-31T23:59:59+00:00"  # AMS cannot read a later one back
    assert amap.record_from_ams(data, prefix) == record


@pytest.mark.parametrize("value", [*IDENTIFIERS, "😀\t" * 512], ids=short)
def test_hostile_identifiers_in_every_field_round_trip(value: str) -> None:
    record = MemoryRecord(text=value, id=value, user_id=value, session_id=value, namespace=value, topics=(value, "t"),
                          created_at=T0, updated_at=T0)
    data = wire(record)
    assert all(len(v.encode()) <= 4096 for v in (data["id"], data["namespace"], data["user_id"], *data["topics"]))
    assert amap.record_from_ams(data, "p:") == record
    assert ("k" in codec.decode_carrier(data["extracted_from"][0])) == any(
        codec.is_digest(v) for v in (data["id"][2:], data["namespace"][2:], data["user_id"], *data["topics"]))


@pytest.mark.parametrize("text,sent", [
    ("plain text, as most is", "plain text, as most is"),
    ("painted\nmountains", "painted mountains"),  # RediSearch does not split at a newline
    ("apple\u2014river café", "apple river café"),  # nor at non-ASCII punctuation
    ("caroline's apple'river travel’s", "caroline\\'s apple\\'river travel’s"),  # the analyzer keeps inner apostrophes
    ("École STRASSE ß", "école STRASSE ss"),  # it lower-cases ASCII only
    ("a\\b\x00c 😀", "a b c  "),  # a backslash is its escape, a NUL ends the text
    ("😀", "."), ("\x00", "."),
])
def test_the_text_ams_indexes_splits_words_where_the_in_process_analyzer_does(text: str, sent: str) -> None:
    assert codec.ams_text(text) == sent
    record = MemoryRecord(text=text, id="t", created_at=T0, updated_at=T0)
    data = wire(record, index_dates=False)  # no speaker, context or date: the bare text
    assert data["text"] == sent and amap.record_from_ams(data, "p:") == record
    assert ("t" in codec.decode_carrier(data["extracted_from"][0])) == (sent != text)


def test_blank_text_is_stored_as_a_placeholder_no_query_can_match() -> None:
    data = wire(MemoryRecord(text=" ", id="b", created_at=T0, updated_at=T0), index_dates=False)
    assert data["text"] == codec.BLANK_PLACEHOLDER and amap.words_for(data["text"]) == ""


# -- the contextual text AMS indexes and embeds -------------------------------------------------

#: Records as ``RememberPrimitive`` stores a turn: speaker and previous turn in metadata, the
#: session date as ``created_at``; their texts, speakers and contexts hostile.
CONTEXTUAL = [
    MemoryRecord(text="I adopted a cat", id="c1", metadata={"speaker": "Mel", "context": "Do you have pets?"},
                 created_at=T0, updated_at=T0),
    *[MemoryRecord(text=h, id=f"h{i}", metadata={"speaker": h or "x", "context": h or "y", "n": [h]},
                   created_at=T0, updated_at=T0 + timedelta(seconds=1)) for i, h in enumerate(HOSTILE)],
    MemoryRecord(text="nul\x00 | \"quoted\" @tag:{x} -not *", id="q", metadata={"speaker": "A\x00B", "context": "c\\'d"},
                 created_at=datetime(1, 1, 1, tzinfo=timezone.utc), updated_at=T0),
    MemoryRecord(text="", id="blank", metadata={"speaker": "Ünïcødé 😀"}, created_at=T0, updated_at=T0),
    MemoryRecord(text="only context", id="oc", metadata={"context": "previous\nturn", "speaker": 7},
                 created_at=T0, updated_at=T0),
    MemoryRecord(text="I went there yesterday", id="rd", metadata={"speaker": "Mel", "resolved_dates": "7 May 2024 | \x00"},
                 created_at=T0, updated_at=T0),
    MemoryRecord(text="dates only", id="ro", metadata={"resolved_dates": "last week: 1 May 2024", "context": ["not text"]},
                 created_at=T0, updated_at=T0),
    MemoryRecord(text="no metadata", id="nm", created_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
                 updated_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
]


@pytest.mark.parametrize("index_dates", [True, False])
@pytest.mark.parametrize("record", CONTEXTUAL, ids=lambda r: short(r.id))
def test_ams_gets_the_words_the_in_process_backend_indexes_and_the_record_reads_back_exactly(record, index_dates) -> None:
    from primitives.memory.analysis import Analyzer
    from primitives.memory.inmemory import InMemoryBackend

    data = wire(record, index_dates=index_dates)
    assert amap.record_from_ams(data, "p:") == record
    assert data["text"].strip() and "\x00" not in data["text"]
    extra = codec.decode_carrier(data["extracted_from"][0])
    assert extra.get("i", "") == codec.context_parts(record.metadata, index_dates)
    # the same words (as the in-process analyzer reads them) as the in-process backend indexes
    analyzer = Analyzer()
    oracle = InMemoryBackend(index_dates=index_dates).indexed_text(record)
    assert sorted(analyzer.terms(data["text"].replace("\\'", "'"))) == sorted(analyzer.terms(oracle))
    if index_dates:
        assert data["text"].endswith(" " + written_date(record.created_at)) or data["text"].endswith(written_date(record.created_at))


def test_the_speaker_leads_and_the_context_and_date_follow() -> None:
    data = wire(CONTEXTUAL[0])
    assert data["text"] == "Mel: I adopted a cat Do you have pets? 8 May 2024"
    assert codec.decode_carrier(data["extracted_from"][0])["t"] == "I adopted a cat"


def test_a_contextual_text_over_max_chars_falls_back_to_the_bare_text() -> None:
    record = MemoryRecord(text="fits", id="long", metadata={"speaker": "S", "context": "x " * 100}, created_at=T0, updated_at=T0)
    data = wire(record, max_chars=50)
    assert data["text"] == "fits" and "i" not in codec.decode_carrier(data["extracted_from"][0])
    assert amap.record_from_ams(data, "p:") == record
    assert wire(record, max_chars=1_000)["text"].startswith("S: fits")


#: Records as the previous mapping wrote them (AMS text = ``ams_text(text)``, no ``i``), captured
#: from it: they read back unchanged.
LEGACY = [
    ({"id": "p:mp.conv-26.~iqytumy", "text": "Yes!  I\\'m painting | \"sunsets\"  ", "namespace": "p:conv-26",
      "memory_type": "episodic", "created_at": "2024-05-08T13:56:07.123456+00:00",
      "updated_at": "2024-05-08T13:56:07.123456+00:00", "last_accessed": "2024-05-08T13:56:07.123456+00:00",
      "discrete_memory_extracted": "t", "entities": ["mp-id:p:mp.conv-26.~iqytumy"], "extracted_from": [
          "memory-primitives:v1:eyJjIjoxNzE1MTc2NTY3MTIzNDU2LCJ1IjoxNzE1MTc2NTY3MTIzNDU2LCJtZXRhZGF0YSI6eyJzcGVha2VyIjoiTW"
          "VsYW5pZSIsImNvbnRleHQiOiJXaGF0IGFyZSB5b3UgdXAgdG8_IiwiZGlhX2lkIjoiRDE6MyJ9LCJ0IjoiWWVzIVx1MDAwMCBJJ20gcGFpbnRp"
          "bmcgfCBcInN1bnNldHNcIiDwn5iAIn0"], "session_id": "session_1"},
     MemoryRecord(text="Yes!\x00 I'm painting | \"sunsets\" 😀", id="D1:3", namespace="conv-26", session_id="session_1",
                  metadata={"speaker": "Melanie", "context": "What are you up to?", "dia_id": "D1:3"},
                  created_at=T0, updated_at=T0)),
    ({"id": "p:mp.conv-26.~iqytuna", "text": "I went to the park", "namespace": "p:conv-26", "memory_type": "episodic",
      "created_at": "2024-05-08T13:56:07.123456+00:00", "updated_at": "2024-05-08T13:56:07.123456+00:00",
      "last_accessed": "2024-05-08T13:56:07.123456+00:00", "discrete_memory_extracted": "t",
      "entities": ["mp-id:p:mp.conv-26.~iqytuna"], "extracted_from": [
          "memory-primitives:v1:eyJjIjoxNzE1MTc2NTY3MTIzNDU2LCJ1IjoxNzE1MTc2NTY3MTIzNDU2LCJtZXRhZGF0YSI6eyJzcGVha2VyIjoiQ2"
          "Fyb2xpbmUiLCJjb250ZXh0IjoiWWVzIn19"]},
     MemoryRecord(text="I went to the park", id="D1:4", namespace="conv-26",
                  metadata={"speaker": "Caroline", "context": "Yes"}, created_at=T0, updated_at=T0)),
]


@pytest.mark.parametrize("data,record", LEGACY, ids=["carried text", "plain text"])
def test_records_of_the_previous_mapping_read_back_unchanged(data: dict, record: MemoryRecord) -> None:
    assert amap.record_from_ams(through_json(data), "p:") == record
    assert wire(record)["text"] != data["text"]  # written again, they get the contextual text
    assert wire(record, max_chars=len(data["text"])) == data  # too long for it: the previous form exactly


CONTEXT_DAMAGE = {
    "parts without the exact text": lambda d, e: d.update(extracted_from=_carrier(i="scd")),
    "parts not in order": lambda d, e: d.update(extracted_from=_carrier(**{**e, "i": "dcs"})),
    "parts not letters": lambda d, e: d.update(extracted_from=_carrier(**{**e, "i": 3})),
    "parts a list": lambda d, e: d.update(extracted_from=_carrier(**{**e, "i": ["s"]})),
    "empty parts": lambda d, e: d.update(extracted_from=_carrier(**{**e, "i": ""})),
    "speaker named but absent": lambda d, e: d.update(extracted_from=_carrier(**{**e, "metadata": {"context": "c"}})),
    "text is the bare text": lambda d, e: d.update(text="fine"),
    "another date": lambda d, e: d.update(text=d["text"].replace("8 May", "9 May")),
    "another speaker": lambda d, e: d.update(extracted_from=_carrier(**{**e, "metadata": {"speaker": "T", "context": "c"}})),
    "resolved dates named but absent": lambda d, e: d.update(extracted_from=_carrier(**{**e, "i": "scrd"})),
    "parts dropped": lambda d, e: d.update(extracted_from=_carrier(**{k: v for k, v in e.items() if k != "i"})),
}


@pytest.mark.parametrize("damage", CONTEXT_DAMAGE.values(), ids=list(CONTEXT_DAMAGE))
def test_a_contextual_text_that_does_not_match_its_carrier_is_damaged(damage) -> None:
    data = wire(MemoryRecord(text="fine", id="r", metadata={"speaker": "S", "context": "c"}, created_at=T0, updated_at=T0))
    extra = codec.decode_carrier(data["extracted_from"][0])
    extra.pop("c"), extra.pop("u")
    assert amap.record_from_ams(dict(data, extracted_from=_carrier(**extra)), "p:")  # the helper rebuilds it
    damage(data, extra)
    with pytest.raises(CorruptRecordError) as info:
        amap.record_from_ams(data, "p:")
    assert info.value.key == data["id"]


def test_the_carrier_is_one_tag_value_and_ams_timestamps_win_when_they_disagree() -> None:
    skill = amap.record_to_ams(MemoryRecord(text="x", id="x", memory_type="skill", created_at=T0, updated_at=T0))
    (carrier,) = skill["extracted_from"]
    assert carrier.startswith(amap.CARRIER_PREFIX) and "," not in carrier and skill["memory_type"] == "semantic"
    rounded = dict(through_json(skill), created_at="2024-05-08T13:56:07.120000Z", updated_at="2024-05-08T13:56:07.120000Z")
    assert amap.record_from_ams(rounded).updated_at == T0  # RediSearch's 12 digits: the carrier's exact value
    edited = dict(rounded, updated_at="2024-05-09T10:00:00Z")  # PATCHed by another client since
    assert amap.record_from_ams(edited).updated_at == datetime(2024, 5, 9, 10, tzinfo=timezone.utc)


def test_records_of_other_clients_and_partitions_are_not_read() -> None:
    assert amap.record_from_ams(wire(MemoryRecord(text="x", id="x", created_at=T0, updated_at=T0), "a:"), "b:") is None
    other_client = {"id": "01J", "text": "t", "namespace": None, "memory_type": "message",
                    "created_at": "2024-05-08T13:56:07Z", "updated_at": "2024-05-08T13:56:07Z"}
    assert amap.record_from_ams(other_client) is None
    assert amap.record_from_ams(other_client, "p:") is None


def _b64(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _carrier(**extra: object) -> list[str]:
    return [amap.CARRIER_PREFIX + _b64({"c": 1715176567123456, "u": 1715176567123456, **extra})]


DAMAGE = {
    "no carrier": lambda d: d.pop("extracted_from"),
    "carrier not base64": lambda d: d.update(extracted_from=[amap.CARRIER_PREFIX + "!!!"]),
    "carrier not JSON": lambda d: d.update(extracted_from=[amap.CARRIER_PREFIX + _b64(b"{nope")]),
    "carrier not an object": lambda d: d.update(extracted_from=[amap.CARRIER_PREFIX + _b64([1, 2])]),
    "timestamps not integers": lambda d: d.update(extracted_from=_carrier(c="yesterday")),
    "metadata not an object": lambda d: d.update(extracted_from=_carrier(metadata=[1])),
    "ttl negative": lambda d: d.update(extracted_from=_carrier(ttl=-1)),
    "unknown memory type in the carrier": lambda d: d.update(extracted_from=_carrier(memory_type="dream")),
    "blank text carried but text not the placeholder": lambda d: d.update(extracted_from=_carrier(t=" ")),
    "a text with NUL not carried": lambda d: d.update(text="a\x00b"),
    "a blank text not carried": lambda d: d.update(text=" "),
    "namespace disagrees with the id": lambda d: d.update(namespace="p:other"),
    "unknown AMS memory type": lambda d: d.update(memory_type="procedural"),
    "skill carried on an episodic record": lambda d: d.update(extracted_from=_carrier(memory_type="skill")),
    "user_id does not decode": lambda d: d.update(user_id="mp64:!!"),
    "user_id not in the written form": lambda d: d.update(user_id=" alice"),
    "topics not a list": lambda d: d.update(topics="a"),
    "text not a str": lambda d: d.update(text=7),
    "created_at not a time": lambda d: d.update(created_at="soon"),
    "id with the mark but a bad segment": lambda d: d.update(id="p:mp.default.~!!"),
    "carrier on an id not derived here": lambda d: d.update(id="p:legacy-id"),
    "digest id without the carrier's identifiers": lambda d: d.update(id="p:mp#" + "0" * 64),
}

LONG = "😀" * 1024
DAMAGE_LONG = {
    "identifiers not an object": lambda d: d.update(extracted_from=_carrier(k=[1])),
    "identifiers disagree with the id": lambda d: d.update(extracted_from=_carrier(
        k={"namespace": "default", "id": "other", "user_id": None, "session_id": None, "topics": []})),
    "user_id disagrees with the carrier's": lambda d: d.update(user_id="someone"),
    "topics disagree with the carrier's": lambda d: d.update(topics=["x"]),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=list(DAMAGE))
def test_damaged_records_raise_a_typed_error_naming_the_ams_id(damage) -> None:
    data = wire(MemoryRecord(text="fine", id="r", created_at=T0, updated_at=T0))
    damage(data)
    with pytest.raises(CorruptRecordError) as info:
        amap.record_from_ams(data, "p:")
    assert info.value.key == data["id"] and info.value.reason
    assert data["id"] in str(info.value)


@pytest.mark.parametrize("damage", DAMAGE_LONG.values(), ids=list(DAMAGE_LONG))
def test_damaged_records_with_digests_raise_a_typed_error(damage) -> None:
    data = wire(MemoryRecord(text="fine", id=LONG, namespace=LONG, user_id=LONG, topics=(LONG,),
                             created_at=T0, updated_at=T0))
    assert codec.is_digest(data["id"][2:])
    damage(data)
    with pytest.raises(CorruptRecordError) as info:
        amap.record_from_ams(data, "p:")
    assert info.value.key == data["id"]


def test_a_record_of_an_earlier_version_is_told_apart() -> None:
    data = wire(MemoryRecord(text="old", id="r", created_at=T0, updated_at=T0))
    data["id"] = "p:r"  # before ids were namespace-scoped: prefix + id
    with pytest.raises(amap.LegacyRecordError, match="earlier version") as info:
        amap.record_from_ams(data, "p:")
    assert isinstance(info.value, CorruptRecordError) and info.value.key == "p:r"


def test_expiry_of_a_records_own_ttl() -> None:
    record = MemoryRecord(text="x", ttl=10, created_at=T0, updated_at=T0)
    assert not amap.expired(record, T0 + timedelta(seconds=9))
    assert amap.expired(record, T0 + timedelta(seconds=10))
    assert not amap.expired(MemoryRecord(text="x", ttl=math.inf, created_at=T0, updated_at=T0), T0 + timedelta(days=9e5))
    far = datetime(9999, 12, 31, tzinfo=timezone.utc)
    assert not amap.expired(MemoryRecord(text="x", ttl=1e12, created_at=far, updated_at=far), far)


@pytest.mark.parametrize("data,score", [({"score": 0.5}, 0.5), ({"dist": 0.25}, 0.75), ({"score": "x"}, 1.0),
                                        ({"score": None, "dist": None}, 1.0), ({"score": True, "dist": "y"}, 0.0)])
def test_scores_never_raise(data: dict, score: float) -> None:
    assert amap.hit_score(data) == score


# -- filters and requests ----------------------------------------------------------------------


def test_server_filter_is_exact_json() -> None:
    flt = {"user_id": ("alice",), "session_id": ("s1", "s2"), "namespace": ("ns",), "topics": ("a",),
           "memory_type": ("semantic", "skill", "working")}
    assert amap.server_filter(flt, "p:") == {
        "user_id": {"eq": "alice"},
        "session_id": {"any": ["s1", "s2"]},
        "namespace": {"eq": "p:ns"},
        "topics": {"any": ["a"]},
        "memory_type": {"any": ["semantic", "message"]},
    }
    assert amap.server_filter({}, "p:") == {"namespace": {"startswith": "p:"}}
    assert amap.server_filter({"user_id": ("|",)}) == {"user_id": {"eq": "mp64:fA"}}
    assert amap.server_filter({}) == {}


def test_matches_is_exact_and_case_sensitive() -> None:
    record = MemoryRecord(text="x", user_id="Alice", topics=("work",), memory_type="skill")
    assert amap.matches(record, {"user_id": ("Alice",), "topics": ("home", "work"), "memory_type": ("skill",)})
    assert not amap.matches(record, {"user_id": ("alice",)})
    assert not amap.matches(record, {"memory_type": ("semantic",)})  # stored as semantic on AMS
    assert not amap.matches(record, {"namespace": ("other",)})


def test_within_server_filter_is_the_servers_case_insensitive_superset() -> None:
    data = wire(MemoryRecord(text="x", id="x", user_id="Alice", namespace="ns", topics=("Work",), memory_type="skill",
                             created_at=T0, updated_at=T0))
    assert amap.within_server_filter(data, {"user_id": ("alice",), "topics": ("work",), "memory_type": ("semantic",),
                                            "namespace": ("NS",)}, "p:")
    assert amap.within_server_filter(data, {}, "p:")
    assert not amap.within_server_filter(data, {"namespace": ("other",)}, "p:")  # AMS's soft-filter fallback
    assert not amap.within_server_filter(data, {}, "q:")
    assert not amap.within_server_filter({"id": 3}, {"user_id": ("a",), "topics": ("b",)}, "")


def test_search_payload_turns_recency_off() -> None:
    body = amap.search_payload("blue", "vector", {}, limit=5, offset=10)
    assert body["search_mode"] == "semantic" and body["recency_boost"] is False
    assert (body["limit"], body["offset"]) == (5, 10)
    assert "hybrid_alpha" not in body
    assert amap.search_payload("b", "hybrid", {}, limit=1, offset=0, hybrid_alpha=0.5)["hybrid_alpha"] == 0.5


@pytest.mark.parametrize("hostile", HOSTILE)
def test_only_letters_and_digits_reach_a_keyword_query(hostile: str) -> None:
    words = amap.words_for(f"What is the {hostile} note?")
    assert all(ch.isalnum() or ch in " _" for ch in words), words
    assert words.split()[-1] == "note" and "what" not in words.split()


# -- working memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    Message("user", "hi", T0, {"speaker": "Mel", "n": [1, None]}),
    Message("assistant", "plain", T0),
    Message("user", "", T0),
    Message("user", " \n", T0, {"speaker": "Mel"}),
    Message("tool", "from the future", datetime(2999, 1, 1, tzinfo=timezone.utc)),
    Message(HOSTILE[1], "role with syntax", datetime(1, 1, 1, tzinfo=timezone.utc)),
])
def test_messages_round_trip_with_their_extras_in_the_message_id(message: Message) -> None:
    sent = through_json(wm.message_to_ams(message, "01HZX", T0))
    assert sent["id"].startswith("01HZX") and sent["discrete_memory_extracted"] == "t"
    assert sent["content"].strip()  # AMS refuses blank content
    assert datetime.fromisoformat(sent["created_at"]) <= T0 + timedelta(seconds=60)  # AMS refuses the future
    assert wm.message_from_ams(sent, "sess") == message
    if not message.metadata and message.content.strip() and message.created_at <= T0:
        assert sent["id"] == "01HZX"


def test_a_message_without_created_at_is_stamped_now() -> None:
    sent = through_json(wm.message_to_ams(Message("user", "hi"), "01HZX", T0))
    assert wm.message_from_ams(sent, "s").created_at == T0


@pytest.mark.parametrize("data", [
    {"id": "01HZX.mp1.!!", "role": "user", "content": "x", "created_at": "2024-05-08T13:56:07Z"},
    {"id": "01HZX.mp1." + _b64([1]), "role": "user", "content": "x", "created_at": "2024-05-08T13:56:07Z"},
    {"id": "01HZX.mp1." + _b64({"m": [1]}), "role": "user", "content": "x", "created_at": "2024-05-08T13:56:07Z"},
    {"id": "01HZX.mp1." + _b64({"c": " "}), "role": "user", "content": "x", "created_at": "2024-05-08T13:56:07Z"},
    {"id": "01HZX", "role": "", "content": "x", "created_at": "2024-05-08T13:56:07Z"},
    {"id": "01HZX", "role": "user", "content": None, "created_at": "2024-05-08T13:56:07Z"},
    {"id": "01HZX", "role": "user", "content": "x", "created_at": "whenever"},
    {"id": 5, "role": "user", "content": "x", "created_at": "2024-05-08T13:56:07Z"},
    "not a message",
])
def test_damaged_messages_are_named_and_left_out(data: object) -> None:
    good = wm.message_to_ams(Message("user", "fine", T0), "01GOOD", T0)
    messages, damaged = wm.session_messages({"messages": [good, data]}, "sess")
    assert messages == [Message("user", "fine", T0)]
    (error,) = damaged
    assert isinstance(error, CorruptRecordError) and error.key.startswith("sess#")


def test_appending_keeps_the_last_messages_and_what_else_the_session_holds() -> None:
    stored = {"messages": [wm.message_to_ams(Message("user", f"m{i}", T0), f"id{i}", T0) for i in range(3)],
              "data": {"other": 1}, "context": "summary", "memories": []}
    body = wm.appended(stored, [Message("user", "new", metadata={"k": 1})], ["idn"], T0, 3, 3600.5)
    assert [m["content"] for m in body["messages"]] == ["m1", "m2", "new"]
    assert body["data"] == {"other": 1} and body["context"] == "summary" and body["ttl_seconds"] == 3600
    assert wm.appended({}, [], [], T0, 3, None)["ttl_seconds"] is None
    assert wm.appended({}, [], [], T0, 3, math.inf)["ttl_seconds"] is None


def test_a_session_read_back_is_ours_only_under_its_exact_id_without_namespace_or_user() -> None:
    assert wm.is_ours({"session_id": "p:mp.a.b"}, "p:mp.a.b")
    assert not wm.is_ours({"session_id": "P:MP.A.B"}, "p:mp.a.b")
    assert not wm.is_ours({"session_id": "p:mp.a.b", "namespace": "x"}, "p:mp.a.b")
    assert not wm.is_ours({"session_id": "p:mp.a.b", "user_id": "u"}, "p:mp.a.b")
    assert not wm.is_ours(None, "p:mp.a.b")


# -- configuration and transport ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["localhost:8000", "redis://127.0.0.1:6379", "", "http://"])
def test_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="AGENT_MEMORY_SERVER_URL"):
        AgentMemoryServerBackend(url)


@pytest.mark.parametrize("prefix", ["Tenant:", "a b", "x" * 129, "é:"])
def test_a_prefix_that_could_not_partition_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="lower-case"):
        AgentMemoryServerBackend("http://127.0.0.1:8000", prefix=prefix)


def test_errors_name_the_fix() -> None:
    from primitives.memory.ams_backend.transport import http_error

    url = "http://127.0.0.1:1"
    assert isinstance(http_error(url, None, 401, "Missing authorization header"), AuthenticationFailedError)
    assert "set AGENT_MEMORY_SERVER_TOKEN" in str(http_error(url, None, 401, "x"))
    assert "agent-memory token add" in str(http_error(url, "t", 401, "Invalid token"))
    disabled = http_error(url, None, 400, "Long-term memory is disabled")
    assert isinstance(disabled, LongTermMemoryDisabledError) and "LONG_TERM_MEMORY=true" in str(disabled)
    assert isinstance(http_error(url, None, 503, "x"), BackendUnavailableError)
    assert isinstance(http_error(url, None, 422, "bad"), InvalidInputError)
    assert isinstance(http_error(url, None, 404, "x"), ConfigurationError)


def test_from_env_selects_ams_wrapped_and_ams_wins_over_redis_in_auto(tmp_path: Path) -> None:
    env = {"AGENT_MEMORY_SERVER_URL": "http://127.0.0.1:8000", "AGENT_MEMORY_SERVER_TOKEN": "tok",
           "REDIS_URL": "redis://127.0.0.1:6379", "MEMORY_OUTBOX_PATH": str(tmp_path / "o.sqlite3")}
    memory = Memory.from_env(env)
    assert isinstance(memory.backend, ResilientBackend)
    primary = memory.backend.primary
    assert isinstance(primary, AgentMemoryServerBackend) and primary.token == "tok"
    assert memory.backend_name == "agent-memory-server"
    bare = Memory.from_env({**env, "MEMORY_BACKEND": "ams", "MEMORY_RESILIENT": "0"}).backend
    assert isinstance(bare, AgentMemoryServerBackend)
    redis_outbox = str(tmp_path / "redis.sqlite3")  # an outbox belongs to one store
    assert Memory.from_env({**env, "MEMORY_BACKEND": "redis", "MEMORY_OUTBOX_PATH": redis_outbox}).backend_name == "redis"
    with pytest.raises(ConfigurationError, match="AGENT_MEMORY_SERVER_URL"):
        Memory.from_env({"MEMORY_BACKEND": "ams"})


async def test_an_answer_that_is_not_json_is_a_configuration_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>not an API</html>")

    backend = AgentMemoryServerBackend("http://127.0.0.1:9")
    backend._transport.api._client = httpx.AsyncClient(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(ConfigurationError, match="not JSON"):
            await backend.get("x")
        with pytest.raises(ConfigurationError, match="not JSON"):
            await backend.search("x", mode="keyword")
    finally:
        await backend.aclose()


async def test_deletes_are_split_so_no_request_line_passes_what_ams_accepts() -> None:
    """AMS (uvicorn on h11) refuses a request line and headers over 16 KiB; a delete of many
    long ids goes out in several requests of at most 100 ids each."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        n = len(request.url.params.get_list("memory_ids"))
        return httpx.Response(200, json={"status": f"ok, deleted {n} memories"})

    backend = AgentMemoryServerBackend("http://127.0.0.1:9", prefix="p:")
    backend._transport.api._client = httpx.AsyncClient(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    try:
        ids = [codec.ams_id(":" * 1024, f"{i}" + ":" * 1000, "p:") for i in range(30)] + [f"p:mp.default.{i}" for i in range(250)]
        assert await backend._delete_ams(ids) == len(ids)
        assert all(len(str(r.url.raw_path)) < 16_000 and len(r.url.params.get_list("memory_ids")) <= 100 for r in seen)
        assert [i for r in seen for i in r.url.params.get_list("memory_ids")] == ids
    finally:
        await backend.aclose()
