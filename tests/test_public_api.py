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
        "LocalReplica", "SkillStats", "StoreSource", "SyncPrimitive", "Tombstone",
        "AgentMemory", "ContextItem", "Episode", "ExtractMemoriesPrimitive", "ExtractionReport", "FactWrite",
        "ForgetPolicy", "ForgetReport", "PromptContext", "RankingSignals", "SemanticMemory", "Skill", "Step",
        "SummaryReport", "TokenCounter", "create_memory_adapter",
    ],
    "primitives.llm": [
        "LLM", "ChatMessage", "CallableLLM", "as_llm", "complete_json", "check_messages", "OpenAIChatLLM", "llm_from_env",
    ],
    "primitives.store": [
        "ALGORITHMS", "BaseRateLimiter", "BaseSessionHistory", "CachePrimitive", "InMemoryKeyValueStore",
        "InMemoryRateLimiter", "InMemorySessionHistory", "KeyScheme", "KeyValueStore", "RateLimitPrimitive",
        "RateLimitResult", "RateLimiter", "RedisKeyValueStore", "Serializer", "SessionHistory",
        "SingleFlightCache", "cached", "canonical_key",
    ],
    "primitives.sync": [
        "LATEST", "START", "ChangeEvent", "ChangeFeed", "ChangeSubscription", "InMemoryChangeFeed",
        "RedisChangeFeed", "ApplyCounts", "ChangeSource", "ColumnMap", "Cursor", "DataCloudWarehouse",
        "DeltaWarehouse", "DuckDBWarehouse", "ExportReport", "ImportReport", "PostgresWarehouse",
        "RejectedRow", "SnowflakeWarehouse", "SyncRow", "Warehouse", "WarehouseStats", "export_changes", "import_changes",
        "open_target", "sync_status",
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


@pytest.mark.parametrize("old", sorted(__import__("primitives._moved", fromlist=["MOVED"]).MOVED))
def test_moved_modules_still_import_from_their_old_paths(old: str) -> None:
    """The backends' internals and the tooling moved into subpackages; the old dotted paths
    resolve to the very same module objects (so their ``__all__`` names keep working)."""
    import subprocess
    import sys

    from primitives._moved import MOVED

    new = MOVED[old]
    code = (
        f"import importlib, {new.rsplit('.', 1)[0]}; "
        f"a = importlib.import_module({old!r}); b = importlib.import_module({new!r}); "
        "print(a is b, sorted(getattr(a, '__all__', [])) == sorted(getattr(b, '__all__', [])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_backend_modules_keep_their_public_import_paths() -> None:
    from primitives.memory.ams_backend import AgentMemoryServerBackend
    from primitives.memory.inmemory import InMemoryBackend
    from primitives.memory.redis_backend import RedisBackend
    from primitives.memory.resilient import Outbox, ResilientBackend
    from primitives.tooling.localredis import LocalRedis

    assert all(c is not None for c in (AgentMemoryServerBackend, InMemoryBackend, RedisBackend, Outbox,
                                      ResilientBackend, LocalRedis))


def test_nothing_reaches_inside_the_resilient_wrapper_or_a_backend() -> None:
    """Callers use what ``MemoryBackend`` and ``ResilientBackend`` expose: no ``.primary``
    outside the wrapper, no backend's private attributes outside its own package."""
    import re
    from pathlib import Path

    root = Path(__import__("primitives").__file__).parent
    backends = [root / "memory" / name for name in ("resilient", "inmemory", "redis_backend", "ams_backend")]
    offenders = []
    for path in root.rglob("*.py"):
        own = any(b in path.parents for b in backends)  # a backend's package may use its own internals
        text = path.read_text()
        patterns = [] if own else [r"\b(?:backend|store|memory\.backend)\._[a-z]\w*"]
        if root / "memory" / "resilient" not in path.parents:
            patterns.append(r"\.primary\b")
        for pattern in patterns:
            for match in re.finditer(pattern, text):
                offenders.append(f"{path.relative_to(root)}: {match.group(0)}")
    assert offenders == []


def test_memory_never_imports_the_layers_above_it() -> None:
    import subprocess
    import sys

    code = (
        "import sys, primitives.memory, primitives.memory.registry, primitives.memory.resilient; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('primitives.') "
        "and m.split('.')[1] in ('cli', 'evaluation', 'tooling', 'integrations')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


#: What ``pip install .`` (no extras) lacks: the modules of every extra.
CORE_INSTALL_BLOCKED = (
    "numpy", "torch", "sentence_transformers", "redis", "hiredis", "agent_memory_client", "duckdb", "pyarrow",
    "httpx", "mcp", "langgraph", "langchain_core", "starlette", "uvicorn", "msgpack", "psycopg", "deltalake",
    "snowflake", "pydantic",
)


def test_the_command_line_loads_on_the_core_install() -> None:
    """``pip install .`` has no numpy, torch, redis-py or agent-memory-client: the command line
    and the in-process memory still load (README set-up command 1 runs ``eval locomo`` on it),
    and a command that needs an extra says which one."""
    import subprocess
    import sys

    blocked = CORE_INSTALL_BLOCKED
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import primitives.cli, primitives.memory\n"
        "from primitives.cli import main\n"
        "rc = main(['eval', 'locomo', '--data', sys.argv[1], '--cross-validate'])\n"
        "print('rc', rc)\n"
    )
    from tests.conftest import LOCOMO_DIR

    out = subprocess.run([sys.executable, "-c", code, str(LOCOMO_DIR)], capture_output=True, text=True)
    assert "Traceback" not in out.stderr, out.stderr
    assert "memory-primitives[embeddings]" in out.stdout + out.stderr


def test_readme_main_job_runs_on_the_core_install(tmp_path) -> None:
    """README set-up command 1 without its install step: ``examples/memory_workflow.py`` then
    ``eval locomo`` (here on one conversation), with every extra's modules blocked, exit 0 and
    no traceback (an ``eval locomo`` clean-up that imported redis-py once broke it)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import LOCOMO_DIR

    data = tmp_path / "locomo"
    data.mkdir()
    shutil.copy(sorted(Path(LOCOMO_DIR).glob("*.json"))[0], data)
    root = Path(__file__).resolve().parents[1]
    block = f"import sys\nfor name in {CORE_INSTALL_BLOCKED!r}: sys.modules[name] = None\n"
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("MEMORY_", "REDIS_URL", "AGENT_MEMORY_SERVER"))}
    example = subprocess.run(
        [sys.executable, "-c", block + "import runpy; runpy.run_path(sys.argv[1], run_name='__main__')",
         str(root / "examples" / "memory_workflow.py")],
        capture_output=True, text=True, cwd=root, env=env, timeout=120)
    assert example.returncode == 0 and "Traceback" not in example.stderr, example.stdout + example.stderr
    evaluation = subprocess.run(
        [sys.executable, "-c", block + "from primitives.cli import main\nraise SystemExit(main(['eval', 'locomo', "
         "'--data', sys.argv[1], '--json']))", str(data)],
        capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert evaluation.returncode == 0 and "Traceback" not in evaluation.stderr, evaluation.stdout + evaluation.stderr
    assert "recall" in evaluation.stdout
