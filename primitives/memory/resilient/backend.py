"""``ResilientBackend``: a configured backend that may go away, without losing a memory.

Every write is journaled in a durable :class:`~primitives.memory.resilient.outbox.Outbox` first,
then sent to the primary and remembered (bounded, unindexed) for an in-process fallback. While
the primary is unreachable (a :class:`~primitives.errors.BackendUnavailableError`), a
:class:`~primitives.memory.resilient.breaker.CircuitBreaker` sends calls straight to the fallback
(outputs say ``"in-memory"`` and ``degraded=True``) and writes stay pending in the journal; when
a probe reaches the primary again, the journal is replayed in a background task, last writer
wins by ``updated_at``. A process that dies while degraded replays its journal on the next start.

Arguments are validated once, by the public methods this class inherits from
:class:`~primitives.memory.backend.MemoryBackend`; the hooks here call the primary's and the
fallback's hooks, so nothing is validated twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from primitives.errors import (
    BackendUnavailableError,
    ConfigurationError,
    OutboxError,
    PermissionDeniedError,
    PrimitivesError,
)
from primitives.memory.backend import DamagedRecord, DamageReport, Health, MemoryBackend, SearchResult
from primitives.memory.changes import ChangeEntry
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import DEFAULT_TTLS, MemoryRecord, Message, with_timestamps
from primitives.memory.resilient.breaker import CircuitBreaker
from primitives.memory.resilient.outbox import Outbox, OutboxEntry
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
        self.supports_changes = primary.supports_changes  # type: ignore[misc]
        self._replay_lock = asyncio.Lock()
        self._replay_task: asyncio.Task[int] | None = None
        self._needs_replay = outbox.pending_count() > 0  # a previous process died degraded
        # writes made while healthy, replayed into the fallback when it takes over
        self._recent: deque[tuple[str, Any, Any]] = deque(maxlen=warm_size)
        # the outage being served degraded (monotonic start), announced once, closed by a replay
        self._outage_since: float | None = None

    @property
    def default_search_mode(self) -> str:
        return self.primary.default_search_mode

    @property
    def identity(self) -> str:
        return self.primary.identity

    @property
    def embedder(self) -> Any:
        """The primary's embedder (``None`` when it has none)."""
        return getattr(self.primary, "embedder", None)

    # -- routing -----------------------------------------------------------------------------

    async def _route(self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run on the primary when the breaker allows, else (or when it is unreachable) on the
        fallback; returns ``(result, degraded)``."""
        if self.breaker.allow():
            try:
                result = await primary()
            except BackendUnavailableError as exc:
                self.breaker.failure()
                self._degraded(exc)
            except BaseException:
                self.breaker.success()  # it answered (with a refusal): reachable, so not stuck half-open
                raise
            else:
                if self.breaker.success() or self._needs_replay:
                    self._schedule_replay()
                return result, False
        if self._recent:
            await self._warm_fallback()
        return await fallback(), True

    def _degraded(self, exc: BaseException) -> None:
        """Say once per outage that the primary is down (one WARNING); each further failed call
        or probe of the same outage is logged at DEBUG only."""
        if self._outage_since is not None:
            log.debug("memory backend %s still unreachable: %s", self.name, exc)
            return
        self._outage_since = time.monotonic()
        log.warning(
            "memory backend %s at %s unreachable (%s); serving from %s (degraded) and journalling "
            "writes to the outbox at %s until it returns",
            self.name, self.identity, _first_line(exc), self.fallback.name, self.outbox.path,
        )

    async def _warm_fallback(self) -> None:
        """Load the recent healthy writes into the fallback, in order, once per outage."""
        recent, self._recent = list(self._recent), deque(maxlen=self._recent.maxlen)
        for op, key, value in recent:
            if op == "upsert":
                await self.fallback._put_if_newer(value)
            elif op == "delete":
                await self.fallback._delete(key, value)
            else:
                await self.fallback._append_messages(key[0], key[1], value)

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

    def _check_storable(self, records: Sequence[MemoryRecord]) -> None:
        self.primary._check_storable(records)

    def _check_messages(self, messages: Sequence[Message]) -> None:
        self.primary._check_messages(messages)

    async def _add(self, records: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        now = datetime.now(timezone.utc)
        stamped = [with_timestamps(r, r.created_at or now, now) for r in records]

        async def on_primary() -> list[MemoryRecord]:
            stored = await self.primary._add(records)
            self._recent.append(("upsert", None, stored))
            return stored

        async def on_fallback() -> list[MemoryRecord]:
            await self.fallback._put_if_newer(stamped)
            return stamped

        return await self._write([("upsert", r.id, r.to_dict()) for r in stamped], on_primary, on_fallback)

    async def _delete(self, namespace: str, ids: list[str]) -> int:
        deleted_at = datetime.now(timezone.utc).isoformat()

        async def on_primary() -> int:
            deleted = await self.primary._delete(namespace, ids)
            self._recent.append(("delete", namespace, ids))
            return deleted

        return await self._write(
            [("delete", id, {"namespace": namespace, "deleted_at": deleted_at}) for id in ids],
            on_primary,
            lambda: self.fallback._delete(namespace, ids),
        )

    async def _append_messages(self, namespace: str, session_id: str, messages: Sequence[Message]) -> None:
        now = datetime.now(timezone.utc)
        stamped = [m if m.created_at is not None else Message(m.role, m.content, now, m.metadata) for m in messages]

        async def on_primary() -> None:
            await self.primary._append_messages(namespace, session_id, stamped)
            self._recent.append(("append", (namespace, session_id), stamped))

        await self._write(
            [("append", session_id, {"namespace": namespace, "messages": [m.to_dict() for m in stamped]})],
            on_primary,
            lambda: self.fallback._append_messages(namespace, session_id, stamped),
        )

    async def _put_if_newer(self, records: Sequence[MemoryRecord]) -> int:
        written, _ = await self._route(lambda: self.primary._put_if_newer(records), lambda: self.fallback._put_if_newer(records))
        return written

    async def _delete_if_older(self, namespace: str, deletions: dict[str, datetime]) -> int:
        deleted, _ = await self._route(
            lambda: self.primary._delete_if_older(namespace, deletions),
            lambda: self.fallback._delete_if_older(namespace, deletions),
        )
        return deleted

    async def _changes(self, after: tuple[int, str, str] | None, limit: int) -> list[ChangeEntry]:
        """The primary's changes, after replaying the outbox (so writes made while it was down
        are among them). Never served by the fallback: an export must not advance past writes
        the primary has not got. Raises BackendUnavailableError while the primary is down, or
        while journaled writes are still pending after the replay."""
        if self.outbox.pending_count():
            await self.replay()
            if self.outbox.pending_count():
                raise BackendUnavailableError(
                    f"{self.outbox.pending_count()} writes made while {self.name} was unreachable are not "
                    f"replayed yet; changes would miss them (run memory-primitives outbox replay --path '{self.outbox.path}')"
                )
        return await self.primary._changes(after, limit)

    async def _clear_session(self, namespace: str, session_id: str) -> None:
        await self.fallback._clear_session(namespace, session_id)
        await self._route(lambda: self.primary._clear_session(namespace, session_id), _none)

    # -- reads ---------------------------------------------------------------------------------

    async def _search(self, query: str, tag_filter: dict[str, tuple[str, ...]], limit: int, mode: str) -> SearchResult:
        """Search the primary; while it is down, the fallback (in keyword mode if the fallback
        has no embedder)."""
        fallback_mode = mode if self.fallback.supports_vectors else "keyword"
        result, degraded = await self._route(
            lambda: self.primary._search(query, tag_filter, limit, mode),
            lambda: self.fallback._search(query, tag_filter, limit, fallback_mode),
        )
        return SearchResult(result.hits, result.backend, True, result.skipped) if degraded else result

    async def _get(self, namespace: str, id: str) -> MemoryRecord | None:
        record, _ = await self._route(lambda: self.primary._get(namespace, id), lambda: self.fallback._get(namespace, id))
        return record

    async def _count(self, tag_filter: dict[str, tuple[str, ...]]) -> int:
        n, _ = await self._route(lambda: self.primary._count(tag_filter), lambda: self.fallback._count(tag_filter))
        return n

    async def _get_messages(self, namespace: str, session_id: str, limit: int | None) -> list[Message]:
        messages, _ = await self._route(
            lambda: self.primary._get_messages(namespace, session_id, limit),
            lambda: self.fallback._get_messages(namespace, session_id, limit),
        )
        return messages

    async def _record_skill_execution(self, name: str, success: bool, duration_s: float, namespace: str) -> SkillStats:
        """Recorded on the primary; while it is down, in the fallback's statistics only (they are
        not replayed: the primary's totals miss the executions of an outage)."""
        stats, _ = await self._route(
            lambda: self.primary._record_skill_execution(name, success, duration_s, namespace),
            lambda: self.fallback._record_skill_execution(name, success, duration_s, namespace),
        )
        return stats

    async def _skill_stats(self, name: str, namespace: str) -> SkillStats | None:
        stats, _ = await self._route(
            lambda: self.primary._skill_stats(name, namespace),
            lambda: self.fallback._skill_stats(name, namespace),
        )
        return stats

    # -- replay --------------------------------------------------------------------------------

    def _schedule_replay(self) -> None:
        if self._replay_task is None or self._replay_task.done():
            self._replay_task = asyncio.get_running_loop().create_task(self.replay())

    async def replay(self) -> int:
        """Replay pending and retained journal entries to the primary, oldest first; returns how
        many entries were replayed. Upserts and deletes are last-writer-wins (idempotent);
        acknowledged working-memory appends are not replayed (that would duplicate messages).

        A journal entry that cannot be replayed (unreadable, or refused by the primary as
        invalid, e.g. too large) is moved to the outbox's dead-letter table with the reason, and
        the replay goes on past it. A refusal of the configuration rather than of one entry
        (``ConfigurationError``: credentials, schema, dims; ``PermissionDeniedError``: an ACL)
        stops the replay with every remaining entry still pending. The replay stops at the first unreachable error
        (the breaker opens; the next recovery resumes); each recovery replays the journal once,
        never in a loop.
        """
        async with self._replay_lock:
            dead_before = self._dead_letter_count()
            entries = [e for e in self.outbox.replayable() if not (e.op == "append" and e.acked)]
            done = waiting = 0
            dead: set[int] = set()
            try:
                for batch in _batches(entries):
                    done += await self._replay_batch(batch, dead)
                    pending = [e.seq for e in batch if not e.acked]
                    self.outbox.acknowledge(pending)
                    waiting += sum(seq not in dead for seq in pending)
            except BackendUnavailableError:
                self.breaker.failure()  # the outage goes on (already announced): said at DEBUG only
                log.debug("replay to %s stopped after %d entries: unreachable again", self.name, done)
                return done
            except OutboxError as exc:  # the journal itself failed (disk full...): try at the next recovery
                log.error("replay to %s stopped after %d entries: %s", self.name, done, exc)
                return done
            except (ConfigurationError, PermissionDeniedError) as exc:
                # the store refuses this configuration (credentials, ACL, schema, dims): every
                # entry would be refused, so none is set aside; they stay pending for
                # `memory-primitives outbox replay` once it is fixed, and are not retried on
                # every call (only at the next recovery or start)
                self._needs_replay = False
                self._outage_since = None  # reachable again: this line is the recovery's one line
                log.error(
                    "replay to %s stopped after %d entries, %d still pending: %s; fix it, then run "
                    "memory-primitives outbox replay --path '%s'",
                    self.name, done, self.outbox.pending_count(), exc, self.outbox.path,
                )
                return done
            self._needs_replay = False
            self._recovered(waiting, dead_before)
            return done

    def _dead_letter_count(self) -> int | None:
        try:
            return self.outbox.stats().dead_letter
        except OutboxError:
            return None

    def _recovered(self, waiting: int, dead_before: int | None) -> None:
        """The one line of a finished replay: a WARNING when it ends an outage this process
        announced (paired with the degrade line), else INFO when it replayed anything (writes
        journaled by an earlier process, ``memory-primitives outbox replay``)."""
        after = self._dead_letter_count()
        dead = after - dead_before if after is not None and dead_before is not None else 0
        suffix = (
            f"; {dead} moved to the dead-letter table (memory-primitives outbox dead-letters --path '{self.outbox.path}')"
            if dead > 0 else ""
        )
        if self._outage_since is not None:
            seconds = time.monotonic() - self._outage_since
            self._outage_since = None
            log.warning(
                "memory backend %s reachable again after %.1f s: replayed %d journalled writes from the outbox%s",
                self.name, seconds, waiting, suffix,
            )
        elif waiting or dead > 0:
            log.info("replayed %d journalled writes from the outbox at %s to %s%s",
                     waiting, self.outbox.path, self.name, suffix)

    async def _replay_batch(self, batch: list[OutboxEntry], dead: set[int]) -> int:
        """Send one batch; returns how many entries reached the primary. Entries that cannot be
        decoded, and entries the primary refuses one by one, go to the dead-letter table."""
        decoded: list[tuple[OutboxEntry, Any]] = []
        for entry in batch:
            try:
                decoded.append((entry, _decode(entry)))
            except (PrimitivesError, KeyError, TypeError, ValueError) as exc:
                self.outbox.dead_letter([(entry.seq, f"unreadable {entry.op} entry: {exc}")])
                dead.add(entry.seq)
        if not decoded:
            return 0
        if batch[0].op != "append":  # appends go one by one: a partial batch must not repeat
            try:
                await self._send([item for _, item in decoded], batch[0].op)
                return len(decoded)
            except (BackendUnavailableError, ConfigurationError, PermissionDeniedError):
                raise
            except PrimitivesError as exc:
                log.debug("replay: %s refused a batch of %d (%s); retrying one by one", self.name, len(decoded), exc)
        sent = 0
        for entry, item in decoded:  # find the entries the primary refuses, one at a time
            try:
                await self._send([item], entry.op)
                sent += 1
            except (BackendUnavailableError, ConfigurationError, PermissionDeniedError):
                raise
            except PrimitivesError as exc:
                self.outbox.dead_letter([(entry.seq, f"refused by {self.name}: {type(exc).__name__}: {exc}")])
                dead.add(entry.seq)
        return sent

    async def _send(self, items: list[Any], op: str) -> None:
        if op == "upsert":
            await self.primary.put_if_newer(items)
        elif op == "delete":
            by_namespace: dict[str, dict[str, datetime]] = {}
            for namespace, id, at in items:
                by_namespace.setdefault(namespace, {})[id] = at
            for namespace, deletions in by_namespace.items():
                await self.primary.delete_if_older(deletions, namespace=namespace)
        else:
            for namespace, session_id, messages in items:
                await self.primary.append_messages(session_id, messages, namespace=namespace)

    # -- maintenance ---------------------------------------------------------------------------

    async def find_damaged(self, *, limit: int = 100) -> DamageReport:
        """The primary's damaged records (see :meth:`MemoryBackend.find_damaged`).

        Raises:
            BackendUnavailableError: the primary is unreachable (maintenance never runs on the
                fallback).
        """
        return await self.primary.find_damaged(limit=limit)

    async def repair(self) -> list[DamagedRecord]:
        """Quarantine the primary's damaged records (see :meth:`MemoryBackend.repair`)."""
        return await self.primary.repair()

    async def migrate(self) -> int:
        """Migrate the primary's layout (see :meth:`MemoryBackend.migrate`)."""
        return await self.primary.migrate()

    async def drop(self) -> None:
        """Drop the primary's store, the fallback's copy, and this store's journal entries."""
        await self.primary.drop()
        await self.fallback.drop()
        self._recent.clear()

    # -- lifecycle -----------------------------------------------------------------------------

    async def health(self) -> Health:
        """The primary's health, plus the breaker's state and the outbox's counts:
        ``outbox_pending`` (writes not yet acknowledged by the primary), ``outbox_dead_letter``
        (journal entries that could not be replayed, kept for inspection:
        ``memory-primitives outbox dead-letters``), ``outbox_stuck`` (pending entries older than
        the outbox's ``stuck_after``), or ``outbox_error`` when the journal cannot be read.
        ``ok`` is ``False`` when the primary is not ok or the outbox cannot be read."""
        primary = await self.primary.health()
        detail: dict[str, Any] = {
            **primary.detail,
            "breaker": self.breaker.state.value,
            "outbox_path": str(self.outbox.path),
            "fallback": self.fallback.name,
        }
        try:
            stats = self.outbox.stats()
        except OutboxError as exc:
            detail["outbox_error"] = str(exc)
            return Health(ok=False, backend=self.name, detail=detail)
        detail.update(outbox_pending=stats.pending, outbox_dead_letter=stats.dead_letter, outbox_stuck=stats.stuck)
        return Health(ok=primary.ok, backend=self.name, detail=detail)

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


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, without a trailing full stop."""
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def _decode(entry: OutboxEntry) -> Any:
    """A journal entry's payload as what :meth:`ResilientBackend._send` takes.

    Raises:
        PrimitivesError, KeyError, TypeError, ValueError: the payload is not what this version
            journals.
    """
    payload = entry.payload
    if entry.op == "upsert":
        return MemoryRecord.from_dict(payload)
    namespace = payload.get("namespace", "default")
    if entry.op == "delete":
        at = datetime.fromisoformat(payload["deleted_at"])
        if at.tzinfo is None:
            raise ValueError(f"deleted_at {payload['deleted_at']!r} has no UTC offset")
        return (namespace, entry.key, at)
    return (namespace, entry.key, [Message.from_dict(m) for m in payload["messages"]])


def _batches(entries: list[OutboxEntry]) -> list[list[OutboxEntry]]:
    """Consecutive entries of one op, at most ``_REPLAY_BATCH`` long, in journal order."""
    out: list[list[OutboxEntry]] = []
    for e in entries:
        if out and out[-1][0].op == e.op and len(out[-1]) < _REPLAY_BATCH:
            out[-1].append(e)
        else:
            out.append([e])
    return out
