"""The curated public surface: each package's ``__all__`` is deliberate, and every name resolves."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "primitives": [
        "InstrumentedPrimitive", "LambdaPrimitive", "ParallelPrimitive", "PrimitivesError",
        "SequentialPrimitive", "WorkflowContext", "WorkflowPrimitive", "__version__",
    ],
    "primitives.core": [
        "DURATION_METRIC", "Executable", "InstrumentedPrimitive", "LambdaPrimitive",
        "ParallelPrimitive", "SequentialPrimitive", "WorkflowContext", "WorkflowPrimitive",
    ],
    "primitives.memory": [
        "DEFAULT_TTLS", "FILTER_FIELDS", "Analyzer", "Health", "InMemoryBackend", "Memory",
        "MemoryBackend", "MemoryPrimitive", "MemoryRecord", "MemoryType", "Message", "Recall",
        "RememberPrimitive", "ResilientBackend", "SEARCH_MODES", "SearchHit", "SearchResult",
        "LocalReplica", "SkillStats",
    ],
    "primitives.store": [
        "ALGORITHMS", "BaseRateLimiter", "BaseSessionHistory", "CachePrimitive", "InMemoryKeyValueStore",
        "InMemoryRateLimiter", "InMemorySessionHistory", "KeyScheme", "KeyValueStore", "RateLimitPrimitive",
        "RateLimitResult", "RateLimiter", "RedisKeyValueStore", "Serializer", "SessionHistory",
        "SingleFlightCache", "cached", "canonical_key",
    ],
    "primitives.sync": [
        "LATEST", "START", "ChangeEvent", "ChangeFeed", "ChangeSubscription", "InMemoryChangeFeed",
        "RedisChangeFeed",
    ],
    "primitives.embeddings": [
        "Embedder", "EmbedderStats", "OpenAIEmbedder", "SentenceTransformerEmbedder", "embedder_from_env",
    ],
    "primitives.evaluation": ["evaluate_locomo", "load_conversation", "load_conversations"],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_all_is_curated(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(EXPECTED[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_backend_seam_is_abstract() -> None:
    from primitives.memory import MemoryBackend

    class Incomplete(MemoryBackend):
        name = "incomplete"

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


def test_core_does_not_import_memory() -> None:
    import subprocess
    import sys

    code = "import sys, primitives.core; print(any(m.startswith('primitives.memory') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("package", ["primitives.store", "primitives.sync"])
def test_store_and_sync_import_without_redis_py_and_never_import_memory(package: str) -> None:
    """The Redis implementations load lazily (extra ``redis``), and the layers point down:
    ``store`` and ``sync`` sit below ``memory``."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['redis'] = None; import " + package + "; "
        "print(any(m.startswith('primitives.memory') for m in sys.modules), 'redis.asyncio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
