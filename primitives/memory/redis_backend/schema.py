"""The RediSearch index the Redis backend needs, how it is created, and how an existing one is
compared with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from primitives.memory.analysis import ENGLISH_STOP_WORDS

__all__ = ["IndexField", "IndexSpec", "TAG_SEPARATOR"]

#: Separator of the multi-valued ``topics`` tag: the ASCII unit separator, which no sensible topic
#: contains (a comma, RediSearch's default, would split "New York, NY").
TAG_SEPARATOR = "\x1f"


@dataclass(frozen=True, slots=True)
class IndexField:
    """One schema attribute: ``name``, ``type`` (TEXT, TAG, NUMERIC), and options."""

    name: str
    type: str
    case_sensitive: bool = False
    separator: str | None = None
    dims: int | None = None

    def args(self) -> list[str]:
        if self.type == "VECTOR":
            # HNSW (Malkov & Yashunin 2018) with RediSearch's defaults M=16, EF_CONSTRUCTION=200
            return [self.name, "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", str(self.dims),
                    "DISTANCE_METRIC", "COSINE"]
        out = [self.name, self.type]
        if self.separator is not None:
            out += ["SEPARATOR", self.separator]
        if self.case_sensitive:
            out.append("CASESENSITIVE")
        return out

    def describe(self) -> str:
        if self.type == "VECTOR":
            return f"{self.name} VECTOR HNSW FLOAT32 DIM {self.dims} COSINE"
        opts = []
        if self.separator is not None:
            opts.append(f"SEPARATOR {self.separator!r}")
        if self.case_sensitive:
            opts.append("CASESENSITIVE")
        return " ".join([self.name, self.type, *opts])


def _fields() -> tuple[IndexField, ...]:
    tag = dict(type="TAG", case_sensitive=True)
    return (
        IndexField("text", "TEXT"),
        IndexField("speaker", "TEXT"),
        IndexField("context", "TEXT"),
        IndexField("date", "TEXT"),
        IndexField("user_id", **tag),
        IndexField("session_id", **tag),
        IndexField("namespace", **tag),
        IndexField("memory_type", **tag),
        IndexField("topics", separator=TAG_SEPARATOR, **tag),
        # not SORTABLE: RETURN would then give the sort vector's rounded double, not the exact value
        IndexField("created_at", "NUMERIC"),
        IndexField("updated_at", "NUMERIC"),
    )


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """The index: its name, the key prefix it covers, its stop words and its fields.

    TEXT fields use RediSearch's English (Snowball) stemming, the in-process analyzer's stemmer,
    and the same stop words; TAG fields are case-sensitive so ``Alice`` and ``alice`` are two
    users; timestamps are NUMERIC seconds since the epoch. With ``dims`` a VECTOR field (HNSW, FLOAT32, COSINE) is appended
    without changing the others.
    """

    name: str
    prefix: str
    dims: int | None = None
    fields: tuple[IndexField, ...] = _fields()
    stop_words: tuple[str, ...] = tuple(sorted(ENGLISH_STOP_WORDS))

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
        return f"prefix {self.prefix!r}; " + ", ".join(f.describe() for f in self.fields)

    def differences(self, info: dict[str, Any]) -> list[str]:
        """How the index described by ``FT.INFO`` (parsed to a dict) differs from this spec;
        empty when it matches."""
        problems = []
        prefixes = _index_prefixes(info)
        if prefixes != [self.prefix]:
            problems.append(f"key prefixes {prefixes} instead of [{self.prefix!r}]")
        found = {a["name"]: a for a in _attributes(info)}
        for f in self.fields:
            a = found.pop(f.name, None)
            if a is None:
                problems.append(f"missing field {f.describe()}")
                continue
            if a["type"] != f.type:
                problems.append(f"field {f.name} is {a['type']}, needs {f.type}")
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


def pairs_to_dict(values: Sequence[Any]) -> dict[str, Any]:
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
        out.append(
            {
                "name": str(d.get("attribute", d.get("identifier", ""))),
                "type": str(d.get("type", "")).upper(),
                "separator": d.get("SEPARATOR"),
                "case_sensitive": "CASESENSITIVE" in flags,
                "dims": int(d["dim"]) if "dim" in d else None,
            }
        )
    return out
