"""A prompt-ready memory context within a token budget (:meth:`Memory.context`).

Four sections, each only when it has something, in this order::

    Recent conversation:         the session's last messages and agent steps, oldest first
    Facts and preferences:       semantic memories relevant to the query (superseded facts left out)
    Relevant past episodes:      episodic memories relevant to the query, with outcomes and dates
    Skills:                      skills relevant to the query, with their steps and success rates

Finding candidates: one search of every memory type (:data:`WIDE_SEARCH` hits), bucketed by
type; a type with fewer than ``limit_per_type`` hits in a full wide result gets a search of its own.

Filling the budget: candidates are taken round-robin by rank across the sections (the newest
message, the best fact, the best episode, the best skill, then the second of each, ...); an item
that does not fit is left out (and listed in ``dropped`` with the reason) and smaller ones after it
still get their chance. Tokens are counted on the final text with the memory's
:class:`~primitives.memory.tokens.TokenCounter`, so ``tokens <= budget_tokens`` always holds.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TTLCache

from primitives.memory.kinds import KIND, Episode, Skill, Step
from primitives.memory.skills import stats_from_metadata
from primitives.memory.record import MemoryType, Message, SearchHit, written_date
from primitives.validation import MAX_IDENTIFIER_CHARS, MAX_LIMIT, check_int, check_number

if TYPE_CHECKING:
    from primitives.memory.facade import Memory

__all__ = ["ContextItem", "PromptContext", "ContextCache", "build_context", "SECTION_TITLES"]

#: Hits of the one wide search a context starts with (see :func:`build_context`).
WIDE_SEARCH = 60
_TYPES = (MemoryType.SEMANTIC, MemoryType.EPISODIC, MemoryType.SKILL)

#: Section key -> title line, in output order.
SECTION_TITLES = {
    "recent": "Recent conversation:",
    "facts": "Facts and preferences:",
    "episodes": "Relevant past episodes:",
    "skills": "Skills:",
}


@dataclass(frozen=True, slots=True)
class ContextItem:
    """One candidate line of a context.

    Attributes:
        section: ``"recent"``, ``"facts"``, ``"episodes"`` or ``"skills"``.
        id: The record id (``None`` for a working-memory message).
        line: The text as it appears (without the leading ``"- "``).
        tokens: Tokens of that line.
        reason: Why it was a candidate ("recent message 2 of 5", "relevant to the query: rank 1,
            score 3.42"), and for a dropped item why it was left out.
        score: The search score (``None`` for messages).
    """

    section: str
    id: str | None
    line: str
    tokens: int
    reason: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "id": self.id, "line": self.line, "tokens": self.tokens,
                "reason": self.reason, "score": self.score}


@dataclass(frozen=True, slots=True)
class PromptContext:
    """What :meth:`Memory.context` returns.

    Attributes:
        text: The prompt block ("" when nothing was found or fitted).
        tokens: Tokens of ``text`` (``<= budget_tokens``).
        budget_tokens: The budget it was built for.
        items: What was included, in the order of ``text``.
        dropped: Candidates left out, each with the reason.
        backend: The backend that served the searches.
        degraded: ``True`` when a fallback served them.
        cached: ``True`` when this came from the context cache.
    """

    text: str
    tokens: int
    budget_tokens: int
    items: tuple[ContextItem, ...] = ()
    dropped: tuple[ContextItem, ...] = ()
    backend: str = ""
    degraded: bool = False
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "text": self.text, "tokens": self.tokens, "budget_tokens": self.budget_tokens,
            "items": [i.to_dict() for i in self.items], "dropped": [i.to_dict() for i in self.dropped],
            "backend": self.backend, "degraded": self.degraded, "cached": self.cached,
        }


class _Generations(LRUCache):  # type: ignore[type-arg]
    """Write generations per scope; a scope evicted from the LRU reads as the highest generation
    ever evicted, so an entry cached before the eviction can never match again."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.floor = 0

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self.floor = max(self.floor, value)
        return key, value


class ContextCache:
    """Short-lived cache of :class:`PromptContext` results, invalidated by writes to their scope.

    Args:
        ttl: Seconds an entry lives (``0``: no caching).
        maxsize: Entries kept (least recently used dropped first).
        timer: Clock in seconds (``time.monotonic``).
    """

    def __init__(self, ttl: float = 300.0, *, maxsize: int = 1024, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl = check_number(ttl, "context_cache_ttl", minimum=0.0)
        self._entries: TTLCache | None = TTLCache(maxsize, ttl, timer=timer) if self.ttl > 0 else None  # type: ignore[type-arg]
        self._generations = _Generations(65_536)
        self._counter = itertools.count(1)
        self._used = False  # no context asked yet: writes have nothing to invalidate
        #: Token counts of rendered lines, which recur across calls (the same memories come back).
        self.line_tokens: LRUCache = LRUCache(65_536)  # type: ignore[type-arg]

    def _gen(self, key: tuple[Any, ...]) -> int:
        value = self._generations.get(key)
        return self._generations.floor if value is None else value

    def touch(self, namespace: str, *, user_id: str | None = None, session_id: str | None = None) -> None:
        """A write in ``namespace``: to one user's records / one session, or (neither given)
        to records every user of the namespace sees."""
        if self._entries is None or not self._used:
            return
        if user_id is None and session_id is None:
            self._generations[("ns", namespace)] = next(self._counter)
        if user_id is not None:
            self._generations[("user", namespace, user_id)] = next(self._counter)
        if session_id is not None:
            self._generations[("session", namespace, session_id)] = next(self._counter)

    def key(self, namespace: str, user_id: str | None, session_id: str | None, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The cache key of a context call, made before the call reads anything (from then on,
        writes are tracked, so an entry built while a write happened never matches again)."""
        self._used = True
        return (
            namespace, user_id, session_id, args,
            self._gen(("ns", namespace)),
            self._gen(("user", namespace, user_id)) if user_id is not None else self._gen(("ns", namespace)),
            self._gen(("session", namespace, session_id)) if session_id is not None else 0,
        )

    def get(self, key: tuple[Any, ...]) -> PromptContext | None:
        return None if self._entries is None else self._entries.get(key)

    def put(self, key: tuple[Any, ...], value: PromptContext) -> None:
        if self._entries is not None:
            self._entries[key] = value


def _message_line(m: Message) -> str:
    if m.metadata.get(KIND) == "step":
        step = Step.from_message(m)
        line = f"step: {step.action} -> {step.observation}"
        if step.reasoning:
            line += f" (because {step.reasoning})"
        return line + ("" if step.success else " [failed]")
    return f"{m.role}: {m.content}"


def _dated(hit: SearchHit) -> str:
    created = hit.record.created_at
    return f" ({written_date(created)})" if created is not None else ""


def _fact_line(hit: SearchHit) -> str:
    kind = hit.record.metadata.get(KIND)
    suffix = " (preference)" if kind == "preference" else ""
    return hit.record.text.replace("\n", " ") + suffix


def _episode_line(hit: SearchHit) -> str:
    if hit.record.metadata.get(KIND) == "episode":
        ep = Episode.from_record(hit.record)
        verdict = "succeeded" if ep.success else "failed"
        return f"{ep.task_prompt} -> {ep.outcome} ({verdict}, importance {ep.importance:g}){_dated(hit)}".replace("\n", " ")
    speaker = hit.record.metadata.get("speaker")
    who = f"{speaker}: " if isinstance(speaker, str) and speaker else ""
    return f"{who}{hit.record.text}{_dated(hit)}".replace("\n", " ")


def _skill_line(skill: Skill) -> str:
    steps = " -> ".join(skill.action_sequence)
    line = f"{skill.skill_name}: {skill.description}"
    if steps:
        line += f"; steps: {steps}"
    if skill.executions:
        line += f"; success rate {skill.success_rate:.0%} over {skill.executions} runs"
    return line.replace("\n", " ")


async def _skill_of(memory: Memory, hit: SearchHit) -> Skill:
    md = hit.record.metadata
    key = md.get("stats_key") if isinstance(md.get("stats_key"), str) else md.get("skill_name")
    stats = None
    if isinstance(key, str) and 0 < len(key) <= MAX_IDENTIFIER_CHARS and not key.isspace():  # a damaged key: no stats
        try:
            stats = await memory.skill_stats(key, namespace=hit.record.namespace)
        except NotImplementedError:
            stats = None
    if stats is None:  # the Agent Memory Server keeps the counts on the record
        name = key if isinstance(key, str) else hit.record.id
        stats = stats_from_metadata(name, hit.record.namespace, md, hit.record.updated_at or datetime.now(timezone.utc))
    return Skill.from_record(hit.record, stats, hit.score)


async def build_context(
    memory: Memory,
    query: str,
    *,
    session_id: str | None,
    user_id: str | None,
    namespace: str,
    budget_tokens: int,
    recent_messages: int,
    limit_per_type: int,
    mode: str | None,
    as_of: datetime | None,
    counter: Any,
    line_tokens: Any,
) -> PromptContext:
    """Build a context (see the module docstring); :meth:`Memory.context` validates the
    arguments and caches the result."""
    check_int(budget_tokens, "budget_tokens", minimum=1)
    messages: list[Message] = (
        await memory.get_messages(session_id, recent_messages, namespace=namespace)
        if session_id is not None and recent_messages > 0 else []
    )
    # One search over every type, bucketed by type: scoring the postings is the cost of a search,
    # not the number of hits kept, so one wide search costs about one narrow one. A type that the
    # others crowded out of the wide result gets a search of its own.
    fetch = min(MAX_LIMIT, max(WIDE_SEARCH, limit_per_type * 6))
    wide = await memory.search(query, user_id=user_id, namespace=namespace, limit=fetch, mode=mode, as_of=as_of)
    buckets: dict[MemoryType, list[SearchHit]] = {t: [] for t in _TYPES}
    for h in wide.hits:
        bucket = buckets.get(h.record.memory_type)
        if bucket is not None and len(bucket) < limit_per_type:
            bucket.append(h)
    degraded = wide.degraded
    if len(wide.hits) == fetch:
        for t in _TYPES:
            if len(buckets[t]) < limit_per_type:
                own = await memory.search(query, user_id=user_id, namespace=namespace, memory_type=t,
                                          limit=limit_per_type, mode=mode, as_of=as_of)
                buckets[t] = own.hits
                degraded = degraded or own.degraded
    fact_hits, episode_hits, skill_hits = (buckets[t] for t in _TYPES)
    skill_views = [await _skill_of(memory, h) for h in skill_hits]
    raw_count = counter.count

    def count(text: str) -> int:  # rendered lines recur across calls: their counts are cached
        n = line_tokens.get(text)
        if n is None:
            n = line_tokens[text] = raw_count(text)
        return n

    sections: dict[str, list[ContextItem]] = {k: [] for k in SECTION_TITLES}
    n = len(messages)
    for i, m in enumerate(reversed(messages)):  # newest first: the newest get the budget first
        line = _message_line(m)
        sections["recent"].append(ContextItem("recent", None, line, count(line), f"recent message {n - i} of {n}"))
    for key, hits, render in (("facts", fact_hits, _fact_line), ("episodes", episode_hits, _episode_line)):
        for rank, h in enumerate(hits, 1):
            line = render(h)
            sections[key].append(ContextItem(key, h.record.id, line, count(line), f"relevant to the query: rank {rank}, score {h.score:.3g}", h.score))
    for rank, sk in enumerate(skill_views, 1):
        line = _skill_line(sk)
        sections["skills"].append(ContextItem("skills", sk.memory_id, line, count(line), f"relevant to the query: rank {rank}, score {(sk.score or 0):.3g}", sk.score))
    chosen: dict[str, list[ContextItem]] = {k: [] for k in SECTION_TITLES}
    dropped: list[ContextItem] = []
    used = 0
    header_cost = {k: count(t) + 1 for k, t in SECTION_TITLES.items()}
    for rank in range(max((len(v) for v in sections.values()), default=0)):
        for key in SECTION_TITLES:
            if rank >= len(sections[key]):
                continue
            item = sections[key][rank]
            cost = item.tokens + 2 + (0 if chosen[key] else header_cost[key] + 1)  # "- " and newlines
            if used + cost <= budget_tokens:
                chosen[key].append(item)
                used += cost
            else:
                dropped.append(ContextItem(item.section, item.id, item.line, item.tokens, f"{item.reason}; over budget ({item.tokens} tokens, {budget_tokens - used} left)", item.score))
    chosen["recent"].reverse()  # oldest first in the text

    def render() -> str:
        blocks = []
        for key, title in SECTION_TITLES.items():
            if chosen[key]:
                blocks.append(title + "\n" + "\n".join(f"- {i.line}" for i in chosen[key]))
        return "\n\n".join(blocks)

    text = render()
    tokens = counter.count(text) if text else 0
    while tokens > budget_tokens:  # BPE merges across lines can differ from the per-line sum
        last = max((k for k in SECTION_TITLES if chosen[k]), key=lambda k: len(chosen[k]))
        gone = chosen[last].pop(0 if last == "recent" else -1)
        dropped.append(ContextItem(gone.section, gone.id, gone.line, gone.tokens, f"{gone.reason}; over budget", gone.score))
        text = render()
        tokens = counter.count(text) if text else 0
    items = tuple(i for k in SECTION_TITLES for i in chosen[k])
    return PromptContext(text, tokens, budget_tokens, items, tuple(dropped), wide.backend, degraded)

