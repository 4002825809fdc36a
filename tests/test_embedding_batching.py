"""Micro-batching: concurrent embed calls share one model call (primitives.embeddings.batching).

No timing is asserted: batch sizes and call counts are, with a model whose calls are released by
the test (an ``asyncio.Event``), so what runs together is decided by the test, not by the clock.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from primitives.embeddings.base import Embedder
from primitives.embeddings.batching import MicroBatcher
from primitives.errors import EmbeddingResponseError, EmbedderUnavailableError, InvalidInputError
from primitives.evaluation.locomo import evaluate_locomo, load_conversation, load_conversations
from primitives.memory.facade import Memory
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.record import MemoryRecord

HOSTILE = [
    "a|b,c;d",
    "  spaced  ",
    "nul\x00inside",
    "émoji 🧠 ünïcode",
    '@tag:{x} -(y) "quoted" *',
    "line\nbreak\ttab",
    "x" * 5000,
]


def _vector(text: str, dims: int = 4) -> list[float]:
    """A deterministic vector per text (not normalised: the seam normalises)."""
    h = [float((sum(map(ord, text)) * (i + 3)) % 97 + 1) for i in range(dims)]
    return h


class GatedEmbedder(Embedder):
    """Records every model call; each call waits for ``gate`` (set by default)."""

    def __init__(self, *, batch_size: int = 64, fail: Exception | None = None, **kwargs: object) -> None:
        super().__init__(model="gated", dims=4, batch_size=batch_size, **kwargs)  # type: ignore[arg-type]
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail
        self.bad_count = False

    async def _embed_batch(self, texts: list[str]) -> Sequence[Sequence[float]]:
        self.calls.append(list(texts))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        vectors = [_vector(t) for t in texts]
        return vectors[:-1] if self.bad_count else vectors


async def test_concurrent_calls_share_one_model_call() -> None:
    embedder = GatedEmbedder()
    texts = [f"turn {i}" for i in range(20)] + HOSTILE
    results = await asyncio.gather(*(embedder.embed([t]) for t in texts))
    assert len(embedder.calls) == 1
    assert sorted(embedder.calls[0]) == sorted(texts)
    assert embedder.stats.largest_batch == len(texts)
    for text, (vector,) in zip(texts, results):  # each caller gets its own text's vector
        expected = _vector(text)
        norm = math.hypot(*expected)
        assert vector == pytest.approx([x / norm for x in expected])


async def test_callers_arriving_during_a_call_go_together_in_the_next() -> None:
    embedder = GatedEmbedder(max_in_flight=1)
    embedder.gate.clear()
    first = asyncio.ensure_future(embedder.embed(["first"]))
    while not embedder.calls:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(embedder.embed([f"later {i}"])) for i in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(embedder.calls) == 1  # one call at a time for max_in_flight=1
    embedder.gate.set()
    await asyncio.gather(first, *later)
    assert [len(c) for c in embedder.calls] == [1, 10]


async def test_with_several_calls_in_flight_a_new_batch_goes_at_once() -> None:
    embedder = GatedEmbedder(max_in_flight=2)
    embedder.gate.clear()
    first = asyncio.ensure_future(embedder.embed(["first"]))
    while not embedder.calls:
        await asyncio.sleep(0)
    second = asyncio.ensure_future(embedder.embed(["second"]))
    while len(embedder.calls) < 2:
        await asyncio.sleep(0)
    third = asyncio.ensure_future(embedder.embed(["third"]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert embedder.calls == [["first"], ["second"]]  # the third waits for a free slot
    embedder.gate.set()
    await asyncio.gather(first, second, third)
    assert embedder.calls[2] == ["third"]


async def test_batches_never_exceed_batch_size_and_keep_order() -> None:
    embedder = GatedEmbedder(batch_size=4)
    texts = [f"t{i}" for i in range(10)]
    results = await asyncio.gather(*(embedder.embed([t]) for t in texts))
    assert all(len(c) <= 4 for c in embedder.calls)
    assert sorted(t for c in embedder.calls for t in c) == sorted(texts)
    one = await GatedEmbedder(batch_size=4).embed(texts)  # one caller, batched alone
    assert [r[0] for r in results] == one


async def test_an_error_reaches_every_waiter_as_the_same_typed_error() -> None:
    error = EmbedderUnavailableError("model gone")
    embedder = GatedEmbedder(fail=error, cache_size=0)
    results = await asyncio.gather(
        *(embedder.embed([f"t{i}"]) for i in range(5)), return_exceptions=True
    )
    assert len(embedder.calls) == 1
    assert all(r is error for r in results)
    embedder.fail = None  # nothing was cached: the next call reaches the model
    assert len(await embedder.embed(["t0"])) == 1
    assert len(embedder.calls) == 2


async def test_a_wrong_vector_count_fails_the_whole_batch_with_a_typed_error() -> None:
    embedder = GatedEmbedder()
    embedder.bad_count = True
    results = await asyncio.gather(*(embedder.embed([f"t{i}"]) for i in range(3)), return_exceptions=True)
    assert len({id(r) for r in results}) == 1
    assert isinstance(results[0], EmbeddingResponseError)


async def test_cancelling_one_waiter_does_not_break_the_others() -> None:
    embedder = GatedEmbedder(max_in_flight=1)
    embedder.gate.clear()
    running = asyncio.ensure_future(embedder.embed(["running"]))
    while not embedder.calls:
        await asyncio.sleep(0)
    queued = [asyncio.ensure_future(embedder.embed([f"q{i}"])) for i in range(4)]
    await asyncio.sleep(0)
    queued[1].cancel()  # cancelled while queued: dropped from the next batch
    await asyncio.sleep(0)
    running.cancel()  # cancelled while its call runs: its slice is discarded
    embedder.gate.set()
    done = await asyncio.gather(*queued, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert all(isinstance(r, list) and len(r) == 1 for i, r in enumerate(done) if i != 1)
    assert "q1" not in embedder.calls[-1]
    with pytest.raises(asyncio.CancelledError):
        await running
    assert len(await embedder.embed(["running"])) == 1  # the embedder still works


async def test_the_queue_is_bounded() -> None:
    seen: list[int] = []
    gate = asyncio.Event()

    async def call(items: list[int]) -> list[int]:
        seen.append(len(items))
        await gate.wait()
        return [i * 2 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(call, max_batch=2, max_queued=4)
    first = asyncio.ensure_future(batcher.submit([0, 1]))
    while not seen:
        await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(batcher.submit([i])) for i in range(2, 10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert batcher.queued <= 4  # the others wait for room
    gate.set()
    assert await first == [0, 2]
    assert [r[0] for r in await asyncio.gather(*waiting)] == [i * 2 for i in range(2, 10)]
    assert max(seen) <= 2


async def test_a_wait_window_collects_callers_arriving_within_it() -> None:
    calls: list[list[int]] = []

    async def call(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(call, max_batch=100, max_wait_s=1.0)

    async def late(i: int) -> list[int]:
        for _ in range(3):
            await asyncio.sleep(0)
        return await batcher.submit([i])

    first = asyncio.ensure_future(batcher.submit([0]))
    others = [asyncio.ensure_future(late(i)) for i in range(1, 100)]  # the 100th fills the batch
    assert await first == [0]
    await asyncio.gather(*others)
    assert [len(c) for c in calls] == [100]  # sent when full, not after the second


async def test_a_batcher_used_from_a_new_event_loop_starts_afresh() -> None:
    embedder = GatedEmbedder(cache_size=0)

    def other_loop() -> list[list[float]]:
        return asyncio.run(embedder.embed(["elsewhere"]))

    assert len(await asyncio.to_thread(other_loop)) == 1
    assert len(await embedder.embed(["here"])) == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_batch": 0}, InvalidInputError),
        ({"max_batch": 2, "max_wait_s": -1}, InvalidInputError),
        ({"max_batch": 2, "max_wait_s": float("nan")}, InvalidInputError),
        ({"max_batch": 2, "max_in_flight": 0}, InvalidInputError),
        ({"max_batch": 4, "max_queued": 3}, InvalidInputError),
        ({"max_batch": True}, TypeError),
        ({"max_batch": 2, "max_wait_s": "1"}, TypeError),
    ],
)
def test_bad_settings_raise_typed_errors(kwargs: dict[str, object], error: type) -> None:
    async def call(items: list[int]) -> list[int]:
        return items

    with pytest.raises(error):
        MicroBatcher(call, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"batch_wait_s": -0.001}, InvalidInputError),
        ({"batch_wait_s": 2.0}, InvalidInputError),
        ({"batch_wait_s": float("inf")}, InvalidInputError),
        ({"batch_wait_s": None}, TypeError),
        ({"max_in_flight": 0}, InvalidInputError),
        ({"max_in_flight": 1.5}, TypeError),
        ({"max_in_flight": False}, TypeError),
    ],
)
def test_bad_embedder_batching_settings_raise_typed_errors(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        GatedEmbedder(**kwargs)  # type: ignore[arg-type]


async def test_memory_add_of_many_records_embeds_in_batches() -> None:
    embedder = GatedEmbedder(batch_size=16)
    memory = Memory(InMemoryBackend(embedder=embedder))
    try:
        records = [MemoryRecord(text=f"record {i} {HOSTILE[i % len(HOSTILE)]}", user_id="u") for i in range(100)]
        await memory.add(records)
        assert embedder.stats.model_calls == math.ceil(100 / 16)
        assert embedder.stats.texts_embedded == 100
        hits = await memory.search("record 7", user_id="u", mode="vector", limit=3)
        assert hits
    finally:
        await memory.aclose()


async def test_concurrent_memory_adds_share_model_calls() -> None:
    embedder = GatedEmbedder()
    memory = Memory(InMemoryBackend(embedder=embedder))
    try:
        await asyncio.gather(
            *(memory.add([MemoryRecord(text=f"note {i}", user_id="u")]) for i in range(12))
        )
        assert embedder.stats.model_calls < 12
        assert embedder.stats.texts_embedded == 12
    finally:
        await memory.aclose()


async def test_locomo_ingest_concurrency_keeps_turn_order_and_shares_model_calls(locomo_dir: Path) -> None:
    conversations = [load_conversation(locomo_dir / "26.json")]
    reports = {}
    for concurrency in (1, 8):
        embedder = GatedEmbedder()
        reports[concurrency] = report = await evaluate_locomo(
            conversations,
            lambda embedder=embedder: Memory(InMemoryBackend(embedder=embedder)),
            mode="hybrid",
            ingest_concurrency=concurrency,
        )
        assert report["ingest_concurrency"] == concurrency
        assert report["turns"] == len(conversations[0].turns)
        assert embedder.stats.largest_batch <= (1 if concurrency == 1 else 8)
    one, many = reports[1], reports[8]
    assert many["embedding_model_calls"] < one["embedding_model_calls"]
    # the same records with the same context: the same recall (ties may break another way)
    assert abs(many["recall_at_k"]["10"] - one["recall_at_k"]["10"]) <= 0.01


async def test_locomo_stores_each_turn_with_the_turn_before_it_in_its_session(tmp_path: Path) -> None:
    conversation = {
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": "A", "dia_id": f"D1:{i}", "text": f"one {i}"} for i in range(1, 6)],
        "session_2_date_time": "2:00 pm on 9 May, 2023",
        "session_2": [{"speaker": "B", "dia_id": f"D2:{i}", "text": f"two {i} {HOSTILE[i]}"} for i in range(1, 6)],
        "qa": [{"question": "one 3", "evidence": ["D1:3"], "category": 4}],
    }
    (tmp_path / "c.json").write_text(json.dumps(conversation))
    backend = InMemoryBackend(embedder=GatedEmbedder())
    records: list[MemoryRecord] = []
    original = backend.add

    async def spy(batch: Sequence[MemoryRecord]) -> list[MemoryRecord]:
        records.extend(batch)
        return await original(batch)

    backend.add = spy  # type: ignore[method-assign]
    report = await evaluate_locomo(
        load_conversations(tmp_path), lambda: Memory(backend), ingest_concurrency=2
    )
    assert report["turns"] == 10
    by_id = {r.metadata["dia_id"]: r for r in records}
    for session, prefix in ((1, "one"), (2, "two")):
        for i in range(2, 6):
            context = by_id[f"D{session}:{i}"].metadata["context"]
            assert context.startswith(f"{prefix} {i - 1}")


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
async def test_locomo_rejects_a_bad_ingest_concurrency(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        await evaluate_locomo([], lambda: Memory(InMemoryBackend()), ingest_concurrency=bad)  # type: ignore[arg-type]


async def test_the_local_model_answers_concurrent_callers_in_shared_calls(local_embedder: Embedder) -> None:
    import numpy as np

    texts = [f"{HOSTILE[i % len(HOSTILE)]} turn {i}" for i in range(24)]
    before = local_embedder.stats.model_calls
    got = await asyncio.gather(*(local_embedder.embed([t]) for t in texts))
    assert local_embedder.stats.model_calls - before <= 2  # 24 callers, at most two calls
    alone = local_embedder.encode(texts)  # type: ignore[attr-defined]  # one batch, no seam
    for (vector,), expected in zip(got, alone):
        assert float(np.dot(vector, expected)) > 0.9999
