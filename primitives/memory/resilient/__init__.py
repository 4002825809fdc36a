"""A configured backend that may go away without losing a memory: the
:class:`ResilientBackend` wrapper, its durable :class:`Outbox` journal and the
:class:`CircuitBreaker` that decides when to try the primary again."""

from primitives.memory.resilient.backend import ResilientBackend
from primitives.memory.resilient.breaker import BreakerState, CircuitBreaker
from primitives.memory.resilient.outbox import Outbox, OutboxEntry

__all__ = ["BreakerState", "CircuitBreaker", "Outbox", "OutboxEntry", "ResilientBackend"]
