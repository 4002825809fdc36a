"""``LocalReplica``: an in-process copy of a shared memory store, kept warm from its change feed."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from primitives.errors import BackendUnavailableError, ConfigurationError, CorruptRecordError
from primitives.memory.backend import MemoryBackend
from primitives.memory.facade import Memory
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import MemoryRecord
from primitives.sync.feed import (
    START,
    ChangeEvent,
    ChangeFeed,
    ChangeSubscription,
    parse_position,
)

__all__ = ["LocalReplica"]

logger = logging.getLogger(__name__)


class LocalReplica:
    """Keeps an :class:`InMemoryBackend` in step with a shared store by following its feed.

    For each batch of change events (up to ``batch_size`` already available, last event per
    ``(namespace, id)`` wins): an upsert fetches the record from the source backend and writes it with
    :meth:`~MemoryBackend.put_if_newer` (last writer wins by ``updated_at``; a record gone from
    the source by then is deleted locally with :meth:`~MemoryBackend.delete_if_older`); a delete
    is applied with ``delete_if_older`` at the event's time. Every agent's changes are applied,
    this process's own included. Source reads that fail with ``BackendUnavailableError`` are
    retried (backoff up to 2 s) until they succeed.

    Args:
        memory: The shared memory (its ``backend`` is the source, its ``feed`` the feed), or
            give ``source`` and ``feed`` instead.
        source, feed: The store to copy and its change feed.
        after: Position to start after: ``"0"`` (default: every change the feed still keeps,
            which is a full copy while the feed holds the store's whole history), a position
            saved from :attr:`position` to resume, or ``"$"`` for changes from now on.
        namespace: Only copy this namespace (``None``: all).
        local: The in-process backend to fill (default: a new ``InMemoryBackend()``).
        batch_size: Events applied together, ``>= 1`` (default 256).

    Raises:
        ConfigurationError: neither a memory with a feed nor both ``source`` and ``feed``.
        InvalidStreamIdError: ``after`` is malformed.

    Use ``async with LocalReplica(memory) as replica: ...`` or :meth:`start` / :meth:`aclose`.
    """

    def __init__(
        self,
        memory: Memory | None = None,
        *,
        source: MemoryBackend | None = None,
        feed: ChangeFeed | None = None,
        after: str = START,
        namespace: str | None = None,
        local: InMemoryBackend | None = None,
        batch_size: int = 256,
    ) -> None:
        if memory is not None:
            source, feed = memory.backend, memory.feed
        if source is None or feed is None:
            raise ConfigurationError("LocalReplica needs a Memory with a change feed, or source= and feed=")
        self.source = source
        self.feed = feed
        self.backend = local if local is not None else InMemoryBackend()
        self.batch_size = batch_size
        self.applied = 0
        self.error: BaseException | None = None
        self._subscription: ChangeSubscription = feed.subscribe(after=after, namespace=namespace)
        self._task: asyncio.Task[None] | None = None
        self._applied_position: str | None = None
        self._progress = asyncio.Condition()

    @property
    def position(self) -> str | None:
        """Position of the last change applied (save it to resume with ``after=``); ``None``
        before :meth:`start`."""
        return self._applied_position

    async def start(self) -> None:
        """Start following the feed in a background task (returns once it listens).

        Raises:
            InvalidStreamIdError: ``after`` lies beyond the feed's newest position.
            ChangeFeedGapError: changes after ``after`` were trimmed; start from ``"0"``.
            BackendUnavailableError: the feed is unreachable.
        """
        if self._task is not None:
            return
        await self._subscription.start()
        self._applied_position = self._subscription.position
        self._task = asyncio.create_task(self._run(), name="memory-local-replica")

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._subscription.next_batch(self.batch_size)
                if not batch:
                    return
                await self._apply(batch)
                async with self._progress:
                    self._applied_position = self._subscription.position
                    self.applied += len(batch)
                    self._progress.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # kept for wait_for() and the caller; the task ends here
            self.error = exc
            logger.error("local replica stopped: %s", exc)
            async with self._progress:
                self._progress.notify_all()

    async def _apply(self, batch: list[ChangeEvent]) -> None:
        latest: dict[tuple[str, str], ChangeEvent] = {}
        for event in batch:
            key = (event.namespace, event.id)
            latest.pop(key, None)
            latest[key] = event
        upserts = [e for e in latest.values() if e.op == "upsert"]
        deletions: dict[str, dict[str, datetime]] = {}
        for e in latest.values():
            if e.op == "delete":
                deletions.setdefault(e.namespace, {})[e.id] = e.updated_at
        delay = 0.05
        while True:
            try:
                records = await asyncio.gather(*(self._fetch(e) for e in upserts))
                break
            except BackendUnavailableError as exc:
                logger.warning("local replica: source unreachable, retrying in %.2f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        found = [r for r in records if r is not None]
        for event, record in zip(upserts, records):
            if record is None:  # deleted (or expired, or damaged) at the source since the event
                deletions.setdefault(event.namespace, {})[event.id] = event.updated_at
        if found:
            await self.backend.put_if_newer(found)
        for namespace, by_id in deletions.items():
            await self.backend.delete_if_older(by_id, namespace=namespace)

    async def _fetch(self, event: ChangeEvent) -> MemoryRecord | None:
        """The source's record for an upsert event; ``None`` when it is gone or damaged (a
        damaged record is left out of the copy, as a search leaves it out)."""
        try:
            return await self.source.get(event.id, namespace=event.namespace)
        except CorruptRecordError:
            return None

    async def wait_for(self, position: str, timeout: float | None = None) -> None:
        """Wait until every change up to ``position`` has been applied (returns at once if it
        has): the position of an event this replica copies, or ``await feed.last_position()``
        when the newest event is one (events of other namespaces advance it only when a copied
        one follows).

        Raises:
            InvalidStreamIdError: ``position`` is malformed.
            TimeoutError: not reached within ``timeout`` seconds.
            Exception: the error that stopped the replica (see :attr:`error`).
        """
        target = parse_position(position)

        def reached() -> bool:
            current = self._applied_position
            return self.error is not None or (
                current is not None and parse_position(current) >= target
            )

        async with asyncio.timeout(timeout):
            async with self._progress:
                await self._progress.wait_for(reached)
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        """Stop following the feed (the local backend stays readable)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._subscription.aclose()

    async def __aenter__(self) -> LocalReplica:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
