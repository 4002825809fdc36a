"""Values to bytes and back for the key-value store: JSON by default, MessagePack optional, zlib
above a size threshold, one header byte in front. Never pickle: a stored value is data and cannot
run code when read.

Stored layout: ``header (1 byte) + body``.

The header byte is ``0b1010_CFFF``:

- bits 7-4 are the fixed marker ``0xA``. Bytes ``0xA0``-``0xAF`` are UTF-8 continuation bytes, so
  no UTF-8 text (say a value someone wrote with ``SET key hello``) can be mistaken for a value of
  this format; it is rejected as :class:`~primitives.errors.CorruptValueError`.
- bit 3 (``C``) is set when the body is zlib-compressed (RFC 1950 stream, :mod:`zlib`).
- bits 2-0 (``FFF``) name the serializer: ``1`` JSON (UTF-8), ``2`` MessagePack. Other codes are
  reserved.

So a value starts with ``0xA1`` (JSON), ``0xA9`` (JSON, compressed), ``0xA2`` (MessagePack) or
``0xAA`` (MessagePack, compressed). Reading decodes by the header, whatever format the reader is
configured to write.

JSON is compact (``separators=(",", ":")``), UTF-8 (``ensure_ascii=False``), and strict:
``NaN`` and ``±Infinity`` are refused on write (:class:`~primitives.errors.SerializationError`)
and on read (they are not JSON, RFC 8259 §6, and other languages' parsers reject them). As with
:mod:`json`, tuples come back as lists and ``int``/``float``/``bool``/``None`` dict keys come
back as strings; other key types are refused.

MessagePack (extra ``msgpack``) writes with ``use_bin_type=True`` (``bytes`` stay ``bytes``) and no
``default`` hook, so only the plain types (None, bool, int, float, str, bytes, list/tuple, dict)
pack. Every packed body is checked by unpacking it with the reader's options before anything is
written, so what cannot be read back (non-``str``/``bytes`` map keys under ``strict_map_key``,
application extension types) is a :class:`~primitives.errors.SerializationError` at write
time. Reading refuses application extension types (``ext_hook`` raises); MessagePack's own
timestamp type (ext ``-1``, written only for a ``msgpack.Timestamp`` value) reads back as
``msgpack.Timestamp``. MessagePack carries NaN and infinities as IEEE floats.

Compression: a body longer than ``compress_threshold`` bytes (default 1024) is compressed with
zlib level 6 (zlib's default) and kept compressed only when that is smaller. Decompression stops
at ``max_decompressed_size`` bytes (default 64 MiB): a larger output (a "zip bomb") is a
:class:`~primitives.errors.CorruptValueError`, as are a truncated stream and trailing bytes.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from typing import Any, Final, Literal

from primitives.errors import ConfigurationError, CorruptValueError, SerializationError
from primitives.validation import check_int

__all__ = [
    "Serializer",
    "SerializationFormat",
    "DEFAULT_COMPRESS_THRESHOLD",
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
]

SerializationFormat = Literal["json", "msgpack"]

#: Bodies longer than this many bytes are compressed (when that makes them smaller).
DEFAULT_COMPRESS_THRESHOLD: Final = 1024
#: The largest body a compressed value may decompress to, in bytes (64 MiB).
DEFAULT_MAX_DECOMPRESSED_SIZE: Final = 64 * 1024 * 1024

_MARKER: Final = 0xA0
_MARKER_MASK: Final = 0xF0
_COMPRESSED: Final = 0x08
_FORMAT_MASK: Final = 0x07
_JSON: Final = 1
_MSGPACK: Final = 2
_CODES: Final = {"json": _JSON, "msgpack": _MSGPACK}
_ZLIB_LEVEL: Final = 6
#: Error family of a bad constructor argument (value error, type error): a configuration error.
_CONFIG_ERRORS: Final = (ConfigurationError, ConfigurationError)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"MessagePack extension type {code} is not accepted")


# check_circular=False: a circular value still fails (RecursionError from the C encoder, mapped
# to SerializationError) without the encoder's per-container id bookkeeping.
_json_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode
# The decoder's C scanner directly: JSONDecoder.decode adds two whitespace regex matches a call,
# and this format never has whitespace around the value.
_json_scan = json.JSONDecoder(parse_constant=_refuse_constant).scan_once


class Serializer:
    """Turns values into the stored bytes described in the module docstring, and back.

    Args:
        format: ``"json"`` (default) or ``"msgpack"`` (needs the ``msgpack`` extra): the format
            :meth:`dumps` writes. :meth:`loads` reads either, by the header byte.
        compress_threshold: Bodies longer than this many bytes are zlib-compressed (kept only
            when smaller). ``None`` turns compression off. Default 1024.
        max_decompressed_size: Refuse to decompress beyond this many bytes. Default 64 MiB.

    Raises:
        ConfigurationError: an unknown ``format``, ``msgpack`` without the package installed, or a
            ``compress_threshold`` that is not ``None`` or an int >= 0, or a
            ``max_decompressed_size`` that is not an int in ``[1, sys.maxsize]``.
    """

    __slots__ = ("format", "compress_threshold", "max_decompressed_size", "_header", "_encode")

    def __init__(
        self,
        format: SerializationFormat = "json",
        *,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
        max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
    ) -> None:
        if not isinstance(format, str) or format not in _CODES:
            raise ConfigurationError(f"serialization format must be 'json' or 'msgpack', got {format!r}")
        if format == "msgpack":
            _msgpack()
        if compress_threshold is not None:
            compress_threshold = check_int(
                compress_threshold, "compress_threshold", minimum=0, errors=_CONFIG_ERRORS
            )
        max_decompressed_size = check_int(  # zlib takes a C ssize_t
            max_decompressed_size, "max_decompressed_size", minimum=1, maximum=sys.maxsize,
            errors=_CONFIG_ERRORS,
        )
        self.format: SerializationFormat = format
        self.compress_threshold = math.inf if compress_threshold is None else compress_threshold
        self.max_decompressed_size = max_decompressed_size
        self._header = bytes([_MARKER | _CODES[format]])
        self._encode = self._dumps_json if format == "json" else self._dumps_msgpack

    def __repr__(self) -> str:
        return f"Serializer({self.format!r}, compress_threshold={self.compress_threshold!r})"

    @staticmethod
    def _dumps_json(value: Any) -> bytes:
        return _json_encode(value).encode("utf-8")

    @staticmethod
    def _dumps_msgpack(value: Any) -> bytes:
        msgpack = _msgpack()
        body = msgpack.packb(value, use_bin_type=True)
        _loads_msgpack(body)  # what cannot be read back must not be written
        return body

    def dumps(self, value: Any) -> bytes:
        """The stored bytes for ``value``: header byte + (maybe compressed) body.

        Raises:
            SerializationError: ``value`` (or something inside it) cannot be serialized: a type
                the format has no representation for, NaN/Infinity in JSON, a circular
                reference, nesting deeper than the recursion limit.
        """
        try:
            body = self._encode(value)
        except CorruptValueError as exc:  # the msgpack read-back check
            raise SerializationError(f"{self.format} value would not read back: {exc}") from exc
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(
                f"cannot serialize a {type(value).__name__} as {self.format}: {exc}"
            ) from exc
        if len(body) > self.compress_threshold:
            packed = zlib.compress(body, _ZLIB_LEVEL)
            if len(packed) < len(body):
                return bytes([self._header[0] | _COMPRESSED]) + packed
        return self._header + body

    def loads(self, data: bytes) -> Any:
        """The value stored as ``data`` (bytes written by :meth:`dumps` of any format).

        Raises:
            CorruptValueError: an empty value, an unknown header byte, a broken or oversized zlib
                stream, or a body the serializer rejects (invalid UTF-8 or JSON, NaN, msgpack
                extension types, trailing bytes).
            ConfigurationError: the value is MessagePack and the ``msgpack`` package is not
                installed.
        """
        if not data:
            raise CorruptValueError("empty value: no header byte")
        header = data[0]
        if header & _MARKER_MASK != _MARKER:
            raise CorruptValueError(f"unknown header byte 0x{header:02x} (not written by this serializer)")
        body = data[1:]
        if header & _COMPRESSED:
            body = self._decompress(body)
        code = header & _FORMAT_MASK
        if code == _JSON:
            try:
                text = body.decode("utf-8")
                value, end = _json_scan(text, 0)
            except StopIteration as exc:  # no JSON value at the start
                raise CorruptValueError("stored JSON body is not a JSON value") from exc
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise CorruptValueError(f"stored JSON body cannot be decoded: {exc}") from exc
            if end != len(text):
                raise CorruptValueError(f"stored JSON body has trailing characters at {end}")
            return value
        if code == _MSGPACK:
            return _loads_msgpack(body)
        raise CorruptValueError(f"unknown format code {code} in header byte 0x{header:02x}")

    def _decompress(self, body: bytes) -> bytes:
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(body, self.max_decompressed_size)
        except zlib.error as exc:
            raise CorruptValueError(f"compressed body is corrupt: {exc}") from exc
        if inflater.unconsumed_tail:
            raise CorruptValueError(
                f"compressed body decompresses beyond max_decompressed_size={self.max_decompressed_size} bytes"
            )
        if not inflater.eof or inflater.unused_data:
            raise CorruptValueError("compressed body is truncated or has trailing bytes")
        return out


def _loads_msgpack(body: bytes) -> Any:
    msgpack = _msgpack()
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_refuse_ext, use_list=True)
    except (ValueError, TypeError, RecursionError) as exc:  # msgpack's errors derive from ValueError
        raise CorruptValueError(f"stored MessagePack body cannot be decoded: {exc}") from exc


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError as exc:
        raise ConfigurationError(
            "MessagePack needs the msgpack package: python -m pip install 'memory-primitives[msgpack]'"
        ) from exc
    return msgpack
