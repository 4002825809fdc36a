"""``bench agent``: the prompt context and extraction's LLM calls, in process.

Context workload (deterministic for a seed): ``memories`` records over 50 users, 30 words each
from a 20,000-word pseudo-word vocabulary (as ``bench inmemory``): 40% plain episodic memories,
20% task episodes, 30% facts, 10% skills; each user has a session of 20 messages. Each timed
call is ``Memory.context(query, user_id=..., session_id=..., budget_tokens=1000)`` with a query
built from a stored record's words (as ``bench inmemory``'s hit queries), with the cache off
(``uncached``) and then again for the same queries with it on (``cached``). ``search_ms`` is
one ``Memory.search`` of the same queries, for scale: a context runs three searches, reads the
session and counts tokens.

Extraction workload: the LoCoMo conversations given, every session's turns in working memory,
then ``Memory.extract`` per session with a deterministic stand-in LLM (it turns each message into
one fact on a subject taken from its first word, and answers "add" to every decision). It
measures this package's call pattern, not a model: ``llm_calls_per_batch`` is (extraction calls +
decision calls) / batches.
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

from primitives.evaluation.bench import VOCABULARY_SIZE, WORDS_PER_TEXT, make_vocabulary
from primitives.evaluation.locomo import percentile
from primitives.memory.facade import Memory
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.kinds import KIND
from primitives.memory.record import MemoryRecord, MemoryType, Message

__all__ = ["run_agent_bench", "StandInLLM"]

USERS = 50
SESSION_MESSAGES = 20


def _record(i: int, text: str, user: str) -> MemoryRecord:
    kind = i % 10
    if kind < 4:
        return MemoryRecord(text=text, id=f"m{i}", user_id=user, ttl=math.inf)
    if kind < 6:
        words = text.split()
        return MemoryRecord(
            text=text, id=f"m{i}", user_id=user, ttl=math.inf, memory_type=MemoryType.EPISODIC,
            metadata={KIND: "episode", "task_prompt": " ".join(words[:10]), "outcome": " ".join(words[10:20]),
                      "success": i % 3 != 0, "duration_seconds": 12.0, "importance": 0.5})
    if kind < 9:
        return MemoryRecord(text=text, id=f"m{i}", user_id=user, ttl=math.inf, memory_type=MemoryType.SEMANTIC,
                            metadata={KIND: "fact", "importance": 0.5})
    words = text.split()
    return MemoryRecord(
        text=text, id=f"m{i}", user_id=user, ttl=math.inf, memory_type=MemoryType.SKILL,
        metadata={KIND: "skill", "skill_name": words[0], "description": " ".join(words[1:10]),
                  "action_sequence": words[10:15]})


async def _context_bench(memories: int, queries: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    backend = InMemoryBackend(maxsize=memories + 10)
    memory = Memory(backend, context_cache_ttl=0)
    sample: list[tuple[str, str]] = []
    batch: list[MemoryRecord] = []
    for i in range(memories):
        text = " ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT))
        user = f"user-{i % USERS}"
        if i % max(1, memories // 500) == 0:
            sample.append((text, user))
        batch.append(_record(i, text, user))
        if len(batch) == 1000 or i == memories - 1:
            await backend.add(batch)
            batch = []
    for u in range(USERS):
        await memory.append_messages(f"session-{u}", [
            Message("user" if j % 2 == 0 else "assistant", " ".join(rng.choices(vocabulary, k=12)))
            for j in range(SESSION_MESSAGES)])
    qs = []
    for _ in range(queries):
        text, user = rng.choice(sample)
        qs.append((f"what do you remember about {' '.join(rng.sample(text.split(), 3))}?", user))
    await memory.context("warm up", user_id="user-0", session_id="session-0")  # loads the tokenizer
    uncached, searches, tokens = [], [], []
    for q, user in qs:
        sid = f"session-{user.split('-')[1]}"
        t0 = time.perf_counter()
        built = await memory.context(q, user_id=user, session_id=sid, budget_tokens=1000)
        uncached.append(time.perf_counter() - t0)
        tokens.append(built.tokens)
        t0 = time.perf_counter()
        await memory.search(q, user_id=user, limit=3)
        searches.append(time.perf_counter() - t0)
    cached_memory = Memory(backend)
    for q, user in qs:
        await cached_memory.context(q, user_id=user, session_id=f"session-{user.split('-')[1]}")
    cached = []
    for q, user in qs:
        t0 = time.perf_counter()
        await cached_memory.context(q, user_id=user, session_id=f"session-{user.split('-')[1]}")
        cached.append(time.perf_counter() - t0)
    await backend.aclose()

    def ms(xs: list[float]) -> dict[str, float]:
        return {"p50": round(percentile(xs, 50) * 1e3, 4), "p99": round(percentile(xs, 99) * 1e3, 4)}

    return {"memories": memories, "queries": queries, "context_ms": {"uncached": ms(uncached), "cached": ms(cached)},
            "search_ms": ms(searches), "context_tokens_p50": percentile([float(t) for t in tokens], 50)}


class StandInLLM:
    """A deterministic stand-in for a chat model (see the module docstring)."""

    model = "stand-in"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, messages: Any, *, json_mode: bool = False, max_tokens: Any = None, temperature: float = 0.0) -> str:
        self.calls += 1
        content = messages[-1]["content"]
        if messages[0]["content"].startswith("You maintain"):
            listing = json.loads(content)
            return json.dumps({"decisions": [{"new": item["new"], "action": "add", "ids": []} for item in listing]})
        memories = []
        for line in content.splitlines():
            text = line.split(": ", 1)[-1].strip()
            if text:
                memories.append({"text": text[:300], "subject": text.split()[0].lower()[:40], "importance": 0.5})
        return json.dumps({"memories": memories[:50]})


async def _extraction_bench(conversations: list[Any]) -> dict[str, Any]:
    llm = StandInLLM()
    memory = Memory(InMemoryBackend(working_memory_size=1000), llm=llm, context_cache_ttl=0)
    batches = added = superseded = messages = 0
    t0 = time.perf_counter()
    for conv in conversations:
        user = f"locomo-{conv.name}"
        by_session: dict[int, list[Any]] = {}
        for turn in conv.turns:
            by_session.setdefault(turn.session, []).append(turn)
        for session, turns in sorted(by_session.items()):
            sid = f"{user}-s{session}"
            await memory.append_messages(sid, [
                Message("user", t.text, t.session_date, {"speaker": t.speaker}) for t in turns])
            report = await memory.extract(sid, user_id=user)
            batches += report.batches
            added += report.added
            superseded += report.superseded
            messages += report.messages
    seconds = time.perf_counter() - t0
    return {"sessions_messages": messages, "batches": batches, "llm_calls": llm.calls,
            "llm_calls_per_batch": round(llm.calls / batches, 3) if batches else 0.0,
            "facts_added": added, "facts_superseded": superseded, "seconds": round(seconds, 2)}


async def run_agent_bench(memories: int, *, queries: int = 1000, seed: int = 0, locomo: list[Any] | None = None) -> dict[str, Any]:
    """Run both workloads; returns a JSON-ready report (``context`` and, with conversations,
    ``extraction``)."""
    report: dict[str, Any] = {"context": await _context_bench(memories, queries, seed)}
    if locomo:
        report["extraction"] = await _extraction_bench(locomo)
    return report
