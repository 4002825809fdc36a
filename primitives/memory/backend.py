"""The memory seam: :class:`MemoryBackend`, the one interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from primitives.errors import InvalidFilterError, InvalidInputError
from primitives.memory.record import DEFAULT_NAMESPACE, MemoryRecord, MemoryType, Message, SearchHit
from primitives.memory.skills import SkillStats

__all__ = [
    "FILTER_FIELDS",
    "Health",
    "MemoryBackend",
    "SearchResult",
    "normalize_filter",
    "check_limit",
    "check_restorable",
    "check_query",
    "check_mode",
    "SEARCH_MODES",
]

#: Fields a search filter may name. Each takes a string or a sequence of strings ("any of").
FILTER_FIELDS: frozenset[str] = frozenset(
    {"user_id", "session_id", "namespace", "memory_type", "topics"}
)


_MEMORY_TYPES = frozenset(t.value for t in MemoryType)


def normalize_filter(filter: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Validate a search filter and return it as ``{field: (value, ...)}``.

    ``None`` values are dropped (no restriction on that field). A ``MemoryType`` is taken by its
    value.

    Raises:
        InvalidFilterError: ``filter`` is not a mapping, names a field outside
            :data:`FILTER_FIELDS`, gives a value that is not a string or a non-empty
            sequence of strings, or a ``memory_type`` that is not a :class:`MemoryType` value.
    """
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(f"filter must be a mapping, got {type(filter).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for key, value in filter.items():
        if key not in FILTER_FIELDS:
            raise InvalidFilterError(
                f"unknown filter field {key!r}; accepted: {', '.join(sorted(FILTER_FIELDS))}"
            )
        if value is None:
            continue
        if type(value) is str and value:
            out[key] = (value,)
            continue
        if isinstance(value, str):
            values: tuple[Any, ...] = (value,)
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = tuple(value)
        else:
            raise InvalidFilterError(
                f"filter {key!r} takes a str or a list of str, got {type(value).__name__}"
            )
        if not values or not all(isinstance(v, str) and v for v in values):
            raise InvalidFilterError(
                f"filter {key!r} takes a non-empty str or a non-empty list of them, got {value!r}"
            )
        out[key] = tuple(str(v) for v in values)  # str() turns a MemoryType into its value
    memory_types = out.get("memory_type", ())
    unknown = [v for v in memory_types if v not in _MEMORY_TYPES]
    if unknown:
        raise InvalidFilterError(
            f"filter 'memory_type' got {unknown[0]!r}; accepted: {', '.join(sorted(_MEMORY_TYPES))}"
        )
    return out


def check_restorable(records: Sequence[MemoryRecord]) -> None:
    """Raise unless every item is a ``MemoryRecord`` with both timestamps set (for
    :meth:`MemoryBackend.put_if_newer`)."""
    from primitives.errors import InvalidRecordError, InvalidRecordTypeError

    for record in records:
        if not isinstance(record, MemoryRecord):
            raise InvalidRecordTypeError(f"expected MemoryRecord objects, got {type(record).__name__}")
        if record.created_at is None or record.updated_at is None:
            raise InvalidRecordError(f"record {record.id!r} needs created_at and updated_at to be restored")


def check_limit(limit: object) -> int:
    """Return ``limit`` if it is an ``int >= 1``.

    Raises:
        InvalidInputError: otherwise.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be an int >= 1, got {limit!r}")
    return limit


def check_query(query: object) -> str:
    """Return ``query`` if it is a ``str``.

    Raises:
        InvalidInputError: (also a ``TypeError``) otherwise.
    """
    if not isinstance(query, str):
        raise _QueryTypeError(f"query must be a str, got {type(query).__name__}")
    return query


class _QueryTypeError(InvalidInputError, TypeError):
    pass


#: Values of ``search(..., mode=)``: BM25 keyword ranking, embedding (cosine) ranking, or both
#: fused (reciprocal-rank fusion).
SEARCH_MODES: tuple[str, ...] = ("keyword", "vector", "hybrid")


def check_mode(mode: object) -> str | None:
    """Return ``mode`` if it is ``None`` (the backend's default) or one of :data:`SEARCH_MODES`.

    Raises:
        InvalidInputError: otherwise.
    """
    if mode is None or (isinstance(mode, str) and mode in SEARCH_MODES):
        return mode
    raise InvalidInputError(f"mode must be one of {', '.join(SEARCH_MODES)} (or None), got {mode!r}")


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits of one search and who served it.

    Attributes:
        hits: Best first.
        backend: Name of the backend that actually served the call (``"in-memory"``, ...).
        degraded: ``True`` when the configured backend was unreachable and a fallback served it.
    """

    hits: list[SearchHit]
    backend: str
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class Health:
    """Result of :meth:`MemoryBackend.health`.

    Attributes:
        ok: The backend can serve reads and writes now.
        backend: Its name.
        detail: Facts worth showing a person (counts, versions, the error seen).
    """

    ok: bool
    backend: str
    detail: dict[str, Any] = field(default_factory=dict)


class MemoryBackend(ABC):
    """Where memories live. Async only; one instance per store; close with :meth:`aclose`.

    Capability flags tell callers what a backend can do; a method for a missing capability raises
    ``NotImplementedError`` naming what to use instead. Every backend passes the same contract
    test suite (``tests/contract.py``).
    """

    #: Name reported as ``memory_backend`` in outputs.
    name: ClassVar[str]
    #: Records expire after their ``ttl`` seconds.
    supports_ttl: ClassVar[bool] = False
    #: Records can be searched by embedding.
    supports_vectors: ClassVar[bool] = False
    #: Per-session working memory (``append_messages`` / ``get_messages``).
    supports_working_memory: ClassVar[bool] = False
    #: Skill execution statistics (``record_skill_execution`` / ``skill_stats``).
    supports_skill_stats: ClassVar[bool] = False

    @abstractmethod
    async def add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        """Insert or replace (by ``id``) ``records``, in order.

        Returns:
            The stored records, in the input order, with ``created_at`` (kept from the stored
            version on replace) and ``updated_at`` (now) filled in.

        Raises:
            InvalidRecordTypeError: an item is not a ``MemoryRecord``; nothing is stored.
        """

    @abstractmethod
    async def get(self, id: str) -> MemoryRecord | None:
        """The live record with ``id``, or ``None``."""

    @abstractmethod
    async def delete(self, ids: Sequence[str]) -> int:
        """Delete records by id; returns how many existed. Unknown ids are ignored."""

    @abstractmethod
    async def search(
        self,
        query: str,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int = 10,
        mode: str | None = None,
    ) -> SearchResult:
        """Records relevant to ``query`` that match ``filter``, best first.

        Args:
            query: Natural-language text. Empty or whitespace queries return no hits (and, in
                keyword mode, all-stop-word queries).
            filter: See :func:`normalize_filter`.
            limit: Maximum number of hits, ``>= 1``.
            mode: One of :data:`SEARCH_MODES`, or ``None`` for the backend's default
                (``"hybrid"`` when it has an embedder, else ``"keyword"``).

        Raises:
            InvalidInputError: ``query`` is not a ``str``, ``limit`` < 1 or ``mode`` unknown.
            InvalidFilterError: see :func:`normalize_filter`.
            ConfigurationError: ``mode`` needs an embedder and none is configured.
        """

    @abstractmethod
    async def put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        """Write records exactly as given (timestamps kept) where no stored version is newer.

        Last writer wins by ``updated_at``: a record whose stored version has a later
        ``updated_at`` is skipped; an equal one is rewritten (so replaying is idempotent). A
        record whose ``ttl`` has run out since its ``updated_at`` is not written. This is how a
        durable outbox replays writes made while the backend was unreachable.

        Returns:
            How many records were written.

        Raises:
            InvalidRecordError: a record has no ``created_at`` or ``updated_at``.
        """

    @abstractmethod
    async def delete_if_older(self, deletions: Mapping[str, datetime]) -> int:
        """Delete each id whose stored version is not newer than the time it was deleted at
        (a write made after the delete wins). Returns how many were deleted."""

    @abstractmethod
    async def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Number of live records matching ``filter`` (all when ``None``)."""

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        """Append ``messages`` to a session's working memory (oldest first)."""
        raise NotImplementedError(
            f"{self.name} has no working memory; keep messages in long-term memory with "
            "memory_type='working' or use the in-memory, Redis or Agent Memory Server backend"
        )

    async def get_messages(self, session_id: str, limit: int | None = None) -> list[Message]:
        """The last ``limit`` (all when ``None``) messages of a session, oldest first."""
        raise NotImplementedError(
            f"{self.name} has no working memory; search long-term memory with "
            "filter={'session_id': ...} instead"
        )

    async def clear_session(self, session_id: str) -> None:
        """Forget a session's working memory."""
        raise NotImplementedError(f"{self.name} has no working memory")

    async def record_skill_execution(
        self, name: str, *, success: bool, duration_s: float, namespace: str = DEFAULT_NAMESPACE
    ) -> SkillStats:
        """Fold one execution of skill ``name`` into its statistics, atomically, and return the
        updated totals (see :class:`~primitives.memory.skills.SkillStats`).

        Args:
            name: The skill's name, a non-empty ``str``.
            success: Whether this execution succeeded.
            duration_s: How long it took, seconds ``>= 0``.
            namespace: Statistics are kept per namespace.

        Raises:
            InvalidInputError: see :func:`~primitives.memory.skills.check_skill_execution`.
        """
        raise NotImplementedError(
            f"{self.name} keeps no skill statistics; use the in-memory or Redis backend "
            "(MEMORY_BACKEND=inmemory or REDIS_URL)"
        )

    async def skill_stats(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> SkillStats | None:
        """The statistics of skill ``name`` in ``namespace``, or ``None`` when no execution is
        recorded (or the last one is older than the skill lifetime).

        Raises:
            InvalidInputError: ``name`` is not a non-empty ``str``.
        """
        raise NotImplementedError(
            f"{self.name} keeps no skill statistics; use the in-memory or Redis backend"
        )

    @abstractmethod
    async def health(self) -> Health:
        """Whether the backend can serve calls now; never raises for an unreachable server."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Release connections and files. The backend is unusable afterwards."""
