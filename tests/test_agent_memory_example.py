"""examples/agent_memory.py: the agent-memory tour, in process and on a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from examples import agent_memory
from primitives.memory import Episode, SemanticMemory, Skill

ROOT = Path(__file__).resolve().parents[1]


def check(result: dict) -> None:
    found = result["found"]
    assert set(found) == {"episodic", "semantic", "skills"}
    (episode,) = found["episodic"]
    assert isinstance(episode, Episode) and episode.memory_id == result["episode_id"]
    assert (episode.task_prompt, episode.outcome, episode.success, episode.importance) == (
        "Plan a weekend in Lisbon", "Booked a flight and Hotel Baixa", True, 0.8)
    assert [type(k) for k in found["semantic"]] == [SemanticMemory]
    assert found["semantic"][0].pattern == "The user prefers aisle seats"
    (skill,) = found["skills"]
    assert isinstance(skill, Skill) and skill.success_rate == 0.5 == result["success_rate"]
    assert "success rate 50% over 2 runs" in result["context"]
    assert "Hotel Alfama is full [failed]" in result["context"]
    assert result["history"] == [result["old_session"], result["new_session"]]


async def test_example_in_process(monkeypatch) -> None:
    monkeypatch.delenv("MEMORY_LLM_URL", raising=False)
    result = await agent_memory.main("inmemory")
    check(result)
    assert result["backend"] == "in-memory" and result["extracted"] == []


def test_example_runs_as_a_script_on_the_core_install() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "REDIS_URL", "AGENT_MEMORY"))}
    out = subprocess.run([sys.executable, "examples/agent_memory.py"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skills: [('plan_trip', 0.5)]" in out.stdout


@pytest.mark.integration
async def test_example_on_redis(redis_server, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("MEMORY_REDIS_PREFIX", f"example{uuid.uuid4().hex[:8]}:")
    monkeypatch.setenv("MEMORY_OUTBOX_PATH", str(tmp_path / "outbox.db"))
    monkeypatch.delenv("MEMORY_LLM_URL", raising=False)
    result = await agent_memory.main("redis")
    check(result)
    assert result["backend"] == "redis"


async def test_adapter_says_when_a_fallback_served_it(tmp_path) -> None:
    from primitives.memory import AgentMemory, InMemoryBackend, Memory, ResilientBackend
    from primitives.memory.redis_backend import RedisBackend
    from primitives.memory.resilient.outbox import Outbox
    from primitives.tooling.localredis import free_port

    dead = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", prefix="gone:", socket_connect_timeout=0.2)
    agent = AgentMemory(Memory(ResilientBackend(dead, outbox=Outbox(tmp_path / "outbox.db"))), agent_id="a", session_id="s")
    assert agent.degraded is False
    await agent.save_episode("a task while redis is down", "done", True, 1.0)
    (episode,) = await agent.search_episodes("task while redis is down")
    assert episode.task_prompt == "a task while redis is down" and agent.degraded is True
    assert "a task while redis is down" in await agent.get_enriched_context("task redis down")
    assert agent.degraded is True
    await agent.memory.aclose()
    healthy = AgentMemory(Memory(InMemoryBackend()), agent_id="a")
    await healthy.search_all("x")
    assert healthy.degraded is False
