"""``AgentMemoryServerBackend``: the record/request mapping on its own (no server), then the
contract suite and the server's real behaviour against a real Agent Memory Server 0.15.2
(``ams_server`` fixture): read-your-writes, modes, the namespace boundary when AMS drops a
filter, a poisoned keep-alive connection (through a local TCP proxy), wrong token, AMS down,
long-term memory disabled, and the resilient wrapper across an outage."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidInputError,
    InvalidRecordError,
    LongTermMemoryDisabledError,
    RecordTooLargeError,
)
from primitives.localredis import free_port
from primitives.memory import Memory, MemoryRecord, MemoryType, Message
from primitives.memory import ams_mapping as amap
from primitives.memory.ams_backend import AgentMemoryServerBackend
from primitives.memory.breaker import CircuitBreaker
from primitives.memory.outbox import Outbox
from primitives.memory.resilient import ResilientBackend
from tests.contract import HOSTILE, BackendContract

T0 = datetime(2024, 5, 8, 13, 56, 7, 123456, tzinfo=timezone.utc)
_prefixes = itertools.count()


def fresh_prefix() -> str:
    return f"t{os.getpid()}-{next(_prefixes)}:"


def through_json(data: dict) -> dict:
    """What the server hands back: the same JSON, datetimes as strings."""
    import json

    return json.loads(json.dumps(data))


# -- mapping (no server) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        MemoryRecord(text="plain", id="p", created_at=T0, updated_at=T0),
        MemoryRecord(text="a skill", id="s", memory_type=MemoryType.SKILL, created_at=T0, updated_at=T0),
        MemoryRecord(text="working", id="w", memory_type=MemoryType.WORKING, created_at=T0, updated_at=T0),
        MemoryRecord(text="rich 😀", id="r", user_id="u", session_id="s1", namespace="ns", topics=("a b", "c"),
                     metadata={"speaker": "Caroline", "n": [1, {"x": None}]}, ttl=math.inf,
                     created_at=T0, updated_at=T0 + timedelta(seconds=3)),
        MemoryRecord(text="short", id="t", ttl=2.5, created_at=T0, updated_at=T0),
    ],
)
@pytest.mark.parametrize("prefix", ["", "p1:"])
def test_records_round_trip_through_the_ams_format(record: MemoryRecord, prefix: str) -> None:
    wire = through_json(amap.record_to_ams(record, prefix))
    assert wire["id"] == prefix + record.id and wire["namespace"] == prefix + record.namespace
    assert wire["memory_type"] in ("episodic", "semantic", "message")
    assert amap.record_from_ams(wire, prefix) == record


def test_the_carrier_is_one_tag_value_and_ams_timestamps_win_when_they_disagree() -> None:
    skill = amap.record_to_ams(MemoryRecord(text="x", id="x", memory_type="skill", created_at=T0, updated_at=T0))
    (carrier,) = skill["extracted_from"]
    assert carrier.startswith(amap.CARRIER_PREFIX) and "," not in carrier and skill["memory_type"] == "semantic"
    rounded = dict(through_json(skill), created_at="2024-05-08T13:56:07.120000Z", updated_at="2024-05-08T13:56:07.120000Z")
    assert amap.record_from_ams(rounded).updated_at == T0  # RediSearch's 12 digits: the carrier's exact value
    edited = dict(rounded, updated_at="2024-05-09T10:00:00Z")  # PATCHed by another client since
    assert amap.record_from_ams(edited).updated_at == datetime(2024, 5, 9, 10, tzinfo=timezone.utc)


def test_records_outside_the_partition_are_not_ours() -> None:
    wire = through_json(amap.record_to_ams(MemoryRecord(text="x", id="x", created_at=T0, updated_at=T0), "a:"))
    assert amap.record_from_ams(wire, "b:") is None
    other_client = {"id": "01J", "text": "t", "namespace": None, "memory_type": "message",
                    "created_at": "2024-05-08T13:56:07Z", "updated_at": "2024-05-08T13:56:07Z"}
    got = amap.record_from_ams(other_client)
    assert got.namespace == "default" and got.memory_type is MemoryType.WORKING
    assert amap.record_from_ams(other_client, "p:") is None


@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidRecordError, match="empty text"):
        amap.check_storable(MemoryRecord(text=text))


@pytest.mark.parametrize("value", [*HOSTILE, "a,b", " alice", "tab\there", "new\nline", "a|b", "mp64:x", "plain", "ünïcødé 😀"])
def test_values_ams_cannot_filter_on_travel_encoded_and_come_back_exact(value: str) -> None:
    stored = amap.tag_out(value)
    assert amap.tag_in(stored) == value
    if any(ch in value for ch in ",|\t\n") or value != value.strip() or value.startswith("mp64:"):
        assert stored.startswith(amap.ENCODED_MARK)
        assert all(ch.isalnum() or ch in "-_:" for ch in stored)
    for unsafe in ("a/b", ".", ".."):
        assert amap.tag_in(amap.id_out(unsafe)) == unsafe and "/" not in amap.id_out(unsafe)
    record = MemoryRecord(text="x", id=value if value.strip() else "i", user_id=value if value.strip() else None,
                          namespace=value if value.strip() else "n", topics=(value,) if value.strip() else (),
                          created_at=T0, updated_at=T0)
    assert amap.record_from_ams(through_json(amap.record_to_ams(record, "p:")), "p:") == record


def test_server_filter_is_exact_json() -> None:
    flt = {"user_id": ("alice",), "session_id": ("s1", "s2"), "namespace": ("ns",), "topics": ("a",),
           "memory_type": ("semantic", "skill", "working")}
    assert amap.server_filter(flt, "p:") == {
        "user_id": {"eq": "alice"},
        "session_id": {"any": ["s1", "s2"]},
        "namespace": {"eq": "p:ns"},
        "topics": {"any": ["a"]},
        "memory_type": {"any": ["semantic", "message"]},
    }
    assert amap.server_filter({}, "p:") == {"namespace": {"startswith": "p:"}}
    assert amap.server_filter({"user_id": ("|",)}) == {"user_id": {"eq": "mp64:fA"}}
    assert amap.server_filter({}) == {}


def test_matches_is_exact_and_case_sensitive() -> None:
    record = MemoryRecord(text="x", user_id="Alice", topics=("work",), memory_type="skill")
    assert amap.matches(record, {"user_id": ("Alice",), "topics": ("home", "work"), "memory_type": ("skill",)})
    assert not amap.matches(record, {"user_id": ("alice",)})
    assert not amap.matches(record, {"memory_type": ("semantic",)})  # stored as semantic on AMS
    assert not amap.matches(record, {"namespace": ("other",)})


def test_search_payload_rounds_the_upper_date_bound_up_and_turns_recency_off() -> None:
    body = amap.search_payload("blue", "vector", {}, limit=5, offset=10, created_after=T0, created_before=T0)
    assert body["search_mode"] == "semantic" and body["recency_boost"] is False
    assert body["created_at"] == {"gte": T0.isoformat(), "lte": "2024-05-08T13:56:08+00:00"}
    assert (body["limit"], body["offset"]) == (5, 10)
    assert "hybrid_alpha" not in body
    assert amap.search_payload("b", "hybrid", {}, limit=1, offset=0, hybrid_alpha=0.5)["hybrid_alpha"] == 0.5


@pytest.mark.parametrize("hostile", HOSTILE)
def test_only_letters_and_digits_reach_a_keyword_query(hostile: str) -> None:
    words = amap.words_for(f"What is the {hostile} note?")
    assert all(ch.isalnum() or ch in " _" for ch in words), words
    assert words.split()[-1] == "note" and "what" not in words.split()


def test_expiry_of_a_records_own_ttl() -> None:
    record = MemoryRecord(text="x", ttl=10, created_at=T0, updated_at=T0)
    assert not amap.expired(record, T0 + timedelta(seconds=9))
    assert amap.expired(record, T0 + timedelta(seconds=10))
    assert not amap.expired(MemoryRecord(text="x", ttl=math.inf, created_at=T0, updated_at=T0), T0 + timedelta(days=9e5))


def test_messages_keep_their_metadata_through_session_data() -> None:
    wire = through_json(amap.message_to_ams(Message("user", "hi", metadata={"speaker": "Mel"}), "m1", T0))
    assert wire["created_at"] == T0.isoformat()
    got = amap.message_from_ams(wire, {"m1": {"speaker": "Mel"}})
    assert got == Message("user", "hi", T0, {"speaker": "Mel"})


@pytest.mark.parametrize("url", ["localhost:8000", "redis://127.0.0.1:6379", "", "http://"])
def test_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="AGENT_MEMORY_SERVER_URL"):
        AgentMemoryServerBackend(url)


def test_errors_name_the_fix() -> None:
    from primitives.memory.ams_transport import http_error

    url = "http://127.0.0.1:1"
    assert isinstance(http_error(url, None, 401, "Missing authorization header"), AuthenticationFailedError)
    assert "set AGENT_MEMORY_SERVER_TOKEN" in str(http_error(url, None, 401, "x"))
    assert "agent-memory token add" in str(http_error(url, "t", 401, "Invalid token"))
    disabled = http_error(url, None, 400, "Long-term memory is disabled")
    assert isinstance(disabled, LongTermMemoryDisabledError) and "LONG_TERM_MEMORY=true" in str(disabled)
    assert isinstance(http_error(url, None, 503, "x"), BackendUnavailableError)
    assert isinstance(http_error(url, None, 422, "bad"), InvalidInputError)
    assert isinstance(http_error(url, None, 404, "x"), ConfigurationError)


def test_from_env_selects_ams_wrapped_and_ams_wins_over_redis_in_auto(tmp_path: Path) -> None:
    env = {"AGENT_MEMORY_SERVER_URL": "http://127.0.0.1:8000", "AGENT_MEMORY_SERVER_TOKEN": "tok",
           "REDIS_URL": "redis://127.0.0.1:6379", "MEMORY_OUTBOX_PATH": str(tmp_path / "o.sqlite3")}
    memory = Memory.from_env(env)
    assert isinstance(memory.backend, ResilientBackend)
    primary = memory.backend.primary
    assert isinstance(primary, AgentMemoryServerBackend) and primary.token == "tok"
    assert memory.backend_name == "agent-memory-server"
    bare = Memory.from_env({**env, "MEMORY_BACKEND": "ams", "MEMORY_RESILIENT": "0"}).backend
    assert isinstance(bare, AgentMemoryServerBackend)
    assert Memory.from_env({**env, "MEMORY_BACKEND": "redis"}).backend_name == "redis"
    with pytest.raises(ConfigurationError, match="AGENT_MEMORY_SERVER_URL"):
        Memory.from_env({"MEMORY_BACKEND": "ams"})


# -- against a real Agent Memory Server ----------------------------------------------------------

def backend_for(server, **kwargs) -> AgentMemoryServerBackend:
    options = {"token": server.token, "prefix": fresh_prefix(), **kwargs}
    return AgentMemoryServerBackend(server.url, **options)


@pytest.mark.integration
class TestAMSContract(BackendContract):
    """The contract suite. Overrides, all documented: ``long_text_chars`` (below),
    ``default_mode="keyword"``
    (the suite expects lexical matching: a query sharing no word with a record finds nothing,
    while AMS vector and hybrid search always return the nearest records), and a fresh
    ``prefix`` per test (the isolation a fresh Redis prefix gives the Redis suite; AMS has one
    index per server)."""

    @pytest.fixture
    async def backend(self, ams_server):
        backend = backend_for(ams_server, default_mode="keyword", working_memory_size=10)
        yield backend
        await backend.drop()
        await backend.aclose()

    #: The suite's 1 MB text is replaced by one at the backend's default ``max_text_chars``: AMS
    #: embeds the whole text and its embedding endpoint refuses long input (the local one: 65,536
    #: characters; OpenAI: 8,191 tokens), after which AMS indexes none of that request's records.
    long_text_chars = 65_536

    async def test_text_over_max_text_chars_is_refused_and_nothing_stored(self, backend) -> None:
        assert backend.max_text_chars == self.long_text_chars
        with pytest.raises(RecordTooLargeError, match="max_text_chars"):
            await backend.add([MemoryRecord(text="fine", id="fine"), MemoryRecord(text="x" * (backend.max_text_chars + 1))])
        assert await backend.get("fine") is None


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of an AMS, for faults the real server does not make on
    demand: down (nothing listens on its port until :meth:`start`), and a poisoned keep-alive
    connection (:attr:`poison`: the next request is answered ``500`` by the proxy, and the next
    request on that same connection gets no answer at all, the connection is closed)."""

    def __init__(self, target_url: str, port: int | None = None) -> None:
        from urllib.parse import urlsplit

        self.target_port = urlsplit(target_url).port
        self.port = port or free_port()
        self.poison = 0
        self.connections = 0
        self.poisoned = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        pump = asyncio.create_task(downstream())
        poisoned = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if poisoned:
                    break  # the poisoned connection: no answer, just a close
                if self.poison:
                    self.poison -= 1
                    self.poisoned += 1
                    poisoned = True
                    text = b'{"detail":"Internal Server Error"}'
                    writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(text), text))
                    await writer.drain()
                    continue
                up_writer.write(head + body)
                await up_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            pump.cancel()
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)


@pytest.mark.integration
async def test_read_your_writes_the_turn_just_stored_is_searchable_at_once(ams_server) -> None:
    """add() returns once AMS has indexed the write: the very next search sees it, in every
    mode, and an upsert is seen in its new version."""
    backend = backend_for(ams_server)
    try:
        for i, mode in enumerate(("keyword", "vector", "hybrid")):
            await backend.add([MemoryRecord(text=f"My sister Mel adopted a cat named Oscar {i}", id=f"cat{i}")])
            assert backend.last_index_wait is not None and backend.last_index_wait < backend.index_timeout
            hits = (await backend.search("Mel adopted a cat", mode=mode, limit=5)).hits
            assert f"cat{i}" in [h.record.id for h in hits]
        await backend.add([MemoryRecord(text="the meeting moved to Friday", id="cat0")])
        assert (await backend.get("cat0")).text == "the meeting moved to Friday"
        assert [h.record.id for h in (await backend.search("meeting Friday", mode="keyword")).hits] == ["cat0"]
    finally:
        await backend.drop()
        await backend.aclose()


@pytest.mark.integration
async def test_modes_map_onto_ams_search_modes(ams_server) -> None:
    backend = backend_for(ams_server)
    try:
        await backend.add([MemoryRecord(text="My favourite colour is blue", id="colour"),
                           MemoryRecord(text="I walked the dog in the park", id="dog"),
                           MemoryRecord(text="The quarterly report is due on Thursday", id="report")])
        question = "which hue do I like best?"  # no word in common with the colour record
        assert (await backend.search(question, mode="keyword")).hits == []
        for mode in ("vector", "hybrid", None):  # None: the default, hybrid
            hits = (await backend.search(question, mode=mode)).hits
            assert hits[0].record.id == "colour", (mode, hits)
            assert all(0 <= h.score <= 1 for h in hits)
        only_stop_words = (await backend.search("what is it that I do", mode="hybrid")).hits
        assert len(only_stop_words) == 3  # hybrid of stop words alone: ranked by vector
        with pytest.raises(InvalidInputError):
            await backend.search("x", mode="fuzzy")
    finally:
        await backend.drop()
        await backend.aclose()


@pytest.mark.integration
async def test_namespace_is_a_hard_boundary_even_when_ams_drops_the_filter(ams_server) -> None:
    backend = backend_for(ams_server)
    try:
        await backend.add([MemoryRecord(text="tenant A launch plan for the rocket", id="a1", namespace="tenant-a")])
        # what AMS itself answers: a semantic search in an empty namespace gets tenant A's memory
        body = amap.search_payload("rocket launch plan", "vector", {"namespace": ("tenant-b",)}, limit=10, offset=0,
                                   prefix=backend.prefix)
        raw = await backend._search_page(body)
        assert backend.prefix + "a1" in [m["id"] for m in raw]  # (with whatever else the server holds)
        # through the backend, in every mode: nothing from tenant A
        for mode in ("vector", "hybrid", "keyword"):
            assert (await backend.search("rocket launch plan", filter={"namespace": "tenant-b"}, mode=mode)).hits == []
        assert await backend.count({"namespace": "tenant-b"}) == 0
        memory = Memory(backend, namespace="tenant-b")
        assert (await memory.search("rocket launch plan", mode="vector")).hits == []
    finally:
        await backend.drop()
        await backend.aclose()


@pytest.mark.integration
async def test_fields_ams_lacks_round_trip_and_filters_are_exact(ams_server) -> None:
    backend = backend_for(ams_server)
    try:
        t_old = datetime.now(timezone.utc) - timedelta(days=3)
        await backend.add([
            MemoryRecord(text="how to bake sourdough bread", id="skill", memory_type="skill",
                         metadata={"speaker": "Mel", "steps": [1, 2]}, topics=("baking", "a,b"), user_id="Alice"),
            MemoryRecord(text="bread is made of flour", id="fact", memory_type="semantic", user_id="alice"),
            MemoryRecord(text="old bread memory", id="old", created_at=t_old),
            MemoryRecord(text="bread that expires", id="brief", ttl=1.5),
        ])
        got = await backend.get("skill")
        assert got.memory_type is MemoryType.SKILL and got.metadata == {"speaker": "Mel", "steps": [1, 2]}
        assert got.topics == ("baking", "a,b") and got.user_id == "Alice"

        async def ids(**kwargs: object) -> set[str]:
            return {h.record.id for h in (await backend.search("bread", mode="keyword", **kwargs)).hits}  # type: ignore[arg-type]

        assert await ids(filter={"memory_type": "skill"}) == {"skill"}
        assert await ids(filter={"memory_type": "semantic"}) == {"fact"}
        assert await ids(filter={"user_id": "alice"}) == {"fact"}  # AMS tags ignore case; we do not
        assert await ids(filter={"topics": "a,b"}) == {"skill"}
        assert await ids(created_before=t_old + timedelta(seconds=1)) == {"old"}
        assert "old" not in await ids(created_after=t_old + timedelta(microseconds=1))
        await asyncio.sleep(1.6)
        assert await backend.get("brief") is None and "brief" not in await ids()
        assert await backend.count() == 3
    finally:
        await backend.drop()
        await backend.aclose()


@pytest.mark.integration
async def test_working_memory_keeps_metadata_and_ignores_other_namespaces_sessions(ams_server) -> None:
    from agent_memory_client.models import MemoryMessage, WorkingMemory

    backend = backend_for(ams_server, working_memory_size=3)
    try:
        await backend.append_messages("s/1", [Message("user", "hi", metadata={"speaker": "Mel"})])
        await backend.append_messages("s/1", [Message("assistant", f"reply {i}") for i in range(3)])
        got = await backend.get_messages("s/1")
        assert [m.content for m in got] == ["reply 0", "reply 1", "reply 2"]
        await backend.append_messages("s2", [Message("user", "hello", metadata={"speaker": "Mel"})])
        assert (await backend.get_messages("s2"))[0].metadata == {"speaker": "Mel"}
        # another client's session with the same id in a namespace: AMS answers our key's
        # absence with it (its key index); it is not ours
        other = WorkingMemory(session_id="x", namespace="elsewhere",
                              messages=[MemoryMessage(role="user", content="not yours", created_at=T0)])
        await backend._transport.api.put_working_memory(amap.id_out(backend.prefix + "s3"), other)
        assert await backend.get_messages("s3") == []
        await backend.append_messages("s3", [Message("user", "mine")])
        assert [m.content for m in await backend.get_messages("s3")] == ["mine"]
        with pytest.raises(InvalidInputError):
            await backend.append_messages("s2", [Message("user", "  ")])
    finally:
        await backend.drop()
        await backend.aclose()


@pytest.mark.integration
async def test_a_poisoned_keep_alive_connection_is_left_for_a_new_one(ams_server) -> None:
    proxy = Proxy(ams_server.url)
    await proxy.start()
    backend = AgentMemoryServerBackend(proxy.url, token=ams_server.token, prefix=fresh_prefix())
    try:
        await backend.add([MemoryRecord(text="the password hint is a tulip", id="hint")])
        # the fault itself, seen by a plain keep-alive client: a 500, then a dead connection
        import httpx

        async with httpx.AsyncClient(base_url=proxy.url, headers={"Authorization": f"Bearer {ams_server.token}"}) as plain:
            proxy.poison = 1
            assert (await plain.get("/v1/health")).status_code == 500
            with pytest.raises(httpx.RemoteProtocolError):
                await plain.get("/v1/health")
        # the backend: the 500 is retried once on a new connection pool, and the answer is right
        before = proxy.connections
        proxy.poison = 1
        hits = (await backend.search("password hint", mode="keyword")).hits
        assert [h.record.id for h in hits] == ["hint"]
        assert proxy.poisoned == 2 and proxy.connections > before
        assert (await backend.get("hint")).text == "the password hint is a tulip"  # the new pool serves on
        # a 500 that persists is not retried forever: one retry, then a typed error naming the log
        proxy.poison = 2
        with pytest.raises(BackendUnavailableError, match="HTTP 500 twice, the second time on a new connection"):
            await backend.search("password hint", mode="keyword")
    finally:
        await backend.drop()
        await backend.aclose()
        await proxy.stop()


@pytest.mark.integration
async def test_wrong_or_missing_token_is_an_authentication_error_naming_the_fix(ams_server) -> None:
    for token, fix in (("not-the-token", "agent-memory token add"), (None, "set AGENT_MEMORY_SERVER_TOKEN")):
        backend = AgentMemoryServerBackend(ams_server.url, token=token, prefix=fresh_prefix())
        with pytest.raises(AuthenticationFailedError, match=fix):
            await backend.add([MemoryRecord(text="never stored")])
        with pytest.raises(AuthenticationFailedError):
            await backend.search("anything")
        with pytest.raises(AuthenticationFailedError):
            await backend.get_messages("s")
        health = await backend.health()
        assert health.ok is False and health.detail["auth"] == "refused" and health.detail["server_version"] == "0.15.2"
        await backend.aclose()


@pytest.mark.integration
async def test_ams_down_is_unavailable_within_the_connect_timeout() -> None:
    backend = AgentMemoryServerBackend(f"http://127.0.0.1:{free_port()}", connect_timeout=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BackendUnavailableError, match="AGENT_MEMORY_SERVER_URL"):
        await backend.search("anything")
    with pytest.raises(BackendUnavailableError):
        await backend.add([MemoryRecord(text="x")])
    assert loop.time() - start < 5
    health = await backend.health()
    assert health.ok is False and health.detail["reachable"] is False
    assert health.detail["error_type"] == "BackendUnavailableError"
    await backend.aclose()


@pytest.mark.integration
async def test_long_term_memory_disabled_names_the_fix_and_working_memory_still_works(ams_server_no_ltm) -> None:
    backend = backend_for(ams_server_no_ltm)
    try:
        for call in (lambda: backend.add([MemoryRecord(text="x")]), lambda: backend.search("x"), backend.count):
            with pytest.raises(LongTermMemoryDisabledError, match="LONG_TERM_MEMORY=true"):
                await call()
        health = await backend.health()
        assert health.ok is False and health.detail["long_term_memory"] is False
        assert health.detail["error_type"] == "LongTermMemoryDisabledError"
        await backend.append_messages("s", [Message("user", "still here")])
        assert [m.content for m in await backend.get_messages("s")] == ["still here"]
    finally:
        await backend.clear_session("s")
        await backend.aclose()


@pytest.mark.integration
async def test_resilient_wrapper_serves_while_ams_is_down_and_loses_nothing(ams_server, tmp_path: Path) -> None:
    """AMS unreachable from the start (nothing listens on the port yet), then up, then gone
    again mid-run: reads are served from the fallback, every write reaches AMS afterwards with
    its timestamps (last writer wins), working-memory messages too."""
    proxy = Proxy(ams_server.url)
    prefix = fresh_prefix()
    primary = AgentMemoryServerBackend(proxy.url, token=ams_server.token, prefix=prefix, connect_timeout=0.5)
    resilient = ResilientBackend(primary, outbox=Outbox(tmp_path / "outbox.sqlite3"),
                                 breaker=CircuitBreaker(reset_timeout=0.05, max_reset_timeout=0.2))
    memory = Memory(resilient)
    direct = AgentMemoryServerBackend(ams_server.url, token=ams_server.token, prefix=prefix)
    try:
        first = await memory.remember("the launch code is tulip", id="a", user_id="u")
        await memory.append_messages("s", [Message("user", "said while AMS was down")])
        result = await memory.search("launch code", user_id="u")
        assert result.degraded is True and result.backend == "in-memory" and [h.record.id for h in result.hits] == ["a"]
        assert resilient.outbox.pending_count() == 2

        await proxy.start()
        await asyncio.sleep(0.3)  # past the breaker's retry time
        result = await memory.search("launch code", user_id="u")  # the probe: AMS answers
        assert result.degraded is False and result.backend == "agent-memory-server"
        await resilient.replay()
        assert resilient.outbox.pending_count() == 0
        assert await direct.get("a") == first  # same record, same timestamps
        assert [m.content for m in await direct.get_messages("s")] == ["said while AMS was down"]
        assert [h.record.id for h in (await memory.search("launch code", user_id="u")).hits] == ["a"]

        await proxy.stop()  # AMS goes away mid-run
        second = await memory.remember("the backup code is daffodil", id="b", user_id="u")
        await memory.delete(["a"])
        result = await memory.search("code", user_id="u")
        assert result.degraded is True and [h.record.id for h in result.hits] == ["b"]

        await proxy.start()
        await asyncio.sleep(0.3)
        assert (await memory.search("code", user_id="u")).degraded is False
        await resilient.replay()
        assert resilient.outbox.pending_count() == 0
        assert await direct.get("b") == second and await direct.get("a") is None
    finally:
        await direct.drop()
        await direct.aclose()
        await resilient.aclose()
        await proxy.stop()


@pytest.mark.integration
async def test_a_pipeline_recalls_the_turn_it_just_stored(ams_server) -> None:
    from primitives import LambdaPrimitive, WorkflowContext
    from primitives.memory import MemoryPrimitive, RememberPrimitive

    backend = backend_for(ams_server)
    memory = Memory(backend)
    pipeline = MemoryPrimitive(memory) >> LambdaPrimitive(lambda recalled: "Noted.") >> RememberPrimitive(memory)
    ctx = WorkflowContext(session_id="s-1", metadata={"user_id": "alice"})
    try:
        await pipeline.execute({"query": "My favourite colour is blue"}, ctx)
        out = await MemoryPrimitive(memory).execute({"query": "what colour do I like?"}, WorkflowContext(session_id="s-1", metadata={"user_id": "alice"}))
        assert out["memory_backend"] == "agent-memory-server" and out["degraded"] is False
        assert [m["content"] for m in out["working_memory"]] == ["My favourite colour is blue", "Noted."]
        assert out["relevant_memories"][0]["text"] == "My favourite colour is blue"
    finally:
        await backend.drop()
        await backend.aclose()


@pytest.mark.integration
async def test_doctor_reports_a_healthy_ams_and_names_the_fix_for_each_problem(ams_server, ams_server_no_ltm, tmp_path: Path) -> None:
    from primitives.doctor import diagnose

    base = {"AGENT_MEMORY_SERVER_URL": ams_server.url, "AGENT_MEMORY_SERVER_TOKEN": ams_server.token,
            "MEMORY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"), "MEMORY_AMS_PREFIX": fresh_prefix()}
    report = await diagnose(base)
    assert (report["configured"], report["healthy"], report["serving"]) == ("agent-memory-server", True, "agent-memory-server")
    ams = report["ams"]
    assert ams["server_version"] == "0.15.2" and ams["auth"] == "ok" and ams["token"] == "set"
    assert ams["long_term_memory"] is True and ams["vector_search"] is True and ams["indexing_ms"] > 0
    assert report["outbox"]["pending"] == 0 and report["problems"] == []

    cases = [
        ({"AGENT_MEMORY_SERVER_TOKEN": "wrong"}, "not valid there", "export AGENT_MEMORY_SERVER_TOKEN="),
        ({"AGENT_MEMORY_SERVER_TOKEN": ""}, "needs a token", "agent-memory token add"),
        ({"AGENT_MEMORY_SERVER_URL": ams_server_no_ltm.url}, "long-term memory disabled", "LONG_TERM_MEMORY=true"),
        ({"AGENT_MEMORY_SERVER_URL": f"http://127.0.0.1:{free_port()}", "MEMORY_AMS_CONNECT_TIMEOUT": "0.5"},
         "unreachable", "memory-primitives ams start"),
    ]
    for change, problem, fix in cases:
        report = await diagnose({**base, **change})
        assert report["healthy"] is False, change
        (found,) = report["problems"]
        assert problem in found["problem"] and fix in found["fix"], (change, found)
    assert report["serving"] == "in-memory (degraded fallback)"  # the unreachable case


@pytest.mark.integration
async def test_embedding_dims_that_differ_from_the_index_are_found_by_health_and_writes(ams_server, tmp_path: Path) -> None:
    """An AMS whose index expects 1,536 dims while its model (MiniLM) makes 384. What the server
    does: vector queries find nothing (no error, so a read-only health check passes) and every
    write is acknowledged but never indexed. The backend: a typed error after
    ``index_timeout`` instead of a silent loss; ``probe_indexing`` and ``doctor`` name the fix."""
    from primitives.errors import PrimitivesError
    from primitives.localams import LocalAMS

    mismatched = LocalAMS(redis_url=ams_server.redis_url, embeddings_url=ams_server.embeddings_url, dims=1536,
                          token_auth=False, run_dir=tmp_path / "ams",
                          extra_env={"REDISVL_INDEX_NAME": "dims_mismatch_idx", "REDISVL_INDEX_PREFIX": "dims_mismatch"})
    try:
        mismatched.start()
    except PrimitivesError as exc:
        pytest.fail(f"a second Agent Memory Server could not start: {exc}")
    backend = AgentMemoryServerBackend(mismatched.url, prefix=fresh_prefix(), index_timeout=3)
    try:
        assert (await backend.health()).ok is True  # read-only: nothing to see
        with pytest.raises(BackendUnavailableError, match="had not indexed"):
            await backend.add([MemoryRecord(text="never indexed", id="x")])
        with pytest.raises(BackendUnavailableError, match="REDISVL_VECTOR_DIMENSIONS"):
            await backend.probe_indexing(timeout=2)
        from primitives.doctor import diagnose

        report = await diagnose({"AGENT_MEMORY_SERVER_URL": mismatched.url, "MEMORY_RESILIENT": "0"})
        assert report["healthy"] is False and "REDISVL_VECTOR_DIMENSIONS" in report["ams"]["indexing_error"]
        (problem,) = report["problems"]
        assert "cannot embed and index" in problem["problem"] and "REDISVL_VECTOR_DIMENSIONS" in problem["fix"]
    finally:
        await backend.aclose()
        mismatched.stop()
