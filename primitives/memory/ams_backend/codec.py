"""How this package's values are written into Agent Memory Server (AMS 0.15.2) fields so that
they come back exactly: AMS ids and session ids, TAG values, and the *carrier* (one
``extracted_from`` value holding what AMS has no field for). Pure functions, no I/O.

**Identity.** A record is ``(namespace, id)``; AMS addresses a long-term record by one id, and a
working-memory session by one session id. Both are derived by :func:`ams_id`::

    prefix + "mp." + segment(namespace) + "." + segment(id)

where :func:`segment` keeps a value made only of ``[a-z0-9_:-]`` as it is and writes any other
as ``"~"`` + base32 (RFC 4648, lower case, unpadded) of its UTF-8. A segment never holds ``.``,
and a kept one never starts with ``~``, so the id splits back into exactly one ``(namespace,
id)``: the derivation is injective. Why this alphabet: AMS finds records by id through a
RediSearch TAG match, which ignores case, so ids that differ only in case must differ in more
than case (a kept segment has no upper case, base32 here is one case); an AMS id is also a URL
path segment (no ``/``, never ``.`` or ``..``) and a Redis key. The store's ``prefix`` is
lower case for the same reason (the backend refuses another).

**TAG values** (user_id, session_id, namespace, topics): :func:`tag_out` keeps a value AMS can
store and filter on as it is, else writes ``"mp64:"`` + base64url. RediSearch matches TAGs
case-insensitively, so a filter on them finds a superset; every hit is checked again exactly.

**Long values.** RediSearch matches no TAG value over 4,096 bytes (measured on AMS 0.15.2's
Redis: a longer stored value is cut there, a longer query value matches nothing), and AMS finds
records by id through TAGs too. A TAG value or an id whose form above would pass
:data:`DIGEST_AFTER` bytes is written as :data:`DIGEST_MARK` + SHA-256 (hex) of that form
instead, and the record's exact identifiers travel in the carrier (key ``k``), where they are
checked against the digests on every read. Such ids are collision-resistant rather than
injective (a collision needs two SHA-256 preimages); they only arise for identifiers of more
than about 1,500 non-ASCII characters together. The store's prefix is at most
:data:`MAX_PREFIX_CHARS` characters so that prefix + digest always fits.

**Carrier**: ``"memory-primitives:v1:"`` + base64url(JSON object) in ``extracted_from``, a TAG
AMS stores and returns verbatim. Keys: ``c``/``u`` (``created_at``/``updated_at`` as integer
microseconds since the epoch: AMS's own float seconds come back through RediSearch rounded),
``memory_type`` (``"skill"``, which AMS does not know), ``metadata`` (a JSON object), ``ttl``
(seconds, ``Infinity`` for never), ``t`` (the exact text, only when AMS gets another one, see
:func:`ams_text` and :func:`contextual_text`), ``i`` (which parts of :func:`contextual_text`
AMS's text holds besides the text: letters of :data:`CONTEXT_PARTS`, always with ``t``; absent
in records written by earlier versions, whose AMS text is ``ams_text(text)``), ``k`` (the exact
``namespace``, ``id``, ``user_id``, ``session_id`` and ``topics``, only when one of them or the
id is written as a digest). Unknown keys are ignored (a later version may add some).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import string
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from primitives.errors import CorruptRecordError, PrimitivesError
from primitives.memory.record import written_date
from primitives.validation import check_identifier, check_json_object

__all__ = [
    "BLANK_PLACEHOLDER",
    "CARRIER_PREFIX",
    "CONTEXT_PARTS",
    "DIGEST_AFTER",
    "DIGEST_MARK",
    "ENCODED_MARK",
    "ID_MARK",
    "MAX_PREFIX_CHARS",
    "PREFIX_PATTERN",
    "ams_id",
    "ams_text",
    "context_parts",
    "contextual_text",
    "corrupt",
    "decode_carrier",
    "encode_carrier",
    "is_digest",
    "parse_ams_id",
    "segment",
    "segment_in",
    "tag_in",
    "tag_out",
    "unb64",
]

#: Marks the carrier value in ``extracted_from``.
CARRIER_PREFIX = "memory-primitives:v1:"
#: Marks a TAG value stored encoded, see :func:`tag_out`.
ENCODED_MARK = "mp64:"
#: Starts every AMS id and session id this package derives (after the store's prefix).
ID_MARK = "mp."
#: What AMS stores as the text of a record (or content of a message) whose own text is blank
#: (empty or whitespace only): AMS refuses an empty text, embedding endpoints refuse a blank
#: one. A full stop: no word, so no keyword query (letters and digits only) can match it.
BLANK_PLACEHOLDER = "."
#: A store prefix: lower case, digits and ``_.:-`` (AMS matches ids case-insensitively).
PREFIX_PATTERN = re.compile(r"[a-z0-9_.:\-]*")
#: The longest store prefix, in characters.
MAX_PREFIX_CHARS = 128
#: Marks a TAG value or an id (after the prefix) written as a SHA-256 digest.
DIGEST_MARK = "mp#"
#: Longest TAG value or id (after the prefix) written as it is, in UTF-8 bytes: RediSearch
#: matches TAGs up to 4,096 bytes, less the prefix (at most 128) and ``mp-id:`` (the entity
#: holding an id).
DIGEST_AFTER = 3_900

_PLAIN_SEGMENT = re.compile(r"[a-z0-9_:\-]+")
_BASE32 = re.compile(r"[a-z2-7]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_\-]*")
_SEGMENT_MARK = "~"


# RediSearch's tokenizer (2.10.5, behind AMS's text index; measured character by character for
# the Redis backend, see primitives/memory/redis_backend/codec.py, whose rules these are) splits
# words only at ASCII punctuation, space and tab, splits at an apostrophe the analyzer keeps
# inside a word, ends the indexed text at a NUL, and lower-cases ASCII only; the in-process
# analyzer splits at every other non-word character and case-folds everything. Measured on AMS
# 0.15.2 too: "painted\nmountains" was one token, found by neither word.
_UNSPLIT = re.compile(r"[^\w \t!\"#$%&()*+,\-./:;<=>?@\[\]^`{|}~]|[^\x00-\x7f]")
_WORD = re.compile(r"\w")


def ams_text(text: str) -> str:
    """The text AMS gets (indexes and embeds) for ``text``, so that its keyword search finds the
    words the in-process analyzer finds: every character RediSearch would keep inside a word
    where the analyzer splits (newlines and other control characters, NUL, a backslash,
    non-ASCII punctuation, symbols and emoji) as a space; an apostrophe inside a word as ``\\'``
    (RediSearch's escape: kept in the word, as the analyzer keeps it); a non-ASCII letter as its
    ``casefold()``; and :data:`BLANK_PLACEHOLDER` when nothing but spaces is left (AMS refuses an
    empty text and embedding endpoints a blank one). ``text`` itself when nothing changes (most
    text). When it differs, the exact text travels in the carrier."""
    if not (text.isascii() and text.isprintable() and "\\" not in text and "'" not in text):
        out: list[str] = []
        last = 0
        for m in _UNSPLIT.finditer(text):
            i, ch = m.start(), m.group()
            inner = 0 < i < len(text) - 1 and _WORD.match(text[i - 1]) is not None and _WORD.match(text[i + 1]) is not None
            if ch == "'":
                rep = "\\'" if inner else None
            elif ch == "\u2019":  # a right single quote: the analyzer's other apostrophe
                rep = None if inner else " "
            elif _WORD.match(ch) is None:
                rep = " "
            else:
                rep = ch.casefold() if ch.casefold() != ch else None
            if rep is not None:
                out.append(text[last:i])
                out.append(rep)
                last = i + 1
        out.append(text[last:])
        text = "".join(out)
    return text if text.strip() else BLANK_PLACEHOLDER


#: What a record's AMS text may hold besides its own text, in this order: ``s`` its
#: ``metadata["speaker"]`` (written ``"<speaker>: <text>"``), ``c`` its ``metadata["context"]``
#: (the previous turn, set by ``RememberPrimitive``), ``r`` its ``metadata["resolved_dates"]``
#: (its relative dates written out, set by ``RememberPrimitive``), ``d`` its ``created_at`` date
#: written out (:func:`~primitives.memory.record.written_date`). The same words the in-process
#: and Redis backends index (:data:`~primitives.memory.record.INDEXED_METADATA_KEYS` and the
#: date), so AMS's keyword search finds what theirs find (LoCoMo: docs/ams-backend.md).
CONTEXT_PARTS = "scrd"
_PART_KEYS = (("s", "speaker"), ("c", "context"), ("r", "resolved_dates"))


def context_parts(metadata: Mapping[str, Any], index_dates: bool = True) -> str:
    """The letters of :data:`CONTEXT_PARTS` that apply to a record with ``metadata``: ``s``,
    ``c``, ``r`` when ``speaker``, ``context``, ``resolved_dates`` is a non-empty string, ``d``
    when ``index_dates``; ``""`` for none."""
    letters = [letter for letter, key in _PART_KEYS if isinstance(value := metadata.get(key), str) and value]
    return "".join(letters) + ("d" if index_dates else "")


def contextual_text(text: str, metadata: Mapping[str, Any], created_at: datetime, parts: str) -> str:
    """The text AMS indexes and embeds for a record (before :func:`ams_text`): ``"<speaker>:
    <text>"`` (``s``) or ``text``, then the ``context`` (``c``), the ``resolved_dates``
    (``r``) and the written-out ``created_at`` date (``d``, UTC), one per line. The speaker leads as in the in-process
    backend's embedding text (:func:`~primitives.memory.embedding.embedding_text`): AMS embeds
    this same text, and an embedding model reads its start first.

    Raises:
        ValueError: ``parts`` is not letters of :data:`CONTEXT_PARTS` in order, or names a
            part ``metadata`` lacks (a damaged carrier).
    """
    if not isinstance(parts, str) or not parts or parts not in _PART_FORMS:
        raise ValueError(f"the carrier's context parts {str(parts)[:20]!r} are not letters of {CONTEXT_PARTS!r} in order")
    lines = [text]
    for letter, key in _PART_KEYS:
        if letter in parts:
            value = metadata.get(key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"the carrier names the {key} as indexed but its metadata has no {key} string")
            if letter == "s":
                lines[0] = f"{value}: {text}"
            else:
                lines.append(value)
    if "d" in parts:
        lines.append(written_date(created_at.astimezone(timezone.utc)))
    return "\n".join(lines)


#: Every non-empty subsequence of :data:`CONTEXT_PARTS`, in order.
_PART_FORMS = frozenset("".join(c for i, c in enumerate(CONTEXT_PARTS) if mask >> i & 1) for mask in range(1, 16))


def corrupt(key: str, reason: str) -> CorruptRecordError:
    """The error for a stored AMS record (or message) at ``key`` that cannot be read."""
    return CorruptRecordError(
        f"the Agent Memory Server record {key!r} cannot be read: {reason}; it was not written by this "
        "package as it is now (edited by another client, or damaged)",
        key=key,
        reason=reason,
    )


# -- ids -------------------------------------------------------------------------------------


def segment(value: str) -> str:
    """``value`` as one part of an AMS id: itself when it is made of ``[a-z0-9_:-]`` only, else
    ``"~"`` + lower-case base32 of its UTF-8 (no padding)."""
    if _PLAIN_SEGMENT.fullmatch(value):
        return value
    body = base64.b32encode(value.encode()).decode().rstrip("=").lower()
    return _SEGMENT_MARK + body


def segment_in(part: str) -> str:
    """The inverse of :func:`segment`, strict: only the form :func:`segment` writes is accepted.

    Raises:
        ValueError: ``part`` is not a segment this package writes.
    """
    if part.startswith(_SEGMENT_MARK):
        body = part[1:]
        if not _BASE32.fullmatch(body):
            raise ValueError(f"segment {part[:40]!r} is not base32")
        try:
            value = base64.b32decode(body.upper() + "=" * (-len(body) % 8)).decode()
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"segment {part[:40]!r} does not decode ({exc})") from None
    elif _PLAIN_SEGMENT.fullmatch(part):
        value = part
    else:
        raise ValueError(f"segment {part[:40]!r} has characters this package never writes unencoded")
    if segment(value) != part:
        raise ValueError(f"segment {part[:40]!r} is not in its canonical form")
    return value


def _digest(form: str) -> str:
    return DIGEST_MARK + hashlib.sha256(form.encode()).hexdigest()


def is_digest(value: str) -> bool:
    """Whether a TAG value (or an id after its prefix) is written as a digest."""
    return value.startswith(DIGEST_MARK)


def ams_id(namespace: str, id: str, prefix: str = "") -> str:
    """The AMS id of record ``(namespace, id)`` (also the session id of working memory
    ``(namespace, session_id)``) in the store partition ``prefix``: ``prefix + "mp." +
    segment(namespace) + "." + segment(id)``, injective; a digest of that when it is longer
    than :data:`DIGEST_AFTER` (see the module docstring)."""
    rest = f"{ID_MARK}{segment(namespace)}.{segment(id)}"
    return prefix + (rest if len(rest) <= DIGEST_AFTER else _digest(rest))


def parse_ams_id(value: str, prefix: str = "") -> tuple[str, str] | None:
    """``(namespace, id)`` for an AMS id :func:`ams_id` made with ``prefix``; ``None`` when
    ``value`` is not in that form's partition or has no :data:`ID_MARK` (another client's).

    Raises:
        ValueError: it has the mark but is not a valid derivation (damaged), or it is a digest
            (the identity is then in the record's carrier).
    """
    if value.startswith(prefix + DIGEST_MARK):
        raise ValueError(f"id {value[:80]!r} is a digest; its namespace and id are in the carrier")
    head = prefix + ID_MARK
    if not value.startswith(head):
        return None
    parts = value[len(head):].split(".")
    if len(parts) != 2:
        raise ValueError(f"id {value[:80]!r} is not {prefix}{ID_MARK}<namespace>.<id>")
    namespace, id = (segment_in(p) for p in parts)
    check_identifier(namespace, "the namespace in the id")
    check_identifier(id, "the id in the id")
    return namespace, id


# -- TAG values ------------------------------------------------------------------------------


#: ASCII characters a plain TAG value may hold: letters, digits, ``_``, an inner space and the
#: punctuation RedisVL's ``TokenEscaper`` escapes (so RediSearch reads them literally). Measured
#: on AMS 0.15.2: a filter value with ``?`` or a backquote matches nothing (alone: HTTP 500), one
#: with ``|`` matches either side, one that is ``_`` alone is a syntax error, ``,`` splits it.
_ASCII_PLAIN = frozenset(string.ascii_letters + string.digits + "_ " + ".<>{}[]\\\"':;!@#$%^&*()-+=~/")


def _plain_tag(value: str) -> bool:
    return (
        not value.startswith(ENCODED_MARK)
        and not value.startswith(DIGEST_MARK)
        and value != "_"
        and value == value.strip()
        and all(ch in _ASCII_PLAIN if ch < "\x80" else ch.isprintable() and not ch.isspace() for ch in value)
    )


def _b64(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def unb64(body: str) -> bytes:
    """Strict base64url (no padding) decoding.

    Raises:
        ValueError: a character outside the alphabet, or a length no encoding has.
    """
    if not _BASE64URL.fullmatch(body):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"base64url does not decode ({exc})") from None


def tag_out(value: str) -> str:
    """``value`` as stored in (and filtered on in) an AMS TAG field (user, session, namespace,
    topic): itself when AMS can store and filter on it exactly, else ``"mp64:" +
    base64url(UTF-8)``. Why: AMS splits TAG values on ``,``; RediSearch trims the whitespace
    around a tag; and AMS escapes filter values with RedisVL's ``TokenEscaper``, which leaves
    ``|``, ``?``, backquotes, tabs and newlines alone, so ``user_id="a|b"`` would match ``a`` or
    ``b``, ``"a?b"`` nothing (and ``"|"``, ``"?"`` or ``"_"`` alone is a syntax error, HTTP 500).
    Control and other non-printing characters are encoded too, and so are values starting with
    a mark, so :func:`tag_in` is exact.

    A form longer than :data:`DIGEST_AFTER` UTF-8 bytes is written as its digest (RediSearch
    matches no longer TAG); the exact value then travels in the carrier."""
    form = value if _plain_tag(value) else ENCODED_MARK + _b64(value)
    return form if len(form) <= DIGEST_AFTER // 4 or len(form.encode()) <= DIGEST_AFTER else _digest(form)


def tag_in(value: str) -> str:
    """The inverse of :func:`tag_out`, strict.

    Raises:
        ValueError: ``value`` is not a form :func:`tag_out` writes (an undecodable or
            non-canonical encoding, a plain value that would have been encoded), or is a digest
            (whose value only the carrier holds).
    """
    if is_digest(value):
        raise ValueError(f"TAG value {value[:40]!r} is a digest; its value is in the carrier")
    if value.startswith(ENCODED_MARK):
        try:
            decoded = unb64(value[len(ENCODED_MARK):]).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"TAG value {value[:40]!r} does not decode ({exc})") from None
    else:
        decoded = value
    if tag_out(decoded) != value:
        raise ValueError(f"TAG value {value[:40]!r} is not in the form this package writes")
    return decoded


# -- carrier ---------------------------------------------------------------------------------


def encode_carrier(extra: Mapping[str, Any]) -> str:
    """The carrier value for ``extra`` (JSON; ``math.inf`` is written as ``Infinity``)."""
    raw = json.dumps(extra, ensure_ascii=False, separators=(",", ":")).encode()
    return CARRIER_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_carrier(value: str) -> dict[str, Any]:
    """The carrier's JSON object with every known key checked.

    Raises:
        ValueError: bad base64url or JSON, not an object, or a known key of the wrong type
            (``c``/``u`` integers, ``memory_type`` ``"skill"``, ``metadata`` a JSON object,
            ``ttl`` a number in ``(0, 1e12]`` or ``Infinity``, ``t`` a string, ``k`` an object of
            identifiers).
    """
    try:
        data = json.loads(unb64(value[len(CARRIER_PREFIX):]))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"the carrier does not decode ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the carrier holds a {type(data).__name__}, not an object")
    for key in ("c", "u"):
        if not _int(data.get(key)):
            raise ValueError(f"the carrier's {key!r} is {data.get(key)!r}, not integer microseconds")
    if "memory_type" in data and data["memory_type"] != "skill":
        raise ValueError(f"the carrier's memory_type is {data['memory_type']!r}")
    if "metadata" in data:
        try:
            data["metadata"] = check_json_object(data["metadata"], "the carrier's metadata")
        except PrimitivesError as exc:
            raise ValueError(str(exc)) from None
    if "ttl" in data:
        ttl = data["ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (0 < ttl <= 10**12 or ttl == math.inf):
            raise ValueError(f"the carrier's ttl is {ttl!r}")
        data["ttl"] = float(ttl)
    if "t" in data and not isinstance(data["t"], str):
        raise ValueError("the carrier's text is not a string")
    if "i" in data and not ("t" in data and isinstance(data["i"], str) and data["i"] in _PART_FORMS):
        raise ValueError(f"the carrier's context parts {str(data['i'])[:20]!r} are not letters of {CONTEXT_PARTS!r} "
                         "in order with the exact text")
    if "k" in data:
        k = data["k"]
        if not isinstance(k, dict):
            raise ValueError("the carrier's identifiers are not an object")
        for field in ("namespace", "id", "user_id", "session_id"):
            if not isinstance(k.get(field), str) and not (field in ("user_id", "session_id") and k.get(field) is None):
                raise ValueError(f"the carrier's {field} is {str(k.get(field))[:40]!r}")
        if not isinstance(k.get("topics"), list) or not all(isinstance(t, str) for t in k["topics"]):
            raise ValueError("the carrier's topics are not a list of str")
    return data
