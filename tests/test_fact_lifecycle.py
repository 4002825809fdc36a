"""Fact lifecycle: exact and near-duplicate dedup, validity with as_of, forgetting policies and
working-memory summaries (with an interrupted run recovered)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from primitives.errors import ConfigurationError, InvalidInputError, InvalidInputTypeError, LLMResponseError
from primitives.memory import ForgetPolicy, InMemoryBackend, Memory, MemoryRecord, MemoryType, Message
from primitives.memory.facts import NEAR_DUPLICATE_COSINE
from primitives.memory.kinds import content_hash, normalize_fact, visible
from tests.scripted_llm import ScriptedLLM

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


# -- dedup ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["I like tea", "i like tea", "  I   like\ttea. ", "I like tea!", "Ｉ like tea"])
def test_normalized_hash_treats_spelling_variants_as_one_fact(variant) -> None:
    assert content_hash(variant, "u1") == content_hash("I like tea", "u1")
    assert content_hash(variant, "u2") != content_hash("I like tea", "u1")


def test_hash_owner_and_text_cannot_collide_by_concatenation() -> None:
    assert content_hash("b c", "a") != content_hash("c", "a b")
    assert content_hash("x", None) != content_hash("x", "\x00")
    assert normalize_fact("\x00 NUL ") == "\x00 nul"


async def test_exact_duplicates_are_not_written_twice() -> None:
    memory = Memory(InMemoryBackend())
    first = await memory.remember_fact("The user likes green tea", user_id="u1")
    count = await memory.count()
    again = await memory.remember_fact("the user likes GREEN tea.", user_id="u1")
    assert again.status == "duplicate" and again.record.id == first.record.id
    assert await memory.count() == count
    other = await memory.remember_fact("The user likes green tea", user_id="u2")
    assert other.status == "added" and other.record.id != first.record.id


@pytest.mark.parametrize(
    "old, new, duplicate",
    [
        ("User's favourite colour is blue", "User's favorite color is blue", True),
        ("Caroline is a counselor", "Caroline works as a counselor", True),
        ("User's favourite colour is blue", "User's favourite colour is red", False),
        ("User has two cats", "User has two dogs", False),
        ("The user lives in Paris", "The user lives in Berlin", False),
    ],
)
async def test_near_duplicates_by_cosine_with_the_real_model(local_embedder, old, new, duplicate) -> None:
    """The pairs that set NEAR_DUPLICATE_COSINE (all-MiniLM-L6-v2): paraphrases above it,
    contradictions below it."""
    memory = Memory(InMemoryBackend(embedder=local_embedder))
    await memory.remember_fact(old, user_id="u1")
    result = await memory.remember_fact(new, user_id="u1")
    assert (result.status == "near_duplicate") is duplicate, (old, new, NEAR_DUPLICATE_COSINE)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"text": ""}, InvalidInputError),
        ({"text": "   "}, InvalidInputError),
        ({"text": 3}, InvalidInputTypeError),
        ({"text": "x", "importance": 1.5}, InvalidInputError),
        ({"text": "x", "importance": math.nan}, InvalidInputError),
        ({"text": "x", "kind": "episode"}, InvalidInputError),
        ({"text": "x", "subject": 5}, InvalidInputTypeError),
        ({"text": "x", "valid_from": datetime(2024, 1, 1)}, InvalidInputError),
        ({"text": "x", "user_id": ""}, InvalidInputError),
    ],
)
async def test_bad_facts_are_refused_and_nothing_is_stored(kwargs, error) -> None:
    memory = Memory(InMemoryBackend())
    kwargs = {"user_id": "u1", **kwargs}
    text = kwargs.pop("text")
    with pytest.raises(error):
        await memory.remember_fact(text, **kwargs)
    assert await memory.count() == 0


# -- validity ---------------------------------------------------------------------------------


def test_visibility_rules() -> None:
    now = T0 + timedelta(days=10)

    def rec(**md):
        return MemoryRecord(text="x", created_at=T0, metadata=md)

    assert visible(rec(), now, None, False)
    assert not visible(rec(valid_to=(T0 + timedelta(days=1)).isoformat()), now, None, False)
    assert visible(rec(valid_to=(T0 + timedelta(days=1)).isoformat()), now, None, True)
    assert visible(rec(valid_to=(now + timedelta(days=1)).isoformat()), now, None, False)  # ends later
    assert not visible(rec(internal=True, kind="subject_index"), now, None, True)
    assert visible(rec(internal=True), now, None, False)  # a user's own key never hides a memory
    assert visible(rec(internal="yes", kind="session_chain"), now, None, False)
    # as_of: known and true at that time
    assert not visible(rec(), now, T0 - timedelta(days=1), False)
    assert visible(rec(valid_from=(T0 - timedelta(days=30)).isoformat()), now, T0 - timedelta(days=1), False)
    assert not visible(rec(valid_to=T0.isoformat()), now, T0, False)
    # damaged timestamps make a record undated, never a crash
    assert visible(rec(valid_to="not a date", valid_from=17), now, None, False)
    assert visible(rec(valid_to=["x"]), now, T0, False)


async def test_as_of_needs_an_aware_datetime() -> None:
    memory = Memory(InMemoryBackend())
    with pytest.raises(InvalidInputError):
        await memory.search("x", as_of=datetime(2024, 1, 1))
    with pytest.raises(InvalidInputError):
        await memory.search("x", include_superseded="yes")


async def test_many_superseded_facts_never_starve_a_search() -> None:
    """Refetching when filtering removed hits: 30 superseded versions rank above the live one."""
    memory = Memory(InMemoryBackend())
    for i in range(30):
        await memory.remember_fact(f"city city city city version {i}", user_id="u1", subject="city")
    await memory.remember_fact("the city now", user_id="u1", subject="city")
    hits = (await memory.search("city", user_id="u1", limit=1)).hits
    assert [h.record.text for h in hits] == ["the city now"]


# -- forgetting -------------------------------------------------------------------------------


async def _seed(memory: Memory, clock) -> None:
    for i in range(6):
        await memory.add([MemoryRecord(text=f"u1 memory {i}", id=f"a{i}", user_id="u1", ttl=math.inf,
                                       metadata={"importance": i / 10})])
        clock.advance(86400)
    await memory.add([MemoryRecord(text="u2 memory", id="b0", user_id="u2", ttl=math.inf)])
    await memory.remember_fact("u1 lives here", user_id="u1", subject="home")  # writes a bookkeeping record


async def test_forget_by_budget_keeps_the_most_important_and_recent(clock) -> None:
    memory = Memory(InMemoryBackend(clock=clock))
    await _seed(memory, clock)
    dry = await memory.forget(ForgetPolicy(max_per_user=3), user_id="u1")
    assert dry.dry_run and dry.deleted == 0
    assert sorted(i for i, _, _ in dry.selected) == ["a0", "a1", "a2", "a3"]  # fact (0.5) + a5 + a4 kept
    assert all(reason == "over_budget" for _, _, reason in dry.selected)
    assert await memory.get("a0") is not None
    done = await memory.forget(ForgetPolicy(max_per_user=3), user_id="u1", dry_run=False)
    assert done.deleted == 4 and await memory.get("a0") is None and await memory.get("a5") is not None
    assert await memory.get("b0") is not None  # another user is untouched
    # the bookkeeping record is never selected, so supersession still works afterwards
    later = await memory.remember_fact("u1 lives there", user_id="u1", subject="home")
    assert len(later.superseded) == 1


async def test_forget_by_age_and_inactivity(clock) -> None:
    memory = Memory(InMemoryBackend(clock=clock))
    await _seed(memory, clock)
    def now():
        return datetime.fromtimestamp(clock(), timezone.utc)

    aged = await memory.forget(ForgetPolicy(max_age_s=3.5 * 86400), dry_run=False, now=now())
    assert sorted(i for i, _, _ in aged.selected) == ["a0", "a1", "a2"]
    assert {r for _, _, r in aged.selected} == {"max_age"}
    clock.advance(10 * 86400)
    await memory.add([MemoryRecord(text="fresh", id="fresh", user_id="u1", ttl=math.inf)])
    idle = await memory.forget(ForgetPolicy(max_inactive_s=5 * 86400), now=now())
    assert "fresh" not in {i for i, _, _ in idle.selected} and "b0" in {i for i, _, _ in idle.selected}


async def test_forget_policy_is_validated() -> None:
    with pytest.raises(InvalidInputError):
        ForgetPolicy()
    with pytest.raises(InvalidInputError):
        ForgetPolicy(max_age_s=-1)
    with pytest.raises(InvalidInputError):
        ForgetPolicy(max_per_user=-1)
    memory = Memory(InMemoryBackend())
    with pytest.raises(InvalidInputTypeError):
        await memory.forget({"max_age_s": 1})  # type: ignore[arg-type]


# -- working-memory summaries -----------------------------------------------------------------


async def _long_session(memory: Memory, n: int = 12) -> list[Message]:
    msgs = [Message("user" if i % 2 == 0 else "assistant", f"message {i}: " + "words " * 40, T0 + timedelta(minutes=i))
            for i in range(n)]
    await memory.append_messages("s1", msgs)
    return msgs


async def test_summary_replaces_older_messages_and_keeps_the_last_n() -> None:
    llm = ScriptedLLM([{"summary": "They counted words."}])
    memory = Memory(InMemoryBackend(), llm=llm)
    msgs = await _long_session(memory)
    under = await memory.summarize_session("s1", threshold_tokens=100_000)
    assert under.summarized == 0 and llm.calls == []
    report = await memory.summarize_session("s1", threshold_tokens=200, keep_last=4)
    assert report.summarized == 8 and report.tokens_after < report.tokens_before
    now = await memory.get_messages("s1")
    assert now[0].role == "system" and "They counted words." in now[0].content
    assert [m.content for m in now[1:]] == [m.content for m in msgs[-4:]]
    record = await memory.get(report.record_id)
    assert record.text == "They counted words." and record.metadata["pending"] is False
    # rolling: the previous summary is summarised again with the messages after it
    await memory.append_messages("s1", [Message("user", "more " * 100, T0 + timedelta(hours=1))])
    llm.push({"summary": "Still counting."})
    again = await memory.summarize_session("s1", threshold_tokens=150, keep_last=1)
    assert "They counted words." in llm.calls[-1][1]["content"] and again.summarized == 5


async def test_summary_without_llm_or_with_a_bad_answer_changes_nothing() -> None:
    memory = Memory(InMemoryBackend())
    msgs = await _long_session(memory)
    with pytest.raises(ConfigurationError):
        await memory.summarize_session("s1", threshold_tokens=10)
    memory.llm = ScriptedLLM([{"summary": ""}])
    with pytest.raises(LLMResponseError):
        await memory.summarize_session("s1", threshold_tokens=10)
    assert [m.content for m in await memory.get_messages("s1")] == [m.content for m in msgs]
    with pytest.raises(InvalidInputError):
        await memory.summarize_session("s1", threshold_tokens=0)


async def test_summary_interrupted_after_clearing_is_recovered() -> None:
    """A process that dies between clearing and refilling the session: the next call puts the
    acknowledged messages back from the pending summary record."""
    llm = ScriptedLLM([{"summary": "Summary A."}])
    memory = Memory(InMemoryBackend(), llm=llm)
    msgs = await _long_session(memory)
    real_append = memory.backend.append_messages

    async def die(*a, **k):
        raise KeyboardInterrupt("killed")

    memory.backend.append_messages = die  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        await memory.summarize_session("s1", threshold_tokens=200, keep_last=3)
    assert await memory.get_messages("s1") == []
    memory.backend.append_messages = real_append  # type: ignore[method-assign]
    report = await memory.summarize_session("s1", threshold_tokens=100_000)
    assert report.restored == 4
    restored = await memory.get_messages("s1")
    assert "Summary A." in restored[0].content and [m.content for m in restored[1:]] == [m.content for m in msgs[-3:]]


async def test_summary_is_abandoned_when_the_session_changed_meanwhile() -> None:
    memory = Memory(InMemoryBackend(working_memory_size=12))

    async def answer_and_interfere(messages):
        await memory.append_messages("s1", [Message("user", "a new message that pushes out the oldest")])
        return '{"summary": "stale"}'

    from primitives.llm import as_llm

    memory.llm = as_llm(answer_and_interfere)
    await _long_session(memory)
    report = await memory.summarize_session("s1", threshold_tokens=200, keep_last=2)
    assert report.summarized == 0
    assert all("stale" not in m.content for m in await memory.get_messages("s1"))


async def test_summaries_are_typed_records_not_in_default_episode_search() -> None:
    llm = ScriptedLLM([{"summary": "They counted words."}])
    memory = Memory(InMemoryBackend(), llm=llm)
    await _long_session(memory)
    report = await memory.summarize_session("s1", threshold_tokens=200, keep_last=2)
    rec = await memory.get(report.record_id)
    assert rec.memory_type is MemoryType.SEMANTIC and rec.metadata["kind"] == "summary"
    episodes = await memory.search("counted words", memory_type="episodic")
    assert episodes.hits == []


async def test_summary_waits_while_the_backend_is_degraded(tmp_path) -> None:
    """A session cleared on the fallback during an outage would not be cleared on the server."""
    from primitives.memory import ResilientBackend
    from primitives.memory.redis_backend import RedisBackend
    from primitives.memory.resilient.outbox import Outbox
    from primitives.tooling.localredis import free_port

    dead = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", prefix="gone:", socket_connect_timeout=0.2)
    llm = ScriptedLLM([{"summary": "never used"}])
    memory = Memory(ResilientBackend(dead, outbox=Outbox(tmp_path / "outbox.db")), llm=llm)
    msgs = await _long_session(memory)
    report = await memory.summarize_session("s1", threshold_tokens=200, keep_last=2)
    assert report.summarized == 0 and report.skipped == "backend degraded" and llm.calls == []
    assert [m.content for m in await memory.get_messages("s1")] == [m.content for m in msgs]
    await memory.aclose()
