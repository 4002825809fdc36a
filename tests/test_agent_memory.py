"""The agent-memory API (``AgentMemory``, ``create_memory_adapter``) and its typed views (``Step``,
``Episode``, ``SemanticMemory``, ``Skill``) on real backends, no mocks.

- the original adapter's usage script, unchanged, on the in-process backend, Redis, the resilient
  wrapper over Redis and the Agent Memory Server; ``create_memory_adapter`` with ``env=``;
- isolation of agents and of near-"alice" users in one namespace (episodes, knowledge, skills
  and their statistics, steps, session history, enriched context);
- hostile strings in every field round-trip exactly; bad input is a typed error and stores nothing;
- damaged stored data (garbage metadata, a raw-corrupted Redis hash) never crashes a view and
  costs only its record;
- Redis killed in the middle of a loop of writes under the resilient wrapper: every acknowledged
  episode reaches Redis after the outbox replay;
- a Hypothesis differential test: random operation sequences with hostile strings on the
  in-process backend (the oracle) and on Redis show a user the same memories.

AMS costs ~0.4 s a request (token auth): two AMS cases, each store a fresh prefix under one module
partition, deleted at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.ams_server import drop_partition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives.errors import ConfigurationError, CorruptRecordError, PrimitivesError
from primitives.memory import Memory, MemoryRecord, MemoryType, Message
from primitives.memory.agent import AgentMemory, create_memory_adapter
from primitives.memory.backend import MemoryBackend
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.kinds import KIND, Episode, SemanticMemory, Skill, Step
from primitives.validation import MAX_IDENTIFIER_CHARS
from tests.contract import HOSTILE

integration = pytest.mark.integration

_prefixes = itertools.count()
RUN = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
#: Every AMS store of this module lives under this prefix; :func:`ams` deletes it at the end.
AMS_PARTITION = f"am{RUN}-"


def fresh_prefix() -> str:
    return f"agentmem{RUN}-{next(_prefixes)}:"


@pytest.fixture(scope="module")
def ams(ams_server):
    """``ams_server``; afterwards every record and session this module wrote there is deleted."""
    yield ams_server
    drop_partition(ams_server, AMS_PARTITION)


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> MemoryBackend:
    if kind == "inmemory":
        return InMemoryBackend()
    if kind == "ams":
        from primitives.memory.ams_backend import AgentMemoryServerBackend

        server = request.getfixturevalue("ams")
        return AgentMemoryServerBackend(server.url, token=server.token, prefix=f"{AMS_PARTITION}{next(_prefixes)}:",
                                        default_mode="keyword")
    from primitives.memory.redis_backend import RedisBackend

    redis = RedisBackend(request.getfixturevalue("redis_server").url, prefix=fresh_prefix())
    if kind == "redis":
        return redis
    from primitives.memory.resilient import ResilientBackend
    from primitives.memory.resilient.outbox import Outbox

    return ResilientBackend(redis, outbox=Outbox(tmp_path / "outbox.sqlite3"))


async def close_backend(backend: MemoryBackend) -> None:
    try:
        if backend.name == "redis":
            await backend.drop()  # type: ignore[attr-defined]
    finally:
        await backend.aclose()


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=integration),
                        pytest.param("resilient", marks=integration), pytest.param("ams", marks=integration)])
async def backend(request, tmp_path):
    """A fresh, empty backend of every kind: in-process, Redis, resilient over Redis, AMS."""
    made = make_backend(request.param, request, tmp_path)
    yield made
    await close_backend(made)


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=integration)])
async def memory(request, tmp_path):
    """A ``Memory`` over a fresh in-process or Redis backend (the fast ones)."""
    made = make_backend(request.param, request, tmp_path)
    yield Memory(made)
    await close_backend(made)


# -- 1. the original adapter's usage ---------------------------------------------------------------


async def test_original_adapter_script_runs_unchanged(backend) -> None:
    memory = AgentMemory(Memory(backend), agent_id="planner", session_id="s-1")
    await memory.add_step("open the quarterly report", "report opened", reasoning="need the figures")
    await memory.add_step("parse the revenue table", "parse error on line 3", success=False)
    episode_id = await memory.save_episode(
        task_prompt="Summarise the quarterly report",
        outcome="Wrote a five line summary",
        success=True,
        duration_seconds=12.5,
        tags=["reports", "summary"],
        importance=0.8,
    )
    assert isinstance(episode_id, str) and episode_id
    skill_id = await memory.save_skill(
        skill_name="summarise_report",
        description="Summarise a quarterly report",
        action_sequence=["open the report", "read the tables", "write the summary"],
        tags=["reports"],
    )
    first = await memory.record_skill_execution("summarise_report", success=True, duration=2.0)
    second = await memory.record_skill_execution("summarise_report", success=False, duration=4.0)
    assert (first.success_rate, first.executions) == (1.0, 1)
    assert (second.memory_id, second.success_rate, second.executions, second.mean_duration_s) == (skill_id, 0.5, 2, 3.0)
    fact_id = await memory.save_knowledge("Quarterly reports are due on Fridays", confidence=0.7, subject="report deadline")

    (episode,) = await memory.search_episodes("quarterly report", limit=5)
    assert isinstance(episode, Episode)
    assert (episode.memory_id, episode.task_prompt, episode.outcome, episode.success, episode.importance) == (
        episode_id, "Summarise the quarterly report", "Wrote a five line summary", True, 0.8)
    assert (episode.duration_seconds, episode.tags, episode.agent_id) == (12.5, ("reports", "summary"), "planner")

    found = await memory.search_all("quarterly report", limit_per_type=3)
    assert list(found) == ["episodic", "semantic", "skills"]
    assert [type(e) for e in found["episodic"]] == [Episode] and found["episodic"][0].memory_id == episode_id
    (fact,) = found["semantic"]
    assert isinstance(fact, SemanticMemory)
    assert (fact.memory_id, fact.pattern, fact.kind, fact.confidence, fact.subject, fact.valid_to) == (
        fact_id, "Quarterly reports are due on Fridays", "fact", 0.7, "report deadline", None)
    (skill,) = found["skills"]
    assert isinstance(skill, Skill)
    assert (skill.memory_id, skill.skill_name, skill.success_rate, skill.executions) == (skill_id, "summarise_report", 0.5, 2)
    assert skill.action_sequence == ("open the report", "read the tables", "write the summary")

    context = await memory.get_enriched_context("summarise the quarterly report", detailed_steps=5, limit_per_type=2)
    assert isinstance(context, str)
    for expected in ("open the quarterly report -> report opened (because need the figures)",
                     "parse the revenue table -> parse error on line 3 [failed]",
                     "Wrote a five line summary", "summarise_report", "success rate 50% over 2 runs",
                     "Quarterly reports are due on Fridays"):
        assert expected in context, (expected, context)

    assert [(s.action, s.success) for s in await memory.get_steps()] == [
        ("open the quarterly report", True), ("parse the revenue table", False)]
    new_session = await memory.rotate_session()
    assert new_session != "s-1" and memory.session_id == new_session
    assert await memory.get_session_history() == ["s-1", new_session]
    assert await memory.get_steps() == []
    old = AgentMemory(memory.memory, agent_id="planner", session_id="s-1")
    assert [s.observation for s in await old.get_steps()] == ["report opened", "parse error on line 3"]
    await memory.close()
    if hasattr(backend, "outbox"):  # the resilient wrapper: nothing left to replay, never degraded
        assert backend.outbox.pending_count() == 0 and backend.breaker.state.value == "closed"


async def test_create_memory_adapter_in_process() -> None:
    async with await create_memory_adapter(backend="inmemory", agent_id="planner", session_id="s-1") as memory:
        assert memory.backend_name == "in-memory" and (memory.agent_id, memory.session_id, memory.user_id) == (
            "planner", "s-1", "planner")
        episode_id = await memory.save_episode("Book the zebra trip", "booked", True, 1.0)
        assert [e.memory_id for e in await memory.search_episodes("zebra trip")] == [episode_id]


@integration
async def test_create_memory_adapter_on_redis_from_env(redis_server, tmp_path) -> None:
    from primitives.memory.redis_backend import RedisBackend

    prefix = fresh_prefix()
    env = {"REDIS_URL": redis_server.url, "MEMORY_REDIS_PREFIX": prefix, "MEMORY_OUTBOX_PATH": str(tmp_path / "o.sqlite3")}
    memory = await create_memory_adapter(backend="redis", agent_id="planner", session_id="s-1", env=env)
    assert memory.backend_name == "redis"
    episode_id = await memory.save_episode("Book the zebra trip", "booked", True, 1.0, tags=["travel"])
    await memory.add_step("search flights", "three found")
    await memory.close()
    direct = RedisBackend(redis_server.url, prefix=prefix)  # it went to that Redis, under that prefix
    try:
        stored = await direct.get(episode_id)
        assert stored is not None and Episode.from_record(stored).task_prompt == "Book the zebra trip"
        assert [Step.from_message(m).action for m in await direct.get_messages("s-1")] == ["search flights"]
    finally:
        await direct.drop()
        await direct.aclose()


@pytest.mark.parametrize("kwargs", [{"agent_id": ""}, {"session_id": "   "}, {"user_id": 5}])
async def test_create_memory_adapter_with_a_bad_id_closes_the_memory_it_built(kwargs, monkeypatch) -> None:
    closed: list[Memory] = []
    original = Memory.aclose

    async def aclose(self: Memory) -> None:
        closed.append(self)
        await original(self)

    monkeypatch.setattr(Memory, "aclose", aclose)
    with pytest.raises((ValueError, TypeError)) as info:
        await create_memory_adapter(backend="inmemory", env={}, **kwargs)
    assert _typed(info.value) and len(closed) == 1


@pytest.mark.parametrize("bad", ["postgres", "", "REDIS-CLUSTER", 5, ["redis"]])
async def test_create_memory_adapter_refuses_an_unknown_backend(bad) -> None:
    with pytest.raises(ConfigurationError, match="backend must be one of"):
        await create_memory_adapter(backend=bad, env={})
    with pytest.raises(ConfigurationError, match="unknown option 'colour'"):
        await create_memory_adapter(backend="inmemory", env={}, colour="blue")


# -- 2. isolation ------------------------------------------------------------------------------------

#: Near-"alice" user ids (tests/contract.py NEAR_ALICE style): each its own tenant, exactly.
NEAR_USERS = ["alice", "alice ", "ALICE", "alice\x00", "alice|bob", "@user_id:{alice}"]
TOK = re.compile(r"tok(\d+)")


async def _fill_scope(agent: AgentMemory, i: int, *, rotate: bool = True) -> dict[str, Any]:
    """One scope's memories, each text tagged ``tok<i>``; the same skill name and fact subject in
    every scope, so that a leak of statistics or a cross-user supersession would show."""
    first_session = agent.session_id
    await agent.add_step(f"step tok{i}", f"seen tok{i}")
    episode = await agent.save_episode(f"deploy zebra task tok{i}", f"done tok{i}", True, 1.0, tags=["shared"], importance=0.5)
    fact = await agent.save_knowledge(f"the deadline is friday tok{i}", subject="deadline")
    skill = await agent.save_skill("deploy", f"deploy zebra tok{i}", ["build", f"ship tok{i}"], tags=["shared"])
    for k in range(i + 1):
        await agent.record_skill_execution("deploy", success=k % 2 == 0, duration=1.0)
    sessions = [first_session]
    if rotate:
        sessions.append(await agent.rotate_session())
        await agent.add_step(f"second step tok{i}", f"seen again tok{i}")
    return {"episode": episode, "fact": fact, "skill": skill, "sessions": sessions}


async def _check_scope(agent: AgentMemory, i: int, mine: dict[str, Any], query: str, *, rotate: bool = True) -> None:
    found = await agent.search_all(query, limit_per_type=50)
    assert [e.memory_id for e in found["episodic"]] == [mine["episode"]], (i, found["episodic"])
    assert [(f.memory_id, f.valid_to) for f in found["semantic"]] == [(mine["fact"], None)], (i, found["semantic"])
    assert [(s.memory_id, s.executions) for s in found["skills"]] == [(mine["skill"], i + 1)], (i, found["skills"])
    skill = await agent.get_skill("deploy")
    assert (skill.memory_id, skill.description, skill.executions) == (mine["skill"], f"deploy zebra tok{i}", i + 1)
    assert skill.success_rate == pytest.approx(((i + 2) // 2) / (i + 1))
    assert await agent.get_session_history() == mine["sessions"]
    steps = [s.action for s in await agent.get_steps()]
    assert steps == ([f"second step tok{i}"] if rotate else [f"step tok{i}"])
    context = await agent.get_enriched_context(query, detailed_steps=10, limit_per_type=50, budget_tokens=100_000)
    assert set(TOK.findall(context)) == {str(i)}, (i, context)


async def test_agents_and_near_alice_users_never_see_each_other(memory) -> None:
    scopes = [{"agent_id": "planner"}, {"agent_id": "coder"}] + [{"agent_id": "assistant", "user_id": u} for u in NEAR_USERS]
    agents = [AgentMemory(memory, **scope) for scope in scopes]
    filled = [await _fill_scope(agent, i) for i, agent in enumerate(agents)]
    query = "deploy zebra deadline friday step " + " ".join(f"tok{i}" for i in range(len(scopes)))
    for i, (agent, mine) in enumerate(zip(agents, filled)):
        await _check_scope(agent, i, mine, query)
        first = AgentMemory(memory, session_id=mine["sessions"][0], **scopes[i])  # the old session: own step only
        assert [s.action for s in await first.get_steps()] == [f"step tok{i}"]
    # the same scope seen by a new adapter object sees the same (nothing was kept in the object)
    again = AgentMemory(memory, agent_id="assistant", user_id="alice", session_id=filled[2]["sessions"][1])
    await _check_scope(again, 2, filled[2], query)


@integration
async def test_isolation_on_the_agent_memory_server(ams, tmp_path, request) -> None:
    """A smaller case (AMS is slow): two agents and a user that differs only in case (AMS matches
    TAGs case-insensitively)."""
    made = make_backend("ams", request, tmp_path)
    try:
        memory = Memory(made)
        scopes = [{"agent_id": "alice"}, {"agent_id": "bob"}, {"agent_id": "assistant", "user_id": "ALICE"}]
        agents = [AgentMemory(memory, **scope) for scope in scopes]
        filled = [await _fill_scope(agent, i, rotate=False) for i, agent in enumerate(agents)]
        query = "deploy zebra deadline friday tok0 tok1 tok2"
        for i, (agent, mine) in enumerate(zip(agents, filled)):
            await _check_scope(agent, i, mine, query, rotate=False)
    finally:
        await made.aclose()


# -- 3. hostile strings ------------------------------------------------------------------------------

LONG_TEXT = "x" * 10_000
LONG_MIXED = ("zebra | @user_id:{x} \x00 😀 =>[KNN 5 @v $b] " * 400)[:10_000]
#: Free text: empty, whitespace, NUL and controls, unicode, query syntax, 10,000 characters.
TEXTS = [*HOSTILE, "", " ", "\t\n\r ", "\x00", "a\x00b", "x\x1fy\x1e", "line1\nline2", "👩‍👩‍👧 e\u0301 \u202eevil",
         '@user_id:{alice} | -x "q" *', LONG_TEXT, LONG_MIXED]
#: Identifiers (agent, user, session, namespace, tag, skill name): as hostile as an identifier may be.
IDENTS = [*HOSTILE, *NEAR_USERS, "a\x00b", "x\x1fy", "line\nbreak", "k" * MAX_IDENTIFIER_CHARS,
          "😀" * MAX_IDENTIFIER_CHARS, "*=>[KNN 5 @v $b]"]
QUERIES = [*HOSTILE, "", "   ", "\x00", "@user_id:{alice}", "-zebra", '"zebra"', "zebra*", LONG_MIXED, LONG_TEXT]
assert len(TEXTS) <= len(IDENTS)


async def test_hostile_strings_in_every_field_round_trip_exactly(memory) -> None:
    """Each case is its own scope (hostile user, agent, session, tags, skill name) in one hostile
    namespace; its search sees exactly its own memories, every field as written."""
    n = len(IDENTS)
    namespace = "ns|*@{x} 😀\x00"
    cases = []
    for i, text in enumerate(TEXTS):
        user, session, agent_id = IDENTS[i], IDENTS[(i + 1) % n], IDENTS[(i + 2) % n]
        tags, skill_name = [IDENTS[i], IDENTS[(i + 5) % n]], IDENTS[(i + 7) % n]
        other = TEXTS[(i + 1) % len(TEXTS)]
        agent = AgentMemory(memory, agent_id=agent_id, user_id=user, session_id=session, namespace=namespace)
        step = await agent.add_step(text, other, reasoning=text, success=False)
        assert (step.action, step.observation, step.reasoning, step.success) == (text, other, text, False)
        task = text if text.strip() else text + "task"
        episode = await agent.save_episode(task, text, False, 2.5, tags=tags, importance=0.25)
        fact = await agent.save_knowledge(f"{text}\nzebra fact", confidence=0.75, subject=text, tags=tags)
        actions = [text, "zebra", "", other]
        skill = await agent.save_skill(skill_name, text, actions, tags=tags)
        await agent.record_skill_execution(skill_name, True, 1.0)
        await agent.record_skill_execution(skill_name, False, 2.0)
        cases.append((agent, text, other, task, tags, skill_name, actions, episode, fact, skill))

    for i, (agent, text, other, task, tags, skill_name, actions, episode, fact, skill) in enumerate(cases):
        q = QUERIES[i % len(QUERIES)]
        found = await agent.search_all(f"zebra outcome {q}", limit_per_type=50)
        assert [(e.memory_id, e.task_prompt, e.outcome, e.success, e.duration_seconds, e.importance, e.tags, e.agent_id)
                for e in found["episodic"]] == [(episode, task, text, False, 2.5, 0.25, tuple(tags), agent.agent_id)], i
        assert [(f.memory_id, f.pattern, f.kind, f.confidence, f.subject, f.valid_to) for f in found["semantic"]] == [
            (fact, f"{text}\nzebra fact", "fact", 0.75, text, None)], i
        expected_skill = (skill, skill_name, text, tuple(actions), tuple(tags), 0.5, 2, 1.5)
        assert [(s.memory_id, s.skill_name, s.description, s.action_sequence, s.tags, s.success_rate, s.executions,
                 s.mean_duration_s) for s in found["skills"]] == [expected_skill], i
        got = await agent.get_skill(skill_name)
        assert (got.memory_id, got.skill_name, got.description, got.action_sequence, got.tags, got.success_rate,
                got.executions, got.mean_duration_s) == expected_skill
        assert [(s.action, s.observation, s.reasoning, s.success) for s in await agent.get_steps()] == [
            (text, other, text, False)]
        assert await agent.get_session_history() == [agent.session_id]
        # a bare hostile query: no error, nothing of another scope
        for view in (await agent.search_all(q, limit_per_type=50)).values():
            assert {v.memory_id for v in view} <= {episode, fact, skill}, (i, q)
        context = await agent.get_enriched_context(f"zebra {q}", limit_per_type=5, budget_tokens=50_000)
        assert isinstance(context, str)


async def test_a_long_agent_id_still_gets_a_valid_session_and_skill_statistics(memory) -> None:
    """The default session id and the statistics key are built from the agent/user id and the
    skill name: at the identifier limit they must stay identifiers (and apart)."""
    agent = AgentMemory(memory, agent_id="a" * MAX_IDENTIFIER_CHARS)
    assert len(agent.session_id) <= MAX_IDENTIFIER_CHARS
    await agent.add_step("first", "ok")
    assert len(await agent.rotate_session()) <= MAX_IDENTIFIER_CHARS
    for name in ("k" * MAX_IDENTIFIER_CHARS, "k" * (MAX_IDENTIFIER_CHARS - 1) + "l", "short"):
        await agent.save_skill(name, "zebra skill", ["x"])
        assert (await agent.record_skill_execution(name, True, 1.0)).executions == 1
    assert (await agent.record_skill_execution("short", False, 1.0)).success_rate == 0.5
    assert [(await agent.get_skill(n)).executions for n in ("k" * MAX_IDENTIFIER_CHARS, "short")] == [1, 2]
    other = AgentMemory(memory, agent_id="a" * (MAX_IDENTIFIER_CHARS - 1) + "b")
    await other.save_skill("k" * MAX_IDENTIFIER_CHARS, "zebra skill", ["x"])
    assert (await other.get_skill("k" * MAX_IDENTIFIER_CHARS)).executions == 0


# -- 4. bad input -------------------------------------------------------------------------------------

NAN, INF = math.nan, math.inf
BAD_CALLS: list[tuple[str, Any]] = [
    *[(f"importance={v!r}", lambda a, v=v: a.save_episode("task", "out", True, 1.0, importance=v))
      for v in (1.5, -0.01, NAN, INF, "high", True, None)],
    *[(f"duration_seconds={v!r}", lambda a, v=v: a.save_episode("task", "out", True, v)) for v in (-1, -INF, INF, NAN, "5", True)],
    *[(f"episode tags={v!r}", lambda a, v=v: a.save_episode("task", "out", True, 1.0, tags=v))
      for v in ("reports", None, {"reports"}, ["ok", ""], ["ok", 5], ("   ",))],
    *[(f"episode success={v!r}", lambda a, v=v: a.save_episode("task", "out", v, 1.0)) for v in ("yes", 1, None)],
    *[(f"task_prompt={v!r}", lambda a, v=v: a.save_episode(v, "out", True, 1.0)) for v in ("", "   ", "\n\t", None, 5)],
    ("outcome=None", lambda a: a.save_episode("task", None, True, 1.0)),
    *[(f"skill_name={v!r}", lambda a, v=v: a.save_skill(v, "d", ["x"])) for v in ("", "  ", 5, None, "k" * 1025)],
    *[(f"action_sequence={v!r}", lambda a, v=v: a.save_skill("s", "d", v)) for v in ("open then close", None, ["a", 5], {"a": 1})],
    ("description=None", lambda a: a.save_skill("s", None, ["x"])),
    ("skill tags='x'", lambda a: a.save_skill("s", "d", ["x"], tags="x")),
    *[(f"execution skill_name={v!r}", lambda a, v=v: a.record_skill_execution(v, True, 1.0)) for v in ("", 5, None)],
    *[(f"execution success={v!r}", lambda a, v=v: a.record_skill_execution("s", v, 1.0)) for v in ("yes", 1, None)],
    *[(f"execution duration={v!r}", lambda a, v=v: a.record_skill_execution("s", True, v)) for v in (-1, INF, NAN, "2")],
    *[(f"confidence={v!r}", lambda a, v=v: a.save_knowledge("fact", confidence=v)) for v in (2, -1, NAN, "high")],
    *[(f"pattern={v!r}", lambda a, v=v: a.save_knowledge(v)) for v in ("", "  ", None)],
    ("knowledge tags='x'", lambda a: a.save_knowledge("fact", tags="x")),
    ("knowledge tags=['']", lambda a: a.save_knowledge("fact", tags=[""])),
    ("subject=5", lambda a: a.save_knowledge("fact", subject=5)),
    *[(f"step {f}={v!r}", lambda a, f=f, v=v: a.add_step(**{"action": "a", "observation": "o", f: v}))
      for f, v in (("action", None), ("observation", 5), ("reasoning", 5), ("success", "no"), ("success", 0))],
    *[(f"search_episodes limit={v!r}", lambda a, v=v: a.search_episodes("q", v)) for v in (0, -1, "5", 10_001, None)],
    ("search_all limit_per_type=0", lambda a: a.search_all("q", limit_per_type=0)),
    ("search_semantic limit=0", lambda a: a.search_semantic("q", limit=0)),
    ("search_skills limit=0", lambda a: a.search_skills("q", limit=0)),
    ("get_steps limit=0", lambda a: a.get_steps(limit=0)),
    ("query=None", lambda a: a.search_all(None)),
    ("query=5", lambda a: a.search_episodes(5)),
    ("context limit_per_type=0", lambda a: a.get_enriched_context("q", limit_per_type=0)),
    ("context detailed_steps=-1", lambda a: a.get_enriched_context("q", detailed_steps=-1)),
    ("context budget_tokens=0", lambda a: a.get_enriched_context("q", budget_tokens=0)),
    ("get_skill ''", lambda a: a.get_skill("")),
]
BAD_CONSTRUCTIONS: list[tuple[str, dict[str, Any]]] = [
    *[(f"agent_id={v!r}", {"agent_id": v}) for v in ("", "   ", 5, None, "a" * 1025)],
    ("session_id=''", {"agent_id": "a", "session_id": ""}),
    ("user_id=' '", {"agent_id": "a", "user_id": " "}),
    ("namespace=5", {"agent_id": "a", "namespace": 5}),
]


def _typed(exc: BaseException) -> bool:
    return isinstance(exc, PrimitivesError) and isinstance(exc, (ValueError, TypeError))


async def test_bad_input_is_a_typed_error_and_stores_nothing(memory) -> None:
    agent = AgentMemory(memory, agent_id="planner", session_id="s-1")
    await agent.add_step("first", "ok")
    await agent.save_episode("task zebra", "out", True, 1.0)
    await agent.save_skill("s", "zebra skill", ["x"])
    await agent.record_skill_execution("s", True, 1.0)

    async def state() -> tuple[Any, ...]:
        skill = await agent.get_skill("s")
        return (await memory.count(), len(await agent.get_steps()), skill.executions, skill.description,
                await agent.get_session_history())

    before = await state()
    for label, call in BAD_CALLS:
        with pytest.raises((ValueError, TypeError)) as info:
            await call(agent)
        assert _typed(info.value), (label, type(info.value).__mro__)
        assert await state() == before, label
    for label, kwargs in BAD_CONSTRUCTIONS:
        with pytest.raises((ValueError, TypeError)) as info:
            AgentMemory(memory, **kwargs)
        assert _typed(info.value), (label, type(info.value).__mro__)
    with pytest.raises(TypeError) as info:
        AgentMemory("not a memory", agent_id="a")  # type: ignore[arg-type]
    assert _typed(info.value)
    assert await state() == before


# -- 5. damaged stored data -------------------------------------------------------------------------


async def _damaged_records(memory: Memory, agent: AgentMemory) -> None:
    """Records of the agent's scope written around the API, with garbage in the kind fields."""
    def rec(id: str, text: str, memory_type: MemoryType, **md: Any) -> MemoryRecord:
        return MemoryRecord(text=text, id=id, user_id=agent.user_id, memory_type=memory_type, metadata=md)

    await memory.add([
        rec("ep-yes", "zebra damaged episode one", MemoryType.EPISODIC, kind="episode", task_prompt="damaged one",
            success="yes", importance="high", duration_seconds=-1, outcome=5, agent_id=7),
        rec("ep-str", "zebra damaged episode two", MemoryType.EPISODIC, kind="episode", task_prompt=None,
            success=1, importance=7, duration_seconds="long"),
        rec("ep-neg", "zebra damaged episode three", MemoryType.EPISODIC, kind="episode", task_prompt=["x"],
            success=True, importance=-3, duration_seconds=10**400),
        rec("sk-str", "zebra damaged skill one", MemoryType.SKILL, kind="skill", skill_name="dmg1", description=7,
            action_sequence="open then close", executions="x", successes="y", total_duration_s="z"),
        rec("sk-int", "zebra damaged skill two", MemoryType.SKILL, kind="skill", skill_name=5,
            action_sequence=["a", 1, None, "b", {"c": 1}], executions=-5, stats_key=9),
        rec("fact-dmg", "zebra damaged fact", MemoryType.SEMANTIC, kind="fact", valid_to="not a date",
            valid_from="yesterday", importance="very", subject=5, provenance="x", superseded_by=3),
        rec("fact-kind", "zebra fact of an odd kind", MemoryType.SEMANTIC, kind=["fact"], importance=1.5),
    ])


async def test_damaged_kind_fields_fall_back_to_safe_defaults(memory) -> None:
    agent = AgentMemory(memory, agent_id="planner", session_id="s-1")
    good_episode = await agent.save_episode("zebra good task", "fine", True, 3.0, importance=0.9)
    good_skill = await agent.save_skill("good", "zebra good skill", ["a", "b"])
    await agent.record_skill_execution("good", True, 2.0)
    good_fact = await agent.save_knowledge("zebra good fact", confidence=0.6)
    await agent.add_step("good step", "fine")
    await _damaged_records(memory, agent)
    await memory.append_messages("s-1", [Message("step", "damaged step", None, {KIND: "step", "action": 5,
                                                                             "observation": None, "reasoning": 7})])

    found = await agent.search_all("zebra", limit_per_type=50)
    episodes = {e.memory_id: e for e in found["episodic"]}
    assert set(episodes) == {good_episode, "ep-yes", "ep-str", "ep-neg"}
    assert (episodes[good_episode].success, episodes[good_episode].importance) == (True, 0.9)
    bad = episodes["ep-yes"]
    assert (bad.task_prompt, bad.outcome, bad.success, bad.importance, bad.duration_seconds, bad.agent_id) == (
        "damaged one", "", False, 0.5, 0.0, None)
    bad = episodes["ep-str"]
    assert (bad.task_prompt, bad.success, bad.importance, bad.duration_seconds) == ("zebra damaged episode two", False, 0.5, 0.0)
    bad = episodes["ep-neg"]
    assert (bad.task_prompt, bad.success, bad.importance, bad.duration_seconds) == ("zebra damaged episode three", True, 0.5, 0.0)

    skills = {s.memory_id: s for s in found["skills"]}
    assert set(skills) == {good_skill, "sk-str", "sk-int"}
    assert (skills[good_skill].executions, skills[good_skill].success_rate) == (1, 1.0)
    assert (skills["sk-str"].skill_name, skills["sk-str"].description, skills["sk-str"].action_sequence,
            skills["sk-str"].executions) == ("dmg1", "", (), 0)
    assert (skills["sk-int"].skill_name, skills["sk-int"].action_sequence, skills["sk-int"].executions) == (
        "sk-int", ("a", "b"), 0)

    facts = {f.memory_id: f for f in found["semantic"]}
    assert set(facts) == {good_fact, "fact-dmg", "fact-kind"}
    bad = facts["fact-dmg"]
    assert (bad.valid_to, bad.confidence, bad.subject, bad.provenance, bad.superseded_by) == (None, 0.5, None, {}, None)
    assert bad.valid_from is not None  # falls back to created_at
    assert (facts["fact-kind"].kind, facts["fact-kind"].confidence) == ("semantic", 0.5)

    assert [(s.action, s.observation, s.reasoning) for s in await agent.get_steps()] == [
        ("good step", "fine", None), ("", "", None)]
    context = await agent.get_enriched_context("zebra", limit_per_type=50, budget_tokens=100_000)
    for expected in ("zebra good task -> fine", "good: zebra good skill; steps: a -> b", "zebra good fact", "damaged one"):
        assert expected in context


@pytest.mark.parametrize("sessions", ["a string", 5, None, {"session_id": "x"}, [1, "s", {"session_id": 3}, {}]])
async def test_a_damaged_session_chain_is_read_as_empty_and_rewritten(sessions) -> None:
    memory = Memory(InMemoryBackend())
    agent = AgentMemory(memory, agent_id="planner", session_id="s-1")
    await agent.add_step("first", "ok")
    chain = await memory.get(agent._chain_id())
    await memory.add([MemoryRecord(text="", id=chain.id, user_id=chain.user_id, memory_type=MemoryType.WORKING,
                                   metadata={**chain.metadata, "sessions": sessions})])
    later = AgentMemory(memory, agent_id="planner", session_id="s-2")
    assert await later.get_session_history() == ["s-2"]
    await later.add_step("second", "ok")
    new = await later.rotate_session()
    assert await later.get_session_history() == ["s-2", new]
    assert [s.action for s in await agent.get_steps()] == ["first"]


class NoStatsBackend(InMemoryBackend):
    """The in-process backend without atomic skill statistics, as the Agent Memory Server: the
    adapter keeps the counts on the skill record (fast to test here; AMS runs the script above)."""

    supports_skill_stats = False


async def test_record_kept_statistics_survive_damaged_counts() -> None:
    memory = Memory(NoStatsBackend())
    agent = AgentMemory(memory, agent_id="planner")
    assert await agent.record_skill_execution("deploy", True, 1.0) is None  # no such skill: nothing kept
    skill_id = await agent.save_skill("deploy", "zebra deploy", ["build"])
    assert (await agent.record_skill_execution("deploy", True, 2.0)).executions == 1
    stored = await memory.get(skill_id)
    for counts, expected in [({"executions": "x", "successes": "y", "total_duration_s": "z"}, 0),
                             ({"executions": -3, "successes": 9, "total_duration_s": -1.0}, 0),
                             ({"executions": 2, "successes": 9, "total_duration_s": "z"}, 2),
                             ({"executions": True, "successes": True}, 0)]:
        await memory.add([MemoryRecord(text=stored.text, id=skill_id, user_id=stored.user_id, memory_type=MemoryType.SKILL,
                                       metadata={**stored.metadata, **counts})])
        skill = await agent.get_skill("deploy")
        assert skill.executions == expected and 0.0 <= skill.success_rate <= 1.0, counts
        (found,) = (await agent.search_all("zebra"))["skills"]
        assert found.executions == expected
        after = await agent.record_skill_execution("deploy", False, 1.0)
        assert after.executions == expected + 1 and 0.0 <= after.success_rate <= 1.0
        assert after.mean_duration_s >= 0.0


@pytest.mark.parametrize("metadata", [{"stats_key": "   "}, {"stats_key": "x" * 2000},
                                      {"stats_key": None, "skill_name": "y" * 2000}])
async def test_a_skill_whose_stored_stats_key_is_not_an_identifier_does_not_fail_reads(metadata) -> None:
    memory = Memory(InMemoryBackend())
    agent = AgentMemory(memory, agent_id="planner")
    good = await agent.save_skill("good", "zebra good skill", ["a"])
    damaged = await agent.save_skill("deploy", "zebra deploy", ["build"])
    stored = await memory.get(damaged)
    md = {k: v for k, v in {**stored.metadata, **metadata}.items() if v is not None}
    await memory.add([MemoryRecord(text=stored.text, id=damaged, user_id=stored.user_id, memory_type=MemoryType.SKILL,
                                   metadata=md)])
    assert {s.memory_id for s in (await agent.search_all("zebra"))["skills"]} == {good, damaged}
    assert (await agent.get_skill("deploy")).executions == 0
    assert "zebra good skill" in await agent.get_enriched_context("zebra")


async def test_enriched_context_shows_the_success_rate_after_a_new_execution() -> None:
    agent = AgentMemory(Memory(InMemoryBackend()), agent_id="planner", session_id="s-1")
    await agent.save_skill("deploy", "deploy the zebra service", ["build", "ship"])
    await agent.record_skill_execution("deploy", True, 1.0)
    assert "success rate 100% over 1 runs" in await agent.get_enriched_context("zebra service")
    await agent.record_skill_execution("deploy", False, 1.0)
    assert (await agent.get_skill("deploy")).success_rate == 0.5
    assert "success rate 50% over 2 runs" in await agent.get_enriched_context("zebra service")


@integration
async def test_a_raw_corrupted_redis_hash_costs_only_its_record(redis_server) -> None:
    import redis.asyncio as aioredis

    from primitives.memory.redis_backend import RedisBackend
    from primitives.memory.redis_backend.keys import record_key

    backend = RedisBackend(redis_server.url, prefix=fresh_prefix())
    raw = aioredis.from_url(redis_server.url, decode_responses=False)
    memory = Memory(backend)
    try:
        agent = AgentMemory(memory, agent_id="planner", session_id="s-1")
        good = [await agent.save_episode(f"zebra task {i}", "done", True, 1.0) for i in range(3)]
        broken = await agent.save_episode("zebra zebra zebra zebra broken", "lost", True, 1.0)
        skill = await agent.save_skill("deploy", "zebra deploy", ["build"])
        fact = await agent.save_knowledge("zebra facts stay")
        await raw.hset(record_key(backend.spec.prefix, "default", broken), "metadata", b"{not json")

        found = await agent.search_all("zebra", limit_per_type=50)
        assert sorted(e.memory_id for e in found["episodic"]) == sorted(good)
        assert [s.memory_id for s in found["skills"]] == [skill] and [f.memory_id for f in found["semantic"]] == [fact]
        result = await memory.search("zebra", user_id="planner", memory_type=MemoryType.EPISODIC, limit=50)
        assert result.skipped == 1 and broken not in {h.record.id for h in result.hits}
        assert "zebra task 0" in await agent.get_enriched_context("zebra", limit_per_type=50)
        with pytest.raises(CorruptRecordError):
            await memory.get(broken)
    finally:
        await backend.drop()
        await backend.aclose()
        await raw.aclose()


# -- 6. Redis killed mid-loop ------------------------------------------------------------------------


@pytest.fixture
def killable_redis(tmp_path: Path):
    from tests.redis_server import start_or_fail

    server = start_or_fail(tmp_path / "redis", persistent=True)
    yield server
    server.stop()


async def _eventually(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


@integration
async def test_redis_killed_mid_loop_every_acknowledged_episode_reaches_redis(killable_redis, tmp_path) -> None:
    from primitives.memory.redis_backend import RedisBackend
    from primitives.memory.resilient import ResilientBackend
    from primitives.memory.resilient.breaker import CircuitBreaker
    from primitives.memory.resilient.outbox import Outbox

    prefix = fresh_prefix()
    backend = ResilientBackend(
        RedisBackend(killable_redis.url, prefix=prefix, socket_connect_timeout=0.25, socket_timeout=1.0,
                     working_memory_size=10_000),
        outbox=Outbox(tmp_path / "outbox.sqlite3"),
        breaker=CircuitBreaker(reset_timeout=0.2, max_reset_timeout=0.2),
    )
    memory = Memory(backend)
    agent = AgentMemory(memory, agent_id="worker", session_id="w-1")
    await agent.save_skill("deploy", "zebra deploy the service", ["build", "ship"])
    acknowledged: dict[str, int] = {}
    killer = threading.Thread(target=lambda: (time.sleep(0.01), killable_redis.kill()))
    degraded_searches = calls_after_kill = 0
    i = 0
    while calls_after_kill < 20:  # 20 writes before the kill, some during it, 20 after it
        if i == 20:
            killer.start()  # SIGKILL lands while the loop's calls are in flight
        acknowledged[await agent.save_episode(f"zebra task {i}", f"outcome {i}", i % 3 != 0, 0.5 * i,
                                              tags=["batch"], importance=0.5)] = i
        skill = await agent.record_skill_execution("deploy", i % 2 == 0, 1.0)
        assert skill is not None and skill.skill_name == "deploy" and skill.executions >= 1
        await agent.add_step(f"step {i}", f"observed {i}")
        if i >= 20 and not killer.is_alive():
            calls_after_kill += 1
            degraded_searches += (await memory.search("zebra", user_id="worker")).degraded
        i += 1
    total = i
    killer.join()
    assert degraded_searches == 20, "the outage was not served degraded"
    context = await memory.context("zebra task", user_id="worker", session_id="w-1")
    assert context.degraded and f"zebra task {total - 1}" in context.text
    assert len((await agent.search_all("zebra task", limit_per_type=total + 10))["episodic"]) == total  # the fallback
    assert backend.outbox.pending_count() > 0

    killable_redis.start()
    await asyncio.sleep(0.25)  # past the breaker's retry time: the next call probes and replays
    await memory.search("anything", user_id="worker")
    await backend.replay()
    await _eventually(lambda: _no_pending(backend))
    direct = RedisBackend(killable_redis.url, prefix=prefix, working_memory_size=10_000)
    try:
        for id, i in acknowledged.items():
            stored = await direct.get(id)
            assert stored is not None, f"acknowledged episode {i} ({id}) is not on Redis"
            episode = Episode.from_record(stored)
            assert (episode.task_prompt, episode.outcome, episode.success) == (f"zebra task {i}", f"outcome {i}", i % 3 != 0)
        steps = {Step.from_message(m).action for m in await direct.get_messages("w-1")}
        assert {f"step {i}" for i in range(total)} <= steps
        healthy = await memory.search("zebra task", user_id="worker", memory_type=MemoryType.EPISODIC, limit=total + 10)
        assert not healthy.degraded and {h.record.id for h in healthy.hits} == set(acknowledged)
        assert (await agent.get_skill("deploy")).executions >= 1
        print(f"\nRedis killed mid-loop: {total} episodes acknowledged, all on Redis after the replay")
    finally:
        await direct.drop()
        await direct.aclose()
        await memory.aclose()


async def _no_pending(backend) -> bool:
    return backend.outbox.pending_count() == 0


# -- 7. differential: in-process oracle vs Redis -----------------------------------------------------

#: (agent_id, user_id) of the scopes the operations pick from: two agents and near-"alice" users.
SCOPES = [("planner", None), ("coder", None), ("assistant", "alice"), ("assistant", "ALICE"), ("assistant", "alice\x00")]
WORDS = ["zebra", "deploy", "report", "friday", "tea", "alice", "outcome"]
FRAGMENTS = [*HOSTILE, "\x00", " ", "\n", "😀", "é", "a\x1fb", ""]
WORKING_MEMORY_SIZE = 4  # small, so that sessions overflow
SKILL_NAMES = ["deploy", "Deploy", "deploy ", "@user_id:{deploy}", "dé|ploy"]
DIFF_QUERIES = ["zebra", "deploy friday report outcome", "@user_id:{alice} | * tea", "alice 😀"]

_texts = st.lists(st.sampled_from(WORDS + FRAGMENTS), min_size=1, max_size=4).map(" ".join)
_nonblank = _texts.filter(lambda s: bool(s.strip()))
_tags = st.lists(st.sampled_from(["reports", "ops", "alice", "ALICE", "alice ", "*", "@user_id:{x}", "a|b", "😀"]),
                 max_size=2, unique=True)
_scope = st.sampled_from([0, 0, 0, 0, 0, 1, 2, 2, 3, 4])  # most operations meet in a few scopes
_skill_name = st.sampled_from(["deploy"] * 4 + SKILL_NAMES)
_subject = st.sampled_from(["deadline", "deadline", "Deadline ", "home", "@subject:{x}", None])
_pattern = st.one_of(st.sampled_from(["the deadline is friday", "The deadline is Friday.", "the deadline is monday",
                                      "tea at home", "alice likes tea 😀", 'zebra | @user_id:{x} "report"']), _nonblank)
_duration = st.sampled_from([0.0, 0.5, 1.25, 3.0])
_unit = st.sampled_from([0.0, 0.3, 0.8, 1.0])
_knowledge = st.tuples(st.just("knowledge"), _scope, _pattern, _unit, _subject)
_step = st.tuples(st.just("step"), _scope, _texts, _texts, st.one_of(st.none(), _texts), st.booleans())
_execute = st.tuples(st.just("execute"), _scope, _skill_name, st.booleans(), _duration)
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("episode"), _scope, _nonblank, _texts, st.booleans(), _duration, _tags, _unit),
    st.tuples(st.just("skill"), _scope, _skill_name, _texts, st.lists(_texts, max_size=3), _tags),
    _execute, _execute,
    _knowledge, _knowledge, _knowledge,
    _step, _step, _step,
    st.tuples(st.just("rotate"), _scope),
), min_size=6, max_size=24)


async def _apply(agent: AgentMemory, op: tuple[Any, ...]) -> str | None:
    kind, _, *args = op
    if kind == "episode":
        task, outcome, success, duration, tags, importance = args
        return await agent.save_episode(task, outcome, success, duration, tags=tags, importance=importance)
    if kind == "skill":
        name, description, actions, tags = args
        return await agent.save_skill(name, description, actions, tags=tags)
    if kind == "execute":
        skill = await agent.record_skill_execution(*args)
        return None if skill is None else skill.memory_id
    if kind == "knowledge":
        pattern, confidence, subject = args
        return await agent.save_knowledge(pattern, confidence=confidence, subject=subject)
    if kind == "step":
        await agent.add_step(*args)
        return None
    await agent.rotate_session()
    return None


async def _user_view(memory: Memory, agents: list[AgentMemory], tr) -> dict[str, Any]:
    """What each scope's user sees; ids translated by ``tr`` to the oracle's."""
    view: dict[str, Any] = {}
    for s, agent in enumerate(agents):
        for q in DIFF_QUERIES:
            found = await agent.search_all(q, limit_per_type=50)
            view[f"{s} episodes {q}"] = sorted(
                (tr(e.memory_id), e.task_prompt, e.outcome, e.success, e.duration_seconds, e.importance, e.tags, e.agent_id)
                for e in found["episodic"])
            view[f"{s} knowledge {q}"] = sorted(
                (tr(f.memory_id), f.pattern, f.kind, f.confidence, f.subject, f.valid_to is None) for f in found["semantic"])
            view[f"{s} skills {q}"] = sorted(
                (tr(k.memory_id), k.skill_name, k.description, k.action_sequence, k.tags, k.success_rate, k.executions,
                 round(k.mean_duration_s, 9)) for k in found["skills"])
            every = await memory.search(q, user_id=agent.user_id, memory_type=MemoryType.SEMANTIC, include_superseded=True, limit=50)
            view[f"{s} all knowledge {q}"] = sorted(
                (tr(v.memory_id), v.pattern, v.valid_to is None, tr(v.superseded_by) if v.superseded_by else None)
                for v in (SemanticMemory.from_record(h.record) for h in every.hits))
        for name in SKILL_NAMES:
            k = await agent.get_skill(name)
            view[f"{s} skill {name}"] = None if k is None else (
                tr(k.memory_id), k.description, k.action_sequence, k.tags, k.success_rate, k.executions, round(k.mean_duration_s, 9))
        view[f"{s} steps"] = [(x.action, x.observation, x.reasoning, x.success) for x in await agent.get_steps()]
        view[f"{s} sessions"] = len(await agent.get_session_history())
    return view


async def _run_on(backend: MemoryBackend, ops: list[tuple[Any, ...]]) -> tuple[list[str | None], Memory, list[AgentMemory]]:
    memory = Memory(backend)
    agents = [AgentMemory(memory, agent_id=a, user_id=u, session_id=f"s{i}") for i, (a, u) in enumerate(SCOPES)]
    return [await _apply(agents[op[1]], op) for op in ops], memory, agents


@integration
def test_differential_agent_memory_in_process_vs_redis(redis_server) -> None:
    """Each example: the same operations on a fresh in-process backend and a fresh Redis prefix,
    then every scope's view compared: search_all for a few queries (sets of ids, translated through
    the ids each save returned, and fields; scores and order differ by engine), the superseded
    facts too, get_skill of every name, get_steps, the session count.
    ``AGENT_DIFFERENTIAL_EXAMPLES`` (default 150, ~10 s here) sets the number of examples."""
    from primitives.memory.redis_backend import RedisBackend

    @settings(max_examples=int(os.environ.get("AGENT_DIFFERENTIAL_EXAMPLES", "150")), deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(ops=OPERATIONS)
    def check(ops: list[tuple[Any, ...]]) -> None:
        async def both() -> None:
            oracle = InMemoryBackend(working_memory_size=WORKING_MEMORY_SIZE)
            redis = RedisBackend(redis_server.url, prefix=fresh_prefix(), working_memory_size=WORKING_MEMORY_SIZE)
            try:
                want_ids, want_memory, want_agents = await _run_on(oracle, ops)
                got_ids, got_memory, got_agents = await _run_on(redis, ops)
                mapping: dict[str, str] = {}  # Redis id -> the oracle's (episode ids are random)
                reverse: dict[str, str] = {}
                for op, want, got in zip(ops, want_ids, got_ids):
                    assert (want is None) == (got is None), (op, want, got)
                    if got is not None:
                        assert mapping.setdefault(got, want) == want, f"{op}: Redis id {got} stands for two oracle ids"
                        assert reverse.setdefault(want, got) == got, f"{op}: oracle id {want} is two Redis ids"
                want = await _user_view(want_memory, want_agents, lambda i: i)
                got = await _user_view(got_memory, got_agents, lambda i: mapping.get(i, f"unmapped {i}"))
                for key in want:
                    assert got[key] == want[key], f"{key}: Redis {got[key]!r} != in-process {want[key]!r}"
            finally:
                await redis.drop()
                await redis.aclose()

        asyncio.run(both())

    check()
