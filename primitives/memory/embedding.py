"""How memory backends use an :class:`~primitives.embeddings.base.Embedder`: what text a record
is embedded from, vectors for a batch of records, and how keyword and vector rankings are fused."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from primitives.embeddings.base import Embedder, normalize
from primitives.errors import ConfigurationError, DimensionMismatchError
from primitives.memory.fusion import convex_combination
from primitives.memory.record import MemoryRecord

__all__ = [
    "HYBRID_CANDIDATES",
    "KEYWORD_WEIGHT",
    "VECTOR_WEIGHT",
    "check_embeddings",
    "embedding_text",
    "fuse",
    "require_embedder",
]

#: Hits taken from each of the keyword and the vector ranking before fusing (at least ``limit``).
#: 100 was no better under leave-one-conversation-out on LoCoMo (docs/evaluation.md).
HYBRID_CANDIDATES = 50
#: Weights of the keyword and vector scores in :func:`fuse`, for all-MiniLM-L6-v2. Confirmed on
#: LoCoMo by leave-one-conversation-out (``eval locomo --cross-validate``, docs/evaluation.md):
#: chosen on the other four conversations in 4 of 5 folds; 0.2-0.4 are within 0.01 of it, 0.5
#: and more lose 0.03-0.08, and reciprocal-rank fusion (k=10 or 60) loses 0.03-0.10.
KEYWORD_WEIGHT = 0.7
VECTOR_WEIGHT = 0.3


def embedding_text(record: MemoryRecord) -> str:
    """The text a record is embedded from: ``"<speaker>: <text>"`` when its metadata has a
    ``speaker`` string, else its ``text``.

    The previous turn (``metadata["context"]``), which keyword search indexes, is left out: in
    one vector it pulls a short turn's meaning towards the turn before it ("Do I have pets?"
    then matched "I work as a nurse" stored after "I adopted a cat"). On LoCoMo it adds 0.006
    to hybrid recall@10 over all five conversations, but choosing it on four conversations
    did not carry to the fifth (held out it gained -0.006 to +0.010 per conversation;
    ``eval locomo --cross-validate``, docs/evaluation.md)."""
    metadata = record.metadata
    speaker = metadata.get("speaker") if metadata else None
    return f"{speaker}: {record.text}" if isinstance(speaker, str) and speaker else record.text


def require_embedder(embedder: Embedder | None, mode: str, backend: str) -> Embedder:
    """``embedder``, or a ``ConfigurationError`` saying how to configure one for ``mode``."""
    if embedder is None:
        raise ConfigurationError(
            f"mode={mode!r} needs an embedder but the {backend} backend has none; set "
            "MEMORY_EMBEDDINGS=local (pip install \"memory-primitives[embeddings]\") or "
            "MEMORY_EMBEDDINGS_URL to an OpenAI-compatible /v1 endpoint, or use mode='keyword'"
        )
    return embedder


async def check_embeddings(
    embedder: Embedder, records: Sequence[MemoryRecord], text: Callable[[MemoryRecord], str]
) -> list[tuple[float, ...]]:
    """One unit vector per record: its own ``embedding`` (checked and normalised) or, for those
    without one, ``embedder``'s vector of ``text(record)`` (one batched
    :meth:`~primitives.embeddings.base.Embedder.embed_documents` call: the model's document
    prefix applied). A record without an embedding whose ``text(record)`` is empty or only
    whitespace (the agent-memory API's bookkeeping records) gets ``None``: it is stored without
    a vector, found by filters and never by vector search.

    Raises:
        DimensionMismatchError: a given ``embedding`` has another length than ``embedder.dims``.
        EmbeddingResponseError, EmbedderUnavailableError: from the embedder.
    """
    out: list[tuple[float, ...] | None] = []
    todo: list[int] = []
    for i, record in enumerate(records):
        if record.embedding is None:
            out.append(None)
            if text(record).strip():
                todo.append(i)
            continue
        if len(record.embedding) != embedder.dims:
            raise DimensionMismatchError(
                f"record {record.id!r} has an embedding of {len(record.embedding)} floats but the "
                f"store's embedder {embedder.model} makes {embedder.dims}; drop the record's "
                "embedding to have it re-embedded, or configure the model that made it"
            )
        out.append(normalize(record.embedding))
    if todo:
        vectors = await embedder.embed_documents([text(records[i]) for i in todo])
        for i, vector in zip(todo, vectors):
            out[i] = vector
    return out  # type: ignore[return-value]


def fuse(
    by_keyword: Sequence[tuple[str, float]],
    by_vector: Sequence[tuple[str, float]],
    *,
    limit: int,
) -> list[tuple[str, float]]:
    """Hybrid ranking: the convex combination of min-max normalised keyword and vector scores
    (:func:`~primitives.memory.fusion.convex_combination`, weights :data:`KEYWORD_WEIGHT` and
    :data:`VECTOR_WEIGHT`) of two ``(key, score)`` rankings, best first. Returns the best
    ``limit`` ``(key, fused score)`` pairs, fused scores in ``[0, 1]``."""
    return convex_combination(
        [by_keyword, by_vector], [KEYWORD_WEIGHT, VECTOR_WEIGHT], limit=limit
    )
