"""Working-memory summarisation (:meth:`Memory.summarize_session`).

When a session's messages exceed ``threshold_tokens`` (counted with the memory's token counter),
every message but the last ``keep_last`` is replaced by one summary message (role ``"system"``,
``metadata["kind"] == "summary"``) written by the LLM; a previous summary is summarised again with
the messages after it (a rolling summary, as the Agent Memory Server does for working memory).

Nothing acknowledged is lost, even if the process dies mid-way: the summary and the messages to
keep are first written as one long-term record (kind ``"summary"``, ``pending: true``); then the
session is checked to still start with the summarised messages (else nothing changes: another
writer got there first), cleared and refilled; then the record's ``pending`` flag is cleared. A
call that finds a ``pending`` record for the session whose messages are missing puts them back
first. Without a crash, the window in which another writer's append can be lost is the clear and
refill (two calls on a server backend); in process there is none. Nothing is replaced while the
configured backend is degraded (down, or writes still waiting in the outbox): ``skipped`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from primitives.errors import ConfigurationError, LLMResponseError
from primitives.memory.extraction import _transcript, message_id
from primitives.memory.kinds import KIND, digest
from primitives.memory.record import MemoryRecord, MemoryType, Message

if TYPE_CHECKING:
    from primitives.memory.facade import Memory

__all__ = ["SummaryReport", "summarize_session"]

_PROMPT = (
    "Summarise the earlier part of this conversation so the assistant can continue it: keep names, "
    "facts the user stated, decisions, open tasks and dates; at most eight sentences. "
    'Answer with JSON only: {"summary": "<the summary>"}.'
)


@dataclass(frozen=True, slots=True)
class SummaryReport:
    """What :meth:`Memory.summarize_session` did.

    Attributes:
        summarized: Messages replaced by the summary (0: under the threshold, or the session
            changed while the LLM worked).
        tokens_before, tokens_after: Tokens of the session's messages before and after.
        record_id: The long-term record holding the summary (``None`` when nothing was done).
        restored: Messages put back from an interrupted earlier run.
        skipped: Why nothing was replaced although the session is over the threshold
            (``"backend degraded"``, ``"session changed"``), else ``None``.
    """

    summarized: int
    tokens_before: int
    tokens_after: int
    record_id: str | None = None
    restored: int = 0
    skipped: str | None = None


async def _settled(memory: Memory) -> bool:
    """The configured backend answers and has no journalled writes waiting: a session cleared on
    the fallback during an outage would not be cleared on the server, and the replayed refill would
    duplicate its messages there, so summaries wait for the server."""
    health = await memory.health()
    return health.ok and not health.detail.get("outbox_pending")


def _pending_id(user_id: str | None, session_id: str) -> str:
    return "wm-summary-" + digest(user_id, session_id)[:40]


async def _restore(memory: Memory, ns: str, user_id: str | None, session_id: str) -> int:
    record = await memory.get(_pending_id(user_id, session_id), namespace=ns)
    if record is None or record.metadata.get("pending") is not True:
        return 0
    kept = [Message.from_dict(m) for m in record.metadata.get("messages", [])]
    current = await memory.get_messages(session_id, None, namespace=ns)
    have = {message_id(m) for m in current}
    missing = [m for m in kept if message_id(m) not in have]
    if missing and not current:  # cleared but not refilled: put the session back
        await memory.append_messages(session_id, kept, namespace=ns)
    await memory.add([_record(record.text, record.id, user_id, session_id, ns, kept, pending=False)])
    return len(missing) if not current else 0


def _record(text: str, id: str, user_id: str | None, session_id: str, ns: str, messages: list[Message], *, pending: bool) -> MemoryRecord:
    return MemoryRecord(
        text=text, id=id, user_id=user_id, session_id=session_id, namespace=ns,
        memory_type=MemoryType.SEMANTIC, topics=("summary",), ttl=math.inf,
        metadata={KIND: "summary", "pending": pending, "source": "working_memory",
                  "messages": [m.to_dict() for m in messages] if pending else []},
    )


async def summarize_session(memory: Memory, session_id: str, *, user_id: str | None, namespace: str,
                            threshold_tokens: int, keep_last: int, llm: Any, counter: Any) -> SummaryReport:
    """See the module docstring; :meth:`Memory.summarize_session` validates the arguments.

    Raises:
        ConfigurationError: no LLM. LLMError: the LLM failed or answered out of shape (nothing changed).
    """
    restored = await _restore(memory, namespace, user_id, session_id)
    messages = await memory.get_messages(session_id, None, namespace=namespace)
    before = sum(counter.count(m.content) for m in messages)
    if before <= threshold_tokens or len(messages) <= keep_last + 1:
        return SummaryReport(0, before, before, None, restored)
    if llm is None:
        raise ConfigurationError("summarising working memory needs an LLM: Memory(..., llm=...) or MEMORY_LLM_URL")
    if not await _settled(memory):
        return SummaryReport(0, before, before, None, restored, "backend degraded")
    from primitives.llm.base import complete_json

    older = messages[: len(messages) - keep_last]
    answer = await complete_json(llm, [{"role": "system", "content": _PROMPT}, {"role": "user", "content": _transcript(older)}])
    summary = answer.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise LLMResponseError(f'expected {{"summary": "<text>"}}, got {str(answer)[:200]}', model=getattr(llm, "model", ""))
    summary_message = Message("system", f"Summary of the earlier conversation: {summary.strip()}",
                              older[-1].created_at, {KIND: "summary", "summarized": len(older)})
    current = await memory.get_messages(session_id, None, namespace=namespace)
    if [message_id(m) for m in current[: len(older)]] != [message_id(m) for m in older]:
        return SummaryReport(0, before, before, None, restored, "session changed")  # another writer got there first
    if not await _settled(memory):
        return SummaryReport(0, before, before, None, restored, "backend degraded")
    refill = [summary_message, *current[len(older):]]
    record_id = _pending_id(user_id, session_id)
    await memory.add([_record(summary.strip(), record_id, user_id, session_id, namespace, refill, pending=True)])
    await memory.clear_session(session_id, namespace=namespace)
    await memory.append_messages(session_id, refill, namespace=namespace)
    await memory.add([_record(summary.strip(), record_id, user_id, session_id, namespace, refill, pending=False)])
    after = sum(counter.count(m.content) for m in refill)
    return SummaryReport(len(older), before, after, record_id, restored)
