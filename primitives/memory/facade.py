"""``Memory``: the facade pipelines and applications talk to, over one configured backend."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from datetime import datetime, timezone
from typing import Any

from primitives.embeddings.config import embedder_from_env
from primitives.errors import BackendUnavailableError, ConfigurationError
from primitives.memory.backend import Health, MemoryBackend, SearchResult
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.outbox import Outbox
from primitives.memory.resilient import ResilientBackend
from primitives.memory.record import DEFAULT_NAMESPACE, MemoryRecord, MemoryType, Message, SearchHit, default_ttls_from_env
from primitives.memory.skills import SkillStats
from primitives.sync.feed import ChangeEvent, ChangeFeed, ChangeSubscription, InMemoryChangeFeed

__all__ = ["Memory", "Recall", "BACKEND_CHOICES", "outbox_path"]

logger = logging.getLogger(__name__)

#: Values accepted by ``MEMORY_BACKEND`` (and ``--backend``).
BACKEND_CHOICES = ("auto", "inmemory", "redis", "ams")


@dataclass(frozen=True, slots=True)
class Recall:
    """What :meth:`Memory.recall` found for one query.

    Attributes:
        working_memory: The session's recent messages, oldest first (empty without a session).
        hits: Long-term memories relevant to the query, best first.
        backend: Name of the backend that served the call.
        degraded: ``True`` when a fallback served it because the configured backend was down.
    """

    working_memory: list[Message]
    hits: list[SearchHit]
    backend: str
    degraded: bool = False


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigurationError(f"{name} must be > 0, got {value}")
    return value


def outbox_path(env: Mapping[str, str], url: str, prefix: str) -> Path:
    """Where the durable outbox of a store lives: ``MEMORY_OUTBOX_PATH``, else one file per
    store (server address and key prefix, never the password) under
    ``$XDG_CACHE_HOME/memory-primitives`` (``~/.cache/memory-primitives``)."""
    explicit = env.get("MEMORY_OUTBOX_PATH")
    if explicit:
        return Path(explicit)
    parts = urlsplit(url)
    identity = f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}|{prefix}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "memory-primitives" / f"outbox-{digest}.sqlite3"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be >= 1, got {value}")
    return value


def _ams_backend(
    env: Mapping[str, str], url: str, working_memory_size: int, default_ttls: Mapping[MemoryType, float | None]
) -> MemoryBackend:
    """The Agent Memory Server backend ``MEMORY_BACKEND=ams`` (or auto with
    ``AGENT_MEMORY_SERVER_URL``) describes, in the resilient wrapper unless ``MEMORY_RESILIENT``
    is off. Variables: ``AGENT_MEMORY_SERVER_URL``, ``AGENT_MEMORY_SERVER_TOKEN`` (bearer token
    for AMS token auth), ``MEMORY_AMS_PREFIX`` (partition of a shared server, default none),
    ``MEMORY_AMS_DEDUPLICATE`` (default off: AMS deduplication may call an LLM),
    ``MEMORY_AMS_CONNECT_TIMEOUT`` (seconds, default 2)."""
    if not url:
        raise ConfigurationError(
            "MEMORY_BACKEND=ams needs AGENT_MEMORY_SERVER_URL (http://host:port of an Agent Memory Server)"
        )
    try:
        from primitives.memory.ams_backend import AgentMemoryServerBackend
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from exc
    prefix = env.get("MEMORY_AMS_PREFIX") or ""
    backend: MemoryBackend = AgentMemoryServerBackend(
        url,
        token=(env.get("AGENT_MEMORY_SERVER_TOKEN") or "").strip() or None,
        prefix=prefix,
        deduplicate=(env.get("MEMORY_AMS_DEDUPLICATE") or "0").strip().lower() in ("1", "true", "yes", "on"),
        working_memory_size=working_memory_size,
        connect_timeout=_env_float(env, "MEMORY_AMS_CONNECT_TIMEOUT", 2.0),
        default_ttls=default_ttls,
    )
    if (env.get("MEMORY_RESILIENT") or "1").strip().lower() not in ("0", "false", "no", "off"):
        backend = ResilientBackend(backend, outbox=Outbox(outbox_path(env, url, prefix or "ams")))
    return backend


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
            raise ConfigurationError(str(exc)) from exc
        return RedisChangeFeed.from_url(
            redis_url,
            cluster=cluster_from_env(env),
            prefix=env.get("MEMORY_REDIS_PREFIX") or "memory:",
            maxlen=_env_int(env, "MEMORY_CHANGE_FEED_MAXLEN", DEFAULT_MAXLEN),
            socket_connect_timeout=_env_float(env, "MEMORY_REDIS_CONNECT_TIMEOUT", 2.0),
        )
    if isinstance(backend, InMemoryBackend):
        return InMemoryChangeFeed(maxlen=_env_int(env, "MEMORY_CHANGE_FEED_MAXLEN", 100_000))
    return None


class Memory:
    """Long-term and working memory for agents, over one :class:`MemoryBackend`.

    Args:
        backend: Where memories live.
        namespace: Namespace for writes and searches that do not name one.
        feed: Change feed on which every write and delete made through this memory is
            announced, and from which :meth:`subscribe` hears other agents' changes (``None``:
            no announcements). Several memories share a store by sharing its feed.
        agent_id: This agent's id, the ``origin`` of its change events (default: a random
            UUID hex, new for every ``Memory``).

    Use ``async with Memory.from_env() as memory: ...`` or call :meth:`aclose`.

    Raises:
        TypeError: ``backend`` is not a ``MemoryBackend``, or ``feed`` not a ``ChangeFeed``.
        ConfigurationError: ``agent_id`` is not a non-empty str.
    """

    def __init__(
        self,
        backend: MemoryBackend,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        feed: ChangeFeed | None = None,
        agent_id: str | None = None,
    ) -> None:
        if not isinstance(backend, MemoryBackend):
            raise TypeError(f"backend must be a MemoryBackend, got {type(backend).__name__}")
        if feed is not None and not isinstance(feed, ChangeFeed):
            raise TypeError(f"feed must be a ChangeFeed, got {type(feed).__name__}")
        if agent_id is not None and (not isinstance(agent_id, str) or not agent_id.strip()):
            raise ConfigurationError(f"agent_id must be a non-empty str, got {agent_id!r}")
        self.backend = backend
        self.namespace = namespace
        self.feed = feed
        self.agent_id = agent_id or uuid.uuid4().hex
        self._owns_feed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Memory:
        """Build the memory the environment describes.

        Variables: ``MEMORY_BACKEND`` (``auto`` default, ``inmemory`` or ``redis``; ``auto`` is
        Redis when ``REDIS_URL`` is set, else in-process), ``REDIS_URL``, ``MEMORY_REDIS_PREFIX``
        (key prefix, default ``"memory:"``), ``MEMORY_NAMESPACE`` (default ``"default"``),
        ``MEMORY_MAXSIZE`` (records kept in process, default 100000),
        ``MEMORY_WORKING_MEMORY_SIZE`` (messages kept per session, default 50),
        ``MEMORY_REDIS_CONNECT_TIMEOUT`` (seconds, default 2), ``MEMORY_RESILIENT`` (default on:
        Redis is wrapped in :class:`ResilientBackend` with an in-process fallback and a durable
        outbox at ``MEMORY_OUTBOX_PATH`` or :func:`outbox_path`'s default). Nothing connects
        here: a Redis backend connects on its first call. The in-process and Redis backends get
        the embedder the ``MEMORY_EMBEDDINGS*`` variables describe
        (:func:`~primitives.embeddings.config.embedder_from_env`; none by default: keyword
        search), which makes ``hybrid`` their default search mode.
        ``MEMORY_BACKEND=ams`` selects the Agent Memory Server, as ``auto`` does whenever
        ``AGENT_MEMORY_SERVER_URL`` is set (it takes precedence over ``REDIS_URL``); its
        variables: :func:`_ams_backend`. The change feed (on by default,
        ``MEMORY_CHANGE_FEED=0`` turns it off) is a ``RedisChangeFeed`` on ``REDIS_URL`` when
        it is set, else an in-process one for the in-process backend (see
        :func:`_feed_from_env`); ``MEMORY_AGENT_ID`` names this agent (default: random).
        ``MEMORY_TTL_WORKING``, ``MEMORY_TTL_EPISODIC``, ``MEMORY_TTL_SEMANTIC`` and
        ``MEMORY_TTL_SKILL`` override the memory types' default lifetimes for every backend
        (seconds, or ``never``; :func:`~primitives.memory.record.default_ttls_from_env`).

        Args:
            env: Variables to read instead of ``os.environ``.

        Raises:
            ConfigurationError: a variable has a value that is not accepted, ``redis`` without
                ``REDIS_URL``, a malformed ``REDIS_URL``, or redis-py missing (likewise ``ams``
                without ``AGENT_MEMORY_SERVER_URL``, a malformed one, or agent-memory-client missing).
        """
        env = os.environ if env is None else env
        choice = (env.get("MEMORY_BACKEND") or "auto").strip().lower().replace("-", "")
        if choice not in BACKEND_CHOICES:
            raise ConfigurationError(
                f"MEMORY_BACKEND={env.get('MEMORY_BACKEND')!r} is not supported; "
                f"accepted: {', '.join(BACKEND_CHOICES)}"
            )
        redis_url = (env.get("REDIS_URL") or "").strip()
        ams_url = (env.get("AGENT_MEMORY_SERVER_URL") or "").strip()
        if choice == "auto":  # the Agent Memory Server first: it is the richer store
            choice = "ams" if ams_url else "redis" if redis_url else "inmemory"
        working_memory_size = _env_int(env, "MEMORY_WORKING_MEMORY_SIZE", 50)
        default_ttls = default_ttls_from_env(env)
        backend: MemoryBackend
        if choice == "redis":
            if not redis_url:
                raise ConfigurationError(
                    "MEMORY_BACKEND=redis needs REDIS_URL (redis://host:port); to run one locally: "
                    "memory-primitives redis start"
                )
            try:
                from primitives.memory.redis_backend import RedisBackend
            except ImportError as exc:
                raise ConfigurationError(str(exc)) from exc
            prefix = env.get("MEMORY_REDIS_PREFIX") or "memory:"
            backend = RedisBackend(
                redis_url,
                prefix=prefix,
                working_memory_size=working_memory_size,
                socket_connect_timeout=_env_float(env, "MEMORY_REDIS_CONNECT_TIMEOUT", 2.0),
                embedder=embedder_from_env(env),
                default_ttls=default_ttls,
            )
            if (env.get("MEMORY_RESILIENT") or "1").strip().lower() not in ("0", "false", "no", "off"):
                backend = ResilientBackend(backend, outbox=Outbox(outbox_path(env, redis_url, prefix)))
        elif choice == "ams":
            backend = _ams_backend(env, ams_url, working_memory_size, default_ttls)
        else:
            backend = InMemoryBackend(
                maxsize=_env_int(env, "MEMORY_MAXSIZE", 100_000),
                working_memory_size=working_memory_size,
                embedder=embedder_from_env(env),
                default_ttls=default_ttls,
            )
        memory = cls(
            backend,
            namespace=env.get("MEMORY_NAMESPACE") or DEFAULT_NAMESPACE,
            feed=_feed_from_env(env, redis_url, backend),
            agent_id=(env.get("MEMORY_AGENT_ID") or "").strip() or None,
        )
        memory._owns_feed = memory.feed is not None
        return memory

    @property
    def backend_name(self) -> str:
        """The configured backend's name (what serves calls while it is healthy)."""
        return self.backend.name

    # -- long-term memory --------------------------------------------------------------------

    async def remember(
        self,
        text: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        memory_type: MemoryType | str = MemoryType.EPISODIC,
        topics: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        created_at: datetime | None = None,
        id: str | None = None,
    ) -> MemoryRecord:
        """Store one memory and return it as stored (see :class:`MemoryRecord` for the fields).

        Raises:
            InvalidRecordError: a field is not accepted (``InvalidRecordTypeError`` for wrong types).
        """
        kwargs: dict[str, Any] = {} if id is None else {"id": id}
        record = MemoryRecord(
            text=text,
            user_id=user_id,
            session_id=session_id,
            namespace=namespace or self.namespace,
            memory_type=memory_type,  # type: ignore[arg-type]
            topics=tuple(topics),
            metadata=dict(metadata) if metadata else {},
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
        await self._announce(
            ChangeEvent(r.id, "upsert", r.namespace, r.user_id, r.memory_type.value, r.updated_at, self.agent_id)
            for r in stored
            if r.updated_at is not None
        )
        return stored

    async def get(self, id: str) -> MemoryRecord | None:
        """The record with ``id``, or ``None``."""
        return await self.backend.get(id)

    async def delete(self, ids: Sequence[str]) -> int:
        """Delete records by id; returns how many existed.

        With a change feed, the records are read first (to learn their namespace, user and
        type) and a ``"delete"`` event is announced for each one that existed then, stamped
        with the time of the delete.
        """
        if self.feed is None:
            return await self.backend.delete(ids)
        found = await asyncio.gather(*(self.backend.get(i) for i in dict.fromkeys(ids)))
        deleted = await self.backend.delete(ids)
        now = datetime.now(timezone.utc)
        await self._announce(
            ChangeEvent(r.id, "delete", r.namespace, r.user_id, r.memory_type.value, now, self.agent_id)
            for r in found
            if r is not None
        )
        return deleted

    # -- change feed -------------------------------------------------------------------------

    async def _announce(self, events: Any) -> None:
        """Publish change events after a successful write. A feed that is unreachable does not
        fail the write: the events stay pending in the feed (bounded) and go out ahead of the
        next publish (or :meth:`aclose`'s flush); a warning is logged."""
        batch = list(events)
        if self.feed is None or not batch:
            return
        try:
            await self.feed.publish(batch)
        except BackendUnavailableError as exc:
            logger.warning("change feed unreachable, %d event(s) pending: %s", self.feed.pending, exc)

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
        flt: dict[str, Any] = {"namespace": namespace or self.namespace}
        if user_id is not None:
            flt["user_id"] = user_id
        if session_id is not None:
            flt["session_id"] = session_id
        if memory_type is not None:
            flt["memory_type"] = memory_type
        if topics is not None:
            flt["topics"] = topics
        return flt

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
    ) -> SearchResult:
        """Long-term memories relevant to ``query`` in one namespace (the memory's by default).

        ``None`` arguments do not restrict; ``topics`` and a list of memory types match any of
        the given values; ``mode`` is ``"keyword"``, ``"vector"``, ``"hybrid"`` or ``None`` (the
        backend's default). See :meth:`MemoryBackend.search` for ordering, scores and errors.
        """
        flt = self._filter(user_id, session_id, namespace, memory_type, topics)
        return await self.backend.search(query, filter=flt, limit=limit, mode=mode)

    async def count(self, *, namespace: str | None = None, user_id: str | None = None) -> int:
        """Number of live records in ``namespace`` (the memory's by default), optionally one user's."""
        return await self.backend.count({"namespace": namespace or self.namespace, "user_id": user_id})

    # -- skills ------------------------------------------------------------------------------

    async def record_skill_execution(
        self, name: str, *, success: bool, duration_s: float, namespace: str | None = None
    ) -> SkillStats:
        """Record one execution of skill ``name`` (in the memory's namespace by default) and
        return its updated statistics: executions, success rate, mean duration in seconds.
        Atomic under concurrency; see :meth:`MemoryBackend.record_skill_execution`.

        Raises:
            InvalidInputError: ``name`` empty, ``success`` not a bool, ``duration_s`` negative
                or not finite.
            NotImplementedError: the backend keeps no statistics (the Agent Memory Server).
        """
        return await self.backend.record_skill_execution(
            name, success=success, duration_s=duration_s, namespace=namespace or self.namespace
        )

    async def skill_stats(self, name: str, *, namespace: str | None = None) -> SkillStats | None:
        """Statistics of skill ``name`` (in the memory's namespace by default), or ``None``."""
        return await self.backend.skill_stats(name, namespace=namespace or self.namespace)

    # -- working memory ----------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        """Append messages to a session's working memory."""
        await self.backend.append_messages(session_id, messages)

    async def get_messages(self, session_id: str, limit: int | None = None) -> list[Message]:
        """The session's last ``limit`` messages (all when ``None``), oldest first."""
        return await self.backend.get_messages(session_id, limit)

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
    ) -> Recall:
        """Working memory of ``session_id`` plus long-term hits for ``query`` (one user's when
        ``user_id`` is given), in one call; what :class:`MemoryPrimitive` outputs."""
        messages = (
            await self.backend.get_messages(session_id, working_memory_limit)
            if session_id is not None
            else []
        )
        result = await self.search(query, user_id=user_id, namespace=namespace, limit=limit, mode=mode)
        return Recall(messages, result.hits, result.backend, result.degraded)

    # -- lifecycle ---------------------------------------------------------------------------

    async def health(self) -> Health:
        """The backend's health; see :meth:`MemoryBackend.health`."""
        return await self.backend.health()

    async def aclose(self) -> None:
        """Close the backend, and the change feed when :meth:`from_env` made it (after one
        attempt to publish events still pending)."""
        try:
            if self._owns_feed and self.feed is not None:
                if self.feed.pending:
                    try:
                        await self.feed.publish([])
                    except BackendUnavailableError as exc:
                        logger.warning("change feed: %d event(s) not published: %s", self.feed.pending, exc)
                await self.feed.aclose()
        finally:
            await self.backend.aclose()

    async def __aenter__(self) -> Memory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
