"""Extraction, supersession and the prompt context on a real Agent Memory Server (slow: ~0.4 s a
request with token auth, so one test walks the whole path)."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from primitives.memory import ForgetPolicy, Memory, Message
from primitives.memory.ams_backend import AgentMemoryServerBackend
from tests.ams_server import drop_partition
from tests.scripted_llm import ScriptedLLM, decisions, facts

pytestmark = pytest.mark.integration
PARTITION = f"agent{os.getpid()}-{uuid.uuid4().hex[:6]}-"
T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ams(ams_server):
    """``ams_server``; afterwards every record and session this module wrote there is deleted."""
    yield ams_server
    drop_partition(ams_server, PARTITION)


async def test_extraction_supersession_and_context_on_ams(ams) -> None:
    backend = AgentMemoryServerBackend(ams.url, token=ams.token, prefix=f"{PARTITION}0:", default_mode="keyword")
    llm = ScriptedLLM([facts(("The user lives in Paris", "residence"), valid_from="2024-03-01")])
    memory = Memory(backend, llm=llm)
    try:
        await memory.append_messages("s1", [Message("user", "I live in Paris.", T0)])
        first = await memory.extract("s1", user_id="u1")
        assert first.added == 1
        assert (await memory.extract("s1", user_id="u1")).llm_calls == 0  # the mark is kept on AMS too
        await memory.append_messages("s1", [Message("user", "I moved to Berlin last month.", T0 + timedelta(days=90))])
        paris = first.writes[0].record.id
        llm.push(facts(("The user lives in Berlin", "residence"), valid_from="2024-05-01"),
                 decisions((0, "supersede", [paris])))
        second = await memory.extract("s1", user_id="u1")
        assert second.writes[0].superseded == (paris,)
        now = [h.record.text for h in (await memory.search("user lives", user_id="u1")).hits]
        then = [h.record.text for h in (await memory.search("user lives", user_id="u1",
                                                            as_of=datetime(2024, 4, 1, tzinfo=timezone.utc))).hits]
        assert now == ["The user lives in Berlin"] and then == ["The user lives in Paris"]
        ctx = await memory.context("where does the user live", user_id="u1", session_id="s1", budget_tokens=200)
        assert "The user lives in Berlin" in ctx.text and "Paris" not in ctx.text.split("Facts and preferences:")[-1]
        with pytest.raises(NotImplementedError):
            await memory.forget(ForgetPolicy(max_per_user=1))
    finally:
        await memory.aclose()
