"""``Memory``: the facade pipelines and applications talk to, over one configured backend."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from primitives.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptRecordError,
    InvalidInputTypeError,
    UnscopedAccessError,
)
from primitives.memory.backend import Health, MemoryBackend, SearchResult
from primitives.memory.context import ContextCache
from primitives.memory.facade_agent import AgentMethods
from primitives.memory.kinds import visible
from primitives.memory.ranking import RankingSignals, rerank
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import DEFAULT_NAMESPACE, MemoryRecord, MemoryType, Message, SearchHit
from primitives.memory.registry import BACKEND_CHOICES, backend_from_env, env_float, env_int
from primitives.memory.skills import SkillStats
from primitives.memory.datasync import StoreSource
from primitives.sync.engine import ExportReport, ImportReport, export_changes, import_changes
from primitives.sync.feed import ChangeEvent, ChangeFeed, ChangeSubscription, InMemoryChangeFeed
from primitives.sync.warehouse import Warehouse
from primitives.validation import MAX_LIMIT, check_aware_datetime, check_bool, check_identifier, check_limit

__all__ = ["Memory", "Recall", "BACKEND_CHOICES"]

logger = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class Recall:
    """What :meth:`Memory.recall` found for one query.

    Attributes:
        working_memory: The session's recent messages, oldest first (empty without a session).
        hits: Long-term memories relevant to the query, best first.
        backend: Name of the backend that served the call.
        degraded: ``True`` when a fallback served it because the configured backend was down.
        skipped: Damaged stored records the search left out (see
            :attr:`~primitives.memory.backend.SearchResult.skipped`).
    """

    working_memory: list[Message]
    hits: list[SearchHit]
    backend: str
    degraded: bool = False
    skipped: int = 0


_OFF = ("0", "false", "no", "off")


def _feed_from_env(env: Mapping[str, str], redis_url: str, backend: MemoryBackend) -> ChangeFeed | None:
    """The change feed ``from_env`` gives a memory: on ``REDIS_URL`` when it is set (same
    Redis, same ``MEMORY_REDIS_PREFIX``, ``MEMORY_REDIS_CLUSTER``, ``MEMORY_CHANGE_FEED_MAXLEN``
    events kept, default 100000), an in-process feed for the in-process backend, else none;
    ``MEMORY_CHANGE_FEED=0`` turns it off."""
    if (env.get("MEMORY_CHANGE_FEED") or "1").strip().lower() in _OFF:
        return None
    if redis_url:
        try:
            from primitives.redis_connection import cluster_from_env
            from primitives.sync.feed_redis import DEFAULT_MAXLEN, RedisChangeFeed
        except ImportError as exc:
            raise ConfigurationError(
                f"the change feed on REDIS_URL needs the redis extra: pip install 'memory-primitives[redis]' ({exc})"
            ) from exc
        return RedisChangeFeed.from_url(
            redis_url,
            cluster=cluster_from_env(env),
            prefix=env.get("MEMORY_REDIS_PREFIX") or "memory:",
            maxlen=env_int(env, "MEMORY_CHANGE_FEED_MAXLEN", DEFAULT_MAXLEN),
            socket_connect_timeout=env_float(env, "MEMORY_REDIS_CONNECT_TIMEOUT", 2.0),
        )
    if isinstance(backend, InMemoryBackend):
        return InMemoryChangeFeed(maxlen=env_int(env, "MEMORY_CHANGE_FEED_MAXLEN", 100_000))
    return None


class Memory(AgentMethods):
    """Long-term and working memory for agents, over one :class:`MemoryBackend`.

    Namespaces are a hard partition: a record is identified by ``(namespace, id)``, and every
    method works in one namespace (``namespace=``, else the memory's). A memory is multi-user
    unless declared ``single_user``: then :meth:`recall` (and so ``MemoryPrimitive``) refuses a
    call without a ``user_id`` instead of mixing every user's memories (see
    :class:`~primitives.errors.UnscopedAccessError`).

    Args:
        backend: Where memories live.
        namespace: Namespace for calls that do not name one (an identifier).
        feed: Change feed on which every write and delete made through this memory is
            announced, and from which :meth:`subscribe` hears other agents' changes (``None``:
            no announcements). Several memories share a store by sharing its feed.
        agent_id: This agent's id, the ``origin`` of its change events (default: a random
            UUID hex, new for every ``Memory``).
        single_user: ``True`` for an application with one user (or none): :meth:`recall` and
            the pipeline steps then work without a ``user_id`` and see every record of the
            namespace. ``False`` (default): they refuse an unscoped call.
        llm: The LLM that extraction, reflection, supersession decisions and working-memory
            summaries use: a :class:`~primitives.llm.LLM` or any async callable
            ``fn(messages) -> str`` (see :func:`~primitives.llm.as_llm`); ``None``: none (those
            operations that need one raise ``ConfigurationError``).
        token_counter: Counts prompt tokens for :meth:`context` (default: cl100k_base, see
            :mod:`primitives.memory.tokens`).
        context_cache_ttl: Seconds a :meth:`context` result is reused for the same arguments
            (default 300; 0 turns the cache off). Writes made through this memory to the same
            namespace, user or session invalidate it at once; other agents' writes are seen
            after at most this long.

    Use ``async with Memory.from_env() as memory: ...`` or call :meth:`aclose`.

    Raises:
        TypeError: ``backend`` is not a ``MemoryBackend``, or ``feed`` not a ``ChangeFeed``.
        ConfigurationError: ``agent_id`` is not a non-empty str.
        InvalidInputError: ``namespace`` is not an identifier, ``single_user`` not a bool.
    """

    def __init__(
        self,
        backend: MemoryBackend,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        feed: ChangeFeed | None = None,
        agent_id: str | None = None,
        single_user: bool = False,
        llm: Any = None,
        token_counter: Any = None,
        context_cache_ttl: float = 300.0,
    ) -> None:
        if not isinstance(backend, MemoryBackend):
            raise InvalidInputTypeError(f"backend must be a MemoryBackend, got {type(backend).__name__}")
        if feed is not None and not isinstance(feed, ChangeFeed):
            raise InvalidInputTypeError(f"feed must be a ChangeFeed, got {type(feed).__name__}")
        if agent_id is not None and (not isinstance(agent_id, str) or not agent_id.strip()):
            raise ConfigurationError(f"agent_id must be a non-empty str, got {agent_id!r}")
        self.backend = backend
        self.namespace = check_identifier(namespace, "namespace")
        self.feed = feed
        self.agent_id = agent_id or uuid.uuid4().hex
        self.single_user = check_bool(single_user, "single_user")
        self._owns_feed = False
        self.llm = None
        if llm is not None:
            from primitives.llm import as_llm

            self.llm = as_llm(llm)
        self._token_counter = token_counter
        self._context_cache = ContextCache(context_cache_ttl)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._semaphore: asyncio.Semaphore | None = None
        #: Background extractions that run at once (see :meth:`extract`).
        self.extraction_concurrency = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Memory:
        """Build the memory the environment describes.

        The backend comes from :func:`~primitives.memory.registry.backend_from_env`
        (``MEMORY_BACKEND``, ``REDIS_URL``, ``AGENT_MEMORY_SERVER_URL`` and the variables it
        lists; in-process by default; server backends wrapped in the resilient fallback with a
        durable outbox). Here also: ``MEMORY_NAMESPACE`` (default ``"default"``),
        ``MEMORY_SINGLE_USER`` (``1`` declares a single-user memory, default off),
        ``MEMORY_AGENT_ID`` (default random), the LLM (``MEMORY_LLM_URL`` and the variables
        :func:`~primitives.llm.llm_from_env` lists; none by default) and the change feed (on by default,
        ``MEMORY_CHANGE_FEED=0`` turns it off): a ``RedisChangeFeed`` on ``REDIS_URL`` when it
        is set, else an in-process one for the in-process backend (:func:`_feed_from_env`).
        Nothing connects here: a server backend connects on its first call.

        Args:
            env: Variables to read instead of ``os.environ``.

        Raises:
            ConfigurationError: a variable has a value that is not accepted, ``redis`` without
                ``REDIS_URL``, a malformed ``REDIS_URL``, or redis-py missing (likewise ``ams``
                without ``AGENT_MEMORY_SERVER_URL``, a malformed one, or agent-memory-client
                missing).
            OutboxError: the outbox file or its directory cannot be used (the message names the
                file and the fix).
        """
        env = os.environ if env is None else env
        single = (env.get("MEMORY_SINGLE_USER") or "0").strip().lower()
        if single not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
            raise ConfigurationError(f"MEMORY_SINGLE_USER must be 1 or 0, got {single!r}")
        namespace = env.get("MEMORY_NAMESPACE") or DEFAULT_NAMESPACE
        try:
            check_identifier(namespace, "MEMORY_NAMESPACE")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        backend = backend_from_env(env)
        redis_url = (env.get("REDIS_URL") or "").strip()
        try:
            feed = _feed_from_env(env, redis_url, backend)
        except BaseException:
            _close_soon(backend)
            raise
        try:
            from primitives.llm.config import llm_from_env

            llm = llm_from_env(env)
        except BaseException:
            _close_soon(backend)
            raise
        memory = cls(
            backend,
            namespace=namespace,
            feed=feed,
            agent_id=(env.get("MEMORY_AGENT_ID") or "").strip() or None,
            single_user=single in ("1", "true", "yes", "on"),
            llm=llm,
        )
        memory._owns_feed = memory.feed is not None
        return memory

    @property
    def backend_name(self) -> str:
        """The configured backend's name (what serves calls while it is healthy)."""
        return self.backend.name

    def _ns(self, namespace: str | None) -> str:
        return self.namespace if namespace is None else namespace

    # -- long-term memory --------------------------------------------------------------------

    async def remember(
        self,
        text: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        memory_type: MemoryType | str = MemoryType.EPISODIC,
        topics: Sequence[str] | None = (),
        metadata: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        created_at: datetime | None = None,
        id: str | None = None,
    ) -> MemoryRecord:
        """Store one memory (in ``namespace``, the memory's by default) and return it as
        stored (see :class:`MemoryRecord` for the fields and what each accepts).

        Raises:
            InvalidRecordError: a field is not accepted (``InvalidRecordTypeError`` for wrong
                types); nothing is stored.
        """
        kwargs: dict[str, Any] = {} if id is None else {"id": id}
        record = MemoryRecord(
            text=text,
            user_id=user_id,
            session_id=session_id,
            namespace=self._ns(namespace),
            memory_type=memory_type,  # type: ignore[arg-type]
            topics=topics,  # type: ignore[arg-type]
            metadata=metadata,  # type: ignore[arg-type]
            ttl=ttl,
            created_at=created_at,
            **kwargs,
        )
        (stored,) = await self.add([record])
        return stored

    async def add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        """Insert or replace records (see :meth:`MemoryBackend.add`), then announce one
        ``"upsert"`` event per record on the change feed (one round trip; see :meth:`_announce`)."""
        stored = await self.backend.add(records)
        for namespace, user_id, session_id in {(r.namespace, r.user_id, r.session_id) for r in stored}:
            self._context_cache.touch(namespace, user_id=user_id, session_id=session_id)
        await self._announce(
            ChangeEvent(r.id, "upsert", r.namespace, r.user_id, r.memory_type.value, r.updated_at, self.agent_id)
            for r in stored
            if r.updated_at is not None
        )
        return stored

    async def get(self, id: str, *, namespace: str | None = None) -> MemoryRecord | None:
        """The record ``id`` of ``namespace`` (the memory's by default), or ``None``.

        Raises:
            InvalidInputError: ``id`` or ``namespace`` is not an identifier.
            CorruptRecordError: the stored record cannot be decoded (its key is named).
        """
        return await self.backend.get(id, namespace=self._ns(namespace))

    async def delete(self, ids: Sequence[str], *, namespace: str | None = None) -> int:
        """Delete records of ``namespace`` (the memory's by default) by id; returns how many
        existed.

        With a change feed, the records are read first (to learn their user and type) and a
        ``"delete"`` event is announced for each one that existed then, stamped with the time
        of the delete (a damaged record is announced with ``memory_type`` ``"unknown"``).

        Raises:
            InvalidInputError: ``ids`` is not a list or tuple of identifiers, or ``namespace``
                is not an identifier; nothing is deleted.
        """
        ns = self._ns(namespace)
        if self.feed is None:
            deleted = await self.backend.delete(ids, namespace=ns)
            self._context_cache.touch(ns)
            return deleted

        async def lookup(id: str) -> tuple[str, MemoryRecord | None | CorruptRecordError]:
            try:
                return id, await self.backend.get(id, namespace=ns)
            except CorruptRecordError as exc:
                return id, exc

        unique = list(dict.fromkeys(ids)) if isinstance(ids, (list, tuple)) else ids
        found = await asyncio.gather(*(lookup(i) for i in unique)) if isinstance(unique, list) else []
        deleted = await self.backend.delete(ids, namespace=ns)
        self._context_cache.touch(ns)
        now = datetime.now(timezone.utc)
        await self._announce(
            ChangeEvent(id, "delete", ns, r.user_id, r.memory_type.value, now, self.agent_id)
            if isinstance(r, MemoryRecord)
            else ChangeEvent(id, "delete", ns, None, "unknown", now, self.agent_id)
            for id, r in found
            if r is not None
        )
        return deleted

    # -- change feed -------------------------------------------------------------------------

    async def _announce(self, events: Any) -> None:
        """Publish change events after a successful write. A feed that is unreachable does not
        fail the write: the events stay pending in the feed (bounded) and go out ahead of the
        next publish (or :meth:`aclose`'s flush); the feed logs the outage once."""
        batch = list(events)
        if self.feed is None or not batch:
            return
        try:
            await self.feed.publish(batch)
        except BackendUnavailableError as exc:
            logger.debug("change feed unreachable, %d event(s) pending: %s", self.feed.pending, exc)

    def subscribe(self, *, after: str | None = None, namespace: str | None = None) -> ChangeSubscription:
        """Changes made by other agents: an async iterator of
        :class:`~primitives.sync.feed.ChangeEvent` (this memory's own are filtered out).

        Args:
            after: ``None``/``"$"`` for changes from the start of the subscription on, ``"0"``
                for every change the feed still keeps, or a position (``event.position`` or
                the subscription's ``position``) to resume after.
            namespace: Only this namespace's changes (``None``: every namespace).

        Use ``async with memory.subscribe() as changes: async for event in changes: ...``
        (entering starts listening). See :class:`~primitives.sync.feed.ChangeSubscription`
        for the guarantees and the errors iteration raises.

        Raises:
            ConfigurationError: this memory has no change feed.
            InvalidStreamIdError: ``after`` is malformed.
        """
        if self.feed is None:
            raise ConfigurationError(
                "this Memory has no change feed: pass feed= (InMemoryChangeFeed or RedisChangeFeed) "
                "or build it with Memory.from_env() without MEMORY_CHANGE_FEED=0"
            )
        return self.feed.subscribe(after=after, namespace=namespace, exclude_origin=self.agent_id)

    def _filter(
        self,
        user_id: str | None,
        session_id: str | None,
        namespace: str | None,
        memory_type: MemoryType | str | Sequence[str] | None,
        topics: Sequence[str] | None,
    ) -> dict[str, Any]:
        return {
            "namespace": self._ns(namespace),
            "user_id": user_id,
            "session_id": session_id,
            "memory_type": memory_type,
            "topics": topics,
        }

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        memory_type: MemoryType | str | Sequence[str] | None = None,
        topics: Sequence[str] | None = None,
        limit: int = 10,
        mode: str | None = None,
        as_of: datetime | None = None,
        include_superseded: bool = False,
        ranking: RankingSignals | None = None,
        created_at: Mapping[str, datetime] | None = None,
    ) -> SearchResult:
        """Long-term memories relevant to ``query`` in one namespace (the memory's by default).

        ``None`` arguments do not restrict (``user_id=None`` searches every user of the
        namespace: this low-level call does not apply the ``single_user`` policy, which
        :meth:`recall` does); ``topics`` and a list of memory types match any of the given
        values, each exactly; ``mode`` is ``"keyword"``, ``"vector"``, ``"hybrid"`` or ``None``
        (the backend's default). See :meth:`MemoryBackend.search` for ordering, scores and
        errors.

        Facts that were superseded (``valid_to`` in the past, see :mod:`primitives.memory.facts`)
        and bookkeeping records are left out unless ``include_superseded``; ``as_of`` (an aware
        datetime) returns only what was known and true at that time. ``ranking`` adds recency
        and importance to relevance (:mod:`primitives.memory.ranking`; scores are then that sum).
        ``created_at`` keeps records written in a time range, ``{"gte"|"gt": t0, "lte"|"lt": t1}``
        with aware datetimes (one bound or both; docs/temporal.md).

        Raises:
            InvalidInputError: ``as_of`` is not an aware datetime, ``include_superseded`` not a
                bool; and see :meth:`MemoryBackend.search`.
        """
        flt = self._filter(user_id, session_id, namespace, memory_type, topics)
        if created_at is not None:
            flt["created_at"] = created_at
        limit = check_limit(limit)
        if as_of is not None:
            as_of = check_aware_datetime(as_of, "as_of")
        check_bool(include_superseded, "include_superseded")
        if ranking is not None and not isinstance(ranking, RankingSignals):
            raise InvalidInputTypeError(f"ranking must be a RankingSignals, got {type(ranking).__name__}")
        now = datetime.now(timezone.utc)
        # reranking looks at more candidates than it returns; filtering refetches when it removed hits
        fetch = min(MAX_LIMIT, max(limit * 3, 30)) if ranking is not None and ranking.active else limit
        while True:
            result = await self.backend.search(query, filter=flt, limit=fetch, mode=mode)
            hits = [h for h in result.hits if visible(h.record, now, as_of, include_superseded)]
            if len(hits) >= limit or len(result.hits) < fetch or fetch >= MAX_LIMIT:
                break
            fetch = min(MAX_LIMIT, fetch * 4)
        if ranking is not None:
            hits = rerank(hits, ranking, now)
        if ranking is None and len(hits) == len(result.hits) and len(hits) <= limit:
            return result
        return SearchResult(hits[:limit], result.backend, result.degraded, result.skipped)

    async def count(self, *, namespace: str | None = None, user_id: str | None = None) -> int:
        """Number of live records in ``namespace`` (the memory's by default), optionally one user's."""
        return await self.backend.count({"namespace": self._ns(namespace), "user_id": user_id})

    # -- skills ------------------------------------------------------------------------------

    async def record_skill_execution(
        self, name: str, *, success: bool, duration_s: float, namespace: str | None = None
    ) -> SkillStats:
        """Record one execution of skill ``name`` (in the memory's namespace by default) and
        return its updated statistics: executions, success rate, mean duration in seconds.
        Atomic under concurrency; see :meth:`MemoryBackend.record_skill_execution`.

        Raises:
            InvalidInputError: ``name`` not an identifier, ``success`` not a bool,
                ``duration_s`` negative or not finite.
            NotImplementedError: the backend keeps no statistics (the Agent Memory Server).
        """
        stats = await self.backend.record_skill_execution(
            name, success=success, duration_s=duration_s, namespace=self._ns(namespace)
        )
        self._context_cache.touch(self._ns(namespace))  # contexts show success rates
        return stats

    async def skill_stats(self, name: str, *, namespace: str | None = None) -> SkillStats | None:
        """Statistics of skill ``name`` (in the memory's namespace by default), or ``None``."""
        return await self.backend.skill_stats(name, namespace=self._ns(namespace))

    # -- working memory ----------------------------------------------------------------------

    async def append_messages(
        self, session_id: str, messages: Sequence[Message], *, namespace: str | None = None
    ) -> None:
        """Append messages to the working memory of ``session_id`` in ``namespace`` (the
        memory's by default)."""
        await self.backend.append_messages(session_id, messages, namespace=self._ns(namespace))
        self._context_cache.touch(self._ns(namespace), session_id=session_id)

    async def get_messages(
        self, session_id: str, limit: int | None = None, *, namespace: str | None = None
    ) -> list[Message]:
        """The session's last ``limit`` messages (all when ``None``), oldest first."""
        return await self.backend.get_messages(session_id, limit, namespace=self._ns(namespace))

    async def clear_session(self, session_id: str, *, namespace: str | None = None) -> None:
        """Forget the working memory of ``session_id`` in ``namespace``."""
        await self.backend.clear_session(session_id, namespace=self._ns(namespace))
        self._context_cache.touch(self._ns(namespace), session_id=session_id)

    async def recall(
        self,
        query: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        namespace: str | None = None,
        limit: int = 5,
        working_memory_limit: int = 20,
        mode: str | None = None,
        ranking: RankingSignals | None = None,
        created_at: Mapping[str, datetime] | None = None,
    ) -> Recall:
        """Working memory of ``session_id`` plus long-term hits for ``query`` of ``user_id``,
        in one call; what :class:`MemoryPrimitive` outputs. ``ranking``, ``created_at``: see
        :meth:`search`.

        Raises:
            UnscopedAccessError: ``user_id`` is ``None`` and the memory is not ``single_user``
                (it would return every user's memories).
            InvalidInputError, InvalidFilterError: see :meth:`search` and :meth:`get_messages`.
        """
        if user_id is None and not self.single_user:
            raise UnscopedAccessError(
                "recall without a user_id on a multi-user memory would mix every user's memories; "
                "pass user_id (in a pipeline: WorkflowContext(metadata={'user_id': ...})), or "
                "declare the memory single-user: Memory(..., single_user=True) or MEMORY_SINGLE_USER=1"
            )
        messages = (
            await self.get_messages(session_id, working_memory_limit, namespace=namespace)
            if session_id is not None
            else []
        )
        result = await self.search(query, user_id=user_id, namespace=namespace, limit=limit, mode=mode, ranking=ranking,
                                   created_at=created_at)
        return Recall(messages, result.hits, result.backend, result.degraded, result.skipped)

    # -- sync with a data cloud --------------------------------------------------------------

    async def export_to(self, target: Warehouse, **options: Any) -> ExportReport:
        """Send this store's changes since the last export to ``target`` (an opened
        :class:`~primitives.sync.warehouse.Warehouse`); ``options`` as
        :func:`~primitives.sync.engine.export_changes` (``batch_size``, ``since``, ``dry_run``).

        Raises:
            NotImplementedError: the backend cannot list its changes (the Agent Memory Server).
            SyncTargetUnavailableError, BackendUnavailableError: see ``export_changes``.
        """
        return await export_changes(StoreSource(self.backend), target, **options)

    async def import_from(self, target: Warehouse, **options: Any) -> ImportReport:
        """Apply ``target``'s rows since the last import to this store, last writer wins;
        ``options`` as :func:`~primitives.sync.engine.import_changes`.

        Raises:
            NotImplementedError, SyncTargetUnavailableError, BackendUnavailableError: as
                :meth:`export_to`.
        """
        return await import_changes(target, StoreSource(self.backend), **options)

    # -- lifecycle ---------------------------------------------------------------------------

    async def health(self) -> Health:
        """The backend's health; see :meth:`MemoryBackend.health`."""
        return await self.backend.health()

    async def aclose(self) -> None:
        """Close the backend, and the change feed when :meth:`from_env` made it (after one
        attempt to publish events still pending), after the background extractions finish."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        try:
            if self._owns_feed and self.feed is not None:
                if self.feed.pending:
                    try:
                        await self.feed.publish([])
                    except BackendUnavailableError:
                        logger.warning("change feed: %d event(s) not published, its Redis is unreachable at exit",
                                       self.feed.pending)
                await self.feed.aclose()
        finally:
            await self.backend.aclose()

    async def __aenter__(self) -> Memory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _close_soon(backend: MemoryBackend) -> None:
    """Close a backend built by :meth:`Memory.from_env` that will not be returned (nothing is
    connected yet; this releases its files)."""
    close = backend.aclose()
    try:
        asyncio.get_running_loop().create_task(close)
    except RuntimeError:  # no loop: run it now
        asyncio.run(close)
