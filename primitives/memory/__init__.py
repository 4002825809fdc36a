"""Memory for agents: the record model, the backend seam, the in-process backend, the resilient
wrapper, the facade and the pipeline steps. The Redis backend (extra ``redis``) is
``primitives.memory.redis_backend.RedisBackend``; the Agent Memory Server backend (extra ``ams``)
``primitives.memory.ams_backend.AgentMemoryServerBackend``."""

from primitives.memory.agent import AgentMemory, create_memory_adapter
from primitives.memory.analysis import Analyzer
from primitives.memory.context import ContextItem, PromptContext
from primitives.memory.extraction import ExtractionReport
from primitives.memory.facts import FactWrite
from primitives.memory.forgetting import ForgetPolicy, ForgetReport
from primitives.memory.kinds import Episode, SemanticMemory, Skill, Step
from primitives.memory.ranking import RankingSignals
from primitives.memory.summarize import SummaryReport
from primitives.memory.tokens import TokenCounter
from primitives.memory.changes import Tombstone
from primitives.memory.datasync import StoreSource, SyncPrimitive
from primitives.memory.backend import FILTER_FIELDS, SEARCH_MODES, Health, MemoryBackend, SearchResult
from primitives.memory.facade import Memory, Recall
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.replica import LocalReplica
from primitives.memory.resilient import ResilientBackend
from primitives.memory.record import (
    DEFAULT_TTLS,
    MemoryRecord,
    MemoryType,
    Message,
    SearchHit,
)
from primitives.memory.skills import SkillStats
from primitives.memory.workflow import ExtractMemoriesPrimitive, MemoryPrimitive, RememberPrimitive

__all__ = [
    "AgentMemory",
    "ContextItem",
    "Episode",
    "ExtractMemoriesPrimitive",
    "ExtractionReport",
    "FactWrite",
    "ForgetPolicy",
    "ForgetReport",
    "PromptContext",
    "RankingSignals",
    "SemanticMemory",
    "Skill",
    "Step",
    "SummaryReport",
    "TokenCounter",
    "create_memory_adapter",
    "DEFAULT_TTLS",
    "FILTER_FIELDS",
    "Analyzer",
    "Health",
    "InMemoryBackend",
    "LocalReplica",
    "Memory",
    "MemoryBackend",
    "MemoryPrimitive",
    "MemoryRecord",
    "MemoryType",
    "Message",
    "Recall",
    "RememberPrimitive",
    "ResilientBackend",
    "SEARCH_MODES",
    "SearchHit",
    "SearchResult",
    "SkillStats",
    "StoreSource",
    "SyncPrimitive",
    "Tombstone",
]
