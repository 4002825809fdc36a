"""The memory seam: :class:`MemoryBackend`, the one interface every backend implements.

The public methods are concrete: each validates and normalises its arguments once, identically
for every backend (:mod:`primitives.validation`, :class:`~primitives.memory.record.MemoryRecord`),
then calls a protected hook (``_add``, ``_search``, ...) that a backend implements. So the same
bad input raises the same typed error on every backend, before anything is stored, and a hook
only ever sees valid, normalised arguments.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from opentelemetry import metrics

from primitives.errors import ConfigurationError, InvalidRecordError
from primitives.memory.changes import ChangeEntry, Position, check_position
from primitives.memory.record import DEFAULT_NAMESPACE, MemoryRecord, Message, SearchHit
from primitives.memory.skills import SkillStats, check_skill_execution, check_skill_name
from primitives.memory.filters import (
    FILTER_FIELDS,
    MAX_FILTER_VALUES,
    RANGE_FIELDS,
    SEARCH_MODES,
    check_mode,
    check_query,
    normalize_filter,
)
from primitives.validation import (
    INPUT,
    RECORD,
    check_aware_datetime,
    check_identifier,
    check_items,
    check_limit,
)

__all__ = [
    "FILTER_FIELDS",
    "DamageReport",
    "DamagedRecord",
    "Health",
    "MemoryBackend",
    "SearchResult",
    "SEARCH_MODES",
    "MAX_FILTER_VALUES",
    "RANGE_FIELDS",
    "check_limit",
    "check_mode",
    "check_query",
    "normalize_filter",
    "report_corrupt",
]

log = logging.getLogger("primitives.memory")


_corrupt_counter = metrics.get_meter("primitives.memory").create_counter(
    "memory.records.corrupt",
    unit="{record}",
    description="Stored records (or working-memory messages) that could not be decoded and were skipped",
)


def report_corrupt(backend: str, operation: str, key: str, reason: str) -> None:
    """Say that a damaged stored record was skipped: a warning naming its key and the fix, and
    one on the OTel counter ``memory.records.corrupt`` (attributes ``backend``, ``operation``).
    Backends call it for each record they skip; searches also count them in
    :attr:`SearchResult.skipped`."""
    log.warning(
        "skipped a damaged record at %r (%s) during %s on %s; list damaged records with "
        "`memory-primitives doctor`, move them aside with `memory-primitives repair`",
        key, reason, operation, backend,
    )
    _corrupt_counter.add(1, {"backend": backend, "operation": operation})


def _records(records: object, op: str, *, restorable: bool = False) -> Sequence[MemoryRecord]:
    items = check_items(records, f"{op}() records", errors=RECORD)
    for record in items:
        if not isinstance(record, MemoryRecord):
            raise RECORD[1](f"{op}() takes MemoryRecord objects, got {type(record).__name__}; nothing stored")
        if restorable and (record.created_at is None or record.updated_at is None):
            raise InvalidRecordError(f"record {record.id!r} needs created_at and updated_at to be restored")
    return items


def _ids(ids: object, what: str = "ids") -> list[str]:
    items = check_items(ids, what)
    return list(dict.fromkeys(check_identifier(i, "each id") for i in items))


def _namespace(namespace: object) -> str:
    return check_identifier(namespace, "namespace")


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits of one search and who served it.

    Attributes:
        hits: Best first.
        backend: Name of the backend that actually served the call (``"in-memory"``, ...).
        degraded: ``True`` when the configured backend was unreachable and a fallback served it.
        skipped: Damaged stored records this search reached and left out (each logged and
            counted on ``memory.records.corrupt``); 0 normally.
    """

    hits: list[SearchHit]
    backend: str
    degraded: bool = False
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class DamagedRecord:
    """One stored record (or working-memory message) that cannot be decoded.

    Attributes:
        key: Where it is stored (a Redis key, an AMS id), as ``doctor`` shows it.
        reason: What is wrong with it.
        moved_to: Where :meth:`MemoryBackend.repair` moved it (``None`` when it was only found).
    """

    key: str
    reason: str
    moved_to: str | None = None


@dataclass(frozen=True, slots=True)
class DamageReport:
    """What :meth:`MemoryBackend.find_damaged` found.

    Attributes:
        scanned: Records (and working-memory lists) looked at.
        damaged: The damaged ones found, at most the ``limit`` asked for, in scan order.
        complete: ``False`` when the listing stopped at ``limit`` (there may be more).
    """

    scanned: int
    damaged: list[DamagedRecord]
    complete: bool = True


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

    A record is identified by ``(namespace, id)``: namespaces are a hard partition, so the same
    id in two namespaces names two records, and ``get``/``delete`` take the namespace. Working
    memory is kept per ``(namespace, session_id)`` likewise.

    The public methods validate (once, the same way for every backend) and call the protected
    hooks a backend implements. Capability flags tell callers what a backend can do; a method
    for a missing capability raises ``NotImplementedError`` naming what to use instead. Every
    backend passes the same contract test suite (``tests/contract.py``) and the differential
    test against the in-process backend (``tests/test_differential.py``).
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
    #: The embedder that makes this backend's vectors (``None``: none in this process; the Agent
    #: Memory Server embeds on its side).
    embedder: Any = None

    #: Records written and deleted can be read in order (:meth:`changes`), for export.
    supports_changes: ClassVar[bool] = False

    @property
    def identity(self) -> str:
        """Names this store for sync cursors: the same for every process reaching the same data
        (Redis: server, database and prefix). Default: this object in this process."""
        import os

        return f"{self.name}:pid{os.getpid()}:{id(self):x}"

    @property
    def default_search_mode(self) -> str:
        """The mode ``search(mode=None)`` uses: ``"hybrid"`` when the backend searches vectors,
        else ``"keyword"``."""
        return "hybrid" if self.supports_vectors else "keyword"

    # -- long-term memory --------------------------------------------------------------------

    async def add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        """Insert or replace (by ``(namespace, id)``) ``records``, in order.

        Returns:
            The stored records, in the input order, with ``created_at`` (kept from the stored
            version on replace) and ``updated_at`` (now) filled in.

        Raises:
            InvalidRecordTypeError: ``records`` is not a list or tuple, or an item is not a
                ``MemoryRecord``; nothing is stored.
            RecordTooLargeError: a record is over the backend's size limit; nothing is stored.
            DimensionMismatchError: a record's ``embedding`` has another length than the
                backend's embedder makes; nothing is stored.
        """
        items = _records(records, "add")
        if not items:
            return []
        self._check_storable(items)
        return await self._add(items)

    async def put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        """Write records exactly as given (timestamps kept) where no stored version is newer.

        Last writer wins by ``updated_at``: a record whose stored version (same namespace and
        id) has a later ``updated_at`` is skipped; an equal one is rewritten (so replaying is
        idempotent). A record whose ``ttl`` has run out since its ``updated_at`` is not
        written. This is how a durable outbox replays writes made while the backend was
        unreachable.

        Returns:
            How many records were written.

        Raises:
            InvalidRecordError: a record has no ``created_at`` or ``updated_at``; also the
                errors of :meth:`add`.
        """
        items = _records(records, "put_if_newer", restorable=True)
        if not items:
            return 0
        self._check_storable(items)
        return await self._put_if_newer(items)

    async def get(self, id: str, *, namespace: str = DEFAULT_NAMESPACE) -> MemoryRecord | None:
        """The live record ``(namespace, id)``, or ``None``.

        Raises:
            InvalidInputError: ``id`` or ``namespace`` is not an identifier.
            CorruptRecordError: the stored record cannot be decoded (its key is named).
        """
        return await self._get(_namespace(namespace), check_identifier(id, "id"))

    async def delete(self, ids: Sequence[str], *, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Delete records of ``namespace`` by id; returns how many existed. Unknown ids are
        ignored, a repeated id counts once.

        Raises:
            InvalidInputError: ``ids`` is not a list or tuple of identifiers (a single ``str``
                included), or ``namespace`` is not one; nothing is deleted.
        """
        checked = _ids(ids)
        namespace = _namespace(namespace)
        return await self._delete(namespace, checked) if checked else 0

    async def delete_if_older(self, deletions: Mapping[str, datetime], *, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Delete each id of ``namespace`` whose stored version is not newer than the time it
        was deleted at (a write made after the delete wins). Returns how many were deleted.

        Raises:
            InvalidInputError: ``deletions`` is not a mapping of identifiers to timezone-aware
                datetimes, or ``namespace`` is not an identifier.
        """
        if not isinstance(deletions, Mapping):
            raise INPUT[1](f"deletions must be a mapping of id to datetime, got {type(deletions).__name__}")
        checked = {
            check_identifier(id, "each id"): check_aware_datetime(at, f"deleted_at of {id!r}")
            for id, at in deletions.items()
        }
        namespace = _namespace(namespace)
        return await self._delete_if_older(namespace, checked) if checked else 0

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
            filter: See :func:`normalize_filter`; no ``namespace`` searches every namespace.
            limit: Maximum number of hits, ``1..MAX_LIMIT`` (10,000).
            mode: One of :data:`SEARCH_MODES`, or ``None`` for :attr:`default_search_mode`.

        Returns:
            The hits, and in ``skipped`` how many damaged records were left out.

        Raises:
            InvalidInputError: ``query`` is not valid text (a ``TypeError`` too for a
                non-``str``), ``limit`` out of range or ``mode`` unknown.
            InvalidFilterError: see :func:`normalize_filter`.
            ConfigurationError: ``mode`` needs an embedder and none is configured.
        """
        query = check_query(query)
        limit = check_limit(limit)
        mode = check_mode(mode) or self.default_search_mode
        tag_filter = normalize_filter(filter)
        if mode != "keyword" and not self.supports_vectors:
            raise ConfigurationError(
                f"mode={mode!r} needs an embedder but the {self.name} backend has none; set "
                "MEMORY_EMBEDDINGS=local (pip install \"memory-primitives[embeddings]\") or "
                "MEMORY_EMBEDDINGS_URL to an OpenAI-compatible /v1 endpoint, or use mode='keyword'"
            )
        if not query.strip():
            return SearchResult([], self.name)
        return await self._search(query, tag_filter, limit, mode)

    async def count(self, filter: Mapping[str, Any] | None = None) -> int:
        """Number of live records matching ``filter`` (all when ``None``).

        Raises:
            InvalidFilterError: see :func:`normalize_filter`.
        """
        return await self._count(normalize_filter(filter))

    # -- working memory ----------------------------------------------------------------------

    def _require_working_memory(self) -> None:
        if not self.supports_working_memory:
            raise NotImplementedError(
                f"{self.name} has no working memory; keep messages in long-term memory with "
                "memory_type='working' or use the in-memory, Redis or Agent Memory Server backend"
            )

    async def append_messages(
        self, session_id: str, messages: Sequence[Message], *, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        """Append ``messages`` to the working memory of ``(namespace, session_id)``, oldest
        first; a message without ``created_at`` is stamped now.

        Raises:
            InvalidInputError: ``session_id`` or ``namespace`` is not an identifier.
            InvalidRecordTypeError: ``messages`` is not a list or tuple of ``Message``.
            NotImplementedError: the backend has no working memory.
        """
        self._require_working_memory()
        session_id = check_identifier(session_id, "session_id")
        namespace = _namespace(namespace)
        items = check_items(messages, "messages", errors=RECORD)
        for message in items:
            if not isinstance(message, Message):
                raise RECORD[1](f"append_messages() takes Message objects, got {type(message).__name__}")
        if items:
            self._check_messages(items)
            await self._append_messages(namespace, session_id, items)

    async def get_messages(
        self, session_id: str, limit: int | None = None, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Message]:
        """The last ``limit`` (all kept when ``None``) messages of ``(namespace, session_id)``,
        oldest first. A damaged stored message is skipped (logged and counted).

        Raises:
            InvalidInputError: a bad ``session_id``, ``namespace`` or ``limit``.
            NotImplementedError: the backend has no working memory.
        """
        self._require_working_memory()
        session_id = check_identifier(session_id, "session_id")
        namespace = _namespace(namespace)
        if limit is not None:
            limit = check_limit(limit)
        return await self._get_messages(namespace, session_id, limit)

    async def clear_session(self, session_id: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Forget the working memory of ``(namespace, session_id)``.

        Raises:
            InvalidInputError: a bad ``session_id`` or ``namespace``.
            NotImplementedError: the backend has no working memory.
        """
        self._require_working_memory()
        await self._clear_session(_namespace(namespace), check_identifier(session_id, "session_id"))

    # -- skills ------------------------------------------------------------------------------

    async def record_skill_execution(
        self, name: str, *, success: bool, duration_s: float, namespace: str = DEFAULT_NAMESPACE
    ) -> SkillStats:
        """Fold one execution of skill ``name`` into its statistics, atomically, and return the
        updated totals (see :class:`~primitives.memory.skills.SkillStats`).

        Args:
            name: The skill's name, an identifier.
            success: Whether this execution succeeded.
            duration_s: How long it took, seconds ``>= 0``.
            namespace: Statistics are kept per namespace.

        Raises:
            InvalidInputError: see :func:`~primitives.memory.skills.check_skill_execution`.
            NotImplementedError: the backend keeps no statistics.
        """
        duration = check_skill_execution(name, success, duration_s)
        namespace = _namespace(namespace)
        self._require_skill_stats()
        return await self._record_skill_execution(name, success, duration, namespace)

    async def skill_stats(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> SkillStats | None:
        """The statistics of skill ``name`` in ``namespace``, or ``None`` when no execution is
        recorded (or the last one is older than the skill lifetime).

        Raises:
            InvalidInputError: ``name`` or ``namespace`` is not an identifier.
            NotImplementedError: the backend keeps no statistics.
        """
        name = check_skill_name(name)
        namespace = _namespace(namespace)
        self._require_skill_stats()
        return await self._skill_stats(name, namespace)

    def _require_skill_stats(self) -> None:
        if not self.supports_skill_stats:
            raise NotImplementedError(
                f"{self.name} keeps no skill statistics; use the in-memory or Redis backend "
                "(MEMORY_BACKEND=inmemory or REDIS_URL)"
            )

    async def changes(self, after: Position | None = None, *, limit: int = 1_000) -> list[ChangeEntry]:
        """Records written and deleted after ``after``, in the order the store received them
        (see :mod:`primitives.memory.changes`): ``(position, change)`` pairs, each live record as
        it is now, each delete as a :class:`~primitives.memory.changes.Tombstone`. Page with the
        last entry's ``position``.

        Args:
            after: A position ``(logged_at, namespace, id)``, or ``None`` for the beginning.
            limit: At most this many changes, ``1..MAX_LIMIT``.

        Raises:
            InvalidInputError: ``after`` or ``limit`` is malformed.
            NotImplementedError: the backend cannot list changes (the Agent Memory Server).
        """
        position = check_position(after)
        limit = check_limit(limit)
        if not self.supports_changes:
            raise NotImplementedError(f"{self.name} cannot list its changes; export from the in-memory or Redis backend")
        return await self._changes(position, limit)

    async def _changes(self, after: tuple[int, str, str] | None, limit: int) -> list[ChangeEntry]:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def health(self) -> Health:
        """Whether the backend can serve calls now; never raises for an unreachable server."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Release connections and files. The backend is unusable afterwards."""

    # -- maintenance (what ``doctor``, ``repair``, ``index migrate`` and ``eval`` need) -------

    async def find_damaged(self, *, limit: int = 100) -> DamageReport:
        """Stored records and working-memory messages that cannot be decoded, found by a scan of
        the whole store (O(store); for ``memory-primitives doctor``). Default: a backend whose
        records cannot be damaged (in process) finds none.

        Args:
            limit: Most damaged entries to list, ``1..MAX_LIMIT``.
        """
        check_limit(limit)
        return DamageReport(scanned=0, damaged=[])

    async def repair(self) -> list[DamagedRecord]:
        """Move every damaged record (and working-memory message) out of the store into a
        quarantine space, where it is kept, never deleted, and return what was moved, in scan
        order. Default: nothing to move."""
        return []

    async def migrate(self) -> int:
        """Bring the stored layout (and search index) to this version's, keeping every record;
        returns how many records were rewritten. Default: nothing to migrate (0)."""
        return 0

    async def drop(self) -> None:
        """Delete this whole store: every record, working-memory session and index under its
        partition. For throw-away stores (evaluations, tests); irreversible.

        Raises:
            NotImplementedError: the backend cannot tell its own data from others'.
        """
        raise NotImplementedError(f"{self.name} cannot drop its store")

    # -- hooks -------------------------------------------------------------------------------

    def _check_storable(self, records: Sequence[MemoryRecord]) -> None:  # noqa: B027
        """Refuse records this backend cannot hold (a size limit), before anything is written.
        Default: no limit."""

    def _check_messages(self, messages: Sequence[Message]) -> None:  # noqa: B027
        """Refuse messages this backend cannot hold, before anything is written."""

    @abstractmethod
    async def _add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        """:meth:`add` on a non-empty batch of valid records."""

    @abstractmethod
    async def _put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        """:meth:`put_if_newer` on a non-empty batch of valid, timestamped records."""

    @abstractmethod
    async def _get(self, namespace: str, id: str) -> MemoryRecord | None:
        """:meth:`get`."""

    @abstractmethod
    async def _delete(self, namespace: str, ids: list[str]) -> int:
        """:meth:`delete` on a non-empty list of distinct ids."""

    @abstractmethod
    async def _delete_if_older(self, namespace: str, deletions: dict[str, datetime]) -> int:
        """:meth:`delete_if_older` on a non-empty mapping (UTC datetimes)."""

    @abstractmethod
    async def _search(
        self, query: str, tag_filter: dict[str, tuple[str, ...]], limit: int, mode: str
    ) -> SearchResult:
        """:meth:`search` for a query with a non-whitespace character, a normalised filter, a
        checked limit and a resolved mode that the backend supports."""

    @abstractmethod
    async def _count(self, tag_filter: dict[str, tuple[str, ...]]) -> int:
        """:meth:`count` with a normalised filter."""

    async def _append_messages(self, namespace: str, session_id: str, messages: Sequence[Message]) -> None:
        raise NotImplementedError

    async def _get_messages(self, namespace: str, session_id: str, limit: int | None) -> list[Message]:
        raise NotImplementedError

    async def _clear_session(self, namespace: str, session_id: str) -> None:
        raise NotImplementedError

    async def _record_skill_execution(self, name: str, success: bool, duration_s: float, namespace: str) -> SkillStats:
        raise NotImplementedError

    async def _skill_stats(self, name: str, namespace: str) -> SkillStats | None:
        raise NotImplementedError
