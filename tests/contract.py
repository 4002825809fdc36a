"""The backend contract: every ``MemoryBackend`` must pass these tests unchanged.

Use: subclass :class:`BackendContract` in a test module and provide a ``backend`` fixture that
yields a fresh, empty backend (closing it afterwards).
"""

from __future__ import annotations

import asyncio

import pytest

import math
from datetime import datetime, timedelta, timezone

from primitives.errors import InvalidFilterError, InvalidInputError, InvalidRecordError, PrimitivesError
from primitives.memory import MemoryBackend, MemoryRecord, MemoryType, Message
from primitives.validation import MAX_LIMIT, MAX_TTL

HOSTILE = ["*", "@user_id:{x}", "|", "-", "{}", "()", '"', "\\", "=>[KNN 5 @v $b]", "ünïcødé 😀", "a:b", "%", "~x"]

#: Identifiers that a tokenizer, a separator or a query parser could confuse with "alice" or
#: with each other: each must be its own tenant, exactly.
NEAR_ALICE = [
    "mallory,alice", "alice,mallory", "alice ", " alice", "alice\t", "alice\n", "alice\x00", "\x00alice",
    "alice\r\n", "ALICE", "Alice", "al ice", "alice|bob", "alice\x1fbob", "{alice}", "alice*", "ali*",
    "@user_id:{alice}", "alice\\", "-alice", "alice;", "ålice", "alice\u200b", "аlice",  # Cyrillic а
]


async def _snapshot(backend: MemoryBackend, queries: list[str]) -> list[list[MemoryRecord]]:
    """What the store holds as searches see it: the full records each query finds, in order.
    (Not the scores: RediSearch's BM25STD was seen to score one unchanged document 0.29 and then
    50.3 between two identical queries, once in a few runs; a server-side statistic, not data.)"""
    out = []
    for q in queries:
        result = await backend.search(q, limit=20)
        out.append([h.record for h in result.hits])
    return out


class BackendContract:
    """Behaviour every backend shares. Subclasses provide the ``backend`` fixture.

    ``long_text_chars``: length of the long text the suite stores; over 1 MB by default. A
    backend with a documented text limit (the Agent Memory Server's embedding endpoint) sets it.
    """

    long_text_chars = 1_080_000

    # -- add / get / delete ------------------------------------------------------------------

    async def test_add_then_get_returns_stored_record(self, backend: MemoryBackend) -> None:
        (stored,) = await backend.add([MemoryRecord(text="I like green tea", user_id="u1", id="r1")])
        assert stored.created_at is not None and stored.updated_at is not None
        assert stored.created_at.utcoffset().total_seconds() == 0
        got = await backend.get("r1")
        assert got == stored
        assert got.text == "I like green tea" and got.user_id == "u1"

    async def test_get_missing_returns_none(self, backend: MemoryBackend) -> None:
        assert await backend.get("nope") is None

    async def test_upsert_replaces_text_and_keeps_created_at(self, backend: MemoryBackend) -> None:
        (first,) = await backend.add([MemoryRecord(text="lives in Paris", id="loc")])
        await asyncio.sleep(0.002)
        (second,) = await backend.add([MemoryRecord(text="lives in Rome", id="loc")])
        assert second.created_at == first.created_at
        assert second.updated_at >= first.updated_at
        assert (await backend.get("loc")).text == "lives in Rome"
        assert await backend.count() == 1
        assert (await backend.search("Paris")).hits == []
        assert [h.record.id for h in (await backend.search("Rome")).hits] == ["loc"]

    async def test_delete_counts_existing_and_forgets(self, backend: MemoryBackend) -> None:
        await backend.add([MemoryRecord(text="alpha beta", id="a"), MemoryRecord(text="beta gamma", id="b")])
        assert await backend.delete(["a", "missing"]) == 1
        assert await backend.get("a") is None
        assert [h.record.id for h in (await backend.search("beta")).hits] == ["b"]
        assert await backend.count() == 1

    async def test_add_rejects_non_records_and_stores_nothing(self, backend: MemoryBackend) -> None:
        with pytest.raises(TypeError):
            await backend.add([MemoryRecord(text="fine", id="ok"), {"text": "a dict"}])  # type: ignore[list-item]
        assert await backend.get("ok") is None
        assert await backend.count() == 0

    # -- search ------------------------------------------------------------------------------

    async def test_search_ranks_natural_language_question(self, backend: MemoryBackend) -> None:
        await backend.add(
            [
                MemoryRecord(text="My favourite colour is blue", id="colour"),
                MemoryRecord(text="I walked the dog in the park", id="dog"),
                MemoryRecord(text="The meeting moved to Thursday", id="meeting"),
            ]
        )
        result = await backend.search("What is my favourite colour?")
        assert result.backend == backend.name
        assert result.degraded is False
        assert result.hits[0].record.id == "colour"
        assert all(h.score > 0 for h in result.hits)
        scores = [h.score for h in result.hits]
        assert scores == sorted(scores, reverse=True)

    async def test_stemming_matches_word_forms(self, backend: MemoryBackend) -> None:
        await backend.add([MemoryRecord(text="She was painting sunrises all weekend", id="p")])
        assert [h.record.id for h in (await backend.search("who paints a sunrise?")).hits] == ["p"]

    async def test_limit_caps_hits(self, backend: MemoryBackend) -> None:
        await backend.add([MemoryRecord(text=f"note about apples {i}", id=f"n{i}") for i in range(8)])
        assert len((await backend.search("apples", limit=3)).hits) == 3
        assert len((await backend.search("apples", limit=50)).hits) == 8

    async def test_equal_scores_put_newest_first(self, backend: MemoryBackend) -> None:
        await backend.add([MemoryRecord(text="favourite colour blue", id="old")])
        await backend.add([MemoryRecord(text="favourite colour green", id="new")])
        hits = (await backend.search("favourite colour")).hits
        assert [h.record.id for h in hits] == ["new", "old"]

    @pytest.mark.parametrize("query", ["", "   ", "\n\t", "the of and is"])
    async def test_empty_or_stop_word_query_returns_no_hits(self, backend: MemoryBackend, query: str) -> None:
        await backend.add([MemoryRecord(text="the of and is something", id="s")])
        assert (await backend.search(query)).hits == []

    async def test_filters_are_hard_boundaries(self, backend: MemoryBackend) -> None:
        await backend.add(
            [
                MemoryRecord(text="secret plan alpha", id="a1", user_id="alice", namespace="ns1", topics=("work",)),
                MemoryRecord(text="secret plan beta", id="b1", user_id="bob", namespace="ns1", topics=("home",)),
                MemoryRecord(text="secret plan gamma", id="a2", user_id="alice", namespace="ns2",
                             session_id="s9", memory_type=MemoryType.SEMANTIC),
            ]
        )

        async def ids(**flt: object) -> set[str]:
            return {h.record.id for h in (await backend.search("secret plan", filter=flt)).hits}

        assert await ids(user_id="alice") == {"a1", "a2"}
        assert await ids(user_id="bob") == {"b1"}
        assert await ids(user_id="carol") == set()
        assert await ids(namespace="ns1") == {"a1", "b1"}
        assert await ids(namespace="ns1", user_id="alice") == {"a1"}
        assert await ids(namespace="missing") == set()
        assert await ids(session_id="s9") == {"a2"}
        assert await ids(memory_type="semantic") == {"a2"}
        assert await ids(memory_type=["semantic", "episodic"]) == {"a1", "b1", "a2"}
        assert await ids(topics=["home", "work"]) == {"a1", "b1"}
        assert await ids(topics="home") == {"b1"}
        assert await backend.count({"user_id": "alice"}) == 2
        assert await backend.count({"namespace": "ns1", "user_id": "alice"}) == 1

    @pytest.mark.parametrize("hostile", HOSTILE)
    async def test_hostile_strings_neither_error_nor_widen(self, backend: MemoryBackend, hostile: str) -> None:
        await backend.add(
            [
                MemoryRecord(text="alice private note", id="a", user_id="alice", namespace="tenant-a"),
                MemoryRecord(text="bob private note", id="b", user_id="bob", namespace="tenant-b"),
                MemoryRecord(text=f"odd text {hostile} inside", id="odd", user_id=hostile, namespace=hostile),
            ]
        )
        for flt in ({"user_id": hostile}, {"namespace": hostile}, {"topics": [hostile]}):
            hits = (await backend.search(f"private note {hostile}", filter=flt)).hits
            assert {h.record.id for h in hits} <= {"odd"}
        hits = (await backend.search(hostile, filter={"user_id": "alice"})).hits
        assert {h.record.id for h in hits} <= {"a"}
        assert await backend.get(hostile) is None
        assert await backend.get("odd", namespace="tenant-a") is None
        assert (await backend.get("odd", namespace=hostile)).user_id == hostile

    async def test_unicode_long_and_stop_word_texts_are_stored_and_searchable(self, backend: MemoryBackend) -> None:
        n = self.long_text_chars
        long_text = ("lorem ipsum dolor " * (n // 18 + 1))[: n - 7] + " needle"
        assert len(long_text) == n
        await backend.add(
            [
                MemoryRecord(text="Café in Zürich served crème brûlée 😀", id="uni"),
                MemoryRecord(text=long_text, id="long"),
                MemoryRecord(text="to be or not to be", id="stop"),
            ]
        )
        assert [h.record.id for h in (await backend.search("zürich café")).hits] == ["uni"]
        assert [h.record.id for h in (await backend.search("needle")).hits] == ["long"]
        assert (await backend.get("stop")).text == "to be or not to be"
        assert (await backend.get("long")).text == long_text

    async def test_near_alice_identifiers_are_exact_tenants(self, backend: MemoryBackend) -> None:
        """Separators, whitespace, control characters, case and look-alikes never widen or
        narrow an equality filter, on any field."""
        await backend.add([MemoryRecord(text="pineapple plan of alice", id="alice-1", user_id="alice",
                                        namespace="acme", session_id="alice", topics=("alice",))])
        await backend.add([
            MemoryRecord(text=f"pineapple plan number {i}", id=f"n{i}", user_id=v, namespace=v,
                         session_id=v, topics=(v, "x"))
            for i, v in enumerate(NEAR_ALICE)
        ])
        for field in ("user_id", "session_id", "topics"):
            hits = (await backend.search("pineapple plan", filter={field: "alice"}, limit=50)).hits
            assert [h.record.id for h in hits] == ["alice-1"], field
            assert await backend.count({field: "alice"}) == 1
        assert [h.record.id for h in (await backend.search("pineapple", filter={"namespace": "acme"}, limit=50)).hits] == ["alice-1"]
        assert await backend.count({"namespace": "acme"}) == 1
        for i, v in enumerate(NEAR_ALICE):
            for field in ("user_id", "namespace", "session_id", "topics"):
                hits = (await backend.search("pineapple plan", filter={field: v}, limit=50)).hits
                assert [h.record.id for h in hits] == [f"n{i}"], (field, v)
            got = await backend.get(f"n{i}", namespace=v)
            assert got is not None and (got.user_id, got.namespace, got.session_id, got.topics) == (v, v, v, (v, "x"))
            assert await backend.get(f"n{i}", namespace="acme") is None
        assert await backend.count({"user_id": ["alice", "mallory,alice"]}) == 2

    async def test_the_same_id_in_two_namespaces_is_two_records(self, backend: MemoryBackend) -> None:
        await backend.add([MemoryRecord(text="bob's private profile", id="profile", user_id="bob", namespace="ns2")])
        (mine,) = await backend.add([MemoryRecord(text="mallory's own profile", id="profile", user_id="mallory", namespace="ns1")])
        bob = await backend.get("profile", namespace="ns2")
        assert bob is not None and bob.text == "bob's private profile" and bob.user_id == "bob"
        assert (await backend.get("profile", namespace="ns1")) == mine
        assert await backend.get("profile") is None  # the default namespace has none
        assert await backend.count() == 2
        hits = (await backend.search("profile", filter={"namespace": "ns2"})).hits
        assert [(h.record.namespace, h.record.text) for h in hits] == [("ns2", "bob's private profile")]
        assert await backend.delete(["profile"], namespace="ns1") == 1
        assert await backend.delete(["profile"], namespace="ns1") == 0
        assert (await backend.get("profile", namespace="ns2")).text == "bob's private profile"
        assert await backend.delete_if_older({"profile": datetime.now(timezone.utc) + timedelta(days=1)}, namespace="ns1") == 0
        assert await backend.get("profile", namespace="ns2") is not None

    async def test_what_is_written_is_read_back_exactly(self, backend: MemoryBackend) -> None:
        created = datetime(2023, 5, 8, 13, 56, 1, 123456, tzinfo=timezone(timedelta(hours=-7, minutes=-30)))
        metadata = {
            "speaker": "Mel", "nested": {"1": [1, 2.5, True, None, "x\x00y", {"deep": ["ünï😀"]}]},
            "big": 2**80, "neg": -0.0, "tiny": 5e-324, "tuple": (1, "two"), "empty": {}, "list": [],
        }
        record = MemoryRecord(
            text="Café\x00 with ‮ control\r\n chars \\ and \"quotes\"", id="a,b\x00 c", user_id="u,1 ",
            session_id="s\tx", namespace="n s", memory_type="semantic", topics=("a\x1fb", "c,d", " e ", "c,d"),
            metadata=metadata, created_at=created, ttl=MAX_TTL,
        )
        (stored,) = await backend.add([record])
        assert stored.created_at == created and stored.created_at.utcoffset() == timedelta(0)
        assert stored.metadata["tuple"] == [1, "two"] and stored.topics == ("a\x1fb", "c,d", " e ", "c,d")
        got = await backend.get("a,b\x00 c", namespace="n s")
        assert got == stored
        assert dict(got.metadata) == dict(stored.metadata) and type(got.metadata["big"]) is int
        assert math.copysign(1, got.metadata["neg"]) == -1
        (hit,) = (await backend.search("café control chars", filter={"namespace": "n s"})).hits
        assert hit.record == stored

    async def test_limit_bounds_are_the_same_everywhere(self, backend: MemoryBackend) -> None:
        await backend.add([MemoryRecord(text="apples and pears", id="ap")])
        assert [h.record.id for h in (await backend.search("apples", limit=MAX_LIMIT)).hits] == ["ap"]
        for bad in (MAX_LIMIT + 1, 10**7, 0, -1):
            with pytest.raises(InvalidInputError):
                await backend.search("apples", limit=bad)
        for bad in (True, 2.0, "5", None):
            with pytest.raises(InvalidInputError) as err:
                await backend.search("apples", limit=bad)  # type: ignore[arg-type]
            assert isinstance(err.value, TypeError)

    @pytest.mark.parametrize(
        "call",
        [
            lambda b: b.add(None),
            lambda b: b.add("a record"),
            lambda b: b.add([None]),
            lambda b: b.add({"text": "x"}),
            lambda b: b.put_if_newer(None),
            lambda b: b.delete(None),
            lambda b: b.delete("single"),
            lambda b: b.delete([None]),
            lambda b: b.delete([""]),
            lambda b: b.delete(["ok"], namespace=""),
            lambda b: b.get(None),
            lambda b: b.get(""),
            lambda b: b.get("x", namespace=None),
            lambda b: b.get("\ud800"),
            lambda b: b.search(None),
            lambda b: b.search("\ud800"),
            lambda b: b.search("q", mode="fuzzy"),
            lambda b: b.search("q", filter={"user_id": ""}),
            lambda b: b.search("q", filter={"namespace": ["a", None]}),
            lambda b: b.search("q", filter={"topics": "x" * 2000}),
            lambda b: b.search("q", filter=["user_id"]),
            lambda b: b.count({"user_id": 7}),
            lambda b: b.count({"memory_type": "dream"}),
            lambda b: b.delete_if_older(None),
            lambda b: b.delete_if_older({"x": datetime(2024, 1, 1)}),
            lambda b: b.delete_if_older({"x": "2024-01-01"}),
            lambda b: b.append_messages("s", None),
            lambda b: b.append_messages("s", [None]),
            lambda b: b.append_messages("", [Message("user", "hi")]),
            lambda b: b.append_messages(None, [Message("user", "hi")]),
            lambda b: b.get_messages("s", limit=0),
            lambda b: b.get_messages("s", limit=MAX_LIMIT + 1),
            lambda b: b.get_messages(" "),
            lambda b: b.clear_session(""),
        ],
    )
    async def test_bad_arguments_raise_typed_errors_and_change_nothing(self, backend: MemoryBackend, call) -> None:
        if not backend.supports_working_memory and "messages" in repr(call.__code__.co_names):
            pytest.skip("backend declares no working memory")
        await backend.add([MemoryRecord(text="keep me", id="keep")])
        with pytest.raises(PrimitivesError) as err:
            await call(backend)
        assert isinstance(err.value, (ValueError, TypeError))
        assert await backend.count() == 1
        assert (await backend.get("keep")).text == "keep me"

    # -- bad input leaves the store unchanged --------------------------------------------------

    async def test_bad_input_raises_typed_errors_and_changes_nothing(self, backend: MemoryBackend) -> None:
        await backend.add([MemoryRecord(text="keep me safe", id="k", user_id="u")])
        before = await _snapshot(backend, ["keep", "safe me"])
        count = await backend.count()
        with pytest.raises(InvalidInputError):
            await backend.search("keep", limit=0)
        with pytest.raises(InvalidInputError):
            await backend.search("keep", limit=-3)
        with pytest.raises(TypeError):
            await backend.search(42)  # type: ignore[arg-type]
        with pytest.raises(InvalidFilterError) as info:
            await backend.search("keep", filter={"colour": "blue"})
        assert "user_id" in str(info.value)  # names what is accepted
        with pytest.raises(InvalidFilterError):
            await backend.search("keep", filter={"user_id": 7})
        with pytest.raises(InvalidFilterError):
            await backend.search("keep", filter={"memory_type": "dream"})
        with pytest.raises(InvalidFilterError):
            await backend.search("keep", filter={"topics": []})
        for bad in (
            lambda: MemoryRecord(text=b"bytes"),  # type: ignore[arg-type]
            lambda: MemoryRecord(text=None),  # type: ignore[arg-type]
            lambda: MemoryRecord(text="x", id=""),
            lambda: MemoryRecord(text="x", id="  "),
            lambda: MemoryRecord(text="x", ttl=-1),
            lambda: MemoryRecord(text="x", ttl=0),
            lambda: MemoryRecord(text="x", memory_type="dream"),  # type: ignore[arg-type]
            lambda: MemoryRecord(text="x", metadata={1: "a"}),  # type: ignore[dict-item]
            lambda: MemoryRecord(text="x", metadata={"a": {1: "nested int key"}}),  # type: ignore[dict-item]
            lambda: MemoryRecord(text="x", metadata={"a": {1, 2}}),
            lambda: MemoryRecord(text="x", metadata={"a": object()}),
            lambda: MemoryRecord(text="x", metadata={"a": datetime.now(timezone.utc)}),
            lambda: MemoryRecord(text="x", metadata={"a": b"bytes"}),
            lambda: MemoryRecord(text="x", metadata={"a": float("nan")}),
            lambda: MemoryRecord(text="x", metadata=_cycle()),
            lambda: MemoryRecord(text="x", metadata=_deep(10_000)),
            lambda: MemoryRecord(text="x", metadata="{}"),  # type: ignore[arg-type]
            lambda: MemoryRecord(text="x", topics="not-a-list"),  # type: ignore[arg-type]
            lambda: MemoryRecord(text="x", topics=["ok", ""]),
            lambda: MemoryRecord(text="x", topics=[None]),  # type: ignore[list-item]
            lambda: MemoryRecord(text="x", embedding=["a"]),  # type: ignore[list-item]
            lambda: MemoryRecord(text="x", embedding=[float("nan")]),
            lambda: MemoryRecord(text="x", embedding=[1e39]),
            lambda: MemoryRecord(text="x", embedding=[]),
            lambda: MemoryRecord(text="x", embedding="0.5"),  # type: ignore[arg-type]
            lambda: MemoryRecord(text="x", ttl=1e300),
            lambda: MemoryRecord(text="x", ttl=10**20),
            lambda: MemoryRecord(text="x", ttl=float("nan")),
            lambda: MemoryRecord(text="x", ttl=True),
            lambda: MemoryRecord(text="x", ttl="60"),  # type: ignore[arg-type]
            lambda: MemoryRecord(text="x", namespace=""),
            lambda: MemoryRecord(text="x", namespace=None),  # type: ignore[arg-type]
            lambda: MemoryRecord(text="x", user_id=""),
            lambda: MemoryRecord(text="x", user_id="x" * 1025),
            lambda: MemoryRecord(text="\udc80 lone surrogate"),
            lambda: MemoryRecord(text="x", created_at=datetime(2024, 1, 1)),
            lambda: MemoryRecord(text="x", created_at="2024-01-01T00:00:00+00:00"),  # type: ignore[arg-type]
            lambda: Message("user", None),  # type: ignore[arg-type]
            lambda: Message("", "hi"),
            lambda: Message("user", "hi", metadata={"a": {1, 2}}),
        ):
            with pytest.raises((InvalidRecordError, TypeError)) as err:
                bad()
            assert isinstance(err.value, PrimitivesError)
            assert isinstance(err.value, (ValueError, TypeError))
        assert await backend.count() == count
        after = await _snapshot(backend, ["keep", "safe me"])
        assert after == before, (before, after)

    # -- last-writer-wins restore (outbox replay) ----------------------------------------------

    async def test_put_if_newer_keeps_timestamps_and_lets_the_newest_win(self, backend: MemoryBackend) -> None:
        from datetime import datetime, timedelta, timezone

        t0 = datetime.now(timezone.utc) - timedelta(seconds=30)
        old = MemoryRecord(text="old text", id="r", created_at=t0, updated_at=t0)
        assert await backend.put_if_newer([old]) == 1
        assert await backend.put_if_newer([old]) == 1  # equal: rewritten, idempotent
        assert await backend.count() == 1
        got = await backend.get("r")
        assert got.updated_at == t0 and got.created_at == t0 and got.text == "old text"
        (live,) = await backend.add([MemoryRecord(text="live text", id="r")])  # written now
        assert await backend.put_if_newer([old]) == 0  # the stored version is newer
        assert (await backend.get("r")).text == "live text"
        assert [h.record.id for h in (await backend.search("live")).hits] == ["r"]
        assert (await backend.search("old")).hits == []
        expired = MemoryRecord(text="gone", id="e", ttl=5, created_at=t0, updated_at=t0)
        assert await backend.put_if_newer([expired]) == 0  # its ttl ran out 25 s ago
        assert await backend.get("e") is None
        with pytest.raises(InvalidRecordError):
            await backend.put_if_newer([MemoryRecord(text="no timestamps")])

    async def test_delete_if_older_spares_later_writes(self, backend: MemoryBackend) -> None:
        from datetime import datetime, timedelta, timezone

        await backend.add([MemoryRecord(text="a", id="a"), MemoryRecord(text="b", id="b")])
        now = datetime.now(timezone.utc)
        deleted = await backend.delete_if_older({"a": now + timedelta(seconds=1), "b": now - timedelta(seconds=60), "zz": now})
        assert deleted == 1
        assert await backend.get("a") is None
        assert await backend.get("b") is not None

    # -- working memory ----------------------------------------------------------------------

    async def test_working_memory_is_bounded_and_oldest_first(self, backend: MemoryBackend) -> None:
        if not backend.supports_working_memory:
            pytest.skip("backend declares no working memory")
        size = getattr(backend, "working_memory_size", 50)
        msgs = [Message("user" if i % 2 == 0 else "assistant", f"message {i}") for i in range(size + 5)]
        await backend.append_messages("s1", msgs[:3])
        await backend.append_messages("s1", msgs[3:])
        got = await backend.get_messages("s1")
        assert [m.content for m in got] == [m.content for m in msgs[-size:]]
        assert all(m.created_at is not None for m in got)
        assert [m.content for m in await backend.get_messages("s1", limit=2)] == [m.content for m in msgs[-2:]]
        assert await backend.get_messages("other") == []
        await backend.clear_session("s1")
        assert await backend.get_messages("s1") == []

    async def test_sessions_do_not_share_working_memory(self, backend: MemoryBackend) -> None:
        if not backend.supports_working_memory:
            pytest.skip("backend declares no working memory")
        await backend.append_messages("a", [Message("user", "for a")])
        await backend.append_messages("b", [Message("user", "for b")])
        assert [m.content for m in await backend.get_messages("a")] == ["for a"]
        await backend.append_messages("a", [Message("user", "for a in ns2")], namespace="ns2")
        assert [m.content for m in await backend.get_messages("a", namespace="ns2")] == ["for a in ns2"]
        assert [m.content for m in await backend.get_messages("a")] == ["for a"]
        await backend.clear_session("a", namespace="ns2")
        assert [m.content for m in await backend.get_messages("a")] == ["for a"]

    async def test_messages_round_trip_exactly_with_hostile_sessions(self, backend: MemoryBackend) -> None:
        if not backend.supports_working_memory:
            pytest.skip("backend declares no working memory")
        at = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)
        messages = [
            Message("user", "line\x00one\n{\"json\": true}", at, {"k": [1, {"v": None}], "ü": "😀"}),
            Message("assistant ", "", None, {}),
        ]
        for session in ("alice,bob", "alice ", "a:b:c", "*", "s\x00"):
            await backend.append_messages(session, messages, namespace="n,1")
            got = await backend.get_messages(session, namespace="n,1")
            assert [(m.role, m.content, dict(m.metadata)) for m in got] == [
                (m.role, m.content, dict(m.metadata)) for m in messages
            ], session
            assert got[0].created_at == at and got[1].created_at is not None
        assert await backend.get_messages("alice", namespace="n,1") == []
        assert await backend.get_messages("alice,bob") == []

    async def test_health_reports_ok(self, backend: MemoryBackend) -> None:
        health = await backend.health()
        assert health.ok is True and health.backend == backend.name


def _cycle() -> dict:
    d: dict = {}
    d["self"] = d
    return d


def _deep(depth: int) -> dict:
    d: dict = {}
    for _ in range(depth):
        d = {"d": d}
    return d
