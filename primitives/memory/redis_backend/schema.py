"""The Redis backend's stored layout: the RediSearch index it needs, how TAG values are encoded
so that equality is exact, how the index is created, and how an existing one is compared with it.

TAG values (``namespace``, ``user_id``, ``session_id``, ``memory_type``, each topic) are never
indexed as written: RediSearch splits a TAG value on its separator and trims whitespace around
each part, so ``"mallory,alice"`` would be indexed as ``mallory`` and ``alice`` and ``"alice "``
as ``alice``, and a NUL ends a value in its query parser. Each value is indexed in
:func:`encode_tag`'s form instead (lowercase hex of its UTF-8 bytes: only ``[0-9a-f]``, which no
separator, trimming, case folding or query syntax touches), in a hash field of its own
(``tag_user_id``...). The original values are kept beside them in plain, unindexed fields and read
back from there exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from primitives.memory.analysis import Analyzer

__all__ = [
    "ANALYZER",
    "IndexField",
    "IndexSpec",
    "LEGACY_TAG_SEPARATOR",
    "TAG_FIELDS",
    "TAG_HEX_MAX_BYTES",
    "TAG_SEPARATOR",
    "encode_tag",
    "pairs_to_dict",
]

#: How text is turned into the indexed terms, on writes and on queries alike: the in-process
#: backend's analyzer (English; see ``codec.index_terms`` for why RediSearch's own is not used).
ANALYZER = Analyzer()
#: Separator of the multi-valued ``tag_topics`` field (RediSearch's default). Encoded values never
#: contain it.
TAG_SEPARATOR = ","
#: What the previous layout joined topics with (the ASCII unit separator); ``index migrate`` reads it.
LEGACY_TAG_SEPARATOR = "\x1f"
#: Filter field -> the hash field (and index attribute) holding its encoded values.
TAG_FIELDS: dict[str, str] = {
    "namespace": "tag_namespace",
    "user_id": "tag_user_id",
    "session_id": "tag_session_id",
    "memory_type": "tag_memory_type",
    "topics": "tag_topics",
}
#: Longest value (UTF-8 bytes) indexed as hex. RediSearch 2.10 matches TAG values of at most
#: 4,096 bytes (measured: a 4,097-byte value is stored but an equality query never finds it), and
#: hex doubles the length; a longer value (only non-ASCII identifiers get there: identifiers are
#: at most 1,024 characters) is indexed as ``"h"`` + its SHA-256 in hex.
TAG_HEX_MAX_BYTES = 2048


def encode_tag(value: str) -> str:
    """``value`` as it is indexed and queried: the lowercase hex of its UTF-8 bytes (an even
    number of ``[0-9a-f]``), or, above :data:`TAG_HEX_MAX_BYTES` bytes, ``"h"`` followed by the
    64 hex digits of its SHA-256 (odd length, so never equal to a hex form). Two values have the
    same encoding only if they are equal (for the digest form: unless SHA-256 collides).

    Example: ``encode_tag("alice ")`` is ``"616c69636520"``; ``encode_tag("a,b")`` is ``"612c62"``.
    """
    raw = value.encode()
    if len(raw) <= TAG_HEX_MAX_BYTES:
        return raw.hex()
    return "h" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class IndexField:
    """One schema attribute.

    Attributes:
        name: The attribute name queries use (``@name:``); also the hash field, unless ``field``.
        type: ``TEXT``, ``TAG``, ``NUMERIC`` or ``VECTOR``.
        case_sensitive: TAG ``CASESENSITIVE``.
        separator: TAG ``SEPARATOR``.
        dims: VECTOR ``DIM``.
        field: The hash field indexed, when it differs from ``name`` (``FT.CREATE ... field AS name``).
        nostem: TEXT ``NOSTEM`` (the field holds terms already stemmed).
    """

    name: str
    type: str
    case_sensitive: bool = False
    separator: str | None = None
    dims: int | None = None
    field: str | None = None
    nostem: bool = False

    @property
    def identifier(self) -> str:
        """The hash field this attribute indexes."""
        return self.field or self.name

    def args(self) -> list[str]:
        """This attribute's part of ``FT.CREATE ... SCHEMA``."""
        head = [self.field, "AS", self.name] if self.field else [self.name]
        if self.type == "VECTOR":
            # HNSW (Malkov & Yashunin 2018) with RediSearch's defaults M=16, EF_CONSTRUCTION=200
            return [*head, "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(self.dims),
                    "DISTANCE_METRIC", "COSINE"]
        out = [*head, self.type]
        if self.nostem:
            out.append("NOSTEM")
        if self.separator is not None:
            out += ["SEPARATOR", self.separator]
        if self.case_sensitive:
            out.append("CASESENSITIVE")
        return out

    def describe(self) -> str:
        """One line for error messages (``tag_user_id TAG SEPARATOR ',' CASESENSITIVE``)."""
        head = f"{self.field} AS {self.name}" if self.field else self.name
        if self.type == "VECTOR":
            return f"{head} VECTOR HNSW FLOAT32 DIM {self.dims} COSINE"
        opts = ["NOSTEM"] if self.nostem else []
        if self.separator is not None:
            opts.append(f"SEPARATOR {self.separator!r}")
        if self.case_sensitive:
            opts.append("CASESENSITIVE")
        return " ".join([head, self.type, *opts])


def _fields() -> tuple[IndexField, ...]:
    # The TAG attributes are named like their hash fields (no AS): RediSearch's RETURN resolves a
    # name through the schema's aliases first, so an attribute "user_id" would shadow the hash
    # field "user_id" that holds the original value (measured on RediSearch 2.10.5).
    tags = tuple(IndexField(f, "TAG", case_sensitive=True, separator=TAG_SEPARATOR) for f in TAG_FIELDS.values())
    return (
        # the in-process analyzer's terms (codec.index_terms): stemmed already, stop words dropped
        IndexField("terms", "TEXT", nostem=True),
        IndexField("date", "TEXT", nostem=True),
        *tags,
        # not SORTABLE: RETURN would then give the sort vector's rounded double, not the exact value
        IndexField("created_at", "NUMERIC"),
        IndexField("updated_at", "NUMERIC"),
    )


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """The index: its name, the key prefix it covers, its stop words and its fields.

    The TEXT fields hold the in-process analyzer's terms (case-folded, stop words dropped,
    Snowball-stemmed: :func:`~primitives.memory.redis_backend.codec.index_terms`), so they are
    ``NOSTEM`` and the index has no stop words of its own (``STOPWORDS 0``): RediSearch's own
    tokenizer, stemmer and stop words would find other words (see ``codec``); TAG fields hold
    :func:`encode_tag` forms (exact equality for any string); timestamps are NUMERIC seconds since
    the epoch. With ``dims`` a VECTOR field (HNSW, FLOAT32, COSINE) is appended without changing
    the others.
    """

    name: str
    prefix: str
    dims: int | None = None
    fields: tuple[IndexField, ...] = _fields()
    stop_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dims is not None and not any(f.type == "VECTOR" for f in self.fields):
            object.__setattr__(self, "fields", (*self.fields, IndexField("vector", "VECTOR", dims=self.dims)))

    def create_args(self) -> list[str]:
        """Arguments of ``FT.CREATE``."""
        args = ["FT.CREATE", self.name, "ON", "HASH", "PREFIX", "1", self.prefix, "LANGUAGE", "english"]
        args += ["STOPWORDS", str(len(self.stop_words)), *self.stop_words, "SCHEMA"]
        for f in self.fields:
            args += f.args()
        return args

    def describe(self) -> str:
        """The schema in one line, for error messages."""
        return f"prefix {self.prefix!r}; " + ", ".join(f.describe() for f in self.fields)

    def differences(self, info: dict[str, Any]) -> list[str]:
        """How the index described by ``FT.INFO`` (parsed to a dict, keys and values ``str``)
        differs from this spec; empty when it matches. A VECTOR attribute the spec lacks is
        accepted (the embeddings upgrade adds one)."""
        problems = []
        prefixes = _index_prefixes(info)
        if prefixes != [self.prefix]:
            problems.append(f"key prefixes {prefixes} instead of [{self.prefix!r}]")
        stop_words = info.get("stopwords_list")
        if isinstance(stop_words, list) and sorted(map(str, stop_words)) != sorted(self.stop_words):
            problems.append(f"{len(stop_words)} stop words instead of {len(self.stop_words)}")
        found = {a["name"]: a for a in _attributes(info)}
        for f in self.fields:
            a = found.pop(f.name, None)
            if a is None:
                problems.append(f"missing field {f.describe()}")
                continue
            if a["identifier"] != f.identifier:
                problems.append(f"field {f.name} indexes hash field {a['identifier']!r}, needs {f.identifier!r}")
            if a["type"] != f.type:
                problems.append(f"field {f.name} is {a['type']}, needs {f.type}")
            if f.type == "TEXT" and a["nostem"] != f.nostem:
                problems.append(f"field {f.name} NOSTEM is {a['nostem']}, needs {f.nostem}")
            if f.type == "TAG":
                if a["case_sensitive"] != f.case_sensitive:
                    problems.append(f"field {f.name} CASESENSITIVE is {a['case_sensitive']}")
                if f.separator is not None and a["separator"] != f.separator:
                    problems.append(f"field {f.name} SEPARATOR is {a['separator']!r}, needs {f.separator!r}")
            if f.type == "VECTOR" and a["dims"] != f.dims:
                problems.append(f"field {f.name} has DIM {a['dims']}, the embedder makes {f.dims}")
        for name, a in found.items():
            if a["type"] != "VECTOR":  # a vector field added by the embeddings upgrade is fine
                problems.append(f"unexpected field {name} {a['type']}")
        return problems


def pairs_to_dict(values: Sequence[Any]) -> dict[Any, Any]:
    """RESP2 ``[k1, v1, k2, v2, ...]`` to a dict (``FT.INFO`` and friends)."""
    it = iter(values)
    return dict(zip(it, it))  # a trailing odd item (a flag) is dropped


def _index_prefixes(info: dict[str, Any]) -> list[str]:
    definition = info.get("index_definition")
    if isinstance(definition, list):
        d = pairs_to_dict(definition)
        return [str(p) for p in d.get("prefixes", [])]
    return []


def _attributes(info: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for raw in info.get("attributes", []):
        flags = {str(x).upper() for x in raw if isinstance(x, str)}
        d = pairs_to_dict(raw)
        name = str(d.get("attribute", d.get("identifier", "")))
        out.append(
            {
                "name": name,
                "identifier": str(d.get("identifier", name)),
                "type": str(d.get("type", "")).upper(),
                "separator": d.get("SEPARATOR"),
                "case_sensitive": "CASESENSITIVE" in flags,
                "nostem": "NOSTEM" in flags,
                "dims": int(d["dim"]) if "dim" in d else None,
            }
        )
    return out
