"""The key-value store's serializer: header byte, JSON / MessagePack, compression threshold,
corrupt and hostile stored bytes."""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.errors import ConfigurationError, CorruptValueError, SerializationError
from primitives.store.serialization import DEFAULT_COMPRESS_THRESHOLD, Serializer

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)
MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.sampled_from([0, 16, 1024, None]))
def test_json_round_trip(value: Any, threshold: int | None) -> None:
    s = Serializer(compress_threshold=threshold)
    data = s.dumps(value)
    assert data[0] in (0xA1, 0xA9)
    assert s.loads(data) == value


@settings(max_examples=300, deadline=None)
@given(MSGPACK_VALUES, st.sampled_from([0, 1024]))
def test_msgpack_round_trip(value: Any, threshold: int) -> None:
    s = Serializer("msgpack", compress_threshold=threshold)
    data = s.dumps(value)
    assert data[0] in (0xA2, 0xAA)
    assert s.loads(data) == value
    assert Serializer("json").loads(data) == value  # the reader goes by the header byte


def test_header_bytes_and_compact_utf8_json() -> None:
    assert Serializer().dumps({"a": [1, "é"]}) == b'\xa1{"a":[1,"\xc3\xa9"]}'
    assert Serializer("msgpack").dumps({"a": 1}) == b"\xa2" + msgpack.packb({"a": 1})


def test_compression_threshold_boundary() -> None:
    s = Serializer()
    # a JSON string body is the text plus two quotes
    at = "a" * (DEFAULT_COMPRESS_THRESHOLD - 2)
    over = "a" * (DEFAULT_COMPRESS_THRESHOLD - 1)
    assert len(json.dumps(at)) == DEFAULT_COMPRESS_THRESHOLD
    assert s.dumps(at)[0] == 0xA1 and len(s.dumps(at)) == DEFAULT_COMPRESS_THRESHOLD + 1
    packed = s.dumps(over)
    assert packed[0] == 0xA9 and len(packed) < 100
    assert zlib.decompress(packed[1:]) == json.dumps(over).encode()
    assert s.loads(packed) == over


def test_incompressible_body_is_kept_plain() -> None:
    import random

    noise = random.Random(7).randbytes(5000)  # random bytes: zlib output is larger
    data = Serializer("msgpack").dumps(noise)
    assert data[0] == 0xA2 and len(data) == 1 + 3 + 5000
    assert Serializer().loads(data) == noise
    tiny = Serializer(compress_threshold=0).dumps("x")  # 3 bytes of body
    assert tiny == b'\xa1"x"'


def test_compression_off() -> None:
    data = Serializer(compress_threshold=None).dumps("a" * 100_000)
    assert data[0] == 0xA1


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", float("nan"), float("-inf"), {"k": float("inf")}, {(1, 2): "tuple key"}],
)
def test_json_refuses_what_it_cannot_write(value: Any) -> None:
    with pytest.raises(SerializationError):
        Serializer().dumps(value)


def test_circular_and_too_deep_values_are_serialization_errors() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        Serializer().dumps(loop)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError):
        Serializer().dumps(deep)
    with pytest.raises(SerializationError):
        Serializer("msgpack").dumps(deep)


@pytest.mark.parametrize(
    "value",
    [object(), {1: "int key"}, msgpack.ExtType(5, b"x"), 2**64, {"a": [{(1,): 2}]}],
)
def test_msgpack_refuses_what_would_not_read_back(value: Any) -> None:
    with pytest.raises(SerializationError):
        Serializer("msgpack").dumps(value)


def test_json_keys_follow_the_json_module() -> None:
    s = Serializer()
    assert s.loads(s.dumps({1: "a", None: "b", 2.5: "c"})) == {"1": "a", "null": "b", "2.5": "c"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b"\x00{}",
        b"\xff",
        b"\xb1{}",  # marker nibble wrong
        b"\xa0{}",  # format code 0
        b"\xa3{}",  # format code 3 (reserved)
        b"\xaf",
        b"\xa1",  # empty JSON body
        b"\xa1[1,",
        b"\xa1\xc3",  # truncated UTF-8
        b"\xa1Infinity",
        b"\xa1[NaN]",
        b"\xa1{} trailing",
        b"\xa9",
        b"\xa9" + b"\x78\x9c" + b"\x00" * 10,
        b"\xa9" + zlib.compress(b"[1,2]") + b"junk",  # trailing bytes after the stream
        b"\xa9" + zlib.compress(b"[1,2]")[:-2],  # truncated stream
        b"\xa9" + zlib.compress(b"\xff\xfe"),  # decompresses to invalid UTF-8
        b"\xa2",  # empty msgpack body
        b"\xa2\x91",  # truncated array
        b"\xa2\x01\x02",  # extra data
        b"\xa2\xd4\x05x",  # extension type
        b"\xa2\x81\x01\x02",  # int map key
    ],
)
def test_corrupt_bytes_raise_corrupt_value_error(data: bytes) -> None:
    with pytest.raises(CorruptValueError):
        Serializer().loads(data)


def test_every_header_outside_the_marker_range_is_refused() -> None:
    for byte in range(256):
        if 0xA0 <= byte <= 0xAF:
            continue
        with pytest.raises(CorruptValueError):
            Serializer().loads(bytes([byte]) + b"{}")


def test_deeply_nested_stored_json_is_corrupt_not_a_crash() -> None:
    with pytest.raises(CorruptValueError):
        Serializer().loads(b"\xa1" + b"[" * 200_000 + b"]" * 200_000)


def test_decompression_bomb_is_refused() -> None:
    bomb = b"\xa9" + zlib.compress(b"[" + b"0," * 5_000_000 + b"0]", 9)
    assert len(bomb) < 20_000
    s = Serializer(max_decompressed_size=1_000_000)
    with pytest.raises(CorruptValueError, match="max_decompressed_size"):
        s.loads(bomb)
    assert len(Serializer().loads(bomb)) == 5_000_001  # under the default 64 MiB bound


@pytest.mark.parametrize(
    "kwargs",
    [
        {"format": "pickle"},
        {"format": "JSON"},
        {"compress_threshold": -1},
        {"compress_threshold": 1.5},
        {"compress_threshold": True},
        {"max_decompressed_size": 0},
    ],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Serializer(**kwargs)
