"""Typed agent memories over the record model: steps, episodes, skills and facts.

Every kind is an ordinary :class:`~primitives.memory.record.MemoryRecord` (so every backend stores
it, syncs it and searches it) whose ``metadata`` carries the kind's fields under the keys below;
the dataclasses here are read-only views with the attribute names of the original Redis agent
memory adapter (``memory_id``, ``task_prompt``, ``pattern``, ``skill_name``, ...).

Fact validity (bi-temporal, after Graphiti's ``valid_at``/``invalid_at`` edges): ``valid_from``
is when the fact became true (default: when it was stored), ``valid_to`` when it stopped being
true (set when a newer fact supersedes it; ``superseded_by`` names that fact). A superseded fact
is kept, never deleted: default searches leave it out, ``as_of=`` asks what was true at a time.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from primitives.memory.record import MemoryRecord, Message

__all__ = [
    "KIND",
    "Step",
    "Episode",
    "SemanticMemory",
    "Skill",
    "content_hash",
    "digest",
    "normalize_fact",
    "parse_time",
    "visible",
    "fact_subject",
    "is_bookkeeping",
    "BOOKKEEPING_KINDS",
]

#: Metadata key holding a record's kind: ``"episode"``, ``"skill"``, ``"fact"``,
#: ``"preference"``, ``"summary"``, ``"insight"``, ``"custom"``; absent on plain memories.
KIND = "kind"
#: Metadata key marking bookkeeping records (session chains, extraction marks) that searches never
#: return: a record is bookkeeping only when this is ``True`` *and* its kind is one of
#: :data:`BOOKKEEPING_KINDS`, so a user's own ``{"internal": true}`` never hides a memory.
INTERNAL = "internal"
BOOKKEEPING_KINDS = frozenset({"session_chain", "subject_index", "extraction_mark", "insight_index"})


def is_bookkeeping(metadata: Mapping[str, Any]) -> bool:
    """Whether a record with this metadata is one of this package's bookkeeping records."""
    return metadata.get(INTERNAL) is True and metadata.get(KIND) in BOOKKEEPING_KINDS

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = ".,;:!?\"'()[]{}"


def normalize_fact(text: str) -> str:
    """The form two texts share when they state the same thing in other case, spacing, Unicode
    compatibility forms or end punctuation: NFKC, casefolded, runs of whitespace as one space,
    punctuation stripped from both ends."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip().strip(_EDGE_PUNCT).strip()


def digest(*parts: str | None) -> str:
    """SHA-256 hex of ``parts`` exactly as given (each length-prefixed, ``None`` distinct from
    every string), so no two different tuples share a digest by concatenation: the one rule
    behind every derived id (skills, session chains, extraction marks, summaries, messages)."""
    payload = "\x1f".join("n" if p is None else f"s{len(p)}:{p}" for p in parts)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def content_hash(text: str, user_id: str | None) -> str:
    """:func:`digest` of the user and the normalised text (:func:`normalize_fact`): equal for
    exact duplicates of one user's fact, different across users."""
    return digest(user_id, normalize_fact(text))


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text in metadata (``None`` when absent or unreadable:
    a damaged timestamp makes a fact undated, it never fails a search)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 text of an aware datetime, in UTC (``None`` for ``None``)."""
    return None if dt is None else dt.astimezone(timezone.utc).isoformat()


def visible(record: MemoryRecord, now: datetime, as_of: datetime | None, include_superseded: bool) -> bool:
    """Whether a search shows ``record``.

    Bookkeeping records are never shown. Without ``as_of``, a fact whose ``valid_to`` has passed
    (a superseded fact) is shown only with ``include_superseded``. With ``as_of``, a record is
    shown when it was known and true then: ``valid_from`` (else ``created_at``) at or before
    ``as_of``, and no ``valid_to`` at or before it.
    """
    md = record.metadata
    if not md:
        return as_of is None or record.created_at is None or record.created_at <= as_of
    if is_bookkeeping(md):
        return False
    valid_to = parse_time(md.get("valid_to"))
    if as_of is None:
        return include_superseded or valid_to is None or valid_to > now
    start = parse_time(md.get("valid_from")) or record.created_at
    if start is not None and start > as_of:
        return False
    return valid_to is None or valid_to > as_of


def fact_subject(subject: object) -> str | None:
    """A subject key in the form two spellings share (:func:`normalize_fact`); ``None`` for none."""
    if not isinstance(subject, str):
        return None
    key = normalize_fact(subject)
    return key or None


def _float(value: object, default: float, minimum: float = -math.inf, maximum: float = math.inf) -> float:
    """``value`` as a float when it is a number (not a bool) in ``[minimum, maximum]``, else
    ``default`` (a damaged stored field reads as the default, never fails a read)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            return default
        if minimum <= number <= maximum:  # also false for NaN
            return number
    return default


def _str(value: object, default: str) -> str:
    """``value`` when it is a str, else ``default``."""
    return value if isinstance(value, str) else default


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, (list, tuple)) else []


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an agent's current task, kept in working memory (oldest first).

    Attributes:
        action: What the agent did.
        observation: What it saw as a result.
        reasoning: Why (``None`` when not given).
        success: Whether the step worked.
        timestamp: When it was stored (UTC).
    """

    action: str
    observation: str
    reasoning: str | None = None
    success: bool = True
    timestamp: datetime | None = None

    def to_message(self) -> Message:
        lines = [f"Action: {self.action}", f"Observation: {self.observation}"]
        if self.reasoning:
            lines.append(f"Reasoning: {self.reasoning}")
        if not self.success:
            lines.append("Result: failed")
        meta = {KIND: "step", "action": self.action, "observation": self.observation,
                "reasoning": self.reasoning, "success": self.success}
        return Message("step", "\n".join(lines), self.timestamp, meta)

    @classmethod
    def from_message(cls, message: Message) -> Step:
        md = message.metadata
        if md.get(KIND) == "step":
            return cls(
                _str(md.get("action"), ""),
                _str(md.get("observation"), ""),
                md.get("reasoning") if isinstance(md.get("reasoning"), str) else None,
                md.get("success") is not False,
                message.created_at,
            )
        return cls(message.role, message.content, None, True, message.created_at)


@dataclass(frozen=True, slots=True)
class Episode:
    """A past task: what was asked, how it ended, and how much it matters.

    Attributes:
        memory_id: The record id.
        task_prompt: The task.
        outcome: What happened.
        success: Whether it succeeded.
        duration_seconds: How long it took.
        importance: ``0.0``..``1.0``.
        tags: The record's topics.
        timestamp: When it was stored (UTC).
        score: Search relevance when it came from a search (higher is better), else ``None``.
        agent_id: The agent that saved it.
    """

    memory_id: str
    task_prompt: str
    outcome: str
    success: bool
    duration_seconds: float
    importance: float
    tags: tuple[str, ...] = ()
    timestamp: datetime | None = None
    score: float | None = None
    agent_id: str | None = None

    @classmethod
    def from_record(cls, record: MemoryRecord, score: float | None = None) -> Episode:
        md = record.metadata
        return cls(
            record.id,
            _str(md.get("task_prompt"), record.text),
            _str(md.get("outcome"), ""),
            md.get("success") is True,
            _float(md.get("duration_seconds"), 0.0, minimum=0.0),
            _float(md.get("importance"), 0.5, minimum=0.0, maximum=1.0),
            record.topics,
            record.created_at,
            score,
            md.get("agent_id") if isinstance(md.get("agent_id"), str) else None,
        )


@dataclass(frozen=True, slots=True)
class SemanticMemory:
    """Generalised knowledge: a fact, a preference, an insight or a summary.

    Attributes:
        memory_id: The record id.
        pattern: The knowledge, as text.
        kind: ``"fact"``, ``"preference"``, ``"insight"``, ``"summary"``, ``"custom"`` or
            ``"semantic"`` (a plain semantic memory).
        confidence: ``0.0``..``1.0`` (the fact's importance; 0.5 when not given).
        subject: What the fact is about (facts on one subject supersede each other), or ``None``.
        valid_from, valid_to: When it became and stopped being true (``valid_to`` ``None``: still true).
        superseded_by: The id of the fact that replaced it, or ``None``.
        provenance: Where it came from (``session_id``, ``message_ids``, ``strategy``, ``model``).
        score: Search relevance when it came from a search, else ``None``.
    """

    memory_id: str
    pattern: str
    kind: str = "semantic"
    confidence: float = 0.5
    subject: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    superseded_by: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    score: float | None = None

    @classmethod
    def from_record(cls, record: MemoryRecord, score: float | None = None) -> SemanticMemory:
        md = record.metadata
        provenance = md.get("provenance")
        return cls(
            record.id,
            record.text,
            _str(md.get(KIND), "semantic"),
            _float(md.get("importance"), 0.5, minimum=0.0, maximum=1.0),
            md.get("subject") if isinstance(md.get("subject"), str) else None,
            parse_time(md.get("valid_from")) or record.created_at,
            parse_time(md.get("valid_to")),
            md.get("superseded_by") if isinstance(md.get("superseded_by"), str) else None,
            provenance if isinstance(provenance, Mapping) else {},
            score,
        )


@dataclass(frozen=True, slots=True)
class Skill:
    """A reusable procedure and how often it worked.

    Attributes:
        memory_id: The record id.
        skill_name: Its name (unique per agent scope).
        description: What it does.
        action_sequence: Its steps, in order.
        tags: The record's topics.
        success_rate: Successful executions / executions (``0.0`` before the first one).
        executions: Executions recorded.
        mean_duration_s: Mean execution time in seconds.
        score: Search relevance when it came from a search, else ``None``.
    """

    memory_id: str
    skill_name: str
    description: str
    action_sequence: tuple[str, ...]
    tags: tuple[str, ...] = ()
    success_rate: float = 0.0
    executions: int = 0
    mean_duration_s: float = 0.0
    score: float | None = None

    @classmethod
    def from_record(cls, record: MemoryRecord, stats: Any = None, score: float | None = None) -> Skill:
        md = record.metadata
        return cls(
            record.id,
            _str(md.get("skill_name"), record.id),
            _str(md.get("description"), ""),
            tuple(_strings(md.get("action_sequence"))),
            record.topics,
            float(stats.success_rate) if stats is not None else 0.0,
            int(stats.executions) if stats is not None else 0,
            float(stats.mean_duration_s) if stats is not None else 0.0,
            score,
        )


def step_messages(steps: Sequence[Message]) -> list[Step]:
    """The steps among working-memory messages, oldest first."""
    return [Step.from_message(m) for m in steps if m.metadata.get(KIND) == "step"]
