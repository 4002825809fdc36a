"""Extraction with a real small instruct model on CPU, offline (tests/local_llm.py): the HTTP
client, the prompts, the JSON validation and the idempotency marks against a model that was not
scripted. Assertions are about what a 0.5B model reliably does (valid JSON in JSON mode, the
user's city mentioned); the wording of the facts is its own."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from primitives.llm import OpenAIChatLLM
from primitives.memory import InMemoryBackend, Memory, Message
from tests.local_llm import MODEL_NAME, ModelUnavailable, start_model_server

pytestmark = pytest.mark.integration
T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def model_url():
    try:
        server, url = start_model_server()
    except ModelUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the local model did not start: {exc}")
        pytest.skip(str(exc))
    yield url
    del server


def client(url: str) -> OpenAIChatLLM:
    # repeat_penalty keeps a small model from looping; cache_prompt off makes answers repeatable
    return OpenAIChatLLM(base_url=url, model=MODEL_NAME, timeout=180,
                         extra_body={"repeat_penalty": 1.1, "cache_prompt": False, "max_tokens": 300})


async def test_a_real_model_extracts_facts_once(model_url) -> None:
    llm = client(model_url)
    memory = Memory(InMemoryBackend(), llm=llm)
    await memory.append_messages("s1", [
        Message("user", "I live in Paris.", T0),
        Message("assistant", "Nice, Paris is lovely!", T0 + timedelta(minutes=1)),
        Message("user", "I work as a nurse at the city hospital.", T0 + timedelta(minutes=2)),
    ])
    report = await memory.extract("s1", user_id="u1")
    assert report.batches == 1 and report.added >= 1
    texts = [w.record.text for w in report.writes]
    assert any("paris" in t.lower() for t in texts), texts
    for w in report.writes:
        assert w.record.metadata["provenance"]["model"] == MODEL_NAME
        assert w.record.user_id == "u1"
    again = await memory.extract("s1", user_id="u1")
    assert again.llm_calls == 0 and again.writes == ()
    hits = (await memory.search("Paris", user_id="u1")).hits
    assert hits and "paris" in hits[0].record.text.lower()
    await llm.aclose()


async def test_a_real_model_writes_a_summary(model_url) -> None:
    llm = client(model_url)
    memory = Memory(InMemoryBackend(), llm=llm)
    await memory.append_messages("s1", [
        Message("user", "Let's plan my trip to Rome in May.", T0),
        Message("assistant", "Sure. Flights or trains?", T0 + timedelta(minutes=1)),
        Message("user", "Flights, and a hotel near the Colosseum.", T0 + timedelta(minutes=2)),
    ])
    report = await memory.extract("s1", user_id="u1", strategy="summary")
    (write,) = report.writes
    assert write.record.metadata["kind"] == "summary" and write.record.text.strip()
    await llm.aclose()
