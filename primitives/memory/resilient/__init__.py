"""A configured backend that may go away without losing a memory: the
:class:`ResilientBackend` wrapper, its durable :class:`Outbox` journal and the
:class:`CircuitBreaker` that decides when to try the primary again."""

from primitives.memory.resilient.backend import ResilientBackend
from primitives.memory.resilient.breaker import BreakerState, CircuitBreaker
from primitives.memory.resilient.identity import outbox_identity, outbox_path
from primitives.memory.resilient.outbox import (
    DeadLetter,
    Outbox,
    OutboxEntry,
    OutboxReport,
    OutboxStats,
    find_outboxes,
)

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "DeadLetter",
    "Outbox",
    "OutboxEntry",
    "OutboxReport",
    "OutboxStats",
    "ResilientBackend",
    "find_outboxes",
    "outbox_identity",
    "outbox_path",
]
