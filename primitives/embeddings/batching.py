"""Micro-batching: concurrent requests to one model share one model call.

A :class:`MicroBatcher` sits in front of an async batch function (an embedding model's
``encode``, an ``/v1/embeddings`` request). Callers :meth:`~MicroBatcher.submit` their own short
list of items; one worker task per event loop gathers the queued requests into a batch of at most
``max_batch`` items, makes one call, and hands each caller its own slice of the results.

When a batch is sent:
    * at once when the queued items fill ``max_batch``;
    * otherwise ``max_wait_s`` after the worker wakes (``0``: on the next turn of the event loop,
      so a caller alone pays no wait);
    * never while ``max_in_flight`` calls are still running: requests keep queueing meanwhile and
      go together in the next call. With ``max_in_flight=1`` (a local model on one worker thread)
      a steady stream of ``N`` concurrent callers settles on batches of about ``N``.

This is the dynamic batching of inference servers (NVIDIA Triton's ``max_queue_delay_microseconds``
and ``preferred_batch_size``; TorchServe's ``batch_delay`` and ``max_batch_size``), in process.

Failure and cancellation:
    * an error of the call (or of its result's length) is set on every request of that batch: the
      same exception object, so every waiter sees the same typed error;
    * a cancelled caller's request is dropped if it has not been sent yet; if it has, its slice of
      the result is discarded; the other requests of the batch are not affected;
    * the queue is bounded (``max_queued`` items): a caller that would overfill it waits for room
      (back-pressure), so a burst of callers cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from primitives.validation import check_int, check_number

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MAX_WAIT_S", "MicroBatcher"]

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Seconds the worker collects requests before a batch that is not full is sent. 0 (the default)
#: sends on the next turn of the event loop: a lone caller waits for nothing, and concurrent
#: callers still share calls because requests queue while a call runs (on LoCoMo ingest with 8
#: sessions at once: about 6.8 texts per call, docs/evaluation.md). A window of a few ms is not
#: measured yet; it would cost a lone caller that wait on every call.
DEFAULT_MAX_WAIT_S = 0.0
#: Calls running at once. One suits a local model on one worker thread (a second call would only
#: queue in front of the thread, with fewer texts in each batch).
DEFAULT_MAX_IN_FLIGHT = 1


@dataclass(slots=True, eq=False)
class _Request(Generic[_T, _R]):
    items: list[_T]
    future: asyncio.Future[list[_R]]


class MicroBatcher(Generic[_T, _R]):
    """Merges concurrent :meth:`submit` calls into calls of ``call`` on up to ``max_batch`` items.

    Args:
        call: The batch function: given a list of items, returns one result per item, in order.
        max_batch: Most items in one call (an int >= 1). A request of more items is sent alone.
        max_wait_s: Seconds to collect requests before a batch that is not full is sent (a
            number >= 0 and <= 1; default :data:`DEFAULT_MAX_WAIT_S`).
        max_in_flight: Calls running at once (an int >= 1; default :data:`DEFAULT_MAX_IN_FLIGHT`).
        max_queued: Most items waiting to be sent (an int >= ``max_batch``; default 16 batches).
        result_error: Makes the error set on a batch's requests when ``call`` returns another
            number of results than items (given the two counts); default a ``RuntimeError``.

    One batcher serves one event loop at a time: used from another loop, it starts afresh there
    (requests left on a stopped loop cannot be answered anyway).

    Raises:
        InvalidInputError: an argument is out of range (an ``InvalidInputTypeError``, also a
            ``TypeError``, for a wrong type).
    """

    def __init__(
        self,
        call: Callable[[list[_T]], Awaitable[Sequence[_R]]],
        *,
        max_batch: int,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_queued: int | None = None,
        result_error: Callable[[int, int], Exception] | None = None,
    ) -> None:
        self._call = call
        self._max_batch = check_int(max_batch, "max_batch", minimum=1)
        self._max_wait_s = check_number(max_wait_s, "max_wait_s", minimum=0.0, maximum=1.0)
        self._max_in_flight = check_int(max_in_flight, "max_in_flight", minimum=1)
        if max_queued is None:
            max_queued = 16 * self._max_batch
        self._max_queued = check_int(max_queued, "max_queued", minimum=self._max_batch)
        self._result_error = result_error or (
            lambda got, want: RuntimeError(f"the batch call returned {got} results for {want} items")
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Request[_T, _R]] = deque()
        self._queued = 0
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._room: list[asyncio.Future[None]] = []
        self._full: asyncio.Event | None = None
        self.batches = 0
        """Calls made so far."""

    @property
    def max_batch(self) -> int:
        """Most items in one call."""
        return self._max_batch

    @property
    def queued(self) -> int:
        """Items waiting to be sent (cancelled requests not yet dropped included)."""
        return self._queued

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._queue = deque()
            self._queued = 0
            self._worker = None
            self._running = set()
            self._slots = asyncio.Semaphore(self._max_in_flight)
            self._room = []
            self._full = asyncio.Event()
        return loop

    async def submit(self, items: Sequence[_T]) -> list[_R]:
        """The results of ``items``, in order, from a call shared with concurrent submitters.

        Raises:
            Whatever ``call`` raised for the batch the items went in (the same object for every
            request of that batch), or ``result_error``'s error when it returned another number
            of results than items. ``asyncio.CancelledError`` when the caller is cancelled.
        """
        loop = self._bind()
        items = list(items)
        if not items:
            return []
        while self._queued and self._queued + len(items) > self._max_queued:
            room = loop.create_future()  # woken by _notify_room when items leave the queue
            self._room.append(room)
            await room
        assert self._full is not None
        request: _Request[_T, _R] = _Request(items, loop.create_future())
        self._queue.append(request)
        self._queued += len(items)
        if self._queued >= self._max_batch:
            self._full.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(), name="micro-batcher")
        try:
            return await request.future
        except asyncio.CancelledError:
            self._drop(request)
            raise

    def _drop(self, request: _Request[_T, _R]) -> None:
        """Take a cancelled caller's request out of the queue if it has not been sent."""
        try:
            self._queue.remove(request)
        except ValueError:
            return  # already sent (its result will be discarded) or already dropped
        self._queued -= len(request.items)
        self._notify_room()

    def _notify_room(self) -> None:
        """Wake every caller waiting for room; each checks again."""
        waiting, self._room = self._room, []
        for room in waiting:
            if not room.done():
                room.set_result(None)

    def _take(self) -> list[_Request[_T, _R]]:
        """The next batch: queued requests, oldest first, while they fit in ``max_batch`` (the
        first one always); cancelled ones are dropped on the way."""
        batch: list[_Request[_T, _R]] = []
        size = 0
        queue = self._queue
        while queue:
            request = queue[0]
            if request.future.done():  # cancelled while queued
                queue.popleft()
                self._queued -= len(request.items)
                continue
            if batch and size + len(request.items) > self._max_batch:
                break
            queue.popleft()
            self._queued -= len(request.items)
            batch.append(request)
            size += len(request.items)
        assert self._full is not None
        if self._queued < self._max_batch:
            self._full.clear()
        self._notify_room()
        return batch

    async def _work(self) -> None:
        slots, full = self._slots, self._full
        assert slots is not None and full is not None
        loop = asyncio.get_running_loop()
        while self._queue:
            await slots.acquire()
            try:
                if self._max_wait_s and not full.is_set():
                    try:
                        await asyncio.wait_for(full.wait(), self._max_wait_s)
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(0)  # let callers of this turn of the loop join
                batch = self._take()
            except BaseException:
                slots.release()
                raise
            if not batch:
                slots.release()
                continue
            task = loop.create_task(self._send(batch, slots))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _send(self, batch: list[_Request[_T, _R]], slots: asyncio.Semaphore) -> None:
        items = [item for request in batch for item in request.items]
        self.batches += 1
        try:
            try:
                results = list(await self._call(items))
                if len(results) != len(items):
                    raise self._result_error(len(results), len(items))
            except Exception as exc:
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                return
            except BaseException:  # the worker's loop is being torn down: nobody is left waiting
                for request in batch:
                    request.future.cancel()
                raise
        finally:
            slots.release()
        start = 0
        for request in batch:
            end = start + len(request.items)
            if not request.future.done():  # the caller may have been cancelled meanwhile
                request.future.set_result(results[start:end])
            start = end
