"""Memory for agents: the record model, the backend seam, the in-process backend, the facade
and the pipeline steps."""

from primitives.memory.analysis import Analyzer
from primitives.memory.backend import FILTER_FIELDS, Health, MemoryBackend, SearchResult
from primitives.memory.facade import Memory, Recall
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import (
    DEFAULT_TTLS,
    MemoryRecord,
    MemoryType,
    Message,
    SearchHit,
)
from primitives.memory.workflow import MemoryPrimitive, RememberPrimitive

__all__ = [
    "DEFAULT_TTLS",
    "FILTER_FIELDS",
    "Analyzer",
    "Health",
    "InMemoryBackend",
    "Memory",
    "MemoryBackend",
    "MemoryPrimitive",
    "MemoryRecord",
    "MemoryType",
    "Message",
    "Recall",
    "RememberPrimitive",
    "SearchHit",
    "SearchResult",
]
