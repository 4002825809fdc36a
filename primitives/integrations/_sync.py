"""Sync calls onto async code, for the adapters whose frameworks also have sync entry points
(LangGraph's ``BaseStore.batch``, LangChain's ``invoke``, ``messages``).

``Memory`` is async and its server clients belong to the event loop they were first used on, so a
sync call cannot simply ``asyncio.run`` a coroutine each time. :class:`LoopBridge` does what
LangGraph's async-only stores do:

- called from a thread whose event loop is running (inside ``async def``): it refuses with
  :class:`SyncCallInEventLoopError`, since blocking that loop could wait on itself forever; await the
  async method instead;
- called from another thread while the loop that last used the adapter's async methods is running
  (a LangGraph sync node or tool run in a worker thread of an async graph): the coroutine runs on
  that loop, so every call reaches the memory from one loop, and the thread waits for it;
- otherwise (a plain sync program): the coroutine runs on a private event loop in a daemon thread
  that the bridge starts on first use and reuses, so a server client stays on one loop.

Use one style per adapter object where a server backend is involved: async calls on one loop, or
sync calls; a memory used from two loops may see its Redis connections refuse the second.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from primitives.errors import PrimitivesError

__all__ = ["LoopBridge", "SyncCallInEventLoopError"]

_T = TypeVar("_T")


class SyncCallInEventLoopError(PrimitivesError, RuntimeError):
    """A sync adapter method was called from a running event loop; await its async variant."""


class LoopBridge:
    """Runs coroutines for sync callers (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._owner: asyncio.AbstractEventLoop | None = None
        self._private: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def note_loop(self) -> None:
        """Remember the running loop as the adapter's loop (called by every async entry point)."""
        try:
            self._owner = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - async entry points always have a loop
            pass

    def run(self, make: Callable[[], Awaitable[_T]], sync_name: str, async_name: str) -> _T:
        """Run ``make()`` to completion for a sync caller and return its result (or raise its error).

        Raises:
            SyncCallInEventLoopError: called from a thread whose event loop is running.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise SyncCallInEventLoopError(
                f"{sync_name}() was called inside a running event loop; use `await ...{async_name}(...)` there"
            )
        owner = self._owner
        loop = owner if owner is not None and owner.is_running() else self._loop()

        async def call() -> _T:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), loop).result()

    def _loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._private is None or self._private.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="primitives-sync-bridge", daemon=True)
                self._thread.start()
                ready.wait()
                self._private = loop
            return self._private

    def close(self) -> None:
        """Stop the private loop's thread, if one was started (idempotent)."""
        with self._lock:
            loop, thread = self._private, self._thread
            self._private = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
