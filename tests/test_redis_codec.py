"""The Redis backend's layout without a server: keys, TAG encoding, record and message codecs
(round trips of hostile values, and every kind of damage named, never an untyped exception),
and the schema check that refuses the previous layout's index."""

from __future__ import annotations

import json
import math
import struct
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.errors import CorruptRecordError
from primitives.memory import MemoryRecord, MemoryType, Message
from primitives.memory.redis_backend.codec import (
    check_stored,
    decode_checked,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
    pack_vector,
)
from primitives.memory.redis_backend.keys import quarantine_key, record_key, session_key, split_record_key
from primitives.memory.redis_backend.schema import IndexSpec, encode_tag

REC = "memory:rec:"
T0 = datetime(2024, 5, 8, 12, 30, 1, 123456, tzinfo=timezone.utc)
HOSTILE = ["mallory,alice", "alice ", " alice", "alice\t", "alice\n", "alice\x00", "a\x1fb", "*", "@user_id:{x}",
           "a:b", "%41", "{tag}", "ünï 😀", "\\", '"', "=>[KNN 5 @v $b]", "é" * 1024, "😀" * 1024]


def stored_hash(record: MemoryRecord, vector: bytes = b"") -> dict[bytes, bytes]:
    """What the Lua upsert writes for ``record``, as a bytes client reads it back."""
    pairs = encode_record(record, index_dates=True)
    fields = {k.encode(): v.encode() for k, v in zip(pairs[0::2], pairs[1::2])}
    if vector:
        fields[b"vector"] = vector
    return fields


def full(**kw: object) -> MemoryRecord:
    base: dict = dict(text="text", id="r1", created_at=T0, updated_at=T0)
    base.update(kw)
    return MemoryRecord(**base)


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("part", HOSTILE)
def test_keys_percent_encode_every_part_and_split_back(part: str) -> None:
    key = record_key(REC, part, part)
    rest = key[len(REC):]
    assert rest.count(":") == 1 and not set(rest) & set("{}*?[]\\ \x00")
    assert split_record_key(REC, key) == (part, part)
    assert session_key("memory:", part, part).startswith("memory:wm:")
    assert session_key("memory:", part, part)[len("memory:wm:"):].count(":") == 1


def test_record_key_example_and_foreign_keys() -> None:
    assert record_key(REC, "acme", "a:b*") == "memory:rec:acme:a%3Ab%2A"
    assert split_record_key(REC, "memory:rec:legacy-id") is None  # the previous layout
    assert split_record_key(REC, "memory:rec:a:b:c") is None
    assert split_record_key(REC, "memory:rec:a:b*") is None  # not the canonical encoding
    assert split_record_key(REC, "memory:rec:%ff:x") is None  # not UTF-8
    assert quarantine_key("memory:", b"memory:rec:a:b\xff", 17) == b"memory:quarantine:17:rec:a:b\xff"


# -- TAG encoding ------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.text(min_size=1), st.text(min_size=1))
def test_tag_encoding_is_injective_and_inert(a: str, b: str) -> None:
    try:
        ea, eb = encode_tag(a), encode_tag(b)
    except UnicodeEncodeError:  # lone surrogates never reach here (validation refuses them)
        return
    assert (ea == eb) == (a == b)
    assert set(ea) <= set("0123456789abcdefh")


# -- records -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_record_round_trips_hostile_values_in_every_field(value: str) -> None:
    record = full(
        text=f"text {value}", id=value, user_id=value, session_id=value, namespace=value,
        memory_type=MemoryType.SEMANTIC, topics=(value, "x", value), metadata={value: [value, 1.5, None, {"k": True}]},
        embedding=(0.25, -1.5, 3.0), ttl=math.inf,
    )
    fields = stored_hash(record, pack_vector(record.embedding))
    json.dumps(encode_record(record, index_dates=True), ensure_ascii=False)  # what travels to Lua
    key = record_key(REC, value, value)
    assert decode_record(fields, key) == record
    assert decode_checked(fields, key, REC) == record
    assert fields[b"tag_user_id"] == encode_tag(value).encode()
    assert fields[b"tag_topics"].split(b",") == [encode_tag(value).encode(), b"78"]  # repeats once
    assert json.loads(fields[b"topics"]) == [value, "x", value]  # order and repeats kept


def test_ttl_and_vector_forms() -> None:
    for ttl in (None, 0.001, 1e12, math.inf):
        record = full(ttl=ttl)
        assert decode_record(stored_hash(record), "k").ttl == ttl
    assert decode_record(stored_hash(full()), "k", vector=False).embedding is None


def damaged(**changes: bytes | None) -> dict[bytes, bytes]:
    fields = stored_hash(full(user_id="alice", topics=("t",), metadata={"a": 1}, ttl=5.0))
    for name, value in changes.items():
        if value is None:
            fields.pop(name.encode(), None)
        else:
            fields[name.encode()] = value
    return fields


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"text": b"caf\xe9"}, "field 'text' is not UTF-8"),
        ({"user_id": b"\xff"}, "field 'user_id' is not UTF-8"),
        ({"metadata": b"{not json"}, "field 'metadata'"),
        ({"metadata": b"[1, 2]"}, "not a JSON object"),
        ({"metadata": b'{"a": NaN}'}, "NaN is not JSON"),
        ({"metadata": b'{"a": "\\ud800"}'}, "field 'metadata'"),
        ({"topics": b"t"}, "field 'topics'"),
        ({"topics": b'["ok", ""]'}, "not a JSON array of identifiers"),
        ({"created_at_us": b"yesterday"}, "field 'created_at_us'"),
        ({"updated_at_us": b"9" * 30}, "field 'updated_at_us'"),
        ({"ttl": b"nan"}, "field 'ttl'"),
        ({"ttl": b"-1"}, "field 'ttl'"),
        ({"memory_type": b"dream"}, "field 'memory_type'"),
        ({"namespace": b"   "}, "field 'namespace'"),
        ({"id": None}, "field 'id' is missing"),
        ({"text": None}, "field 'text' is missing"),
        ({"updated_at_us": None}, "field 'updated_at_us' is missing"),
        ({"vector": struct.pack("<2f", 1.0, math.nan)}, "NaN"),
        ({"vector": b"\x00\x00\x80"}, "whole number of float32"),
    ],
)
def test_each_kind_of_damage_is_a_typed_error_naming_key_and_field(changes: dict, reason: str) -> None:
    fields = damaged(**changes)
    with pytest.raises(CorruptRecordError) as info:
        decode_record(fields, "memory:rec:default:r1")
    assert info.value.key == "memory:rec:default:r1" and reason in info.value.reason
    assert "memory:rec:default:r1" in str(info.value)
    assert reason in check_stored(fields, "memory:rec:default:r1", REC)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"created_at": b"soon"}, "the index leaves the record out"),
        ({"tag_user_id": encode_tag("bob").encode()}, "'tag_user_id' does not encode"),
        ({"tag_user_id": None}, "'tag_user_id' does not encode"),
        ({"tag_namespace": b"64656661756c742c61636d65"}, "'tag_namespace' does not encode"),
        ({"tag_topics": b""}, "'tag_topics'"),
        ({"namespace": b"acme", "tag_namespace": encode_tag("acme").encode()}, "belongs at another key"),
    ],
)
def test_direct_reads_also_check_index_fields_and_key(changes: dict, reason: str) -> None:
    fields = damaged(**changes)
    with pytest.raises(CorruptRecordError, match="damaged") as info:
        decode_checked(fields, "memory:rec:default:r1", REC)
    assert reason in info.value.reason
    assert check_stored(damaged(), "memory:rec:default:r1", REC) is None
    assert check_stored({}, "k", REC) == "the hash is empty"


def test_vector_of_the_wrong_length_for_the_index() -> None:
    fields = stored_hash(full(), pack_vector([1.0, 2.0]))
    assert decode_record(fields, "k").embedding == (1.0, 2.0)
    with pytest.raises(CorruptRecordError, match="3 dims"):
        decode_record(fields, "k", dims=3)


# -- messages ----------------------------------------------------------------------------------


def test_messages_round_trip_and_damage_is_typed() -> None:
    message = Message("user\x00,", "hi 😀\x00", T0, {"speaker": "A,b"})
    raw = encode_message(message, T0).encode()
    assert decode_message(raw, "k[0]") == message
    assert decode_message(encode_message(Message("user", "x"), T0).encode(), "k").created_at == T0
    for bad, why in [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "Expecting"),
        (b"[]", "not a JSON object"),
        (b'{"content": "x", "created_at": "1"}', "no 'role'"),
        (b'{"role": "", "content": "x", "created_at": "1"}', "role"),
        (b'{"role": "u", "content": "x", "created_at": "soon"}', "not an integer"),
        (b'{"role": "u", "content": "x", "created_at": 5}', "created_at"),
        (b'{"role": "u", "content": 5, "created_at": "1"}', "content"),
    ]:
        with pytest.raises(CorruptRecordError) as info:
            decode_message(bad, "wm:k[3]")
        assert info.value.key == "wm:k[3]" and why in info.value.reason, (bad, info.value.reason)


# -- schema ------------------------------------------------------------------------------------


def _ft_info(spec: IndexSpec) -> dict:
    """The FT.INFO an index created with ``spec`` reports (the parts the check reads)."""
    attributes = []
    for f in spec.fields:
        a = ["identifier", f.identifier, "attribute", f.name, "type", f.type]
        if f.nostem:
            a.append("NOSTEM")
        if f.separator:
            a += ["SEPARATOR", f.separator]
        if f.case_sensitive:
            a.append("CASESENSITIVE")
        attributes.append(a)
    return {"index_definition": ["key_type", "HASH", "prefixes", [spec.prefix]], "attributes": attributes}


def test_schema_check_accepts_its_own_index_and_names_the_previous_layout() -> None:
    spec = IndexSpec(name="memory:idx", prefix=REC)
    assert spec.differences(_ft_info(spec)) == []
    args = spec.create_args()
    assert args[args.index("tag_user_id"):args.index("tag_user_id") + 5] == ["tag_user_id", "TAG", "SEPARATOR", ",", "CASESENSITIVE"]
    legacy = {
        "index_definition": ["key_type", "HASH", "prefixes", [REC]],
        "attributes": [["identifier", n, "attribute", n, "type", t, *(["CASESENSITIVE"] if t == "TAG" else [])]
                       for n, t in [("text", "TEXT"), ("speaker", "TEXT"), ("context", "TEXT"), ("date", "TEXT"),
                                    ("user_id", "TAG"), ("session_id", "TAG"), ("namespace", "TAG"),
                                    ("memory_type", "TAG"), ("topics", "TAG"), ("created_at", "NUMERIC"),
                                    ("updated_at", "NUMERIC")]],
    }
    problems = spec.differences(legacy)
    assert "missing field tag_user_id TAG SEPARATOR ',' CASESENSITIVE" in problems
    assert "unexpected field user_id TAG" in problems
    aliased = _ft_info(spec)
    aliased["attributes"][4][1] = "user_id"
    assert any("indexes hash field 'user_id', needs 'tag_namespace'" in p or "indexes hash field" in p
               for p in spec.differences(aliased))


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Plain text, with ASCII punctuation: fine!", "plain text ascii punctuat fine"),
        ("line one\nline two", "line one line two"),
        ("nul\x00ends x's tokens", "nul end x token"),
        ("back\\slash apple'river don't", "back slash apple\\'riv"),
        ("Straße École ΣΟΦΙΑ café — “quoted” e\u0301 😀", "strass école σοφια café quot e"),
    ],
)
def test_text_is_indexed_as_the_in_process_analyzer_terms_and_read_back_exactly(text: str, terms: str) -> None:
    from primitives.memory.analysis import Analyzer
    from primitives.memory.redis_backend.codec import index_terms

    assert index_terms(text) == terms
    assert terms.replace("\\'", "'").split() == Analyzer().terms(text)
    fields = stored_hash(full(text=text, metadata={"speaker": "Bob", "context": "said before"}))
    assert fields[b"text"] == text.encode() and decode_record(fields, "k").text == text
    assert fields[b"terms"] == (terms + " bob said").encode() if terms else b"bob said"
    assert fields[b"date"] == b"8 may 2024"


@pytest.mark.parametrize("field", ["namespace", "user_id", "session_id"])
@pytest.mark.parametrize("bad", [b"   ", b"\xff", b"x" * 1025, b"\t\n", "\u3000".encode()])
def test_a_remembered_identifier_never_lets_damage_through(field: str, bad: bytes) -> None:
    # decode_record remembers namespace/user/session values it has checked (codec._IDENTIFIERS):
    # a damaged value is never remembered, before or after good records with that field decode
    from primitives.memory.redis_backend import codec

    good = damaged()
    good[field.encode()] = b"alice"
    for _ in range(2):
        assert getattr(decode_record(good, "k"), field) == "alice"
        fields = damaged()
        fields[field.encode()] = bad
        with pytest.raises(CorruptRecordError, match=f"field '{field}'"):
            decode_record(fields, "k")
        assert bad not in codec._IDENTIFIERS
    # bounded: full, it starts over (a value is then checked again, never trusted unchecked)
    for i in range(codec._IDENTIFIERS_MAX + 10):
        fields = damaged()
        fields[field.encode()] = f"u{i}".encode()
        assert getattr(decode_record(fields, "k"), field) == f"u{i}"
    assert len(codec._IDENTIFIERS) <= codec._IDENTIFIERS_MAX
