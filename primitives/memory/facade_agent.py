"""The agent-memory half of :class:`~primitives.memory.facade.Memory`: prompt context, facts,
extraction, reflection, forgetting and working-memory summaries (a mixin, so the facade module
stays one concept per file). Each method validates at this edge and calls the module that
implements it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from collections.abc import Callable
from typing import Any

from primitives.errors import InvalidInputTypeError, UnscopedAccessError
from primitives.memory.context import ContextCache, PromptContext, build_context
from primitives.memory.extraction import ExtractionReport, extract, reflect
from primitives.memory.facts import FactWrite, NewFact, remember_facts
from primitives.memory.forgetting import ForgetPolicy, ForgetReport, forget
from primitives.memory.summarize import SummaryReport, summarize_session
from primitives.validation import MAX_LIMIT, check_aware_datetime, check_bool, check_identifier, check_limit

__all__ = ["AgentMethods"]


class AgentMethods:
    """Methods of :class:`Memory` for agent memory (see the module docstring)."""

    namespace: str
    single_user: bool
    llm: Any
    extraction_concurrency: int
    _token_counter: Any
    _context_cache: ContextCache
    _tasks: set[asyncio.Task[Any]]
    _semaphore: asyncio.Semaphore | None

    _ns: Callable[[str | None], str]  # Memory's: the namespace of a call

    async def context(
        self,
        query: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        namespace: str | None = None,
        budget_tokens: int = 1000,
        recent_messages: int = 10,
        limit_per_type: int = 3,
        mode: str | None = None,
        as_of: datetime | None = None,
    ) -> PromptContext:
        """A prompt block of what memory knows that bears on ``query``, within ``budget_tokens``
        (see :mod:`primitives.memory.context` for the sections and how the budget is filled).

        Args:
            query: What the prompt is about.
            session_id: Whose recent messages and steps to include (``None``: none).
            user_id: Whose memories (required unless the memory is ``single_user``).
            namespace: The namespace (the memory's by default).
            budget_tokens: Maximum tokens of ``text``, ``>= 1``, counted by the memory's
                token counter (cl100k_base by default).
            recent_messages: Session messages to consider, ``0..MAX_LIMIT``.
            limit_per_type: Facts, episodes and skills to consider each, ``1..MAX_LIMIT``.
            mode: Search mode (``None``: the backend's default).
            as_of: Only what was known and true then (see :meth:`search`).

        Returns:
            A :class:`~primitives.memory.context.PromptContext`; the same arguments within
            ``context_cache_ttl`` seconds and without a write to the scope through this memory
            return the cached one (``cached=True``).

        Raises:
            UnscopedAccessError: no ``user_id`` on a multi-user memory.
            InvalidInputError: an argument out of range; see :meth:`search`.
        """
        self._require_scope(user_id, "context")
        from primitives.memory.backend import check_mode, check_query
        from primitives.validation import check_int

        query = check_query(query)
        ns = check_identifier(self._ns(namespace), "namespace")
        if session_id is not None:
            check_identifier(session_id, "session_id")
        budget_tokens = check_int(budget_tokens, "budget_tokens", minimum=1)
        recent_messages = check_int(recent_messages, "recent_messages", minimum=0, maximum=MAX_LIMIT)
        limit_per_type = check_limit(limit_per_type, "limit_per_type")
        mode = check_mode(mode)
        if as_of is not None:
            as_of = check_aware_datetime(as_of, "as_of")
        counter = self._counter()
        args = (query, budget_tokens, recent_messages, limit_per_type, mode, as_of)
        key = self._context_cache.key(ns, user_id, session_id, args)
        hit = self._context_cache.get(key)
        if hit is not None:
            return dataclasses.replace(hit, cached=True)
        built = await build_context(
            self, query,  # type: ignore[arg-type]
            session_id=session_id, user_id=user_id, namespace=ns, budget_tokens=budget_tokens,
            recent_messages=recent_messages, limit_per_type=limit_per_type, mode=mode, as_of=as_of,
            counter=counter, line_tokens=self._context_cache.line_tokens,
        )
        if not built.degraded:
            self._context_cache.put(key, built)
        return built

    def require_scope(self, user_id: str | None, what: str) -> None:
        """The scope policy of every per-user read: a ``user_id`` is required unless the memory
        is ``single_user``. ``what`` names the call in the error (an adapter's tool or method).
        The value itself is checked where it is used.

        Raises:
            UnscopedAccessError: ``user_id`` is ``None`` and the memory is not ``single_user``.
        """
        if user_id is None and not self.single_user:
            raise UnscopedAccessError(
                f"{what} without a user_id on a multi-user memory would mix every user's memories; pass "
                "user_id, or declare the memory single-user (single_user=True, MEMORY_SINGLE_USER=1)"
            )

    def _require_scope(self, user_id: str | None, what: str) -> None:
        """:meth:`require_scope`, then ``user_id`` checked as an identifier (``InvalidInputError``)."""
        self.require_scope(user_id, what)
        if user_id is not None:
            check_identifier(user_id, "user_id")

    def _counter(self) -> Any:
        from primitives.memory.tokens import check_token_counter

        if self._token_counter is None or not hasattr(self._token_counter, "count"):
            self._token_counter = check_token_counter(self._token_counter)
        return self._token_counter

    async def remember_fact(
        self,
        text: str,
        *,
        user_id: str | None = None,
        subject: str | None = None,
        kind: str = "fact",
        importance: float = 0.5,
        valid_from: datetime | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
    ) -> FactWrite:
        """Store a fact with dedup and supersession (see :mod:`primitives.memory.facts`): an
        active fact of the user on the same ``subject`` is superseded (with an LLM configured,
        the LLM decides which facts the new one repeats or updates).

        Raises:
            UnscopedAccessError: no ``user_id`` on a multi-user memory.
            InvalidInputError: see :func:`~primitives.memory.facts.check_new_fact`.
            LLMError: the LLM's decision failed (nothing written).
        """
        self._require_scope(user_id, "remember_fact")
        (write,) = await remember_facts(
            self, [NewFact(text, subject=subject, kind=kind, importance=importance, valid_from=valid_from)],
            user_id=user_id, session_id=session_id, namespace=namespace, llm=self.llm,
        )
        return write

    async def extract(
        self,
        session_id: str,
        *,
        strategy: str = "discrete",
        user_id: str | None = None,
        namespace: str | None = None,
        prompt: str | None = None,
        background: bool = False,
    ) -> ExtractionReport | asyncio.Task[ExtractionReport]:
        """Turn the session's new messages into long-term memories with the memory's LLM (see
        :mod:`primitives.memory.extraction`). ``background=True`` returns an ``asyncio.Task``
        at once; at most ``extraction_concurrency`` (2) run at a time per memory, and
        :meth:`aclose` waits for them.

        Raises:
            UnscopedAccessError, InvalidInputError, ConfigurationError (no LLM), LLMError.
        """
        self._require_scope(user_id, "extract")
        check_identifier(session_id, "session_id")
        ns = check_identifier(self._ns(namespace), "namespace")
        run = extract(self,  # type: ignore[arg-type]
                       session_id, strategy=strategy, user_id=user_id, namespace=ns, llm=self.llm, prompt=prompt)
        if not check_bool(background, "background"):
            return await run
        return self._background(run)

    def _background(self, coro: Any) -> asyncio.Task[Any]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.extraction_concurrency)
        semaphore = self._semaphore

        async def bounded() -> Any:
            async with semaphore:
                return await coro

        task = asyncio.get_running_loop().create_task(bounded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reflect(self, session_id: str, *, user_id: str | None = None, namespace: str | None = None) -> FactWrite | None:
        """Write one insight from the session's transcript and the user's previous insights
        (see :func:`~primitives.memory.extraction.reflect`); ``None`` for an empty session."""
        self._require_scope(user_id, "reflect")
        check_identifier(session_id, "session_id")
        ns = check_identifier(self._ns(namespace), "namespace")
        return await reflect(self, session_id, user_id=user_id, namespace=ns, llm=self.llm)

    async def forget(self, policy: ForgetPolicy, *, dry_run: bool = True, user_id: str | None = None,
                     namespace: str | None = None, now: datetime | None = None) -> ForgetReport:
        """Forget the records ``policy`` selects in ``namespace`` (one user's with ``user_id``);
        a dry run (the default) only reports them. See :mod:`primitives.memory.forgetting`.
        Ages are measured from ``now`` (an aware datetime; default: the current time).

        Raises:
            InvalidInputTypeError: ``policy`` is not a ForgetPolicy.
            NotImplementedError: the backend cannot list its records (the Agent Memory Server).
        """
        if not isinstance(policy, ForgetPolicy):
            raise InvalidInputTypeError(f"policy must be a ForgetPolicy, got {type(policy).__name__}")
        if user_id is not None:
            check_identifier(user_id, "user_id")
        ns = check_identifier(self._ns(namespace), "namespace")
        if now is not None:
            now = check_aware_datetime(now, "now")
        return await forget(self, policy, namespace=ns, user_id=user_id, dry_run=check_bool(dry_run, "dry_run"), now=now)

    async def summarize_session(self, session_id: str, *, threshold_tokens: int = 2000, keep_last: int = 6,
                                user_id: str | None = None, namespace: str | None = None) -> SummaryReport:
        """Past ``threshold_tokens``, replace all but the last ``keep_last`` messages of the
        session by one summary message (see :mod:`primitives.memory.summarize`).

        Raises:
            InvalidInputError: a bad argument. ConfigurationError: no LLM (only when over the
                threshold). LLMError: the LLM failed (nothing changed).
        """
        from primitives.validation import check_int

        check_identifier(session_id, "session_id")
        if user_id is not None:
            check_identifier(user_id, "user_id")
        ns = check_identifier(self._ns(namespace), "namespace")
        threshold = check_int(threshold_tokens, "threshold_tokens", minimum=1)
        keep = check_int(keep_last, "keep_last", minimum=0, maximum=MAX_LIMIT)
        return await summarize_session(self, session_id, user_id=user_id, namespace=ns, threshold_tokens=threshold,
                                       keep_last=keep, llm=self.llm, counter=self._counter())

