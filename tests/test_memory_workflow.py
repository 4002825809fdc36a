"""Memory facade, MemoryPrimitive and RememberPrimitive, from_env, and the runnable example."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from primitives import LambdaPrimitive, WorkflowContext
from primitives.errors import UnscopedAccessError, ConfigurationError, InvalidInputError
from primitives.memory import InMemoryBackend, Memory, MemoryPrimitive, RememberPrimitive
from primitives.memory.workflow import QUERY_STATE_KEY


@pytest.fixture
async def memory():
    memory = Memory(InMemoryBackend())
    yield memory
    await memory.aclose()


async def test_memory_primitive_output_shape(memory: Memory) -> None:
    await memory.remember("Alice's favourite colour is blue", user_id="alice")
    ctx = WorkflowContext(session_id="s1", metadata={"user_id": "alice"})
    out = await MemoryPrimitive(memory).execute({"query": "favourite colour?"}, ctx)
    assert set(out) == {"input", "working_memory", "relevant_memories", "memory_backend", "degraded", "skipped"}
    assert out["skipped"] == 0
    assert out["input"] == {"query": "favourite colour?"}
    assert out["memory_backend"] == "in-memory" and out["degraded"] is False
    assert out["working_memory"] == []
    (hit,) = out["relevant_memories"]
    assert hit["text"] == "Alice's favourite colour is blue"
    assert hit["score"] > 0 and hit["id"] and hit["metadata"] == {}
    assert ctx.state[QUERY_STATE_KEY] == "favourite colour?"


async def test_pipeline_remembers_turns_and_answers_from_memory(memory: Memory) -> None:
    def respond(recalled: dict[str, Any]) -> dict[str, Any]:
        said = [m["text"] for m in recalled["relevant_memories"] if m["metadata"]["role"] == "user"]
        return {"response": said[0] if said else "Noted."}

    pipeline = MemoryPrimitive(memory) >> LambdaPrimitive(respond) >> RememberPrimitive(memory)
    ctx = WorkflowContext(session_id="chat", metadata={"user_id": "alice"})
    first = await pipeline.execute({"query": "My favourite colour is blue"}, ctx)
    assert first == {"response": "Noted."}
    assert QUERY_STATE_KEY not in ctx.state
    second = await pipeline.execute({"query": "What is my favourite colour?"}, ctx)
    assert second["response"] == "My favourite colour is blue"
    messages = await memory.get_messages("chat")
    assert [(m.role, m.content) for m in messages] == [
        ("user", "My favourite colour is blue"),
        ("assistant", "Noted."),
        ("user", "What is my favourite colour?"),
        ("assistant", "My favourite colour is blue"),
    ]
    # the second question is stored with the turn before it as its indexed context
    hits = (await memory.search("What is my favourite colour?", user_id="alice")).hits
    question = next(h.record for h in hits if h.record.text == "What is my favourite colour?")
    assert question.metadata["context"] == "Noted."
    assert question.session_id == "chat" and question.user_id == "alice"
    # working memory is handed to the next turn, oldest first
    out = await MemoryPrimitive(memory).execute("anything", ctx)
    assert [m["content"] for m in out["working_memory"]][:2] == ["My favourite colour is blue", "Noted."]


async def test_users_and_namespaces_are_isolated(memory: Memory) -> None:
    remember = RememberPrimitive(memory)
    await remember.execute("my password hint is pineapple", WorkflowContext(metadata={"user_id": "alice"}))
    await remember.execute("pineapple pizza is great", WorkflowContext(metadata={"user_id": "bob", "namespace": "other"}))
    recall = MemoryPrimitive(memory)
    bob = await recall.execute("pineapple", WorkflowContext(metadata={"user_id": "bob"}))
    assert bob["relevant_memories"] == []  # bob's memory is in namespace "other"
    bob_other = await recall.execute("pineapple", WorkflowContext(metadata={"user_id": "bob", "namespace": "other"}))
    assert [m["text"] for m in bob_other["relevant_memories"]] == ["pineapple pizza is great"]
    alice = await recall.execute("pineapple", WorkflowContext(metadata={"user_id": "alice"}))
    assert [m["text"] for m in alice["relevant_memories"]] == ["my password hint is pineapple"]


async def test_remember_accepts_speaker_metadata_and_created_at(memory: Memory) -> None:
    when = datetime(2023, 5, 8, tzinfo=timezone.utc)
    await RememberPrimitive(memory).execute(
        {"query": "I went hiking", "speaker": "Mel", "metadata": {"dia_id": "D1:1"}, "created_at": when},
        WorkflowContext(session_id="s", metadata={"user_id": "mel"}),
    )
    (hit,) = (await memory.search("hiking")).hits
    assert hit.record.metadata == {"dia_id": "D1:1", "role": "user", "speaker": "Mel"}
    assert hit.record.created_at == when
    assert (await memory.search("Mel May 2023")).hits  # speaker and date are indexed


async def test_remember_passes_input_through_and_needs_a_message(memory: Memory) -> None:
    ctx = WorkflowContext(metadata={"user_id": "u"})
    assert await RememberPrimitive(memory).execute({"query": "x y z"}, ctx) == {"query": "x y z"}
    with pytest.raises(InvalidInputError):
        await RememberPrimitive(memory).execute(12345, WorkflowContext(metadata={"user_id": "u"}))
    with pytest.raises(InvalidInputError):
        await MemoryPrimitive(memory).execute({"question": "no query key"}, WorkflowContext(metadata={"user_id": "u"}))
    with pytest.raises(InvalidInputError):
        MemoryPrimitive(memory, limit=0)


def test_from_env_defaults_and_errors() -> None:
    memory = Memory.from_env({})
    assert memory.backend_name == "in-memory" and memory.namespace == "default"
    memory = Memory.from_env({"MEMORY_BACKEND": "in-memory", "MEMORY_MAXSIZE": "10", "MEMORY_NAMESPACE": "app"})
    assert memory.backend.maxsize == 10 and memory.namespace == "app"
    with pytest.raises(ConfigurationError, match="MEMORY_BACKEND"):
        Memory.from_env({"MEMORY_BACKEND": "cassandra"})
    with pytest.raises(ConfigurationError, match="MEMORY_MAXSIZE"):
        Memory.from_env({"MEMORY_MAXSIZE": "lots"})
    with pytest.raises(ConfigurationError):
        Memory.from_env({"MEMORY_WORKING_MEMORY_SIZE": "0"})


async def test_example_answers_from_memory() -> None:
    import examples.memory_workflow as example

    async with Memory.from_env({}) as memory:
        outputs = await example.run_conversation(memory, example.TURNS)
    responses = [o["response"] for o in outputs]
    assert responses[3] == 'You told me: "My favourite colour is blue".'
    assert "nurse in Lisbon" in responses[4]
    assert "Miso" in responses[5]
    assert all(o["memory_backend"] == "in-memory" and o["degraded"] is False for o in outputs)


async def test_example_with_an_llm_callable() -> None:
    import examples.memory_workflow as example

    prompts: list[str] = []

    async def fake_llm(prompt: str) -> str:
        prompts.append(prompt)
        return "ok"

    async with Memory.from_env({}) as memory:
        outputs = await example.run_conversation(memory, ["I love jazz", "What music do I love?"], llm=fake_llm)
    assert [o["response"] for o in outputs] == ["ok", "ok"]
    assert "- I love jazz" in prompts[1]


async def test_unscoped_pipeline_calls_are_refused_on_a_multi_user_memory(memory: Memory) -> None:
    """The safe default: a context without user_id never sees every user's memories."""
    await memory.remember("alice's secret is pineapple", user_id="alice")
    for step in (MemoryPrimitive(memory), RememberPrimitive(memory)):
        with pytest.raises(UnscopedAccessError) as info:
            await step.execute("pineapple", WorkflowContext(session_id="s"))
        assert "user_id" in str(info.value) and "single_user" in str(info.value)
    with pytest.raises(UnscopedAccessError):
        await memory.recall("pineapple")
    assert await memory.count() == 1  # the refused RememberPrimitive stored nothing
    assert await memory.get_messages("s") == []


@pytest.mark.parametrize("bad", [{"user_id": ""}, {"user_id": "  "}, {"user_id": 7}, {"namespace": ""},
                                 {"user_id": "u", "namespace": 3}, {"user_id": "u", "namespace": " "}])
async def test_malformed_scope_is_refused_not_widened(memory: Memory, bad: dict[str, Any]) -> None:
    await memory.remember("the pineapple note", user_id="alice")
    for step in (MemoryPrimitive(memory), RememberPrimitive(memory)):
        with pytest.raises((InvalidInputError, UnscopedAccessError)):
            await step.execute("pineapple", WorkflowContext(metadata=bad))
    assert await memory.count() == 1


async def test_single_user_memory_allows_unscoped_calls() -> None:
    memory = Memory(InMemoryBackend(), single_user=True)
    pipeline = MemoryPrimitive(memory) >> RememberPrimitive(memory)
    await pipeline.execute("I keep my keys in the blue bowl", WorkflowContext(session_id="s"))
    out = await MemoryPrimitive(memory).execute("where are my keys?", WorkflowContext(session_id="s"))
    assert [m["text"] for m in out["relevant_memories"]] == ["I keep my keys in the blue bowl"]
    assert Memory.from_env({"MEMORY_SINGLE_USER": "1"}).single_user is True
    assert Memory.from_env({}).single_user is False
    with pytest.raises(ConfigurationError):
        Memory.from_env({"MEMORY_SINGLE_USER": "maybe"})
