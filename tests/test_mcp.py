"""The MCP server in process: the SDK's own client against ``build_server(memory)`` (no mocks).

Transports (stdio as a subprocess, HTTP with its token, a killed server): tests/test_mcp_transports.py.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client

from primitives.integrations.mcp import TOOL_NAMES, build_server
from primitives.memory import Memory
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import Message

# every one a valid identifier and text: each must round-trip exactly and stay in its tenant
HOSTILE = [
    "a\x00b",
    "tenant:one|two,three;four",
    "  padded  ",
    "null",
    "[1]",
    '{"a": 1}',
    "@user_id:{alice} | @namespace:{*}",
    '-(foo) "bar" ~baz %qux% *',
    "'; DROP TABLE memories; --",
    "日本語 ✓ 🙂",
    "\u202eevil\u202c",
    "e\u0301",
    "line\r\nbreak\u2028sep",
    "\\",
    "*",
]


BACKENDS = ["inmemory", pytest.param("redis", marks=pytest.mark.integration)]
_prefixes = itertools.count()


@asynccontextmanager
async def served(backend: str = "inmemory", request: pytest.FixtureRequest | None = None,
                 **options: Any) -> AsyncIterator[tuple[Memory, Client]]:
    """A memory and the SDK's client connected to a server over it, in process. (Not a fixture:
    the client's task group must be entered and left in the same task.) ``"redis"``: on the
    session's real Redis (tests/conftest.py), under a fresh prefix."""
    if backend == "redis":
        assert request is not None
        from primitives.memory.redis_backend import RedisBackend

        url = request.getfixturevalue("redis_server").url
        store: Any = RedisBackend(url, prefix=f"mcp{os.getpid()}-{next(_prefixes)}:")
    else:
        store = InMemoryBackend()
    async with Memory(store, **options) as memory, Client(build_server(memory)) as client:
        try:
            yield memory, client
        finally:
            if backend == "redis":
                await store.drop()


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content
    out = result.structured_content
    assert json.loads(result.content[0].text) == out  # the text block says the same, for clients without structure
    return out


async def error(client: Client, name: str, **args: Any) -> str:
    result = await client.call_tool(name, args)
    assert result.is_error, result.structured_content
    return result.content[0].text


async def test_the_tools_are_listed_with_the_package_field_names() -> None:
    async with served() as (memory, client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tuple(tools) == TOOL_NAMES
        assert set(tools["remember"].input_schema["properties"]) == {
            "text", "user_id", "namespace", "session_id", "memory_type", "topics", "metadata", "ttl"}
        assert set(tools["search_memory"].input_schema["properties"]) == {
            "query", "user_id", "namespace", "session_id", "memory_type", "topics", "limit", "mode"}
        assert set(tools["get_memory"].input_schema["properties"]) == {"id", "user_id", "namespace"}
        assert tools["delete_memory"].annotations.destructive_hint is True
        assert tools["search_memory"].annotations.read_only_hint is True
        for tool in tools.values():
            assert tool.input_schema["additionalProperties"] is False
            assert {"backend", "degraded"} <= set(tool.output_schema["required"])


async def test_every_tool_end_to_end() -> None:
    async with served() as (memory, client):
        stored = await call(client, "remember", text="Alice drinks green tea every morning", user_id="alice",
                            session_id="s1", memory_type="semantic", topics=["drinks"], metadata={"source": "chat"})
        record = stored["memory"]
        assert (stored["backend"], stored["degraded"]) == ("in-memory", False)
        assert record["text"] == "Alice drinks green tea every morning" and record["topics"] == ["drinks"]
        assert record["metadata"] == {"source": "chat"} and record["memory_type"] == "semantic"
        assert "embedding" not in record

        got = await call(client, "get_memory", id=record["id"], user_id="alice")
        assert got["found"] and got["memory"] == record

        found = await call(client, "search_memory", query="green tea", user_id="alice", memory_type=["semantic"],
                           topics=["drinks"], limit=3, mode="keyword")
        assert [h["id"] for h in found["memories"]] == [record["id"]]
        assert found["memories"][0]["score"] > 0 and found["skipped"] == 0

        await memory.append_messages("s1", [Message("user", "what do I drink?"), Message("assistant", "tea")])
        recalled = await call(client, "recall", query="what does Alice drink", user_id="alice", session_id="s1")
        assert [m["content"] for m in recalled["working_memory"]] == ["what do I drink?", "tea"]
        assert [h["id"] for h in recalled["relevant_memories"]] == [record["id"]]

        prompt = await call(client, "memory_prompt", query="green tea", user_id="alice", budget_tokens=60)
        assert "green tea" in prompt["text"] and prompt["tokens"] <= 60 and prompt["budget_tokens"] == 60

        assert (await call(client, "delete_memory", id=record["id"], user_id="alice"))["deleted"] is True
        assert (await call(client, "get_memory", id=record["id"], user_id="alice"))["found"] is False
        assert (await call(client, "delete_memory", id=record["id"], user_id="alice"))["deleted"] is False


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_tenant_never_sees_or_deletes_another_tenants_records(backend: str, request: pytest.FixtureRequest) -> None:
    async with served(backend, request) as (memory, client):
        ids = {}
        for ns in ("ns-a", "ns-b"):
            for user in ("alice", "bob"):
                out = await call(client, "remember", text=f"secret plan of {user} in {ns}", user_id=user, namespace=ns)
                ids[ns, user] = out["memory"]["id"]
        for (ns, user), own in ids.items():
            hits = (await call(client, "search_memory", query="secret plan", user_id=user, namespace=ns))["memories"]
            assert [h["id"] for h in hits] == [own]
            recalled = await call(client, "recall", query="secret plan", user_id=user, namespace=ns)
            assert [h["id"] for h in recalled["relevant_memories"]] == [own]
            prompt = await call(client, "memory_prompt", query="secret plan", user_id=user, namespace=ns)
            assert f"{user} in {ns}" in prompt["text"] and prompt["text"].count("secret plan") == 1
            for (other_ns, other_user), theirs in ids.items():
                if (other_ns, other_user) == (ns, user):
                    continue
                assert (await call(client, "get_memory", id=theirs, user_id=user, namespace=ns))["found"] is False
                assert (await call(client, "delete_memory", id=theirs, user_id=user, namespace=ns))["deleted"] is False
        for (ns, _), own in ids.items():  # nothing was deleted by the attempts
            assert await memory.get(own, namespace=ns) is not None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("s", HOSTILE, ids=repr)
async def test_hostile_strings_in_every_field_round_trip_and_stay_in_their_tenant(
    s: str, backend: str, request: pytest.FixtureRequest
) -> None:
    async with served(backend, request) as (memory, client):
        await call(client, "remember", text="a neighbour's memory", user_id="neighbour", namespace=s)
        stored = (await call(client, "remember", text=s, user_id=s, namespace=s, session_id=s, topics=[s],
                             metadata={s: s, "nested": [s, {"k": s}]}))["memory"]
        got = (await call(client, "get_memory", id=stored["id"], user_id=s, namespace=s))["memory"]
        assert got == stored
        assert (got["text"], got["user_id"], got["namespace"], got["session_id"], got["topics"]) == (s, s, s, s, [s])
        assert got["metadata"] == {s: s, "nested": [s, {"k": s}]}
        for mode in ("keyword", None):
            args = {"query": s, "user_id": s, "namespace": s, "session_id": s, "topics": [s], "mode": mode}
            hits = (await call(client, "search_memory", **{k: v for k, v in args.items() if v is not None}))["memories"]
            assert {h["user_id"] for h in hits} <= {s} and {h["namespace"] for h in hits} <= {s}
        other = (await call(client, "search_memory", query=s, user_id="neighbour", namespace=s))["memories"]
        assert stored["id"] not in {h["id"] for h in other}
        await call(client, "recall", query=s, user_id=s, namespace=s, session_id=s)
        await call(client, "memory_prompt", query=s, user_id=s, namespace=s, session_id=s)
        assert (await call(client, "get_memory", id=stored["id"], user_id="neighbour", namespace=s))["found"] is False
        assert (await call(client, "get_memory", id=s, user_id=s, namespace=s))["found"] is False
        assert (await call(client, "delete_memory", id=s, user_id=s, namespace=s))["deleted"] is False
        assert (await call(client, "delete_memory", id=stored["id"], user_id=s, namespace=s))["deleted"] is True


def _deep(levels: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(levels):
        out = {"k": out}
    return out


BAD = [
    ("remember", {"text": 5, "user_id": "u"}, "InvalidRecordTypeError"),
    ("remember", {"text": "bad \ud800 surrogate", "user_id": "u"}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": ""}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "   "}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "u", "namespace": ""}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "u", "memory_type": "bogus"}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "u", "memory_type": ""}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "u", "topics": "drinks"}, "InvalidRecordTypeError"),
    ("remember", {"text": "t", "user_id": "u", "topics": ["ok", ""]}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "u", "metadata": "x"}, "InvalidRecordTypeError"),
    ("remember", {"text": "t", "user_id": "u", "metadata": _deep(40)}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "u", "ttl": -1}, "InvalidRecordError"),
    ("remember", {"text": "t", "user_id": "u", "session_id": ["s"]}, "InvalidRecordTypeError"),
    ("remember", {"text": "t", "userid": "u"}, "InvalidInputError"),
    ("remember", {"user_id": "u"}, "InvalidInputError"),
    ("remember", {"text": "t"}, "UnscopedAccessError"),
    ("search_memory", {"query": "t", "user_id": "u", "limit": 0}, "InvalidInputError"),
    ("search_memory", {"query": "t", "user_id": "u", "limit": True}, "InvalidInputTypeError"),
    ("search_memory", {"query": "t", "user_id": "u", "limit": "5"}, "InvalidInputTypeError"),
    ("search_memory", {"query": "t", "user_id": "u", "mode": "fuzzy"}, "InvalidInputError"),
    ("search_memory", {"query": 7, "user_id": "u"}, "InvalidInputTypeError"),
    ("search_memory", {"query": "t"}, "UnscopedAccessError"),
    ("recall", {"query": "t"}, "UnscopedAccessError"),
    ("recall", {"query": "t", "user_id": "u", "session_id": ""}, "InvalidInputError"),
    ("memory_prompt", {"query": "t", "user_id": "u", "budget_tokens": 0}, "InvalidInputError"),
    ("memory_prompt", {"query": "t"}, "UnscopedAccessError"),
    ("get_memory", {"id": "", "user_id": "u"}, "InvalidInputError"),
    ("get_memory", {"id": "x"}, "UnscopedAccessError"),
    ("delete_memory", {"id": 5, "user_id": "u"}, "InvalidInputTypeError"),
    ("delete_memory", {"id": "x", "user_id": "u", "namespace": "\t"}, "InvalidInputError"),
    ("no_such_tool", {}, "InvalidInputError"),
]


@pytest.mark.parametrize(("tool", "args", "expected"), BAD, ids=lambda v: repr(v)[:40])
async def test_bad_input_is_an_mcp_error_with_the_typed_message_and_stores_nothing(
    tool: str, args: dict[str, Any], expected: str
) -> None:
    async with served() as (memory, client):
        text = await error(client, tool, **args)
        assert text.startswith(f"{expected}: "), text
        assert len(text) > len(expected) + 10  # the typed error's own explanation follows
        assert await memory.count() == 0 and await memory.count(namespace="ns") == 0


async def test_a_single_user_memory_needs_no_user_id() -> None:
    async with Memory(InMemoryBackend(), single_user=True) as memory, Client(build_server(memory)) as client:
        record = (await call(client, "remember", text="likes jazz"))["memory"]
        assert record["user_id"] is None
        assert [h["id"] for h in (await call(client, "search_memory", query="jazz"))["memories"]] == [record["id"]]
        assert (await call(client, "get_memory", id=record["id"]))["found"]
        assert "jazz" in (await call(client, "memory_prompt", query="jazz"))["text"]
        assert (await call(client, "delete_memory", id=record["id"]))["deleted"]


async def test_a_server_backend_that_is_down_is_reported_as_degraded(tmp_path) -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "MEMORY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
           "MEMORY_REDIS_CONNECT_TIMEOUT": "0.5", "MEMORY_CHANGE_FEED": "0"}
    async with Memory.from_env(env) as memory, Client(build_server(memory)) as client:
        stored = await call(client, "remember", text="kept in the outbox", user_id="u")
        assert (stored["backend"], stored["degraded"]) == ("in-memory", True)
        found = await call(client, "search_memory", query="outbox", user_id="u")
        assert (found["backend"], found["degraded"]) == ("in-memory", True)
        assert [h["id"] for h in found["memories"]] == [stored["memory"]["id"]]
