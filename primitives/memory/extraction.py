"""Turning conversations into lasting memories with an LLM: extraction strategies and reflection.

Strategies (after the Agent Memory Server's ``discrete``, ``summary``, ``preferences`` and
``custom`` long-term memory strategies):

- ``discrete``: self-contained facts about the user, each with a subject, importance and (when the
  conversation dates it) the date it became true;
- ``preferences``: only likes, dislikes and habits (kind ``"preference"``);
- ``summary``: one summary of the messages (kind ``"summary"``);
- ``custom``: your instructions (``prompt=``), answered in the ``discrete`` format.

Each run reads the session's working-memory messages after the last ones this strategy already
processed (a bookkeeping mark per user, session and strategy), in batches of at most
:data:`BATCH_MESSAGES`: one LLM call extracts a batch, and at most one more decides supersession
for the batch's facts that have candidates (:func:`~primitives.memory.facts.remember_facts`). The
mark advances after the batch is written, so a run killed mid-way repeats at most one batch, whose
facts are deduplicated (ids are derived from content): re-running extracts nothing twice. Every
extracted memory keeps its provenance: ``session_id``, ``message_ids``, ``strategy``, ``model``.

A message id is the first 16 hex digits of :func:`~primitives.memory.kinds.digest` of the
message's time, role and content.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from primitives.errors import ConfigurationError, InvalidInputError, LLMResponseError
from primitives.memory.facts import FactWrite, NewFact, remember_facts
from primitives.memory.kinds import INTERNAL, KIND, digest, iso, parse_time
from primitives.memory.record import MemoryRecord, MemoryType, Message

if TYPE_CHECKING:
    from primitives.memory.facade import Memory

__all__ = ["STRATEGIES", "BATCH_MESSAGES", "ExtractionReport", "extract", "reflect", "message_id"]

STRATEGIES = ("discrete", "summary", "preferences", "custom")
#: Messages sent to the LLM in one extraction call.
BATCH_MESSAGES = 40
#: Previous insights of a user shown to the LLM when reflecting (the newest).
MAX_PREVIOUS_INSIGHTS = 20
#: Memories accepted from one answer (more is an answer out of shape).
MAX_MEMORIES_PER_ANSWER = 50

_FORMAT = (
    'Answer with JSON only: {"memories": [{"text": "<one self-contained sentence in the third person>", '
    '"subject": "<what it is about, a short noun phrase, e.g. residence, favourite colour>", '
    '"importance": <0.0-1.0>, "valid_from": "<YYYY-MM-DD when it became true, or null>"}]}. '
    'Write dates out in full (resolve "yesterday", "last month" against the message dates). '
    'Return {"memories": []} when there is nothing worth keeping.'
)
_PROMPTS = {
    "discrete": "Extract the durable facts about the user from this conversation: who they are, what they do, "
                "where they live, people and things in their life, plans and events. Skip small talk. ",
    "preferences": "Extract only the user's preferences from this conversation: likes, dislikes, habits, "
                   "choices they want remembered. ",
    "summary": 'Summarise this conversation in at most five sentences, keeping names, dates, decisions and open '
               'questions. Answer with JSON only: {"summary": "<the summary>"}.',
}


def message_id(m: Message) -> str:
    """A stable id of a working-memory message (see the module docstring)."""
    return digest(m.created_at.isoformat() if m.created_at else None, m.role, m.content)[:16]


@dataclass(frozen=True, slots=True)
class ExtractionReport:
    """What one :func:`extract` run did.

    Attributes:
        session_id, strategy, model: What ran.
        messages: Messages processed (0: nothing new since the last run).
        batches: LLM extraction batches.
        llm_calls: LLM calls made (extraction plus supersession decisions).
        writes: One :class:`~primitives.memory.facts.FactWrite` per extracted memory.
    """

    session_id: str
    strategy: str
    model: str
    messages: int = 0
    batches: int = 0
    llm_calls: int = 0
    writes: tuple[FactWrite, ...] = field(default_factory=tuple)

    @property
    def added(self) -> int:
        return sum(1 for w in self.writes if w.status == "added")

    @property
    def superseded(self) -> int:
        return sum(len(w.superseded) for w in self.writes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id, "strategy": self.strategy, "model": self.model,
            "messages": self.messages, "batches": self.batches, "llm_calls": self.llm_calls,
            "added": self.added, "superseded": self.superseded,
            "writes": [{"status": w.status, "id": w.record.id, "text": w.record.text, "superseded": list(w.superseded)} for w in self.writes],
        }


class _Counting:
    """Counts the calls made through an LLM."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.model = getattr(llm, "model", "")
        self.calls = 0

    async def complete(self, messages: Any, **kwargs: Any) -> str:
        self.calls += 1
        return await self.llm.complete(messages, **kwargs)


def _transcript(batch: Sequence[Message]) -> str:
    lines = []
    for m in batch:
        when = m.created_at.date().isoformat() if m.created_at else "undated"
        speaker = m.metadata.get("speaker")
        who = f"{m.role} ({speaker})" if isinstance(speaker, str) and speaker else m.role
        lines.append(f"[{when}] {who}: {m.content}")
    return "\n".join(lines)


def _importance(value: object, model: str) -> float:
    """An answer's ``importance``: a number in ``[0, 1]``.

    Raises:
        LLMResponseError: anything else (a bool, a string, NaN, out of range).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise LLMResponseError(f'"importance" must be a number in [0, 1], got {json.dumps(value)[:100]}', model=model)
    return float(value)


def _parse_memories(answer: Mapping[str, Any], model: str) -> list[dict[str, Any]]:
    items = answer.get("memories")
    if not isinstance(items, list) or len(items) > MAX_MEMORIES_PER_ANSWER:
        raise LLMResponseError(
            f'expected {{"memories": [...]}} with at most {MAX_MEMORIES_PER_ANSWER} items, got {json.dumps(answer)[:200]}', model=model)
    out = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise LLMResponseError(f'each memory must be an object with a non-empty "text", got {json.dumps(item)[:200]}', model=model)
        subject = item.get("subject")
        importance = item.get("importance", 0.5)
        valid_from = item.get("valid_from")
        if subject is not None and not isinstance(subject, str):
            raise LLMResponseError(f'"subject" must be a string or null, got {json.dumps(subject)[:100]}', model=model)
        when = None
        if valid_from not in (None, ""):
            when = parse_time(valid_from) if isinstance(valid_from, str) else None
            if when is None:
                raise LLMResponseError(f'"valid_from" must be YYYY-MM-DD or null, got {json.dumps(valid_from)[:100]}', model=model)
        out.append({"text": item["text"].strip(), "subject": (subject or "").strip() or None,
                    "importance": _importance(importance, model), "valid_from": when})
    return out


def _mark_id(user_id: str | None, session_id: str, strategy: str) -> str:
    return "extract-mark-" + digest(user_id, session_id, strategy)[:40]


def _pending(messages: list[Message], mark: MemoryRecord | None) -> list[Message]:
    if mark is None:
        return messages
    ids = [message_id(m) for m in messages]
    last = mark.metadata.get("last_message_id")
    if isinstance(last, str) and last in ids:
        return messages[ids.index(last) + 1:]
    after = parse_time(mark.metadata.get("last_created_at"))
    return [m for m in messages if after is None or (m.created_at is not None and m.created_at > after)]


async def extract(
    memory: Memory,
    session_id: str,
    *,
    strategy: str = "discrete",
    user_id: str | None,
    namespace: str,
    llm: Any,
    prompt: str | None = None,
) -> ExtractionReport:
    """Run one strategy over the session's new messages (see the module docstring);
    :meth:`Memory.extract` validates the arguments and runs it in the background when asked.

    Raises:
        ConfigurationError: no LLM.
        InvalidInputError: an unknown strategy, ``custom`` without a prompt.
        LLMError: the LLM failed or answered out of shape; the batch wrote nothing and the mark
            stayed, so running again retries it.
    """
    if llm is None:
        raise ConfigurationError("extraction needs an LLM: Memory(..., llm=...) or MEMORY_LLM_URL and MEMORY_LLM_MODEL")
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "custom" and (not isinstance(prompt, str) or not prompt.strip()):
        raise InvalidInputError("the custom strategy needs prompt= (your extraction instructions)")
    from primitives.llm.base import complete_json

    counting = _Counting(llm)
    mark_id = _mark_id(user_id, session_id, strategy)
    mark = await memory.get(mark_id, namespace=namespace)
    todo = _pending(await memory.get_messages(session_id, None, namespace=namespace), mark)
    writes: list[FactWrite] = []
    batches = 0
    for start in range(0, len(todo), BATCH_MESSAGES):
        batch = todo[start:start + BATCH_MESSAGES]
        ids = [message_id(m) for m in batch]
        provenance = {"session_id": session_id, "message_ids": ids, "strategy": strategy, "model": counting.model}
        instructions = _PROMPTS["summary"] if strategy == "summary" else (
            (prompt.strip() + " " if strategy == "custom" else _PROMPTS[strategy]) + _FORMAT)  # type: ignore[union-attr]
        answer = await complete_json(counting, [
            {"role": "system", "content": instructions},
            {"role": "user", "content": _transcript(batch)},
        ])
        if strategy == "summary":
            summary = answer.get("summary")
            if not isinstance(summary, str) or not summary.strip():
                raise LLMResponseError(f'expected {{"summary": "<text>"}}, got {json.dumps(answer)[:200]}', model=counting.model)
            facts = [NewFact(summary.strip(), kind="summary", provenance=provenance,
                             id="summary-" + digest(user_id, session_id, ids[0], ids[-1])[:40])]
        else:
            kind = {"discrete": "fact", "preferences": "preference", "custom": "custom"}[strategy]
            facts = [NewFact(m["text"], subject=m["subject"], kind=kind, importance=m["importance"],
                             valid_from=m["valid_from"], provenance=provenance)
                     for m in _parse_memories(answer, counting.model)]
        writes.extend(await remember_facts(memory, facts, user_id=user_id, session_id=session_id,
                                           namespace=namespace, llm=counting if strategy != "summary" else None))
        batches += 1
        last = batch[-1]
        await memory.add([MemoryRecord(
            text="", id=mark_id, user_id=user_id, session_id=session_id, namespace=namespace,
            memory_type=MemoryType.SEMANTIC, ttl=math.inf,
            metadata={INTERNAL: True, KIND: "extraction_mark", "strategy": strategy,
                      "last_message_id": ids[-1], "last_created_at": iso(last.created_at)},
        )])
    return ExtractionReport(session_id, strategy, counting.model, len(todo), batches, counting.calls, tuple(writes))


_REFLECT_PROMPT = (
    "You reflect on a conversation to learn something lasting about the user or the task: a pattern, "
    "a lesson, what worked or failed. Read the previous insights so as not to repeat them. Write ONE new insight. "
    'Answer with JSON only: {"insight": "<one or two sentences>", "importance": <0.0-1.0>}.'
)


async def reflect(memory: Memory, session_id: str, *, user_id: str | None, namespace: str, llm: Any,
                  max_messages: int = 100) -> FactWrite | None:
    """Write one insight (kind ``"insight"``) from the session's transcript and the user's
    previous insights (the last :data:`MAX_PREVIOUS_INSIGHTS`, listed in a bookkeeping record); ``None`` when the session has no messages. The insight's id is derived
    from the session's last message, so reflecting twice on the same transcript writes it once.

    Raises:
        ConfigurationError: no LLM. LLMError: as :func:`extract` (nothing written).
    """
    if llm is None:
        raise ConfigurationError("reflection needs an LLM: Memory(..., llm=...) or MEMORY_LLM_URL and MEMORY_LLM_MODEL")
    from primitives.llm.base import complete_json

    messages = await memory.get_messages(session_id, max_messages, namespace=namespace)
    if not messages:
        return None
    transcript = _transcript(messages)
    index_id = "insights-" + digest(user_id)[:40]
    index = await memory.get(index_id, namespace=namespace)
    known = [i for i in (index.metadata.get("ids", []) if index else []) if isinstance(i, str)]
    previous = [r for r in [await memory.get(i, namespace=namespace) for i in known] if r is not None]
    model = getattr(llm, "model", "")
    answer = await complete_json(llm, [
        {"role": "system", "content": _REFLECT_PROMPT},
        {"role": "user", "content": "Previous insights:\n" + ("\n".join(f"- {r.text}" for r in previous) or "(none)")
                                    + "\n\nConversation:\n" + transcript},
    ])
    insight, importance = answer.get("insight"), answer.get("importance", 0.5)
    if not isinstance(insight, str) or not insight.strip():
        raise LLMResponseError(f'expected {{"insight": "<text>", "importance": <0-1>}}, got {json.dumps(answer)[:200]}', model=model)
    importance = _importance(importance, model)
    ids = [message_id(m) for m in messages]
    (write,) = await remember_facts(memory, [NewFact(
        insight.strip(), kind="insight", importance=importance,
        provenance={"session_id": session_id, "message_ids": ids[-20:], "strategy": "reflection", "model": model},
        id="insight-" + digest(user_id, session_id, ids[-1])[:40],
    )], user_id=user_id, session_id=session_id, namespace=namespace)
    if write.record.id not in known:  # the user's insights, newest last (a bookkeeping record)
        await memory.add([MemoryRecord(
            text="", id=index_id, user_id=user_id, namespace=namespace, memory_type=MemoryType.SEMANTIC,
            ttl=math.inf, metadata={INTERNAL: True, KIND: "insight_index",
                                    "ids": [*known, write.record.id][-MAX_PREVIOUS_INSIGHTS:]})])
    return write

