"""The LangChain adapters (``primitives.integrations.langchain``) against langchain-core, on the
in-process stores and on a real Redis.

The retriever cases follow langchain-tests' ``RetrieversIntegrationTests`` (a constructor limit,
a per-call limit, ``invoke``/``ainvoke`` returning ``Document`` objects) with this package's
``limit`` where the standard suite says ``k``; langchain-tests itself is not installed (it brings
pytest plugins: pytest-socket, pytest-recording, syrupy, pytest-codspeed). The chat history cases
follow ``BaseChatMessageHistory``'s contract: messages back in order and equal, clear, the sync
variants.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import ValidationError

from primitives.errors import (
    CorruptValueError,
    InvalidFilterError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidKeyError,
    SerializationError,
    UnscopedAccessError,
)
from primitives.integrations._sync import SyncCallInEventLoopError
from primitives.integrations.langchain import MemoryRetriever, SessionChatMessageHistory
from primitives.memory import Memory
from primitives.memory.inmemory import InMemoryBackend
from primitives.store import InMemorySessionHistory

_prefixes = itertools.count()


def _prefix(tag: str) -> str:
    return f"lc{os.getpid()}-{tag}{next(_prefixes)}:"


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=pytest.mark.integration)])
async def memory(request):
    if request.param == "inmemory":
        yield Memory(InMemoryBackend())
        return
    from primitives.memory.redis_backend import RedisBackend

    backend = RedisBackend(request.getfixturevalue("redis_server").url, prefix=_prefix("m"))
    yield Memory(backend)
    await backend.drop()
    await backend.aclose()


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=pytest.mark.integration)])
async def history(request):
    if request.param == "inmemory":
        yield InMemorySessionHistory()
        return
    from primitives.redis_connection import connect
    from primitives.store import SessionHistory

    client = connect(request.getfixturevalue("redis_server").url)
    yield SessionHistory(client, prefix=_prefix("h"))
    await client.aclose()


# -- retriever --------------------------------------------------------------------------------------


async def _seed(memory: Memory) -> None:
    for i, text in enumerate(["green tea in the morning", "tea with lemon", "black tea, no sugar", "tea ceremony"]):
        await memory.remember(text, user_id="alice", session_id=f"s{i % 2}", topics=[f"t{i % 2}"],
                              metadata={"i": i, "nested": {"a": [1, 2]}})
    await memory.remember("bob's tea is secret", user_id="bob")
    await memory.remember("alice-with-a-space tea", user_id="alice ")
    await memory.remember("tea in another namespace", user_id="alice", namespace="other")


async def test_retriever_returns_documents_with_limits(memory: Memory) -> None:
    await _seed(memory)
    retriever = MemoryRetriever(memory=memory, user_id="alice", limit=1)
    docs = await retriever.ainvoke("tea")
    assert len(docs) == 1 and all(isinstance(d, Document) for d in docs)
    assert len(await MemoryRetriever(memory=memory, user_id="alice", limit=3).ainvoke("tea")) == 3
    assert len(await MemoryRetriever(memory=memory, user_id="alice").ainvoke("tea", limit=2)) == 2
    docs = await MemoryRetriever(memory=memory, user_id="alice", limit=10).ainvoke("tea")
    assert len(docs) == 4
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and all(isinstance(s, float) for s in scores)
    for doc in docs:
        md = doc.metadata
        assert doc.id == md["id"] and isinstance(doc.page_content, str) and "tea" in doc.page_content
        assert md["user_id"] == "alice" and md["namespace"] == "default" and md["memory_type"] == "episodic"
        assert datetime.fromisoformat(md["created_at"]).utcoffset() == timedelta(0)
        assert md["backend"] == memory.backend_name and md["degraded"] is False
        assert md["metadata"]["nested"] == {"a": [1, 2]} and isinstance(md["topics"], list)
        md["metadata"]["nested"]["a"].append(3)  # a copy: the stored record is unchanged
    again = await MemoryRetriever(memory=memory, user_id="alice", limit=10).ainvoke("tea")
    assert all(d.metadata["metadata"]["nested"] == {"a": [1, 2]} for d in again)


async def test_retriever_scope_never_leaks(memory: Memory) -> None:
    await _seed(memory)
    hostile = ["tea", "@user_id:{bob}", "bob", "secret", "*", "tea | bob", "\x00", "", "  ", "🦜 tea", "-alice",
               "alice\\ ", "{alice }"]
    for query in hostile:
        for docs in [
            await MemoryRetriever(memory=memory, user_id="alice", limit=50).ainvoke(query),
            await MemoryRetriever(memory=memory, user_id="alice", limit=50, mode="keyword").ainvoke(query),
        ]:
            assert all(d.metadata["user_id"] == "alice" and d.metadata["namespace"] == "default" for d in docs)
    spaced = await MemoryRetriever(memory=memory, user_id="alice ").ainvoke("tea")
    assert [d.page_content for d in spaced] == ["alice-with-a-space tea"]
    other = await MemoryRetriever(memory=memory, user_id="alice", namespace="other").ainvoke("tea")
    assert [d.page_content for d in other] == ["tea in another namespace"]
    assert await MemoryRetriever(memory=memory, user_id="carol").ainvoke("tea") == []


async def test_retriever_filters(memory: Memory) -> None:
    await _seed(memory)

    async def texts(flt: dict) -> list[str]:
        docs = await MemoryRetriever(memory=memory, user_id="alice", limit=10, filter=flt).ainvoke("tea")
        return sorted(d.page_content for d in docs)

    assert await texts({"session_id": "s0"}) == ["black tea, no sugar", "green tea in the morning"]
    assert await texts({"topics": "t1"}) == ["tea ceremony", "tea with lemon"]
    assert await texts({"topics": ["t0", "t1"], "memory_type": "episodic"}) == await texts({})
    assert await texts({"memory_type": ["semantic"]}) == []
    assert await texts({"created_at": {"gte": datetime.now(timezone.utc) + timedelta(days=1)}}) == []
    assert len(await texts({"created_at": {"lt": datetime.now(timezone.utc) + timedelta(days=1)}})) == 4


async def test_retriever_refuses_bad_input() -> None:
    memory = Memory(InMemoryBackend())
    with pytest.raises(UnscopedAccessError):
        MemoryRetriever(memory=memory)
    assert MemoryRetriever(memory=Memory(InMemoryBackend(), single_user=True)).limit == 4
    for kwargs, error in [
        ({"filter": {"user_id": "bob"}}, InvalidFilterError),
        ({"filter": {"namespace": "other"}}, InvalidFilterError),
        ({"filter": {"topics": ""}}, InvalidFilterError),
        ({"filter": {"memory_type": "dream"}}, InvalidFilterError),
        ({"filter": {"created_at": {"gte": datetime(2026, 1, 1)}}}, InvalidFilterError),
        ({"limit": 0}, InvalidInputError),
        ({"limit": 10_001}, InvalidInputError),
        ({"mode": "semantic"}, InvalidInputError),
        ({"user_id": " "}, InvalidInputError),
        ({"user_id": "\ud800"}, InvalidInputError),
        ({"namespace": ""}, InvalidInputError),
        ({"limit": "3"}, ValidationError),
        ({"memory": InMemoryBackend()}, ValidationError),
    ]:
        with pytest.raises(error):
            MemoryRetriever(**{"memory": memory, "user_id": "alice", **kwargs})
    retriever = MemoryRetriever(memory=memory, user_id="alice")
    with pytest.raises(InvalidInputError):
        await retriever.ainvoke("tea", limit=0)
    with pytest.raises(InvalidInputError):
        await retriever.ainvoke("\ud800 tea")
    with pytest.raises(InvalidInputError):
        await retriever.ainvoke("tea", mode="bogus")


def test_retriever_sync_invoke() -> None:
    memory = Memory(InMemoryBackend())
    asyncio.run(memory.remember("likes green tea", user_id="alice"))
    retriever = MemoryRetriever(memory=memory, user_id="alice")
    docs = retriever.invoke("tea")
    assert [d.page_content for d in docs] == ["likes green tea"]
    assert retriever.invoke("tea", limit=1) == docs
    assert retriever.batch(["tea", "coffee"]) == [docs, []]


async def test_retriever_sync_invoke_inside_a_loop() -> None:
    memory = Memory(InMemoryBackend())
    await memory.remember("likes green tea", user_id="alice")
    retriever = MemoryRetriever(memory=memory, user_id="alice")
    await retriever.ainvoke("tea")
    with pytest.raises(SyncCallInEventLoopError, match="ainvoke"):
        retriever.invoke("tea")
    docs = await asyncio.to_thread(retriever.invoke, "tea")
    assert [d.page_content for d in docs] == ["likes green tea"]


# -- chat message history ---------------------------------------------------------------------------

EVERY_KIND = [
    SystemMessage("You are terse.", id="sys-1"),
    HumanMessage("What is 6 × 7? 🦜 \x00 {\"role\": \"system\"}", name="alice", additional_kwargs={"k": [1, None]}),
    AIMessage("", tool_calls=[{"name": "multiply", "args": {"a": 6, "b": 7}, "id": "call-1"}],
              response_metadata={"model": "m"}, id="ai-1"),
    ToolMessage("42", tool_call_id="call-1", name="multiply", status="success"),
    AIMessage([{"type": "text", "text": "It is "}, {"type": "text", "text": "42."}]),
    ChatMessage(role="critic", content="fine"),
    FunctionMessage(name="legacy", content="{}"),
    AIMessageChunk(content="partial"),
    HumanMessage(""),
]


async def test_history_round_trips_every_message_kind(history) -> None:
    chat = SessionChatMessageHistory(history, "s-1")
    assert await chat.aget_messages() == []
    await chat.aadd_messages(EVERY_KIND[:4])
    await chat.aadd_messages(EVERY_KIND[4:])
    got = await chat.aget_messages()
    assert got == EVERY_KIND and [type(m) for m in got] == [type(m) for m in EVERY_KIND]
    stored = await history.read("s-1")
    assert [s["role"] for s in stored] == [
        "system", "human", "ai", "tool", "ai", "chat", "function", "AIMessageChunk", "human"]
    assert stored[4]["content"] == "It is 42."
    await chat.aclear()
    assert await chat.aget_messages() == []


async def test_history_sessions_and_namespaces_are_apart(history) -> None:
    ids = ["s", "s ", "S", "s:1", "{s}", "s\x00", "🦜", "s/../t", "*"]
    for sid in ids:
        await SessionChatMessageHistory(history, sid).aadd_messages([HumanMessage(f"hello from {sid!r}")])
    for sid in ids:
        assert await SessionChatMessageHistory(history, sid).aget_messages() == [HumanMessage(f"hello from {sid!r}")]
    await SessionChatMessageHistory(history, "s").aclear()
    assert await SessionChatMessageHistory(history, "s ").aget_messages() != []
    if isinstance(history, InMemorySessionHistory):
        other = InMemorySessionHistory(namespace="other")
    else:
        from primitives.store import SessionHistory

        other = SessionHistory(history._client, namespace="other", prefix=history._prefix)
    assert await SessionChatMessageHistory(other, "s ").aget_messages() == []


async def test_history_reads_messages_other_code_wrote(history) -> None:
    await history.append("plain", [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "system", "content": "sys"}, {"role": "tool", "content": "42", "tool_call_id": "c"},
        {"role": "narrator", "content": "meanwhile"},
        {"role": "human", "content": "bad fields", "langchain": {"content": ["not", {"valid": 1}], "type": 5}},
    ])
    got = await SessionChatMessageHistory(history, "plain").aget_messages()
    assert got == [HumanMessage("hi"), AIMessage("hello"), SystemMessage("sys"), ToolMessage("42", tool_call_id="c"),
                   ChatMessage(role="narrator", content="meanwhile"), HumanMessage("bad fields")]


async def test_history_refuses_bad_input_and_writes_nothing(history) -> None:
    chat = SessionChatMessageHistory(history, "s")
    with pytest.raises(InvalidInputTypeError):
        await chat.aadd_messages([HumanMessage("ok"), {"role": "user", "content": "a dict"}])  # type: ignore[list-item]
    with pytest.raises(SerializationError):
        await chat.aadd_messages([HumanMessage("ok"), HumanMessage("x", additional_kwargs={"when": object()})])
    with pytest.raises(InvalidInputError):
        await chat.aadd_messages([HumanMessage("\ud800")])
    assert await chat.aget_messages() == []
    for bad in ["", 5, None, "\udfff"]:
        with pytest.raises((InvalidKeyError, InvalidInputTypeError)):
            SessionChatMessageHistory(history, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputTypeError):
        SessionChatMessageHistory(object(), "s")  # type: ignore[arg-type]


@pytest.mark.integration
async def test_history_damaged_entries_in_redis(redis_server) -> None:
    from primitives.redis_connection import connect
    from primitives.store import SessionHistory

    redis_client = connect(redis_server.url)
    history = SessionHistory(redis_client, prefix=_prefix("dmg"))
    chat = SessionChatMessageHistory(history, "s")
    await chat.aadd_messages([HumanMessage("first"), AIMessage("second")])
    messages_key, _ = history.keys("s")
    await redis_client.rpush(messages_key, b'{"role": 5, "content": null}', b'{"role": "ai", "content": "third"}')
    assert await chat.aget_messages() == [HumanMessage("first"), AIMessage("second"), AIMessage("third")]
    await redis_client.rpush(messages_key, b"{not json")
    with pytest.raises(CorruptValueError):  # the history's own check: the read names the damage
        await chat.aget_messages()
    await chat.aclear()
    assert await chat.aget_messages() == []
    await redis_client.aclose()


def test_history_sync_methods() -> None:
    chat = SessionChatMessageHistory(InMemorySessionHistory(), "s")
    chat.add_user_message("hi")
    chat.add_ai_message(AIMessage("hello", id="a1"))
    chat.add_messages([SystemMessage("sys")])
    assert chat.messages == [HumanMessage("hi"), AIMessage("hello", id="a1"), SystemMessage("sys")]
    assert "hello" in str(chat)
    chat.clear()
    assert chat.messages == []


async def test_history_sync_methods_inside_a_loop() -> None:
    chat = SessionChatMessageHistory(InMemorySessionHistory(), "s")
    await chat.aadd_messages([HumanMessage("hi")])
    with pytest.raises(SyncCallInEventLoopError, match="aget_messages"):
        chat.messages  # noqa: B018
    assert await asyncio.to_thread(lambda: chat.messages) == [HumanMessage("hi")]


# -- lazy imports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [("primitives.integrations.langchain", "langchain_core", "langchain"),
     ("primitives.integrations.langgraph", "langgraph", "langgraph")],
)
def test_an_adapter_without_its_extra_names_the_install(module: str, blocked: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import primitives.integrations\n"
        "from primitives.errors import ConfigurationError\n"
        f"try:\n    import {module}\nexcept ConfigurationError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().endswith(f"python -m pip install 'memory-primitives[{extra}]'"), out
    assert len(out.stdout.strip().splitlines()) == 1
