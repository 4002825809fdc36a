"""The Redis backend's key scheme. Every key starts with the store's ``prefix`` (``memory:`` by
default), written as given:

| key | holds |
|---|---|
| ``{prefix}rec:{ns}:{id}`` | one record (a hash); the index covers ``{prefix}rec:`` |
| ``{prefix}wm:{ns}:{session}`` | one session's working memory (a list of JSON messages) |
| ``{prefix}skill:{ns}:{name}`` | one skill's statistics (:mod:`~primitives.memory.redis_backend.skills`) |
| ``{prefix}embedding`` | the model and dims the store was embedded with (a hash) |
| ``{prefix}quarantine:{ms}:{key}`` | a damaged record or list moved aside by ``repair`` |
| ``{prefix}quarantine:log`` | why and when each was moved (a stream) |

Each user part (``ns``, ``id``, ``session``, ``name``) is percent-encoded with
``urllib.parse.quote(part, safe="")`` (RFC 3986 percent-encoding of its UTF-8 bytes, as
:mod:`primitives.store.keys` does), which leaves only ``A-Z a-z 0-9 _ . ~ -`` and ``%XX``: no
``:`` separator, no ``SCAN MATCH`` glob character, no Redis Cluster hash-tag brace survives, and
:func:`split_record_key` reverses it. Example: ``record_key("memory:rec:", "acme", "a:b*")`` is
``"memory:rec:acme:a%3Ab%2A"``.

On a Redis Cluster (:class:`KeyLayout` with ``cluster=True``) every key of one namespace carries
the namespace as a hash tag, so the tenant's records, working memory, skills and bookkeeping sit
in one hash slot (one node) and its Lua writes and ``MULTI`` transactions stay within that slot:

| key | holds |
|---|---|
| ``{prefix}rec:{{ns}}:{id}`` | one record; the tenant's index ``{index}:{{ns}}`` covers ``{prefix}rec:{{ns}}:`` |
| ``{prefix}wm:{{ns}}:{session}`` | working memory |
| ``{prefix}skill:{{ns}}:{name}`` | skill statistics |
| ``{prefix}changelog:{{ns}}``, ``tombstones:{{ns}}``, ``deleted_at:{{ns}}`` | the tenant's change bookkeeping |
| ``{prefix}quarantine:{ms}:{key without prefix}`` | as above: it keeps the moved key's tag |
| ``{prefix}quarantine:log:{{ns}}`` | the tenant's quarantine log |
| ``{prefix}tenants`` | the set of namespaces written (what ``changes`` walks) |

The tag is ``quote(ns)``, never empty, and ``quote`` encodes ``{`` and ``}``, so no namespace
can end the tag early or reach another tenant's slot. The record prefix of this layout ends in
``{`` (``memory:rec:{``); :func:`record_key` and :func:`split_record_key` tell the two layouts
apart by that, so a standalone store's keys are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

from primitives.store.keys import glob_escape

__all__ = [
    "KeyLayout",
    "QUARANTINE",
    "change_log_key",
    "deleted_at_key",
    "tombstones_key",
    "glob_escape",
    "quarantine_key",
    "quarantine_log_key",
    "record_key",
    "session_key",
    "split_record_key",
]

#: The part of the key space damaged data is moved to (outside the index's ``rec:`` prefix).
QUARANTINE = "quarantine:"


@lru_cache(maxsize=4096)
def _scope(prefix: str, namespace: str) -> str:
    # namespaces repeat across calls; ids rarely do, so only this part is cached. A prefix
    # ending in "{" is the cluster layout: the namespace is closed as a hash tag.
    if prefix.endswith("{"):
        return f"{prefix}{quote(namespace, safe='')}}}:"
    return f"{prefix}{quote(namespace, safe='')}:"


def record_key(rec_prefix: str, namespace: str, id: str) -> str:
    """The hash of record ``(namespace, id)``: ``{rec_prefix}{quote(namespace)}:{quote(id)}``
    (``rec_prefix`` is ``{prefix}rec:``, the index's key prefix)."""
    return _scope(rec_prefix, namespace) + quote(id, safe="")


def split_record_key(rec_prefix: str, key: str) -> tuple[str, str] | None:
    """``(namespace, id)`` of a key made by :func:`record_key`, or ``None`` when ``key`` is not
    of that form (another layout's key: the previous one was ``{prefix}rec:{id}`` unencoded)."""
    if not key.startswith(rec_prefix):
        return None
    parts = key[len(rec_prefix):].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    if rec_prefix.endswith("{"):
        if not parts[0].endswith("}"):
            return None
        parts[0] = parts[0][:-1]
    try:
        namespace, id = unquote(parts[0], errors="strict"), unquote(parts[1], errors="strict")
    except UnicodeDecodeError:
        return None
    if record_key(rec_prefix, namespace, id) != key:
        return None  # not the canonical encoding (a raw character quote() would have encoded)
    return namespace, id


def session_key(prefix: str, namespace: str, session_id: str) -> str:
    """The working-memory list of ``(namespace, session_id)``: ``{prefix}wm:{quote(ns)}:{quote(sid)}``."""
    return _scope(f"{prefix}wm:", namespace) + quote(session_id, safe="")


def quarantine_key(prefix: str, key: bytes, at_ms: int) -> bytes:
    """Where ``repair`` moves the damaged ``key`` (a full key under ``prefix``, as bytes: a
    damaged key need not be UTF-8) at ``at_ms`` (milliseconds since the epoch):
    ``{prefix}quarantine:{at_ms}:{key without prefix}``, so quarantined keys sort by time and two
    repairs of one key never collide."""
    raw_prefix = prefix.encode()
    rest = key[len(raw_prefix):] if key.startswith(raw_prefix) else key
    return b"%s%s%d:%s" % (raw_prefix, QUARANTINE.encode(), at_ms, rest)


def quarantine_log_key(prefix: str) -> str:
    """The stream recording each move to quarantine (fields ``key``, ``moved_to``, ``reason``,
    ``at``, ``pttl_ms``)."""
    return f"{prefix}{QUARANTINE}log"


def tombstones_key(prefix: str) -> str:
    """The sorted set of deletes: member a record key, score when the delete arrived (µs, the
    server's clock)."""
    return f"{prefix}tombstones"


def change_log_key(prefix: str) -> str:
    """The sorted set of record keys scored by when their last write arrived (µs, the server's
    clock): the order export reads."""
    return f"{prefix}changelog"


def deleted_at_key(prefix: str) -> str:
    """The hash of deletes' times: field a record key, value the delete's ``deleted_at`` in µs."""
    return f"{prefix}deleted_at"


def tenant_tag(namespace: str) -> str:
    """The hash tag of ``namespace`` on a Redis Cluster: ``{quote(namespace)}`` (never empty,
    no brace inside)."""
    return "{" + quote(namespace, safe="") + "}"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Every key of one store, standalone (``cluster=False``: the layout above, unchanged) or
    tagged by namespace for a Redis Cluster (``cluster=True``).

    Attributes:
        prefix: The store's key prefix; on a cluster it may not contain ``{`` or ``}`` (a tag
            in the prefix would put every tenant in one slot; the backend refuses it).
        cluster: Tag every per-namespace key with :func:`tenant_tag`.
    """

    prefix: str
    cluster: bool = False

    @property
    def rec_prefix(self) -> str:
        """What every record key starts with (the index's ``PREFIX``): ``{prefix}rec:``, or
        ``{prefix}rec:{`` on a cluster."""
        return f"{self.prefix}rec:{{" if self.cluster else f"{self.prefix}rec:"

    def record(self, namespace: str, id: str) -> str:
        """The hash of record ``(namespace, id)``."""
        return record_key(self.rec_prefix, namespace, id)

    def session(self, namespace: str, session_id: str) -> str:
        """The working-memory list of ``(namespace, session_id)``."""
        if not self.cluster:
            return session_key(self.prefix, namespace, session_id)
        return _scope(f"{self.prefix}wm:{{", namespace) + quote(session_id, safe="")

    def skill(self, namespace: str, name: str) -> str:
        """The hash of skill ``name``'s statistics in ``namespace``."""
        if not self.cluster:
            return f"{self.prefix}skill:{quote(namespace, safe='')}:{quote(name, safe='')}"
        return _scope(f"{self.prefix}skill:{{", namespace) + quote(name, safe="")

    def _per_tenant(self, name: str, namespace: str) -> str:
        return f"{self.prefix}{name}:{tenant_tag(namespace)}" if self.cluster else f"{self.prefix}{name}"

    def change_log(self, namespace: str) -> str:
        """The change log the writes of ``namespace`` go to (:func:`change_log_key`; one per
        namespace on a cluster)."""
        return self._per_tenant("changelog", namespace)

    def tombstones(self, namespace: str) -> str:
        """The tombstone sorted set of ``namespace`` (:func:`tombstones_key`)."""
        return self._per_tenant("tombstones", namespace)

    def deleted_at(self, namespace: str) -> str:
        """The hash of delete times of ``namespace`` (:func:`deleted_at_key`)."""
        return self._per_tenant("deleted_at", namespace)

    def tenants(self) -> str:
        """The set of namespaces written on a cluster (``{prefix}tenants``)."""
        return f"{self.prefix}tenants"

    def tenant_key(self, namespace: str) -> str:
        """A key in ``namespace``'s hash slot (to find the node that holds the tenant)."""
        return self.record(namespace, "_")
