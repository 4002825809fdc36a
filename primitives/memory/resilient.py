"""``ResilientBackend``: a configured backend that may go away, without losing a memory.

Every write is journaled in a durable :class:`~primitives.memory.outbox.Outbox` first, then sent
to the primary and remembered (bounded, unindexed) for an in-process fallback. While the primary is unreachable (a
:class:`~primitives.errors.BackendUnavailableError`), a :class:`CircuitBreaker` sends calls
straight to the fallback (outputs say ``"in-memory"`` and ``degraded=True``) and writes stay
pending in the journal; when a probe reaches the primary again, the journal is replayed in a
background task, last writer wins by ``updated_at``. A process that dies while degraded replays
its journal on the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from primitives.errors import BackendUnavailableError, InvalidInputError, InvalidRecordError, InvalidRecordTypeError
from primitives.memory.backend import Health, MemoryBackend, SearchResult, check_mode
from primitives.memory.breaker import CircuitBreaker
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.outbox import Outbox, OutboxEntry
from primitives.memory.record import DEFAULT_NAMESPACE, DEFAULT_TTLS, MemoryRecord, Message, with_timestamps
from primitives.memory.skills import SkillStats

__all__ = ["ResilientBackend"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_REPLAY_BATCH = 500


class ResilientBackend(MemoryBackend):
    """Wraps ``primary`` with an in-process fallback, a durable outbox and a circuit breaker.

    Args:
        primary: The configured backend (Redis, Agent Memory Server).
        outbox: The durable journal (one file per primary store).
        fallback: Serves calls while the primary is down; an ``InMemoryBackend`` of 10,000
            records by default.
        warm_size: How many recent writes made while the primary was up are kept (as objects,
            not indexed: a deque append per write) and loaded into the fallback when the primary
            goes away, so degraded reads still see recent memories.
        breaker: Decides when to try the primary; ``CircuitBreaker()`` by default.

    ``name`` and capabilities are the primary's; each :class:`SearchResult` says who served it.
    """

    def __init__(
        self,
        primary: MemoryBackend,
        *,
        outbox: Outbox,
        fallback: MemoryBackend | None = None,
        breaker: CircuitBreaker | None = None,
        warm_size: int = 10_000,
    ) -> None:
        self.primary = primary
        # the fallback embeds with the primary's embedder (same model, same cache), if any
        self.fallback = fallback or InMemoryBackend(
            maxsize=10_000,
            embedder=getattr(primary, "embedder", None),
            default_ttls=getattr(primary, "default_ttls", DEFAULT_TTLS),
        )
        self.outbox = outbox
        self.breaker = breaker or CircuitBreaker()
        self.name = primary.name  # type: ignore[misc]
        self.supports_ttl = primary.supports_ttl  # type: ignore[misc]
        self.supports_vectors = primary.supports_vectors  # type: ignore[misc]
        self.supports_working_memory = primary.supports_working_memory  # type: ignore[misc]
        self.supports_skill_stats = primary.supports_skill_stats  # type: ignore[misc]
        self._replay_lock = asyncio.Lock()
        self._replay_task: asyncio.Task[int] | None = None
        self._needs_replay = outbox.pending_count() > 0  # a previous process died degraded
        # writes made while healthy, replayed into the fallback when it takes over
        self._recent: deque[tuple[str, Any, Any]] = deque(maxlen=warm_size)

    # -- routing -----------------------------------------------------------------------------

    async def _route(self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run on the primary when the breaker allows, else (or when it is unreachable) on the
        fallback; returns ``(result, degraded)``."""
        if self.breaker.allow():
            try:
                result = await primary()
            except BackendUnavailableError as exc:
                self.breaker.failure()
                log.warning("memory backend %s unreachable, serving from %s: %s", self.name, self.fallback.name, exc)
            except Exception:
                self.breaker.success()  # it answered (with a refusal): reachable, so not stuck half-open
                raise
            else:
                if self.breaker.success() or self._needs_replay:
                    self._schedule_replay()
                return result, False
        if self._recent:
            await self._warm_fallback()
        return await fallback(), True

    async def _warm_fallback(self) -> None:
        """Load the recent healthy writes into the fallback, in order, once per outage."""
        recent, self._recent = list(self._recent), deque(maxlen=self._recent.maxlen)
        for op, key, value in recent:
            if op == "upsert":
                await self.fallback.put_if_newer(value)
            elif op == "delete":
                await self.fallback.delete(value)
            else:
                await self.fallback.append_messages(key, value)

    async def _write(
        self,
        entries: list[tuple[str, str, dict[str, Any]]],
        primary: Callable[[], Awaitable[T]],
        fallback: Callable[[], Awaitable[T]],
    ) -> T:
        seqs = self.outbox.journal(entries)
        try:
            result, degraded = await self._route(primary, fallback)
        except Exception:
            # rejected for a reason other than reachability (bad input, configuration): a
            # replay would be rejected again, so the journal forgets it. A cancellation is not
            # caught: its entries stay and replay (idempotently), since the write may have landed.
            self.outbox.discard(seqs)
            raise
        if not degraded:
            self.outbox.acknowledge(seqs)
        return result

    # -- writes --------------------------------------------------------------------------------

    async def add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        for record in records:
            if not isinstance(record, MemoryRecord):
                raise InvalidRecordTypeError(
                    f"add() takes MemoryRecord objects, got {type(record).__name__}; nothing stored"
                )
        now = datetime.now(timezone.utc)
        stamped = [with_timestamps(r, r.created_at or now, now) for r in records]

        async def on_primary() -> list[MemoryRecord]:
            stored = await self.primary.add(records)
            self._recent.append(("upsert", None, stored))
            return stored

        async def on_fallback() -> list[MemoryRecord]:
            await self.fallback.put_if_newer(stamped)
            return stamped

        return await self._write([("upsert", r.id, r.to_dict()) for r in stamped], on_primary, on_fallback)

    async def delete(self, ids: Sequence[str]) -> int:
        if isinstance(ids, str):
            raise InvalidInputError("delete() takes a list of ids, got a single str")
        deleted_at = datetime.now(timezone.utc).isoformat()

        async def on_primary() -> int:
            deleted = await self.primary.delete(ids)
            self._recent.append(("delete", None, list(ids)))
            return deleted

        return await self._write(
            [("delete", id, {"deleted_at": deleted_at}) for id in ids], on_primary, lambda: self.fallback.delete(ids)
        )

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        for message in messages:
            if not isinstance(message, Message):
                raise InvalidRecordTypeError(
                    f"append_messages() takes Message objects, got {type(message).__name__}"
                )
        now = datetime.now(timezone.utc)
        stamped = [m if m.created_at is not None else Message(m.role, m.content, now, m.metadata) for m in messages]

        async def on_primary() -> None:
            await self.primary.append_messages(session_id, stamped)
            self._recent.append(("append", session_id, stamped))

        await self._write(
            [("append", session_id, {"messages": [m.to_dict() for m in stamped]})],
            on_primary,
            lambda: self.fallback.append_messages(session_id, stamped),
        )

    async def put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        written, _ = await self._route(lambda: self.primary.put_if_newer(records), lambda: self.fallback.put_if_newer(records))
        return written

    async def delete_if_older(self, deletions: Mapping[str, datetime]) -> int:
        deleted, _ = await self._route(
            lambda: self.primary.delete_if_older(deletions), lambda: self.fallback.delete_if_older(deletions)
        )
        return deleted

    async def clear_session(self, session_id: str) -> None:
        await self.fallback.clear_session(session_id)
        await self._route(lambda: self.primary.clear_session(session_id), _none)

    # -- reads ---------------------------------------------------------------------------------

    async def search(
        self, query: str, *, filter: Mapping[str, Any] | None = None, limit: int = 10, mode: str | None = None
    ) -> SearchResult:
        """Search the primary; while it is down, the fallback (in keyword mode if the fallback
        has no embedder)."""
        check_mode(mode)
        fallback_mode = mode if mode is None or self.fallback.supports_vectors else "keyword"
        result, degraded = await self._route(
            lambda: self.primary.search(query, filter=filter, limit=limit, mode=mode),
            lambda: self.fallback.search(query, filter=filter, limit=limit, mode=fallback_mode),
        )
        return SearchResult(result.hits, result.backend, degraded) if degraded else result

    async def get(self, id: str) -> MemoryRecord | None:
        record, _ = await self._route(lambda: self.primary.get(id), lambda: self.fallback.get(id))
        return record

    async def count(self, filter: Mapping[str, Any] | None = None) -> int:
        n, _ = await self._route(lambda: self.primary.count(filter), lambda: self.fallback.count(filter))
        return n

    async def record_skill_execution(
        self, name: str, *, success: bool, duration_s: float, namespace: str = DEFAULT_NAMESPACE
    ) -> SkillStats:
        """Recorded on the primary; while it is down, in the fallback's statistics only (they are
        not replayed: the primary's totals miss the executions of an outage)."""
        stats, _ = await self._route(
            lambda: self.primary.record_skill_execution(name, success=success, duration_s=duration_s, namespace=namespace),
            lambda: self.fallback.record_skill_execution(name, success=success, duration_s=duration_s, namespace=namespace),
        )
        return stats

    async def skill_stats(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> SkillStats | None:
        stats, _ = await self._route(
            lambda: self.primary.skill_stats(name, namespace=namespace),
            lambda: self.fallback.skill_stats(name, namespace=namespace),
        )
        return stats

    async def get_messages(self, session_id: str, limit: int | None = None) -> list[Message]:
        messages, _ = await self._route(
            lambda: self.primary.get_messages(session_id, limit), lambda: self.fallback.get_messages(session_id, limit)
        )
        return messages

    # -- replay --------------------------------------------------------------------------------

    def _schedule_replay(self) -> None:
        if self._replay_task is None or self._replay_task.done():
            self._replay_task = asyncio.get_running_loop().create_task(self.replay())

    async def replay(self) -> int:
        """Replay pending and retained journal entries to the primary, oldest first; returns how
        many entries were replayed. Upserts and deletes are last-writer-wins (idempotent);
        acknowledged working-memory appends are not replayed (that would duplicate messages).
        Stops at the first unreachable error (the breaker opens; a later recovery resumes)."""
        async with self._replay_lock:
            entries = [e for e in self.outbox.replayable() if not (e.op == "append" and e.acked)]
            done = 0
            try:
                for batch in _batches(entries):
                    await self._replay_batch(batch)
                    self.outbox.acknowledge([e.seq for e in batch if not e.acked])
                    done += len(batch)
            except BackendUnavailableError:
                self.breaker.failure()
                return done
            self._needs_replay = False
            if done:
                log.info("replayed %d journaled writes to %s", done, self.name)
            return done

    async def _replay_batch(self, batch: list[OutboxEntry]) -> None:
        op = batch[0].op
        if op == "upsert":
            records = []
            for e in batch:
                try:
                    records.append(MemoryRecord.from_dict(e.payload))
                except (InvalidRecordError, ValueError) as exc:  # pragma: no cover - journal written by us
                    log.error("dropping unreadable journal entry %d: %s", e.seq, exc)
            await self.primary.put_if_newer(records)
        elif op == "delete":
            await self.primary.delete_if_older({e.key: datetime.fromisoformat(e.payload["deleted_at"]) for e in batch})
        else:
            for e in batch:
                await self.primary.append_messages(e.key, [Message.from_dict(m) for m in e.payload["messages"]])

    # -- lifecycle -----------------------------------------------------------------------------

    async def health(self) -> Health:
        primary = await self.primary.health()
        return Health(
            ok=primary.ok,
            backend=self.name,
            detail={
                **primary.detail,
                "breaker": self.breaker.state.value,
                "outbox_pending": self.outbox.pending_count(),
                "outbox_path": str(self.outbox.path),
                "fallback": self.fallback.name,
            },
        )

    async def aclose(self) -> None:
        if self._replay_task is not None and not self._replay_task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._replay_task), timeout=10)
            except (asyncio.TimeoutError, BackendUnavailableError):
                self._replay_task.cancel()
        await self.primary.aclose()
        await self.fallback.aclose()
        self.outbox.close()


async def _none() -> None:
    return None


def _batches(entries: list[OutboxEntry]) -> list[list[OutboxEntry]]:
    """Consecutive entries of one op, at most ``_REPLAY_BATCH`` long, in journal order."""
    out: list[list[OutboxEntry]] = []
    for e in entries:
        if out and out[-1][0].op == e.op and len(out[-1]) < _REPLAY_BATCH:
            out[-1].append(e)
        else:
            out.append([e])
    return out
