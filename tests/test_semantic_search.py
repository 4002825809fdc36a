"""Vector and hybrid search with the real packaged MiniLM model, in process and on Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from primitives.embeddings.base import Embedder
from primitives.errors import (
    ConfigurationError,
    DimensionMismatchError,
    EmbeddingResponseError,
    InvalidInputError,
)
from primitives.memory import MemoryRecord
from primitives.memory.facade import Memory
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.redis_backend import RedisBackend

FACTS = [
    ("pets", "Melanie adopted a small dog from the shelter last spring"),
    ("food", "Caroline bakes sourdough bread every Sunday morning"),
    ("travel", "John flew to Tokyo for a conference in March"),
    ("work", "The quarterly budget review moved to Thursday afternoon"),
]


def records(namespace: str = "default") -> list[MemoryRecord]:
    return [MemoryRecord(text=t, id=i, namespace=namespace) for i, t in FACTS]


class BrokenEmbedder(Embedder):
    """Returns one vector too few: what a misbehaving endpoint does."""

    def __init__(self) -> None:
        super().__init__(model="broken", dims=384)

    async def _embed_batch(self, texts: list[str]) -> Sequence[Sequence[float]]:
        return [[1.0] * 384 for _ in texts[1:]]


@pytest.fixture(params=["in-memory", "redis"])
async def backend(request, local_embedder):
    if request.param == "in-memory":
        store = InMemoryBackend(embedder=local_embedder)
    else:
        server = request.getfixturevalue("redis_server")
        store = RedisBackend(server.url, prefix=f"sem{uuid.uuid4().hex[:8]}:", embedder=local_embedder)
    yield store
    drop = getattr(store, "drop", None)
    if drop is not None:
        await drop()
    await store.aclose()


async def test_vector_search_finds_meaning_without_shared_words(backend) -> None:
    await backend.add(records())
    # no word in common with the pets fact: keyword search cannot find it, vector search can
    keyword = await backend.search("puppy", limit=4, mode="keyword")
    assert keyword.hits == []
    vector = await backend.search("puppy", limit=4, mode="vector")
    assert vector.hits[0].record.id == "pets"
    assert all(-1.0 <= h.score <= 1.0 for h in vector.hits)
    assert [h.score for h in vector.hits] == sorted((h.score for h in vector.hits), reverse=True)
    hybrid = await backend.search("which pet did Melanie get", limit=2)  # default: hybrid
    assert hybrid.hits[0].record.id == "pets"
    assert hybrid.backend == backend.name


async def test_filters_are_a_hard_boundary_in_vector_mode(backend) -> None:
    await backend.add(records("team-a") + [MemoryRecord(text="A puppy joined the office", id="b-dog", namespace="team-b")])
    hits = (await backend.search("puppy", filter={"namespace": "team-a"}, limit=10, mode="vector")).hits
    assert {h.record.namespace for h in hits} == {"team-a"}
    hits = (await backend.search("puppy", filter={"namespace": "team-b"}, limit=10, mode="hybrid")).hits
    assert [h.record.id for h in hits] == ["b-dog"]
    hostile = 'x} | @namespace:{team-a'  # must be escaped, not parsed
    assert (await backend.search("puppy", filter={"namespace": hostile}, mode="vector")).hits == []


async def test_get_returns_the_stored_embedding_and_updates_reembed(backend, local_embedder) -> None:
    await backend.add(records())
    got = await backend.get("pets")
    assert got is not None and got.embedding is not None and len(got.embedding) == 384
    expected = await local_embedder.embed_one(FACTS[0][1])
    assert got.embedding == pytest.approx(expected, abs=1e-5)
    before = (await backend.search("puppy", limit=1, mode="vector")).hits[0]
    await backend.add([MemoryRecord(text="The team moved to a new building", id="pets")])
    updated = await backend.get("pets")
    assert updated.embedding == pytest.approx(await local_embedder.embed_one(updated.text), abs=1e-5)
    after = [h for h in (await backend.search("puppy", limit=4, mode="vector")).hits if h.record.id == "pets"]
    assert after[0].score < before.score - 0.1


async def test_a_record_with_no_text_is_stored_without_a_vector(backend) -> None:
    # the agent-memory API's bookkeeping records have empty text: nothing to embed, and the
    # embedder refuses empty input, so they are stored without a vector (found by id and filters)
    blank = [MemoryRecord(text="", id="chain", metadata={"kind": "session_chain"}),
             MemoryRecord(text=" \t\n", id="blank")]
    await backend.add([*blank, *records()])
    for record in blank:
        got = await backend.get(record.id)
        assert got is not None and got.text == record.text and got.embedding is None
    for mode in ("vector", "hybrid"):
        hits = (await backend.search("puppy", limit=10, mode=mode)).hits
        assert hits and not {h.record.id for h in hits} & {"chain", "blank"}, mode
    await backend.add([MemoryRecord(text="A dog named Rex", id="chain")])  # later given text: embedded
    got = await backend.get("chain")
    assert got.embedding is not None and len(got.embedding) == 384


async def test_given_embedding_of_wrong_dims_is_refused_and_nothing_stored(backend) -> None:
    bad = MemoryRecord(text="x", id="bad", embedding=[0.1, 0.2, 0.3])
    with pytest.raises(DimensionMismatchError, match="3 floats.*384"):
        await backend.add([MemoryRecord(text="fine", id="ok"), bad])
    assert await backend.get("ok") is None


async def test_bad_mode_and_empty_query() -> None:
    store = InMemoryBackend()
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        await store.search("x", mode="semantic")
    with pytest.raises(ConfigurationError, match="MEMORY_EMBEDDINGS=local"):
        await store.search("x", mode="vector")


async def test_broken_embedder_stores_nothing() -> None:
    store = InMemoryBackend(embedder=BrokenEmbedder())
    with pytest.raises(EmbeddingResponseError, match="returned 1 vectors for 2 texts"):
        await store.add([MemoryRecord(text="one", id="1"), MemoryRecord(text="two", id="2")])
    assert await store.count() == 0


async def test_reingesting_the_same_texts_makes_no_model_calls(local_embedder) -> None:
    memory = Memory(InMemoryBackend(embedder=local_embedder))
    texts = [f"note {i}: the meeting about topic {i % 37} went well" for i in range(1000)]
    await memory.add([MemoryRecord(text=t) for t in texts])
    calls = local_embedder.stats.model_calls
    await memory.add([MemoryRecord(text=t) for t in texts])
    assert local_embedder.stats.model_calls == calls


async def test_redis_index_with_other_dims_is_refused_then_migrated(redis_server, local_embedder) -> None:
    prefix = f"dims{uuid.uuid4().hex[:8]}:"
    plain = RedisBackend(redis_server.url, prefix=prefix)  # an index built without vectors
    await plain.add(records())
    await plain.aclose()
    store = RedisBackend(redis_server.url, prefix=prefix, embedder=local_embedder)
    try:
        with pytest.raises(DimensionMismatchError, match="index migrate"):
            await store.search("puppy", mode="vector")
        assert await store.migrate_index() == len(FACTS)  # re-embeds every record
        for _ in range(600):  # Redis re-indexes in the background; slow on a loaded machine
            if await store.count() == len(FACTS) and not (await store.health()).detail.get("indexing"):
                break
            await asyncio.sleep(0.05)
        hits = (await store.search("puppy", limit=1, mode="vector")).hits
        assert hits[0].record.id == "pets"
        assert await store.count() == len(FACTS)
    finally:
        await store.drop()
        await store.aclose()


async def test_semantic_example_finds_what_keywords_miss(local_embedder, monkeypatch) -> None:
    from examples import semantic_memory

    for name in ("REDIS_URL", "AGENT_MEMORY_SERVER_URL", "MEMORY_BACKEND", "MEMORY_EMBEDDINGS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMORY_EMBEDDINGS", "local")
    answers = await semantic_memory.main()
    assert answers["keyword"] == ["(nothing)"] * 3
    expected = [semantic_memory.FACTS[1], semantic_memory.FACTS[2], semantic_memory.FACTS[3]]
    assert answers["vector"] == expected
    assert answers["hybrid"] == expected
