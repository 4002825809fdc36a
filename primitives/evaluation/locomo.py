"""Evidence recall@k of memory search on LoCoMo conversations.

LoCoMo: Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents",
ACL 2024. Each file is one conversation (``session_N`` turn lists, ``session_N_date_time``) with
questions whose ``evidence`` lists the dialogue ids (``D<session>:<turn>``) that answer them.

Recall@k of a question = |evidence ∩ top-k retrieved dialogue ids| / |evidence|, averaged over
the questions that have at least one valid evidence id. An evidence id is valid when it is exactly
``D<n>:<m>`` and names a turn of the conversation; the others are counted in
``malformed_evidence`` and left out of the denominator.
"""

from __future__ import annotations

import asyncio
import dataclasses

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from primitives.core.context import WorkflowContext
from primitives.errors import InvalidInputError
from primitives.memory.facade import Memory
from primitives.memory.ranking import RankingSignals
from primitives.memory.workflow import MemoryPrimitive, RememberPrimitive

__all__ = [
    "CATEGORY_NAMES",
    "Conversation",
    "Question",
    "Turn",
    "evaluate_locomo",
    "load_conversation",
    "load_conversations",
    "percentile",
    "remove_throwaway_store",
]

#: LoCoMo's question categories (see the dataset's README).
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}

_SESSION = re.compile(r"session_(\d+)")
_DIA_ID = re.compile(r"D\d+:\d+")
_DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


@dataclass(frozen=True, slots=True)
class Turn:
    """One dialogue turn: ``dia_id`` like ``"D1:3"``, the session's start time if parseable."""

    dia_id: str
    speaker: str
    text: str
    session: int
    session_date: datetime | None


@dataclass(frozen=True, slots=True)
class Question:
    """A question with its valid evidence ids and how many of its ids were malformed."""

    question: str
    category: int
    evidence: tuple[str, ...]
    malformed: int


@dataclass(slots=True)
class Conversation:
    """One LoCoMo file: ``name`` is the file stem, turns in session then turn order."""

    name: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)

    @property
    def malformed_evidence(self) -> int:
        return sum(q.malformed for q in self.questions)


def _parse_date(raw: object) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip(), _DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def load_conversation(path: str | Path) -> Conversation:
    """Read one LoCoMo conversation file.

    A turn's ``text`` gets its shared image's caption appended as ``" [shares an image: ...]"``
    when the turn has a ``blip_caption``: the image is part of what the speaker said.

    Raises:
        InvalidInputError: the file is not JSON or not a LoCoMo conversation.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict) and "conversation" in data:  # the locomo10.json list-item shape
        data = {**data["conversation"], "qa": data.get("qa", [])}
    if not isinstance(data, dict) or "qa" not in data:
        raise InvalidInputError(f"{path}: not a LoCoMo conversation (no 'qa' list)")
    conversation = Conversation(name=path.stem)
    sessions = sorted(
        (int(m.group(1)), key) for key in data if (m := _SESSION.fullmatch(key)) is not None
    )
    for number, key in sessions:
        date = _parse_date(data.get(f"{key}_date_time"))
        for raw in data[key]:
            text = str(raw.get("text", ""))
            caption = raw.get("blip_caption")
            if isinstance(caption, str) and caption:
                text = f"{text} [shares an image: {caption}]"
            conversation.turns.append(
                Turn(str(raw["dia_id"]), str(raw.get("speaker", "")), text, number, date)
            )
    known = {t.dia_id for t in conversation.turns}
    for raw in data["qa"]:
        valid: list[str] = []
        malformed = 0
        for ev in raw.get("evidence") or []:
            if isinstance(ev, str) and _DIA_ID.fullmatch(ev) and ev in known:
                if ev not in valid:
                    valid.append(ev)
            else:
                malformed += 1
        conversation.questions.append(
            Question(str(raw.get("question", "")), int(raw.get("category", 0)), tuple(valid), malformed)
        )
    return conversation


def load_conversations(data_dir: str | Path) -> list[Conversation]:
    """Every ``*.json`` LoCoMo file in ``data_dir``, by file name.

    Raises:
        InvalidInputError: the directory does not exist or holds no ``*.json`` file.
    """
    directory = Path(data_dir)
    if not directory.is_dir():
        raise InvalidInputError(f"--data {directory}: no such directory")
    files = sorted(directory.glob("*.json"))
    if not files:
        raise InvalidInputError(f"--data {directory}: no *.json LoCoMo files in it")
    return [load_conversation(f) for f in files]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` by linear interpolation (numpy's default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def _together(work: Callable[[], Awaitable[int]], workers: int) -> int:
    """Run ``workers`` copies of ``work`` at once; the sum of what they return. The first
    failure cancels the others and is raised as itself (not as an ``ExceptionGroup``)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(work()) for _ in range(workers)]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return sum(task.result() for task in tasks)


async def evaluate_locomo(
    conversations: Sequence[Conversation],
    memory_factory: Callable[[], Memory],
    *,
    ks: Sequence[int] = (5, 10),
    progress: Callable[[int], None] | None = None,
    mode: str | None = None,
    ranking: RankingSignals | None = None,
    ingest_concurrency: int = 1,
) -> dict[str, Any]:
    """Ingest every turn through ``RememberPrimitive``, ask every question through
    ``MemoryPrimitive``, and measure evidence recall@k.

    One fresh memory (``memory_factory()``) holds the whole run; each conversation is its own
    namespace and user (``locomo-<file stem>``) and each of its sessions its own ``session_id``. Each turn
    is stored with its speaker, its session's date as ``created_at`` and its ``dia_id`` in
    metadata.

    Args:
        conversations: From :func:`load_conversations`.
        memory_factory: Makes the memory to fill (closed at the end).
        ks: Cut-offs, each ``>= 1``.
        progress: Called with 1 after each turn stored and each question asked.
        mode: Search mode (``"keyword"``, ``"vector"``, ``"hybrid"``; ``None``: the backend's
            default), reported as ``mode``.
        ranking: Recency/importance signals for the questions (reported as ``ranking``); ages
            are measured from the conversation's last session date (the questions come after it).
        ingest_concurrency: Sessions of a conversation stored at once (an int >= 1; default 1,
            every turn after the one before). Turns of one session are always stored in order
            (each turn's record keeps the turn before it as context); the sessions of one
            conversation are independent of each other, and concurrent ``remember`` calls share
            embedding model calls (:mod:`primitives.embeddings.batching`). Reported as
            ``ingest_concurrency``.

    Returns:
        A JSON-ready dict: ``backend``, ``conversations``, ``turns``, ``questions`` (with valid
        evidence, the denominator), ``questions_skipped`` (no valid evidence), ``recall_at_k``
        (``{"5": 0.61, ...}``), ``recall_at_k_by_category`` (``{"temporal": {"5": ...}, ...}``),
        ``questions_by_category``, ``ingest_per_s`` (turns/s through the pipeline step; loading
        the embedding model and its first call happen before the clock starts),
        ``search_ms`` (``{"p50", "p99"}`` of one ``MemoryPrimitive`` call), ``malformed_evidence``,
        ``degraded_calls``, ``ingest_concurrency``, ``embedding_model_calls`` (model calls of the
        whole run, questions included; ``None`` without an embedder).

    Raises:
        InvalidInputError: a k is < 1, or ``ingest_concurrency`` is not an int >= 1.
    """
    ks = sorted(set(ks))
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise InvalidInputError(f"every k must be an int >= 1, got {list(ks)!r}")
    if isinstance(ingest_concurrency, bool) or not isinstance(ingest_concurrency, int) or ingest_concurrency < 1:
        raise InvalidInputError(f"ingest_concurrency must be an int >= 1, got {ingest_concurrency!r}")
    memory = memory_factory()
    remember = RememberPrimitive(memory)
    recall = MemoryPrimitive(memory, limit=max(ks), working_memory_limit=1, mode=mode)
    sums = {k: 0.0 for k in ks}
    by_cat: dict[str, dict[int, float]] = {}
    count_by_cat: dict[str, int] = {}
    latencies: list[float] = []
    asked = skipped = turns = degraded = 0
    backends: set[str] = set()
    ingest_seconds = 0.0
    try:
        embedder = memory.backend.embedder
        if embedder is not None:
            # loading the model and its first call stay off the ingest clock (as for the peer
            # driven by benchmarks/mem0_ingest.py); counted in embedding_model_calls
            await embedder.embed_documents(["warm up"])
        for conv in conversations:
            namespace = f"locomo-{conv.name}"
            # one user per conversation: its two speakers share one memory
            scope = {"namespace": namespace, "user_id": namespace}
            sessions: dict[int, list[Turn]] = {}
            for turn in conv.turns:
                sessions.setdefault(turn.session, []).append(turn)
            pending = list(sessions.items())
            pending.reverse()  # popped from the end: first session first

            async def ingest(namespace: str = namespace, scope: dict[str, str] = scope) -> int:
                stored = 0
                while pending:
                    session, session_turns = pending.pop()
                    ctx = WorkflowContext(session_id=f"{namespace}-s{session}", metadata=scope)
                    for turn in session_turns:
                        await remember.execute(
                            {
                                "query": turn.text,
                                "speaker": turn.speaker,
                                "created_at": turn.session_date,
                                "metadata": {"dia_id": turn.dia_id},
                            },
                            ctx,
                        )
                        stored += 1
                        if progress:
                            progress(1)
                return stored

            start = time.perf_counter()
            workers = min(ingest_concurrency, len(pending)) or 1
            turns += await ingest() if workers == 1 else await _together(ingest, workers)
            ingest_seconds += time.perf_counter() - start
            ask_ctx = WorkflowContext(metadata=scope)
            if ranking is not None:
                last = max((t.session_date for t in conv.turns if t.session_date is not None), default=None)
                recall.ranking = dataclasses.replace(ranking, now=last)
            for q in conv.questions:
                if progress:
                    progress(1)
                if not q.evidence:
                    skipped += 1
                    continue
                t0 = time.perf_counter()
                out = await recall.execute({"query": q.question}, ask_ctx)
                latencies.append(time.perf_counter() - t0)
                backends.add(out["memory_backend"])
                degraded += bool(out["degraded"])
                retrieved = [m["metadata"].get("dia_id") for m in out["relevant_memories"]]
                evidence = set(q.evidence)
                cat = CATEGORY_NAMES.get(q.category, str(q.category))
                cat_sums = by_cat.setdefault(cat, {k: 0.0 for k in ks})
                count_by_cat[cat] = count_by_cat.get(cat, 0) + 1
                for k in ks:
                    r = len(evidence.intersection(retrieved[:k])) / len(evidence)
                    sums[k] += r
                    cat_sums[k] += r
                asked += 1
        resolved_mode = mode or memory.backend.default_search_mode
    finally:
        await memory.aclose()
    return {
        "backend": ", ".join(sorted(backends)) or memory.backend_name,
        "mode": resolved_mode,
        "embedding_model": embedder.model if embedder is not None else None,
        "conversations": len(conversations),
        "turns": turns,
        "questions": asked,
        "questions_skipped": skipped,
        "recall_at_k": {str(k): round(sums[k] / asked, 4) if asked else 0.0 for k in ks},
        "recall_at_k_by_category": {
            cat: {str(k): round(v / count_by_cat[cat], 4) for k, v in sorted(s.items())}
            for cat, s in sorted(by_cat.items())
        },
        "questions_by_category": dict(sorted(count_by_cat.items())),
        "ingest_per_s": round(turns / ingest_seconds, 1) if ingest_seconds else 0.0,
        "ingest_concurrency": ingest_concurrency,
        "embedding_model_calls": embedder.stats.model_calls if embedder is not None else None,
        "search_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 3),
            "p99": round(percentile(latencies, 99) * 1000, 3),
        },
        "malformed_evidence": sum(c.malformed_evidence for c in conversations),
        "degraded_calls": degraded,
        "ranking": None if ranking is None else {
            "recency_half_life_s": ranking.recency_half_life_s,
            "recency_weight": ranking.recency_weight,
            "importance_weight": ranking.importance_weight,
        },
    }


async def remove_throwaway_store(memory: Memory, env: Mapping[str, str]) -> int:
    """Delete everything an evaluation run stored: the memory's store (``backend.drop()``: the
    index with its records, the in-process copy, an Agent Memory Server namespace), then, when
    ``REDIS_URL`` is set, every key left under ``MEMORY_REDIS_PREFIX`` on that Redis (the change
    feed's stream ``{prefix}changes``, working-memory lists, tombstones, anything else), found by
    ``SCAN MATCH`` (never ``KEYS``) and removed by ``UNLINK`` in batches of 500. Call it from a
    ``finally`` so an interrupted run cleans up too.

    Args:
        memory: A memory made by ``Memory.from_env(env)`` (its backend is dropped; it is not closed).
        env: The run's environment; its ``MEMORY_REDIS_PREFIX`` must be the run's own prefix.

    Returns:
        How many keys the scan removed after the drop.

    Raises:
        InvalidInputError: ``REDIS_URL`` is set but ``MEMORY_REDIS_PREFIX`` is not (refusing to
            scan-delete the default prefix, which other stores share).
        BackendUnavailableError, PrimitivesError: the store could not be reached or dropped.
    """
    await memory.backend.drop()
    url = env.get("REDIS_URL")
    if not url:
        return 0
    # imported only now: the core install (no redis-py) runs the evaluation in process
    from primitives.redis_connection import cluster_from_env, connect, redis_errors_mapped
    from primitives.store.keys import glob_escape

    prefix = env.get("MEMORY_REDIS_PREFIX") or ""
    if not prefix:
        raise InvalidInputError("remove_throwaway_store needs the run's own MEMORY_REDIS_PREFIX; none is set")
    client = connect(url, cluster=cluster_from_env(env))
    removed = 0
    try:
        async with redis_errors_mapped("Redis", client):
            batch: list[bytes] = []
            async for key in client.scan_iter(match=glob_escape(prefix) + "*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    removed += await client.unlink(*batch)
                    batch = []
            if batch:
                removed += await client.unlink(*batch)
    finally:
        await client.aclose()
    return removed
