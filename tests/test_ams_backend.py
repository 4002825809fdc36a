"""``AgentMemoryServerBackend`` against a real Agent Memory Server 0.15.2 (``ams_server``
fixture, token auth on): the contract suite, then what is particular to AMS: read-your-writes,
modes, namespaces as a hard partition (also when AMS drops a filter, and for ids that differ
only in case), hostile and over-long identifiers, empty texts and contents, damaged records
written with raw HTTP calls, a poisoned keep-alive connection (through a local TCP proxy), wrong
token, AMS down, long-term memory disabled, and the resilient wrapper across an outage. The
encoding and mapping on their own: ``tests/test_ams_mapping.py``.

Token auth costs ~0.4 s a request on AMS 0.15.2, so tests keep requests few: each store is a
fresh prefix under one module partition, deleted once at the end (not per test)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from primitives.errors import (
    AuthenticationFailedError,
    BackendUnavailableError,
    CorruptRecordError,
    LongTermMemoryDisabledError,
    RecordTooLargeError,
)
from primitives.memory import Memory, MemoryRecord, MemoryType, Message
from primitives.memory.ams_backend import AgentMemoryServerBackend
from primitives.memory.ams_backend import codec
from primitives.memory.ams_backend import mapping as amap
from primitives.memory.record import with_timestamps
from primitives.memory.resilient import ResilientBackend
from primitives.memory.resilient.breaker import CircuitBreaker
from primitives.memory.resilient.outbox import Outbox
from primitives.tooling.localredis import free_port
from tests.ams_server import Proxy, drop_partition
from tests.contract import BackendContract

T0 = datetime(2024, 5, 8, 13, 56, 7, 123456, tzinfo=timezone.utc)
#: Every store of this module lives under this prefix; :func:`ams` deletes it at the end.
PARTITION = f"t{os.getpid()}-{uuid.uuid4().hex[:6]}-"
_prefixes = itertools.count()


def fresh_prefix() -> str:
    return f"{PARTITION}{next(_prefixes)}:"


def backend_for(server, **kwargs) -> AgentMemoryServerBackend:
    options = {"token": server.token, "prefix": fresh_prefix(), **kwargs}
    return AgentMemoryServerBackend(server.url, **options)


@pytest.fixture(scope="module")
def ams(ams_server):
    """``ams_server``; afterwards every record and session this module wrote there is deleted."""
    yield ams_server
    drop_partition(ams_server, PARTITION)


# -- against a real Agent Memory Server ----------------------------------------------------------


@pytest.mark.integration
class TestAMSContract(BackendContract):
    """The contract suite. Overrides, all documented: ``long_text_chars`` (below),
    ``default_mode="keyword"`` (the suite expects lexical matching: a query sharing no word with
    a record finds nothing, while AMS vector and hybrid search always return the nearest
    records), and a fresh ``prefix`` per test (the isolation a fresh Redis prefix gives the
    Redis suite; AMS has one index per server)."""

    @pytest.fixture
    async def backend(self, ams):
        backend = backend_for(ams, default_mode="keyword", working_memory_size=10)
        yield backend
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


@pytest.mark.integration
async def test_read_your_writes_the_turn_just_stored_is_searchable_at_once(ams) -> None:
    """add() returns once AMS has indexed the write: the very next search sees it, in every
    mode, and an upsert is seen in its new version."""
    backend = backend_for(ams)
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
        await backend.aclose()


@pytest.mark.integration
async def test_modes_map_onto_ams_search_modes(ams) -> None:
    backend = backend_for(ams)
    try:
        assert backend.default_search_mode == "hybrid"
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
    finally:
        await backend.aclose()


@pytest.mark.integration
async def test_namespace_is_a_hard_boundary_even_when_ams_drops_the_filter(ams) -> None:
    backend = backend_for(ams)
    try:
        await backend.add([MemoryRecord(text="tenant A launch plan for the rocket", id="a1", namespace="tenant-a")])
        # what AMS itself answers: a semantic search in an empty namespace gets tenant A's memory
        body = amap.search_payload("rocket launch plan", "vector", {"namespace": ("tenant-b",)}, limit=10, offset=0,
                                   prefix=backend.prefix)
        raw = await backend._search_page(body)
        assert codec.ams_id("tenant-a", "a1", backend.prefix) in [m["id"] for m in raw]  # (with whatever else)
        # through the backend, in every mode: nothing from tenant A
        for mode in ("vector", "hybrid", "keyword"):
            assert (await backend.search("rocket launch plan", filter={"namespace": "tenant-b"}, mode=mode)).hits == []
        assert await backend.count({"namespace": "tenant-b"}) == 0
        memory = Memory(backend, namespace="tenant-b")
        assert (await memory.search("rocket launch plan", mode="vector")).hits == []
    finally:
        await backend.aclose()


@pytest.mark.integration
async def test_namespaces_partition_ids_that_ams_would_confuse(ams) -> None:
    """AMS finds records by id through a case-insensitive TAG, and joins namespace and session
    with ``:`` in its keys: ids differing in case, and pairs that join alike, stay apart."""
    backend = backend_for(ams, default_mode="keyword")
    now = datetime.now(timezone.utc)
    try:
        pairs = [("default", "Case"), ("default", "case"), ("a.b", "c"), ("a", "b.c"), ("a:b", "c"), ("a", "b:c")]
        await backend.add([MemoryRecord(text=f"orchid {ns} {id}", id=id, namespace=ns) for ns, id in pairs])
        for ns, id in pairs:
            assert (await backend.get(id, namespace=ns)).text == f"orchid {ns} {id}"
        assert await backend.count() == len(pairs)
        assert await backend.delete(["case"]) == 1 and (await backend.get("Case")).text == "orchid default Case"
        assert await backend.put_if_newer([MemoryRecord(text="orchid replaced", id="c", namespace="a.b",
                                                        created_at=now, updated_at=now + timedelta(minutes=1))]) == 1
        assert (await backend.get("c", namespace="a:b")).text == "orchid a:b c"
        assert await backend.delete_if_older({"c": now + timedelta(days=1)}, namespace="a:b") == 1
        assert (await backend.get("c", namespace="a.b")).text == "orchid replaced"
        hits = (await backend.search("orchid", filter={"namespace": ["a", "a:b"]})).hits
        assert sorted((h.record.namespace, h.record.id) for h in hits) == [("a", "b.c"), ("a", "b:c")]
        for ns, sid in (("a:b", "c"), ("a", "b:c"), ("default", "S"), ("default", "s")):
            await backend.append_messages(sid, [Message("user", f"{ns}/{sid}")], namespace=ns)
        for ns, sid in (("a:b", "c"), ("a", "b:c"), ("default", "S"), ("default", "s")):
            assert [m.content for m in await backend.get_messages(sid, namespace=ns)] == [f"{ns}/{sid}"]
    finally:
        await backend.aclose()


@pytest.mark.integration
async def test_fields_ams_lacks_round_trip_and_filters_are_exact(ams) -> None:
    backend = backend_for(ams)
    try:
        await backend.add([
            MemoryRecord(text="how to bake sourdough bread", id="skill", memory_type="skill",
                         metadata={"speaker": "Mel", "steps": [1, 2]}, topics=("baking", "a,b"), user_id="Alice"),
            MemoryRecord(text="bread is made of flour", id="fact", memory_type="semantic", user_id="alice"),
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
        await asyncio.sleep(1.6)
        assert await backend.get("brief") is None and "brief" not in await ids()
        assert await backend.count() == 2
        assert await backend.delete(["brief", "fact"]) == 1  # AMS still holds the expired one; it is not counted
    finally:
        await backend.aclose()


@pytest.mark.integration
async def test_speaker_previous_turn_and_date_are_searchable_and_the_record_reads_back_unchanged(ams) -> None:
    """AMS indexes the contextual text (speaker, previous turn, written-out date), as the other
    backends do; the record, hostile text and metadata included, reads back as it was given. A
    record the previous mapping wrote (bare text) reads back and is found by its text."""
    backend = backend_for(ams, default_mode="keyword")
    try:
        turn = MemoryRecord(text='Yes!\x00 sunsets | @x:{y} "quoted" 😀', id="D1:3", session_id="session_1",
                            metadata={"speaker": "Melanie", "context": "What did you paint recently?", "n": [1, None]},
                            created_at=T0, updated_at=T0)
        now = datetime.now(timezone.utc)  # an episodic record's default lifetime runs from updated_at
        old = through_previous_mapping(MemoryRecord(text="I walked the greyhound", id="D1:4", metadata={
            "speaker": "Caroline", "context": "Yes"}, created_at=T0, updated_at=now), backend.prefix)
        (stored,) = await backend.add([turn])
        await _raw_create(ams, [old])
        await _until_listed(backend, [old["id"]])
        assert await backend.get("D1:3") == stored  # add() stamps updated_at; the rest is as given
        assert (stored.text, stored.metadata, stored.created_at, stored.session_id) == (
            turn.text, turn.metadata, turn.created_at, turn.session_id)
        for query in ("Melanie", "paint", "May 2024", "sunsets"):
            assert [h.record for h in (await backend.search(query)).hits] == [stored], query
        (hit,) = (await backend.search("greyhound")).hits
        assert hit.record.text == "I walked the greyhound" and hit.record.metadata == {"speaker": "Caroline", "context": "Yes"}
        assert await backend.get("D1:4") == hit.record
    finally:
        await backend.aclose()


def through_previous_mapping(record: MemoryRecord, prefix: str) -> dict:
    """``record`` as the mapping before the contextual text wrote it: AMS text ``ams_text(text)``,
    no ``i`` in the carrier (the contextual text does not fit in ``max_chars=0``)."""
    data = amap.record_to_ams(record, prefix, max_chars=0)
    assert data["text"] == codec.ams_text(record.text) and "i" not in codec.decode_carrier(data["extracted_from"][0])
    return data


#: Identifiers AMS cannot hold as they are: separators, marks of the encodings, NUL, case, query
#: syntax RedisVL does not escape (``?``, a backquote, ``_`` alone), and ones whose encoded form
#: passes RediSearch's 4,096-byte TAG limit (written as digests).
AWKWARD = ["a.b", "A.B", "mp64:x", "mp#x", "~a", "a\x00b", " a,b|c ", "é" * 1024, "😀" * 1024, "X" * 1024, "\t," * 512,
           ":" * 1024, "ali?e", "_", "`"]


@pytest.mark.integration
async def test_hostile_and_long_identifiers_are_exact_in_every_field(ams) -> None:
    backend = backend_for(ams, default_mode="keyword")
    try:
        records = [MemoryRecord(text=f"tulip {i}", id=v, user_id=v, session_id=v, namespace=v, topics=(v, "t"))
                   for i, v in enumerate(AWKWARD)]
        stored = await backend.add(records)
        for i, (record, v) in enumerate(zip(stored, AWKWARD)):
            assert await backend.get(v, namespace=v) == record
            for field in ("user_id", "session_id", "namespace", "topics"):
                hits = (await backend.search("tulip", filter={field: v}, limit=50)).hits
                assert [h.record for h in hits] == [record], (field, v[:10])
        assert await backend.count({"user_id": AWKWARD}) == len(AWKWARD)
        assert await backend.count({"namespace": "a.B"}) == 0
        assert await backend.delete(["😀" * 1024], namespace="😀" * 1024) == 1
        assert await backend.delete([":" * 1024, "😀" * 1024, "X" * 1024], namespace=":" * 1024) == 1  # a long URL
        assert await backend.count() == len(AWKWARD) - 2
    finally:
        await backend.aclose()


@pytest.mark.integration
async def test_empty_and_odd_texts_and_contents_are_stored_exactly(ams) -> None:
    """AMS refuses an empty text or content and its embedding endpoint a blank one, and
    RediSearch indexes a text only up to a NUL: each is stored and read back exactly."""
    backend = backend_for(ams, default_mode="keyword")
    future = datetime(2999, 1, 1, tzinfo=timezone.utc)
    try:
        texts = {"empty": "", "blank": " \n\t", "nul": "before\x00after tulip", "dot": "."}
        stored = await backend.add([MemoryRecord(text=t, id=i) for i, t in texts.items()])
        for record in stored:
            assert await backend.get(record.id) == record
        assert await backend.count() == 4
        assert [h.record.id for h in (await backend.search("after tulip")).hits] == ["nul"]
        far = MemoryRecord(text="far future", id="far", created_at=future, updated_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))
        assert await backend.put_if_newer([far]) == 1 and await backend.get("far") == far
        messages = [Message("user", ""), Message("assistant", " \n"), Message("user", "a\x00b", future, {"k": "\x00"})]
        await backend.append_messages("s", messages)
        got = await backend.get_messages("s")
        assert [(m.role, m.content, dict(m.metadata)) for m in got] == [(m.role, m.content, dict(m.metadata)) for m in messages]
        assert got[2].created_at == future
    finally:
        await backend.aclose()


async def _raw_create(server, records: list[dict]) -> None:
    """Records written with a plain HTTP client, as another client (or damage) would."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as http:
        response = await http.post("/v1/long-term-memory/", json={"memories": records, "deduplicate": False})
        assert response.status_code == 200, response.text


async def _until_listed(backend: AgentMemoryServerBackend, ams_ids: list[str], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        listed = {m["id"] for m in await backend._search_page(amap.search_payload("", "keyword", {}, limit=100, offset=0,
                                                                                   prefix=backend.prefix))}
        if set(ams_ids) <= listed:
            return
        assert loop.time() < deadline, f"AMS did not index {set(ams_ids) - listed}"
        await asyncio.sleep(0.5)


@pytest.mark.integration
async def test_a_damaged_record_costs_only_itself(ams, caplog) -> None:
    backend = backend_for(ams, default_mode="keyword")
    try:
        (good,) = await backend.add([MemoryRecord(text="tulip bulbs in the garden", id="good")])
        now = datetime.now(timezone.utc)

        def damaged(id: str, **changes: object) -> dict:
            data = amap.record_to_ams(with_timestamps(MemoryRecord(text=f"tulip {id}", id=id), now, now), backend.prefix)
            for key, value in changes.items():
                if value is None:
                    data.pop(key)
                else:
                    data[key] = value
            return data

        broken = [
            damaged("bad-base64", extracted_from=[codec.CARRIER_PREFIX + "!!!"]),
            damaged("not-an-object", extracted_from=[codec.CARRIER_PREFIX + "WzFd"]),  # [1]
            damaged("no-carrier", extracted_from=None),
            damaged("other-namespace", namespace=backend.prefix + "elsewhere"),
            damaged("bad-user", user_id="mp64:!!"),
        ]
        foreign = {"id": backend.prefix + "someone-elses", "text": "tulip of another client", "namespace": backend.prefix + "default",
                   "memory_type": "episodic", "created_at": now.isoformat(), "updated_at": now.isoformat()}
        await _raw_create(ams, [*broken, foreign])
        await _until_listed(backend, [d["id"] for d in broken] + [foreign["id"]])

        caplog.set_level(logging.WARNING, logger="primitives.memory")
        result = await backend.search("tulip", limit=20)
        assert [h.record for h in result.hits] == [good] and result.skipped == len(broken)
        assert {d["id"] for d in broken} <= {r.args[0] for r in caplog.records if r.args}
        assert await backend.count() == 1
        for data in broken:
            id = data["entities"][0].rsplit(".", 1)[1]
            with pytest.raises(CorruptRecordError) as info:
                await backend.get(id)
            assert info.value.key == data["id"] and data["id"] in str(info.value)
        assert await backend.delete_if_older({"bad-user": now + timedelta(days=1)}) == 0  # not shown to be older
        assert await backend.delete(["bad-base64"]) == 1
        (repaired,) = await backend.add([MemoryRecord(text="tulip repaired", id="no-carrier")])
        assert await backend.get("no-carrier") == repaired
        assert (await backend.search("tulip", limit=20)).skipped == len(broken) - 2

        # working memory: a damaged message is left out, the others are read
        sid = codec.ams_id("default", "s", backend.prefix)
        await backend.append_messages("s", [Message("user", "first", metadata={"k": 1})])
        session = await backend._session(sid)
        session["messages"].append({"id": "01HZX.mp1.!!", "role": "user", "content": "broken", "created_at": now.isoformat()})
        async with httpx.AsyncClient(base_url=ams.url, headers={"Authorization": f"Bearer {ams.token}"}) as http:
            response = await http.put(f"/v1/working-memory/{sid}", json={"messages": session["messages"]})
            assert response.status_code == 200, response.text
        await backend.append_messages("s", [Message("user", "third")])
        assert [m.content for m in await backend.get_messages("s")] == ["first", "third"]
        assert any(f"{sid}#01HZX.mp1.!!" == r.args[0] for r in caplog.records if r.args)
    finally:
        await backend.aclose()


@pytest.mark.integration
async def test_working_memory_keeps_metadata_and_ignores_other_namespaces_sessions(ams) -> None:
    backend = backend_for(ams, working_memory_size=3)
    try:
        await backend.append_messages("s/1", [Message("user", "hi", metadata={"speaker": "Mel"})])
        await backend.append_messages("s/1", [Message("assistant", f"reply {i}") for i in range(3)])
        got = await backend.get_messages("s/1")
        assert [m.content for m in got] == ["reply 0", "reply 1", "reply 2"]
        await backend.append_messages("s2", [Message("user", "hello", metadata={"speaker": "Mel"})])
        assert (await backend.get_messages("s2"))[0].metadata == {"speaker": "Mel"}
        # another client's session with our session's AMS id, in an AMS namespace: AMS answers
        # our key's absence with it (its key index); it is not ours, and clearing ours leaves it
        sid = codec.ams_id("default", "s3", backend.prefix)
        other = {"namespace": "elsewhere", "messages": [{"role": "user", "content": "not yours", "created_at": T0.isoformat()}]}
        async with httpx.AsyncClient(base_url=ams.url, headers={"Authorization": f"Bearer {ams.token}"}) as http:
            assert (await http.put(f"/v1/working-memory/{sid}", json=other)).status_code == 200
            assert await backend.get_messages("s3") == []
            await backend.clear_session("s3")
            kept = await http.get(f"/v1/working-memory/{sid}", params={"namespace": "elsewhere"})
            assert [m["content"] for m in kept.json()["messages"]] == ["not yours"]
            await backend.append_messages("s3", [Message("user", "mine")])
            assert [m.content for m in await backend.get_messages("s3")] == ["mine"]
            await http.delete(f"/v1/working-memory/{sid}", params={"namespace": "elsewhere"})
    finally:
        await backend.aclose()


@pytest.mark.integration
async def test_a_poisoned_keep_alive_connection_is_left_for_a_new_one(ams) -> None:
    proxy = Proxy(ams.url)
    await proxy.start()
    backend = AgentMemoryServerBackend(proxy.url, token=ams.token, prefix=fresh_prefix())
    try:
        await backend.add([MemoryRecord(text="the password hint is a tulip", id="hint")])
        # the fault itself, seen by a plain keep-alive client: a 500, then a dead connection
        async with httpx.AsyncClient(base_url=proxy.url, headers={"Authorization": f"Bearer {ams.token}"}) as plain:
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
        await backend.aclose()
        await proxy.stop()


@pytest.mark.integration
async def test_wrong_or_missing_token_is_an_authentication_error_naming_the_fix(ams) -> None:
    for token, fix in (("not-the-token", "agent-memory token add"), (None, "set AGENT_MEMORY_SERVER_TOKEN")):
        backend = AgentMemoryServerBackend(ams.url, token=token, prefix=fresh_prefix())
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
async def test_resilient_wrapper_serves_while_ams_is_down_and_loses_nothing(ams, tmp_path: Path) -> None:
    """AMS unreachable from the start (nothing listens on the port yet), then up, then gone
    again mid-run: reads are served from the fallback, every write reaches AMS afterwards with
    its timestamps (last writer wins), working-memory messages too."""
    proxy = Proxy(ams.url)
    prefix = fresh_prefix()
    primary = AgentMemoryServerBackend(proxy.url, token=ams.token, prefix=prefix, connect_timeout=0.5)
    resilient = ResilientBackend(primary, outbox=Outbox(tmp_path / "outbox.sqlite3"),
                                 breaker=CircuitBreaker(reset_timeout=0.05, max_reset_timeout=0.2))
    memory = Memory(resilient)
    direct = AgentMemoryServerBackend(ams.url, token=ams.token, prefix=prefix)
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
        await direct.aclose()
        await resilient.aclose()
        await proxy.stop()


@pytest.mark.integration
async def test_a_pipeline_recalls_the_turn_it_just_stored(ams) -> None:
    from primitives import LambdaPrimitive, WorkflowContext
    from primitives.memory import MemoryPrimitive, RememberPrimitive

    backend = backend_for(ams)
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
        await backend.aclose()


@pytest.mark.integration
async def test_doctor_reports_a_healthy_ams_and_names_the_fix_for_each_problem(ams, ams_server_no_ltm, tmp_path: Path) -> None:
    from primitives.tooling.doctor import diagnose

    base = {"AGENT_MEMORY_SERVER_URL": ams.url, "AGENT_MEMORY_SERVER_TOKEN": ams.token,
            "MEMORY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"), "MEMORY_AMS_PREFIX": fresh_prefix()}
    report = await diagnose(base)
    assert (report["configured"], report["healthy"], report["serving"]) == ("agent-memory-server", True, "agent-memory-server")
    info = report["ams"]
    assert info["server_version"] == "0.15.2" and info["auth"] == "ok" and info["token"] == "set"
    assert info["long_term_memory"] is True and info["vector_search"] is True and info["indexing_ms"] > 0
    assert info["damage"] == {"scanned_records": 0, "complete": True, "damaged": 0, "first": [], "legacy_records": 0}
    assert report["outbox"]["pending"] == 0 and report["problems"] == []

    # a damaged record: the store still serves, doctor names the record and how to remove it
    store = AgentMemoryServerBackend(ams.url, token=ams.token, prefix=base["MEMORY_AMS_PREFIX"])
    now = datetime.now(timezone.utc)
    bad = amap.record_to_ams(with_timestamps(MemoryRecord(text="x", id="bad"), now, now), store.prefix)
    bad["extracted_from"] = [codec.CARRIER_PREFIX + "!!"]
    await _raw_create(ams, [bad])
    await _until_listed(store, [bad["id"]])
    await store.aclose()
    report = await diagnose(base)
    assert report["healthy"] is True and report["ams"]["damage"]["damaged"] == 1
    assert report["ams"]["damage"]["first"][0]["key"] == bad["id"]
    (found,) = report["problems"]
    assert bad["id"] in found["problem"] and "curl -X DELETE" in found["fix"]

    cases = [
        ({"AGENT_MEMORY_SERVER_TOKEN": "wrong"}, "not valid there", "export AGENT_MEMORY_SERVER_TOKEN="),
        ({"AGENT_MEMORY_SERVER_TOKEN": ""}, "needs a token", "agent-memory token add"),
        ({"AGENT_MEMORY_SERVER_URL": ams_server_no_ltm.url}, "long-term memory disabled", "LONG_TERM_MEMORY=true"),
        ({"AGENT_MEMORY_SERVER_URL": f"http://127.0.0.1:{free_port()}", "MEMORY_AMS_CONNECT_TIMEOUT": "0.5"},
         "unreachable", "memory-primitives ams start"),
    ]
    for i, (change, problem, fix) in enumerate(cases):  # an outbox belongs to one server: one each
        report = await diagnose({**base, "MEMORY_OUTBOX_PATH": str(tmp_path / f"outbox-{i}.sqlite3"), **change})
        assert report["healthy"] is False, change
        (found,) = report["problems"]
        assert problem in found["problem"] and fix in found["fix"], (change, found)
    assert report["serving"] == "in-memory (degraded fallback)"  # the unreachable case


@pytest.mark.integration
async def test_embedding_dims_that_differ_from_the_index_are_found_by_health_and_writes(ams, tmp_path: Path) -> None:
    """An AMS whose index expects 1,536 dims while its model (MiniLM) makes 384. What the server
    does: vector queries find nothing (no error, so a read-only health check passes) and every
    write is acknowledged but never indexed. The backend: a typed error after
    ``index_timeout`` instead of a silent loss; ``probe_indexing`` and ``doctor`` name the fix."""
    from primitives.errors import PrimitivesError
    from primitives.tooling.localams import LocalAMS

    mismatched = LocalAMS(redis_url=ams.redis_url, embeddings_url=ams.embeddings_url, dims=1536,
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
        from primitives.tooling.doctor import diagnose

        report = await diagnose({"AGENT_MEMORY_SERVER_URL": mismatched.url, "MEMORY_RESILIENT": "0"})
        assert report["healthy"] is False and "REDISVL_VECTOR_DIMENSIONS" in report["ams"]["indexing_error"]
        (problem,) = report["problems"]
        assert "cannot embed and index" in problem["problem"] and "REDISVL_VECTOR_DIMENSIONS" in problem["fix"]
    finally:
        await backend.aclose()
        mismatched.stop()
