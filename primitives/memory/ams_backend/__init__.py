"""The Agent Memory Server backend (extra ``ams``): ids, TAG values and the carrier in
:mod:`~primitives.memory.ams_backend.codec`, records and search requests in
:mod:`~primitives.memory.ams_backend.mapping`, working memory in
:mod:`~primitives.memory.ams_backend.session` (all pure functions), the HTTP transport in
:mod:`~primitives.memory.ams_backend.transport`, whole-store operations in
:mod:`~primitives.memory.ams_backend.maintenance`. ``AgentMemoryServerBackend`` loads lazily, so
the pure modules import without agent-memory-client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from primitives.memory.ams_backend.backend import AgentMemoryServerBackend

__all__ = ["AgentMemoryServerBackend"]


def __getattr__(name: str) -> Any:
    if name == "AgentMemoryServerBackend":
        from primitives.memory.ams_backend.backend import AgentMemoryServerBackend

        return AgentMemoryServerBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
