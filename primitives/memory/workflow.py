"""``MemoryPrimitive`` and ``RememberPrimitive``: memory as steps of a pipeline.

``MemoryPrimitive(memory) >> responder >> RememberPrimitive(memory)``: the first step recalls, the
responder answers from what was recalled, the last step stores the turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from primitives.core.context import WorkflowContext
from primitives.core.instrumented import InstrumentedPrimitive
from primitives.errors import InvalidInputError, InvalidInputTypeError, UnscopedAccessError
from primitives.memory.ranking import RankingSignals
from primitives.memory.backend import check_mode
from primitives.memory.record import check_memory_type
from primitives.validation import INPUT, check_bool, check_identifier, check_int, check_limit
from primitives.memory.facade import Memory
from primitives.memory.record import MemoryRecord, MemoryType, Message
from primitives.memory.temporal import RESOLVED_DATES_KEY, resolved_dates_text

__all__ = ["MemoryPrimitive", "RememberPrimitive", "ExtractMemoriesPrimitive", "QUERY_STATE_KEY", "EXTRACTION_STATE_KEY"]

#: ``context.state`` key under which ``MemoryPrimitive`` leaves the user's query for
#: ``RememberPrimitive`` (which removes it once the turn is stored).
QUERY_STATE_KEY = "memory.query"


def _scope(context: WorkflowContext, memory: Memory) -> tuple[str, str | None]:
    """``(namespace, user_id)`` of a context: ``metadata["namespace"]`` (else the memory's) and
    ``metadata["user_id"]``, each an identifier when given.

    Raises:
        InvalidInputError: a ``namespace`` or ``user_id`` that is given but not an identifier
            (a non-str, an empty string): it is refused, never silently widened to the default.
        UnscopedAccessError: no ``user_id`` and the memory is not ``single_user``.
    """
    namespace = context.metadata.get("namespace")
    user_id = context.metadata.get("user_id")
    if namespace is not None:
        check_identifier(namespace, "context.metadata['namespace']")
    if user_id is not None:
        check_identifier(user_id, "context.metadata['user_id']")
    elif not memory.single_user:
        raise UnscopedAccessError(
            "this pipeline step has no user_id: set WorkflowContext(metadata={'user_id': ...}), or "
            "declare the memory single-user (Memory(..., single_user=True) or MEMORY_SINGLE_USER=1) "
            "to let every call see every user's memories of the namespace"
        )
    return (namespace if namespace is not None else memory.namespace), user_id


def _iso_utc(when: datetime | None) -> str | None:
    """``when`` as an ISO 8601 string in UTC (``+00:00``), ``None`` kept."""
    return None if when is None else when.astimezone(timezone.utc).isoformat()


def _plain(value: Any) -> Any:
    """A fresh copy of stored JSON (metadata, already validated by
    :func:`~primitives.validation.check_json_object`): mappings as ``dict``, sequences as
    ``list``, scalars as they are."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MemoryPrimitive(InstrumentedPrimitive[Any, dict[str, Any]]):
    """Recalls working memory and relevant long-term memories for the input's query.

    Input: a ``str`` (the query) or a mapping with the query under ``query_key``.
    Scope: ``context.session_id`` selects working memory; ``context.metadata["user_id"]``
    restricts long-term hits to that user, and is required unless the memory is
    ``single_user`` (an unscoped call raises :class:`~primitives.errors.UnscopedAccessError`
    rather than returning every user's memories); ``context.metadata["namespace"]`` overrides
    the memory's namespace.

    Output, a plain dict that survives ``json.dumps`` (``json.loads(json.dumps(out)) == out``
    whenever the input itself is JSON: every other value is a ``str``, ``int``, ``float``,
    ``bool``, ``None``, ``list`` or ``dict`` with ``str`` keys, freshly copied, so changing it
    changes nothing stored):
        ``input``: the input, unchanged (the same object).
        ``working_memory``: ``list[dict]``, the session's last ``working_memory_limit`` messages,
        oldest first (``[]`` without ``context.session_id``), each ``{"role": str, "content": str,
        "created_at": str | None (ISO 8601 in UTC, e.g. "2024-05-01T10:00:00.123456+00:00"),
        "metadata": dict (a JSON object, nested lists and objects as ``list``/``dict``)}``.
        ``relevant_memories``: ``list[dict]``, up to ``limit`` hits, best first, each
        ``{"id": str, "text": str, "score": float (higher is better; BM25 for keyword search,
        comparable only within one output), "metadata": dict (as above), "memory_type": str
        ("working", "episodic", "semantic" or "skill"), "created_at": str | None (ISO 8601 in
        UTC)}``.
        ``memory_backend``: ``str``, the backend that actually served the call (``"in-memory"``,
        ``"redis"`` or ``"agent-memory-server"``).
        ``degraded``: ``bool``, ``True`` when a fallback served it because the configured backend
        was down.
        ``skipped``: ``int``, damaged stored records the search left out (0 normally).
        With ``context_budget_tokens``: ``context`` (``str``) and ``context_items``
        (``list[dict]``, each ``{"section": str, "id": str | None, "line": str, "tokens": int,
        "reason": str, "score": float | None}``).

    Args:
        memory: The memory to read.
        limit: Long-term hits to return, ``>= 1``.
        working_memory_limit: Session messages to return, ``>= 1``.
        query_key: Where the query is when the input is a mapping.
        mode: Search mode, ``"keyword"``, ``"vector"`` or ``"hybrid"``; ``None`` (default) is the
            backend's default (hybrid when it has an embedder).
        ranking: Recency and importance signals added to relevance
            (:class:`~primitives.memory.ranking.RankingSignals`; ``None``: relevance only).
        context_budget_tokens: When set (``>= 1``), the output also has ``context``: a prompt
            block of recent messages, facts, episodes and skills within that many tokens (see
            :meth:`Memory.context`), and ``context_items``: what it includes and why.

    Raises:
        InvalidInputError: (from ``execute``) the input has no string query, or the context's
            ``user_id``/``namespace`` is not an identifier.
        UnscopedAccessError: (from ``execute``) no ``user_id`` on a multi-user memory.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        limit: int = 5,
        working_memory_limit: int = 20,
        query_key: str = "query",
        mode: str | None = None,
        context_budget_tokens: int | None = None,
        ranking: RankingSignals | None = None,
        **instrumentation: Any,
    ) -> None:
        super().__init__(**instrumentation)
        self.mode = check_mode(mode)
        if ranking is not None and not isinstance(ranking, RankingSignals):
            raise InvalidInputTypeError(f"ranking must be a RankingSignals, got {type(ranking).__name__}")
        self.ranking = ranking
        self.context_budget_tokens = (
            None if context_budget_tokens is None else check_int(context_budget_tokens, "context_budget_tokens", minimum=1)
        )
        self.memory = memory
        self.limit = check_limit(limit)
        self.working_memory_limit = check_limit(working_memory_limit, "working_memory_limit")
        self.query_key = query_key

    def _query(self, input: Any) -> str:
        if isinstance(input, str):
            return input
        if isinstance(input, Mapping):
            query = input.get(self.query_key)
            if isinstance(query, str):
                return query
        raise InvalidInputError(
            f"MemoryPrimitive takes a str or a mapping with a str under {self.query_key!r}, "
            f"got {type(input).__name__}"
        )

    async def _execute_impl(self, input: Any, context: WorkflowContext) -> dict[str, Any]:
        query = self._query(input)
        namespace, user_id = _scope(context, self.memory)
        context.state[QUERY_STATE_KEY] = query
        recall = await self.memory.recall(
            query,
            session_id=context.session_id,
            user_id=user_id,
            namespace=namespace,
            limit=self.limit,
            working_memory_limit=self.working_memory_limit,
            mode=self.mode,
            ranking=self.ranking,
        )
        out: dict[str, Any] = {
            "input": input,
            "working_memory": [
                {
                    "role": m.role,
                    "content": m.content,
                    "created_at": _iso_utc(m.created_at),
                    "metadata": _plain(m.metadata),
                }
                for m in recall.working_memory
            ],
            "relevant_memories": [
                {
                    "id": h.record.id,
                    "text": h.record.text,
                    "score": float(h.score),
                    "metadata": _plain(h.record.metadata),
                    "memory_type": h.record.memory_type.value,
                    "created_at": _iso_utc(h.record.created_at),
                }
                for h in recall.hits
            ],
            "memory_backend": str(recall.backend),
            "degraded": bool(recall.degraded),
            "skipped": int(recall.skipped),
        }
        if self.context_budget_tokens is not None:
            built = await self.memory.context(
                query, session_id=context.session_id, user_id=user_id, namespace=namespace,
                budget_tokens=self.context_budget_tokens, recent_messages=self.working_memory_limit,
                limit_per_type=self.limit, mode=self.mode,
            )
            out["context"] = built.text
            out["context_items"] = [
                {**i.to_dict(), "score": None if i.score is None else float(i.score)} for i in built.items
            ]
        return out


class RememberPrimitive(InstrumentedPrimitive[Any, Any]):
    """Stores one conversation turn in working and long-term memory, then passes its input on.

    What is stored:
        The user message: ``context.state["memory.query"]`` (left by an earlier
        ``MemoryPrimitive``), or else the input itself when it is a ``str``, or the input's
        ``"query"`` when it is a mapping (a mapping's ``"query"`` wins over the state).
        The response (optional): the input when it is a ``str`` and a user message came from
        the state, or the input's ``response_key`` when it is a mapping.
        A mapping input may also give ``"speaker"`` (str), ``"metadata"`` (dict, merged into each
        record's metadata), ``"created_at"`` (aware ``datetime``, when the turn happened) and
        ``"id"`` (an identifier: the user message's long-term record id, so storing the same turn
        again replaces its record instead of adding one; the response's record, with
        ``remember_response=True``, gets ``id + ".response"``; default: new random ids).

    Each message is appended to the session's working memory (when ``context.session_id`` is set).
    The user message (and the response only with ``remember_response=True``) is stored as a
    long-term record of ``memory_type`` in the context's namespace and user,
    with ``metadata`` ``{"role", "speaker"?, "context"?, "resolved_dates"?}``: ``context`` is the
    message that came just before it in the session, indexed with it so a question about an
    answer finds the answer (measured in docs/in-memory-backend.md); ``resolved_dates`` writes
    out the relative dates of the message ("yesterday", "last week", ...) resolved against the
    turn's ``created_at`` (now when not given), e.g. ``"7 May 2023; the week of 1 May 2023"``
    (:func:`~primitives.memory.temporal.resolve_dates`, docs/temporal.md), indexed for keyword
    search by every backend. A ``resolved_dates`` given in the input's ``metadata`` is kept as
    given. This is the one place dates are resolved: ``Memory.add``/``remember`` store what they
    are given.

    Args:
        memory: Where to store.
        memory_type: Type of the long-term records (``episodic`` by default).
        response_key: Where the response is when the input is a mapping.
        remember_response: Store the response in long-term memory too (it always goes to working
            memory). Off by default: an assistant's reply ("Noted.") is not a memory of the user
            and would otherwise come back as the best hit for the user's own questions.
        resolve_dates: Write out the relative dates of each stored message under
            ``metadata["resolved_dates"]`` (on by default; ``False`` stores the metadata without it).

    Raises:
        InvalidInputError: (from ``execute``) there is no user message to store, a given ``id``
            is not an identifier, or the context's ``user_id``/``namespace`` is not an identifier;
            nothing is stored.
        UnscopedAccessError: (from ``execute``) no ``user_id`` on a multi-user memory (the same
            policy as :class:`MemoryPrimitive`).
    """

    def __init__(
        self,
        memory: Memory,
        *,
        memory_type: MemoryType | str = MemoryType.EPISODIC,
        response_key: str = "response",
        remember_response: bool = False,
        resolve_dates: bool = True,
        **instrumentation: Any,
    ) -> None:
        super().__init__(**instrumentation)
        self.memory = memory
        self.memory_type = check_memory_type(memory_type, errors=INPUT)
        self.response_key = response_key
        self.remember_response = check_bool(remember_response, "remember_response")
        self.resolve_dates = check_bool(resolve_dates, "resolve_dates")

    def _with_dates(self, metadata: dict[str, Any], text: str, created_at: datetime | None) -> dict[str, Any]:
        """``metadata`` plus ``resolved_dates`` for ``text`` said at ``created_at`` (now when
        ``None``), when resolving is on, the text has relative dates and none were given."""
        if not self.resolve_dates or RESOLVED_DATES_KEY in metadata:
            return metadata
        base = created_at if isinstance(created_at, datetime) else datetime.now(timezone.utc)
        resolved = resolved_dates_text(text, base)
        return metadata if resolved is None else {**metadata, RESOLVED_DATES_KEY: resolved}

    def _turn(
        self, input: Any, state_query: str | None
    ) -> tuple[str, str | None, str | None, dict[str, Any], datetime | None, str | None]:
        speaker: str | None = None
        extra: dict[str, Any] = {}
        created_at: datetime | None = None
        record_id: str | None = None
        if isinstance(input, str):
            user, response = (input, None) if state_query is None else (state_query, input)
        elif isinstance(input, Mapping):
            user = input.get("query", state_query)
            response = input.get(self.response_key)
            speaker = input.get("speaker")
            extra = dict(input.get("metadata") or {})
            created_at = input.get("created_at")
            record_id = input.get("id")
            if record_id is not None:
                record_id = check_identifier(record_id, "input['id']", errors=INPUT)
        else:
            user, response = state_query, None
        if not isinstance(user, str):
            raise InvalidInputError(
                "RememberPrimitive found no user message: run MemoryPrimitive earlier in the "
                "pipeline, or pass a str or a mapping with a str under 'query'"
            )
        if response is not None and not isinstance(response, str):
            response = None  # a structured output is passed on, not stored as text
        if speaker is not None and not isinstance(speaker, str):
            raise InvalidInputError(f"speaker must be a str, got {type(speaker).__name__}")
        return user, response, speaker, extra, created_at, record_id

    async def _execute_impl(self, input: Any, context: WorkflowContext) -> Any:
        state_query = context.state.get(QUERY_STATE_KEY)
        user, response, speaker, extra, created_at, record_id = self._turn(input, state_query)
        ids: tuple[dict[str, str], dict[str, str]] = (
            ({}, {}) if record_id is None else ({"id": record_id}, {"id": f"{record_id}.response"})
        )
        memory = self.memory
        namespace, user_id = _scope(context, memory)
        session_id = context.session_id
        previous: str | None = None
        if session_id is not None:
            last = await memory.get_messages(session_id, 1, namespace=namespace)
            previous = last[0].content if last else None
        user_meta: dict[str, Any] = {**extra, "role": "user"}
        if speaker:
            user_meta["speaker"] = speaker
        if previous:
            user_meta["context"] = previous
        messages = [Message("user", user, metadata=user_meta)]
        if response is not None:
            messages.append(Message("assistant", response, metadata={**extra, "role": "assistant"}))
        records = [
            MemoryRecord(
                text=user,
                user_id=user_id,
                session_id=session_id,
                namespace=namespace,
                memory_type=self.memory_type,
                metadata=self._with_dates(user_meta, user, created_at),
                created_at=created_at,
                **ids[0],
            )
        ]
        if response is not None and self.remember_response:
            records.append(
                MemoryRecord(
                    text=response,
                    user_id=user_id,
                    session_id=session_id,
                    namespace=namespace,
                    memory_type=self.memory_type,
                    metadata=self._with_dates({**extra, "role": "assistant", "context": user}, response, created_at),
                    created_at=created_at,
                    **ids[1],
                )
            )
        await memory.add(records)
        if session_id is not None:
            await memory.append_messages(session_id, messages, namespace=namespace)
        context.state.pop(QUERY_STATE_KEY, None)
        return input


#: ``context.state`` key under which ``ExtractMemoriesPrimitive`` leaves its report (a dict).
EXTRACTION_STATE_KEY = "memory.extraction"


class ExtractMemoriesPrimitive(InstrumentedPrimitive[Any, Any]):
    """Turns the session's new messages into long-term memories with the memory's LLM, then
    passes its input on unchanged (see :meth:`Memory.extract` and
    :mod:`primitives.memory.extraction`).

    Place it after ``RememberPrimitive``: ``... >> RememberPrimitive(memory) >>
    ExtractMemoriesPrimitive(memory)``. Scope as :class:`MemoryPrimitive` (``context.session_id``
    required; ``user_id`` unless the memory is single-user).

    The report goes to ``context.state["memory.extraction"]``: ``ExtractionReport.to_dict()``,
    ``{"background": True}`` when it runs in the background, or with ``on_error="report"``
    ``{"error": <type name>, "message": ...}`` when the LLM failed (nothing was written).

    Args:
        memory: The memory (its ``llm`` does the work).
        strategy: ``"discrete"``, ``"summary"``, ``"preferences"`` or ``"custom"``.
        prompt: Instructions for ``"custom"``.
        background: Run without making the pipeline wait (bounded by the memory's
            ``extraction_concurrency``; :meth:`Memory.aclose` waits for it).
        on_error: ``"raise"`` (default): an LLM failure fails the step with the typed error;
            ``"report"``: the step passes its input on and reports the error in the state.

    Raises:
        InvalidInputError: (constructor) an unknown strategy or ``on_error``; (from ``execute``)
            no ``session_id`` in the context.
        UnscopedAccessError, ConfigurationError (no LLM), LLMError: from ``execute``.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        strategy: str = "discrete",
        prompt: str | None = None,
        background: bool = False,
        on_error: str = "raise",
        **instrumentation: Any,
    ) -> None:
        from primitives.memory.extraction import STRATEGIES

        super().__init__(**instrumentation)
        if strategy not in STRATEGIES:
            raise InvalidInputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if on_error not in ("raise", "report"):
            raise InvalidInputError(f"on_error must be 'raise' or 'report', got {on_error!r}")
        self.memory = memory
        self.strategy = strategy
        self.prompt = prompt
        self.background = check_bool(background, "background")
        self.on_error = on_error

    async def _execute_impl(self, input: Any, context: WorkflowContext) -> Any:
        from primitives.errors import LLMError

        if context.session_id is None:
            raise InvalidInputError("ExtractMemoriesPrimitive needs WorkflowContext(session_id=...)")
        namespace, user_id = _scope(context, self.memory)
        try:
            result = await self.memory.extract(
                context.session_id, strategy=self.strategy, user_id=user_id, namespace=namespace,
                prompt=self.prompt, background=self.background,
            )
        except LLMError as exc:
            if self.on_error == "raise":
                raise
            context.state[EXTRACTION_STATE_KEY] = {"error": type(exc).__name__, "message": str(exc)}
            return input
        context.state[EXTRACTION_STATE_KEY] = {"background": True} if self.background else result.to_dict()  # type: ignore[union-attr]
        return input
