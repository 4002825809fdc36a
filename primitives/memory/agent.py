"""The agent-memory API: steps, episodes, skills and knowledge of one agent, over :class:`Memory`.

``memory = await create_memory_adapter(backend="inmemory", agent_id="planner", session_id="s-1")``
gives an :class:`AgentMemory` with the methods users of the original Redis agent memory adapter
call (``add_step``, ``save_episode``, ``save_skill``, ``record_skill_execution``,
``search_episodes``, ``search_all``, ``get_enriched_context``, ``rotate_session``,
``get_session_history``, ``close``), on any backend. Everything is an ordinary record (see
:mod:`primitives.memory.kinds`), so it syncs, fails over and is searched like any memory.

Scope: the agent's records carry ``user_id`` = the adapter's ``user_id`` (default: the agent id),
so two agents (or two users) never see each other's episodes, knowledge or skills; steps live in
the working memory of the current session.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from primitives.errors import ConfigurationError, InvalidInputError, InvalidInputTypeError
from primitives.memory.facade import Memory
from primitives.memory.facts import NewFact, remember_facts
from primitives.memory.kinds import INTERNAL, KIND, Episode, SemanticMemory, Skill, Step, digest, step_messages
from primitives.memory.record import MemoryRecord, MemoryType
from primitives.memory.skills import check_skill_execution, check_skill_name, stats_from_metadata
from primitives.validation import (
    MAX_IDENTIFIER_CHARS,
    check_bool,
    check_identifier,
    check_items,
    check_limit,
    check_number,
    check_text,
)

__all__ = ["AgentMemory", "create_memory_adapter", "ADAPTER_BACKENDS"]

#: ``backend=`` values of :func:`create_memory_adapter` -> ``MEMORY_BACKEND`` values.
ADAPTER_BACKENDS = {"redis": "redis", "inmemory": "inmemory", "in-memory": "inmemory", "memory": "inmemory", "ams": "ams"}

#: Sessions kept in an agent's session chain (oldest dropped first).
MAX_CHAIN = 1000


def _short(*parts: str) -> str:
    return digest(*parts)[:32]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _chain_sessions(record: MemoryRecord | None) -> list[Any]:
    """The ``sessions`` list of a session-chain record (empty when absent or damaged: not a list)."""
    sessions = record.metadata.get("sessions") if record is not None else None
    return list(sessions) if isinstance(sessions, (list, tuple)) else []


class AgentMemory:
    """One agent's memory over a :class:`Memory` (see the module docstring).

    Args:
        memory: The memory to use.
        agent_id: The agent (an identifier).
        session_id: The current session (default: a new one, ``"<agent_id>-<12 hex>"``, the
            agent id cut to its first 1,011 characters).
        user_id: Whose memories these are (default: ``agent_id``).
        namespace: The namespace (default: the memory's).
        owns_memory: :meth:`close` also closes ``memory`` (``create_memory_adapter`` sets it).

    Raises:
        InvalidInputError: an id is not an identifier (``InvalidInputTypeError``, also a
            ``TypeError``, for a non-``str`` id or a ``memory`` that is not a ``Memory``).
    """

    def __init__(
        self,
        memory: Memory,
        *,
        agent_id: str,
        session_id: str | None = None,
        user_id: str | None = None,
        namespace: str | None = None,
        owns_memory: bool = False,
    ) -> None:
        if not isinstance(memory, Memory):
            raise InvalidInputTypeError(f"memory must be a Memory, got {type(memory).__name__}")
        self.memory = memory
        self.agent_id = check_identifier(agent_id, "agent_id")
        self.user_id = check_identifier(user_id, "user_id") if user_id is not None else self.agent_id
        self.namespace = check_identifier(namespace, "namespace") if namespace is not None else memory.namespace
        self.session_id = check_identifier(session_id, "session_id") if session_id is not None else self._new_session_id()
        self._owns_memory = owns_memory
        self._chained = False
        #: Whether the last search or context of this adapter was served by a fallback because
        #: the configured backend was down (``memory_backend``/``degraded`` of the pipeline steps).
        self.degraded = False

    def _new_session_id(self) -> str:
        # the agent id is cut so that the session id stays an identifier (at most 1,024 characters)
        return f"{self.agent_id[:MAX_IDENTIFIER_CHARS - 13]}-{uuid.uuid4().hex[:12]}"

    @property
    def backend_name(self) -> str:
        """The configured backend's name."""
        return self.memory.backend_name

    # -- working memory: steps -----------------------------------------------------------------

    async def add_step(self, action: str, observation: str, reasoning: str | None = None, success: bool = True) -> Step:
        """Append a step to the current session's working memory and return it as stored.

        Raises:
            InvalidInputError: ``action``/``observation`` not text (empty allowed), ``reasoning``
                neither text nor ``None``, ``success`` not a bool.
        """
        step = Step(
            check_text(action, "action"), check_text(observation, "observation"),
            None if reasoning is None else check_text(reasoning, "reasoning"), check_bool(success, "success"),
        )
        await self._chain()
        await self.memory.append_messages(self.session_id, [step.to_message()], namespace=self.namespace)
        return step

    async def get_steps(self, limit: int | None = None) -> list[Step]:
        """The current session's last ``limit`` steps (all kept when ``None``), oldest first."""
        if limit is not None:
            check_limit(limit)
        messages = await self.memory.get_messages(self.session_id, None, namespace=self.namespace)
        steps = step_messages(messages)
        return steps[-limit:] if limit is not None else steps

    # -- episodes ----------------------------------------------------------------------------

    async def save_episode(
        self,
        task_prompt: str,
        outcome: str,
        success: bool,
        duration_seconds: float,
        tags: Sequence[str] = (),
        importance: float = 0.5,
    ) -> str:
        """Store a finished task as an episodic memory; returns its ``memory_id``.

        The indexed text is the task and the outcome. Tags become topics (identifiers).

        Raises:
            InvalidInputError: empty ``task_prompt``, ``duration_seconds`` negative or not
                finite, ``importance`` outside ``[0, 1]``, a tag that is not an identifier.
        """
        task_prompt = check_text(task_prompt, "task_prompt")
        if not task_prompt.strip():
            raise InvalidInputError("task_prompt must not be empty")
        outcome = check_text(outcome, "outcome")
        success = check_bool(success, "success")
        duration = check_number(duration_seconds, "duration_seconds", minimum=0.0)
        importance = check_number(importance, "importance", minimum=0.0, maximum=1.0)
        tags = tuple(check_items(tags, "tags"))
        record = MemoryRecord(
            text=f"{task_prompt}\nOutcome: {outcome}",
            user_id=self.user_id, session_id=self.session_id, namespace=self.namespace,
            memory_type=MemoryType.EPISODIC, topics=tags,
            metadata={KIND: "episode", "task_prompt": task_prompt, "outcome": outcome, "success": success,
                      "duration_seconds": duration, "importance": importance, "agent_id": self.agent_id},
        )
        (stored,) = await self.memory.add([record])
        return stored.id

    async def search_episodes(self, query: str, limit: int = 5) -> list[Episode]:
        """Episodes of this scope relevant to ``query``, best first (task episodes and any other
        episodic memory of the user, e.g. stored conversation turns)."""
        result = await self.memory.search(query, user_id=self.user_id, namespace=self.namespace,
                                          memory_type=MemoryType.EPISODIC, limit=limit)
        self.degraded = result.degraded
        return [Episode.from_record(h.record, h.score) for h in result.hits]

    # -- knowledge ---------------------------------------------------------------------------

    async def save_knowledge(self, pattern: str, confidence: float = 0.5, subject: str | None = None,
                             tags: Sequence[str] = ()) -> str:
        """Store generalised knowledge (a semantic fact) with dedup and supersession (see
        :mod:`primitives.memory.facts`); returns the id of the stored fact, or of the existing
        fact it duplicates."""
        (write,) = await remember_facts(
            self.memory, [NewFact(pattern, subject=subject, importance=confidence, topics=tuple(check_items(tags, "tags")))],
            user_id=self.user_id, session_id=self.session_id, namespace=self.namespace, llm=self.memory.llm,
        )
        return write.record.id

    async def search_semantic(self, query: str, limit: int = 5) -> list[SemanticMemory]:
        """Current knowledge relevant to ``query``, best first (superseded facts left out)."""
        result = await self.memory.search(query, user_id=self.user_id, namespace=self.namespace,
                                          memory_type=MemoryType.SEMANTIC, limit=limit)
        self.degraded = result.degraded
        return [SemanticMemory.from_record(h.record, h.score) for h in result.hits]

    # -- skills ------------------------------------------------------------------------------

    def _skill_id(self, skill_name: str) -> str:
        return "skill-" + _short(self.user_id, skill_name)

    def _stats_key(self, skill_name: str) -> str:
        """The skill's name in the statistics (an identifier, unique per scope and skill):
        ``"<len(user_id)>:<user_id>:<skill_name>"``, or ``"#"`` and a digest of both when that is
        longer than an identifier may be (a readable key starts with a digit, so the two kinds
        never meet)."""
        key = f"{len(self.user_id)}:{self.user_id}:{skill_name}"
        return key if len(key) <= MAX_IDENTIFIER_CHARS else "#" + _short(self.user_id, skill_name)

    async def save_skill(self, skill_name: str, description: str, action_sequence: Sequence[str],
                         tags: Sequence[str] = ()) -> str:
        """Store (or replace) a skill of this scope; returns its ``memory_id`` (stable per
        ``skill_name``, so saving again updates it and keeps its statistics).

        Raises:
            InvalidInputError: ``skill_name`` not an identifier, ``action_sequence`` not a list
                or tuple of text.
        """
        skill_name = check_skill_name(skill_name)
        description = check_text(description, "description")
        steps = [check_text(s, "each action") for s in check_items(action_sequence, "action_sequence")]
        tags = tuple(check_items(tags, "tags"))
        existing = await self.memory.get(self._skill_id(skill_name), namespace=self.namespace)
        counts = {k: existing.metadata[k] for k in ("executions", "successes", "total_duration_s")
                  if existing is not None and k in existing.metadata}
        record = MemoryRecord(
            text=f"{skill_name}: {description}\n" + "\n".join(steps),
            id=self._skill_id(skill_name), user_id=self.user_id, namespace=self.namespace,
            memory_type=MemoryType.SKILL, topics=tags,
            metadata={KIND: "skill", "skill_name": skill_name, "description": description,
                      "action_sequence": steps, "agent_id": self.agent_id,
                      "stats_key": self._stats_key(skill_name), **counts},
        )
        (stored,) = await self.memory.add([record])
        return stored.id

    async def record_skill_execution(self, skill_name: str, success: bool, duration: float) -> Skill | None:
        """Record one execution of a skill of this scope (``duration`` in seconds) with
        :meth:`Memory.record_skill_execution` (atomic), and return the skill with its updated
        ``success_rate`` (``None`` when no skill of that name was saved; the execution still counts,
        except on the Agent Memory Server, see below).

        On a backend without atomic statistics (the Agent Memory Server) the counts are kept on
        the skill record by read-modify-write (concurrent executions may lose a count there), so
        an execution of a skill that was not saved yet is not counted.
        """
        duration = check_skill_execution(skill_name, success, duration)
        record = await self.memory.get(self._skill_id(skill_name), namespace=self.namespace)
        try:
            stats: Any = await self.memory.record_skill_execution(
                self._stats_key(skill_name), success=success, duration_s=duration, namespace=self.namespace)
        except NotImplementedError:
            if record is None:
                return None
            old = stats_from_metadata(skill_name, self.namespace, record.metadata, record.updated_at or _now())
            executions, successes, total = (old.executions, old.successes, old.total_duration_s) if old else (0, 0, 0.0)
            md = {**record.metadata, "executions": executions + 1, "successes": successes + int(success),
                  "total_duration_s": total + duration}
            (record,) = await self.memory.add([MemoryRecord(
                text=record.text, id=record.id, user_id=record.user_id, namespace=record.namespace,
                memory_type=record.memory_type, topics=record.topics, metadata=md, ttl=record.ttl)])
            stats = stats_from_metadata(skill_name, self.namespace, md, record.updated_at or _now())
        return None if record is None else Skill.from_record(record, stats)

    async def _skill(self, record: MemoryRecord, score: float | None) -> Skill:
        from primitives.memory.context import _skill_of
        from primitives.memory.record import SearchHit

        return await _skill_of(self.memory, SearchHit(record, score if score is not None else 0.0))

    async def get_skill(self, skill_name: str) -> Skill | None:
        """The skill ``skill_name`` of this scope with its statistics, or ``None``."""
        record = await self.memory.get(self._skill_id(check_skill_name(skill_name)), namespace=self.namespace)
        return None if record is None else await self._skill(record, None)

    async def search_skills(self, query: str, limit: int = 5) -> list[Skill]:
        """Skills of this scope relevant to ``query``, best first, with their statistics."""
        result = await self.memory.search(query, user_id=self.user_id, namespace=self.namespace,
                                          memory_type=MemoryType.SKILL, limit=limit)
        self.degraded = result.degraded
        return [await self._skill(h.record, h.score) for h in result.hits]

    # -- all together ------------------------------------------------------------------------

    async def search_all(self, query: str, limit_per_type: int = 3) -> dict[str, list[Any]]:
        """``{"episodic": [Episode], "semantic": [SemanticMemory], "skills": [Skill]}``, each best
        first, at most ``limit_per_type`` each."""
        return {
            "episodic": await self.search_episodes(query, limit_per_type),
            "semantic": await self.search_semantic(query, limit_per_type),
            "skills": await self.search_skills(query, limit_per_type),
        }

    async def get_enriched_context(self, query: str, detailed_steps: int = 5, limit_per_type: int = 2,
                                   budget_tokens: int = 2000) -> str:
        """A prompt block: the last ``detailed_steps`` steps and messages of the session, then
        relevant knowledge, episodes (with outcomes) and skills (with success rates), within
        ``budget_tokens`` (see :meth:`Memory.context`, which builds it)."""
        built = await self.memory.context(
            query, session_id=self.session_id, user_id=self.user_id, namespace=self.namespace,
            budget_tokens=budget_tokens, recent_messages=detailed_steps, limit_per_type=limit_per_type)
        self.degraded = built.degraded
        return built.text

    # -- sessions ----------------------------------------------------------------------------

    def _chain_id(self) -> str:
        return "session-chain-" + _short(self.user_id, self.agent_id)

    async def _chain(self, session_id: str | None = None) -> None:
        """Add the current session to the chain once (the first write of each session)."""
        if self._chained and session_id is None:
            return
        sid = session_id or self.session_id
        record = await self.memory.get(self._chain_id(), namespace=self.namespace)
        sessions = [s for s in _chain_sessions(record) if isinstance(s, Mapping)]
        if not any(s.get("session_id") == sid for s in sessions):
            sessions.append({"session_id": sid, "started_at": datetime.now(timezone.utc).isoformat()})
            await self.memory.add([MemoryRecord(
                text="", id=self._chain_id(), user_id=self.user_id, namespace=self.namespace,
                memory_type=MemoryType.WORKING, ttl=math.inf,
                metadata={INTERNAL: True, KIND: "session_chain", "agent_id": self.agent_id,
                          "sessions": sessions[-MAX_CHAIN:]})])
        self._chained = True

    async def rotate_session(self) -> str:
        """Start a new session (its working memory starts empty; the old session's stays until
        its ttl) and return its id; the chain of sessions is kept (:meth:`get_session_history`)."""
        await self._chain()
        self.session_id = self._new_session_id()
        await self._chain(self.session_id)
        return self.session_id

    async def get_session_history(self) -> list[str]:
        """This agent's session ids, oldest first, the current one last (at most the last 1000)."""
        record = await self.memory.get(self._chain_id(), namespace=self.namespace)
        ids = [s.get("session_id") for s in _chain_sessions(record)
               if isinstance(s, Mapping) and isinstance(s.get("session_id"), str)]
        if self.session_id not in ids:
            ids.append(self.session_id)
        return ids

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Release the memory when this adapter made it (``create_memory_adapter``)."""
        if self._owns_memory:
            await self.memory.aclose()

    async def __aenter__(self) -> AgentMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def create_memory_adapter(
    backend: str | None = None,
    *,
    agent_id: str = "agent",
    session_id: str | None = None,
    user_id: str | None = None,
    env: Mapping[str, str] | None = None,
    **memory_options: Any,
) -> AgentMemory:
    """The documented entry point of the agent-memory API.

    Args:
        backend: ``"redis"`` (``REDIS_URL``), ``"inmemory"`` or ``"ams"``
            (``AGENT_MEMORY_SERVER_URL``); ``None``: the environment's choice
            (``MEMORY_BACKEND``, see :meth:`Memory.from_env`).
        agent_id: The agent.
        session_id: The current session (default: a new one).
        user_id: Whose memories (default: ``agent_id``).
        env: Variables to read instead of ``os.environ``.
        memory_options: Passed to ``Memory.from_env`` results: ``llm=``, ``token_counter=`` are
            set on the memory.

    Returns:
        An :class:`AgentMemory` that owns its :class:`Memory` (``await memory.close()``).

    Raises:
        ConfigurationError: an unknown ``backend`` or option, or what :meth:`Memory.from_env` raises.
        InvalidInputError: ``agent_id``, ``session_id`` or ``user_id`` is not an identifier (the
            memory built for it is closed).
    """
    import os

    source = dict(os.environ if env is None else env)
    if backend is not None:
        if not isinstance(backend, str) or backend.strip().lower() not in ADAPTER_BACKENDS:
            raise ConfigurationError(f"backend must be one of 'redis', 'inmemory', 'ams' or None, got {backend!r}")
        source["MEMORY_BACKEND"] = ADAPTER_BACKENDS[backend.strip().lower()]
    memory = Memory.from_env(source)
    for key, value in memory_options.items():
        if key == "llm":
            from primitives.llm import as_llm

            memory.llm = as_llm(value) if value is not None else None
        elif key == "token_counter":
            memory._token_counter = value
        else:
            await memory.aclose()
            raise ConfigurationError(f"create_memory_adapter got an unknown option {key!r}; accepted: llm, token_counter")
    try:
        return AgentMemory(memory, agent_id=agent_id, session_id=session_id, user_id=user_id, owns_memory=True)
    except BaseException:  # a bad id: release what from_env opened (outbox file, connection pools, feed)
        await memory.aclose()
        raise
