"""Fact lifecycle: deduplication, supersession and validity of semantic memories.

A *fact* is a semantic record with ``metadata["kind"]`` ``"fact"`` (or ``"preference"``,
``"insight"``, ...), a ``content_hash``, optionally a ``subject`` (what it is about: "residence",
"favourite colour") and a validity interval (see :mod:`primitives.memory.kinds`).

Writing a fact (:func:`remember_fact`, :func:`remember_facts`):

1. **Exact duplicate**: the same user already has an active fact with the same normalised text
   (:func:`~primitives.memory.kinds.content_hash`): nothing is written.
2. **Near duplicate** (only with an embedder and no LLM): an active fact of the user whose cosine
   similarity to the new one is ``>= NEAR_DUPLICATE_COSINE``: nothing is written.
3. **Supersession**: with an LLM, one call per batch decides for each new fact whether it repeats,
   updates (supersedes) or adds to the user's candidate facts (those on the same subject and the
   closest by search). Without one, a new fact supersedes the user's active facts on the same
   ``subject``. A superseded fact is rewritten with ``valid_to`` (the new fact's ``valid_from``)
   and ``superseded_by``; it is never deleted.

Write order (a crash between steps leaves both facts active, never loses one): the new fact, then
the subject index, then the old facts' ``valid_to``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from primitives.errors import InvalidInputError, LLMResponseError
from primitives.memory.kinds import INTERNAL, KIND, content_hash, fact_subject, iso, parse_time
from primitives.memory.record import MemoryRecord, MemoryType
from primitives.validation import check_number, check_text

if TYPE_CHECKING:
    from primitives.memory.facade import Memory

__all__ = ["FACT_KINDS", "NEAR_DUPLICATE_COSINE", "NewFact", "FactWrite", "remember_facts", "subject_index_id"]

#: Kinds of semantic memory that dedup and supersession apply to.
FACT_KINDS = ("fact", "preference", "insight", "summary", "custom")

#: Cosine similarity at or above which two facts are the same fact in other words (with an
#: embedder, without an LLM). Measured with all-MiniLM-L6-v2: paraphrases 0.97 ("favourite
#: colour"/"favorite color", "is a counselor"/"works as a counselor"), while facts that contradict
#: each other stay at or below 0.83 ("... is blue"/"... is red" 0.83, "two cats"/"two dogs" 0.78,
#: "lives in Paris"/"lives in Berlin" 0.65); tests/test_facts.py keeps those pairs on each side.
NEAR_DUPLICATE_COSINE = 0.90

#: Active facts kept per subject in the subject index (older entries are dropped from the index).
MAX_SUBJECT_FACTS = 100
#: Candidate facts the LLM is shown per new fact.
CANDIDATES_PER_FACT = 5


@dataclass(frozen=True, slots=True)
class NewFact:
    """One fact to write.

    Attributes:
        text: The fact, one self-contained sentence.
        subject: What it is about, or ``None`` (then only an LLM can supersede with it).
        kind: One of :data:`FACT_KINDS`.
        importance: ``0.0``..``1.0``.
        valid_from: When it became true (default: now).
        topics: Extra topics.
        provenance: Where it came from (JSON object).
        id: The record id (default: derived from the user and the text, so a re-run writes the same record).
    """

    text: str
    subject: str | None = None
    kind: str = "fact"
    importance: float = 0.5
    valid_from: datetime | None = None
    topics: tuple[str, ...] = ()
    provenance: Mapping[str, Any] | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class FactWrite:
    """What happened to one new fact.

    Attributes:
        status: ``"added"``, ``"duplicate"`` (an active fact already says it) or
            ``"near_duplicate"``.
        record: The stored record (``"added"``), or the existing fact it duplicates.
        superseded: Ids of the facts it superseded.
    """

    status: str
    record: MemoryRecord
    superseded: tuple[str, ...] = ()


def check_new_fact(fact: NewFact) -> NewFact:
    """Validate one :class:`NewFact` at the edge.

    Raises:
        InvalidInputError: empty text, a kind outside :data:`FACT_KINDS`, importance outside
            ``[0, 1]``, a naive ``valid_from``; ``InvalidInputTypeError`` for wrong types.
    """
    text = check_text(fact.text, "fact text")
    if not text.strip():
        raise InvalidInputError("a fact's text must not be empty")
    if fact.kind not in FACT_KINDS:
        raise InvalidInputError(f"fact kind must be one of {', '.join(FACT_KINDS)}, got {fact.kind!r}")
    check_number(fact.importance, "importance", minimum=0.0, maximum=1.0)
    if fact.subject is not None:
        check_text(fact.subject, "subject")
    if fact.valid_from is not None and (
        not isinstance(fact.valid_from, datetime) or fact.valid_from.utcoffset() is None
    ):
        raise InvalidInputError("valid_from must be a timezone-aware datetime")
    return fact


def subject_index_id(user_id: str | None, subject: str) -> str:
    """Id of the bookkeeping record listing a user's active facts on ``subject``."""
    return "subject-" + content_hash(subject, user_id)[:40]


def _active(record: MemoryRecord, now: datetime) -> bool:
    valid_to = parse_time(record.metadata.get("valid_to"))
    return valid_to is None or valid_to > now


async def _subject_facts(memory: Memory, ns: str, user_id: str | None, subject: str) -> tuple[MemoryRecord | None, list[MemoryRecord]]:
    index = await memory.get(subject_index_id(user_id, subject), namespace=ns)
    if index is None:
        return None, []
    ids = [i for i in index.metadata.get("fact_ids", ()) if isinstance(i, str)]
    found = [await memory.get(i, namespace=ns) for i in ids]
    now = datetime.now(timezone.utc)
    return index, [r for r in found if r is not None and _active(r, now)]


async def _cosine(memory: Memory, a: str, texts: list[str]) -> list[float]:
    embedder = getattr(memory.backend, "embedder", None)
    if embedder is None or not texts:
        return [0.0] * len(texts)
    vectors = await embedder.embed_tuples([a, *texts])
    first = vectors[0]
    return [float(sum(x * y for x, y in zip(first, v))) for v in vectors[1:]]


_DECIDE_PROMPT = """You maintain a user's long-term memory. For each NEW fact decide, against the EXISTING facts listed with it:
- "duplicate": an existing fact already says the same thing;
- "supersede": it updates or contradicts existing facts (same subject, newer truth): list their ids;
- "add": it is new information.
Answer with JSON only: {"decisions": [{"new": <index>, "action": "add"|"duplicate"|"supersede", "ids": [<existing ids>]}]}."""


async def _llm_decisions(
    memory: Memory, llm: Any, new: list[NewFact], candidates: list[list[MemoryRecord]]
) -> list[tuple[str, list[str]]]:
    from primitives.llm.base import complete_json

    listing = []
    for i, (fact, cands) in enumerate(zip(new, candidates)):
        listing.append({
            "new": i,
            "text": fact.text,
            "subject": fact.subject,
            "existing": [{"id": c.id, "text": c.text, "subject": c.metadata.get("subject")} for c in cands],
        })
    answer = await complete_json(llm, [
        {"role": "system", "content": _DECIDE_PROMPT},
        {"role": "user", "content": json.dumps(listing, ensure_ascii=False)},
    ])
    decisions = answer.get("decisions")
    if not isinstance(decisions, list):
        raise LLMResponseError(f"expected {{'decisions': [...]}}, got keys {sorted(answer)[:10]}", model=getattr(llm, "model", ""))
    out: list[tuple[str, list[str]]] = [("add", [])] * len(new)
    for d in decisions:
        if not isinstance(d, Mapping):
            raise LLMResponseError(f"each decision must be an object, got {d!r:.100}", model=getattr(llm, "model", ""))
        i, action, ids = d.get("new"), d.get("action"), d.get("ids") or []
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(new) or action not in ("add", "duplicate", "supersede") or not isinstance(ids, list):
            raise LLMResponseError(f"decision {d!r:.200} is not {{'new': index, 'action': add|duplicate|supersede, 'ids': [...]}}", model=getattr(llm, "model", ""))
        allowed = {c.id for c in candidates[i]}
        out[i] = (action, [x for x in ids if isinstance(x, str) and x in allowed])  # never an id it was not shown
    return out


async def remember_facts(
    memory: Memory,
    facts: Sequence[NewFact],
    *,
    user_id: str | None,
    session_id: str | None = None,
    namespace: str | None = None,
    llm: Any = None,
) -> list[FactWrite]:
    """Write facts with dedup and supersession (see the module docstring); one LLM call for the
    whole batch when ``llm`` is given and any fact has candidates.

    Returns:
        One :class:`FactWrite` per fact, in order.

    Raises:
        InvalidInputError: a fact is not accepted (nothing is written).
        LLMError: the LLM failed or answered out of shape (nothing is written).
    """
    facts = [check_new_fact(f) for f in facts]
    ns = memory._ns(namespace)
    now = datetime.now(timezone.utc)
    # candidates per fact: the subject's active facts, then the closest active facts by search
    candidates: list[list[MemoryRecord]] = []
    indexes: list[MemoryRecord | None] = []
    for fact in facts:
        subject = fact_subject(fact.subject)
        index, same_subject = (await _subject_facts(memory, ns, user_id, subject)) if subject else (None, [])
        indexes.append(index)
        hits = await memory.search(
            fact.text, user_id=user_id, namespace=ns, memory_type=MemoryType.SEMANTIC,
            limit=CANDIDATES_PER_FACT, mode="keyword",
        )
        seen = {r.id for r in same_subject}
        cands = same_subject + [h.record for h in hits.hits if h.record.id not in seen and h.record.metadata.get(KIND) in FACT_KINDS]
        candidates.append(cands)
    decisions: list[tuple[str, list[str]]]
    if llm is not None and any(candidates):
        decisions = await _llm_decisions(memory, llm, list(facts), candidates)
    else:
        decisions = []
        for f, cands in zip(facts, candidates):  # without an LLM: the same subject supersedes
            same = [c.id for c in cands if f.subject and fact_subject(c.metadata.get("subject")) == fact_subject(f.subject)]
            decisions.append(("supersede" if same else "add", same))
    results: list[FactWrite] = []
    for fact, cands, (action, ids), index in zip(facts, candidates, decisions, indexes):
        digest = content_hash(fact.text, user_id)
        exact = next((c for c in cands if c.metadata.get("content_hash") == digest), None)
        if exact is None:
            same_id = await memory.get(fact.id or "fact-" + digest[:40], namespace=ns)
            if same_id is not None and _active(same_id, now) and same_id.metadata.get("content_hash") == digest:
                exact = same_id
        if exact is not None:
            results.append(FactWrite("duplicate", exact))
            continue
        if action == "duplicate" and ids:
            results.append(FactWrite("duplicate", next(c for c in cands if c.id == ids[0])))
            continue
        if llm is None and cands:
            sims = await _cosine(memory, fact.text, [c.text for c in cands])
            best = max(range(len(cands)), key=sims.__getitem__)
            if sims[best] >= NEAR_DUPLICATE_COSINE:
                results.append(FactWrite("near_duplicate", cands[best]))
                continue
        superseded = [c for c in cands if c.id in ids] if action == "supersede" else []
        results.append(await _write(memory, ns, fact, digest, user_id, session_id, superseded, index, now))
    return results


async def _write(
    memory: Memory, ns: str, fact: NewFact, digest: str, user_id: str | None, session_id: str | None,
    superseded: list[MemoryRecord], index: MemoryRecord | None, now: datetime,
) -> FactWrite:
    valid_from = fact.valid_from.astimezone(timezone.utc) if fact.valid_from else now
    fact_id = fact.id or "fact-" + digest[:40]
    existing = await memory.get(fact_id, namespace=ns)
    if existing is not None and not _active(existing, now):
        fact_id = f"{fact_id}-{int(now.timestamp() * 1e6)}"  # the old version keeps its history
    subject = fact_subject(fact.subject)
    meta: dict[str, Any] = {
        KIND: fact.kind,
        "content_hash": digest,
        "importance": fact.importance,
        "valid_from": iso(valid_from),
        "valid_to": None,
        "superseded_by": None,
    }
    if fact.subject is not None:
        meta["subject"] = fact.subject
    if fact.provenance:
        meta["provenance"] = dict(fact.provenance)
    topics = tuple(dict.fromkeys((fact.kind, *fact.topics)))
    (stored,) = await memory.add([MemoryRecord(
        text=fact.text, id=fact_id, user_id=user_id, session_id=session_id, namespace=ns,
        memory_type=MemoryType.SEMANTIC, topics=topics, metadata=meta, ttl=math.inf,
    )])
    if subject is not None:
        old_ids = [i for i in (index.metadata.get("fact_ids", ()) if index else ()) if isinstance(i, str)]
        keep = [i for i in old_ids if i not in {s.id for s in superseded} and i != stored.id]
        await memory.add([MemoryRecord(
            text="", id=subject_index_id(user_id, subject), user_id=user_id, namespace=ns,
            memory_type=MemoryType.SEMANTIC, ttl=math.inf,
            metadata={INTERNAL: True, KIND: "subject_index", "subject": subject,
                      "fact_ids": (keep + [stored.id])[-MAX_SUBJECT_FACTS:]},
        )])
    if superseded:
        # the old fact ends where the new one starts (never before its own start)
        await memory.add([
            dataclasses.replace(s, metadata={
                **s.metadata,
                "valid_to": iso(max(valid_from, parse_time(s.metadata.get("valid_from")) or valid_from)),
                "superseded_by": stored.id,
            })
            for s in superseded
        ])
    return FactWrite("added", stored, tuple(s.id for s in superseded))
