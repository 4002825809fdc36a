"""The embedding seam: :class:`Embedder` turns texts into unit-length vectors of ``dims`` floats.

Every implementation gets batching, a bounded per-process cache (the same text is never sent to
the model twice while it is cached), single-flight (concurrent callers asking for the same text
share one model call) and micro-batching (concurrent callers asking for different texts share one
model call too: :class:`~primitives.embeddings.batching.MicroBatcher`) from this base class; a
subclass only implements :meth:`Embedder._embed_batch`.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import LRUCache

from primitives.embeddings.batching import DEFAULT_MAX_WAIT_S, MicroBatcher
from primitives.errors import EmbeddingResponseError, InvalidInputError
from primitives.validation import INPUT, check_int, check_items, check_text

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CACHE_SIZE",
    "Embedder",
    "EmbedderStats",
    "check_api_key",
    "check_texts",
    "normalize",
]

#: Texts sent to the model in one call, unless an implementation is given another size.
DEFAULT_BATCH_SIZE = 64
#: Texts whose vectors are kept per embedder (least recently used dropped first). 10,000 vectors
#: of 384 floats take about 130 MB as Python floats.
DEFAULT_CACHE_SIZE = 10_000


@dataclass(slots=True)
class EmbedderStats:
    """Counters of one :class:`Embedder` since it was made.

    Attributes:
        model_calls: Batches sent to the model or endpoint.
        texts_embedded: Texts in those batches.
        cache_hits: Texts answered from the cache (or from another caller's in-flight batch).
        largest_batch: Most texts sent in one model call (concurrent callers' texts merged).
    """

    model_calls: int = 0
    texts_embedded: int = 0
    cache_hits: int = 0
    largest_batch: int = 0


def check_texts(texts: object) -> list[str]:
    """Return ``texts`` as a list if it is a list or tuple (:func:`primitives.validation.check_items`)
    of strings UTF-8 can encode (:func:`primitives.validation.check_text`), none empty or only
    whitespace.

    Raises:
        InvalidInputTypeError: (an ``InvalidInputError``, also a ``TypeError``) ``texts`` is not a
            list or tuple (a ``str`` included), or an item is not a ``str``.
        InvalidInputError: (a ``ValueError``) an item is empty, only whitespace, or has a lone
            surrogate.
    """
    out = list(check_items(texts, "texts"))
    for i, text in enumerate(out):
        text = check_text(text, f"texts[{i}]")
        if not text.strip():
            raise InvalidInputError(f"texts[{i}] is empty; there is nothing to embed")
        out[i] = text
    return out


def check_api_key(api_key: object, *, errors: tuple[type, type] = INPUT) -> str | None:
    """``api_key`` when it is ``None`` or a ``str`` of printable ASCII: it travels as the HTTP
    header ``Authorization: Bearer <api_key>``, which holds nothing else (``""`` means none).

    Raises:
        The family's type error for a non-``str``; its value error for a key with a non-ASCII
        or control character (a newline, NUL, ``"é"``, a lone surrogate).
    """
    if api_key is None:
        return None
    api_key = check_text(api_key, "api_key", errors=errors)
    if not (api_key.isascii() and api_key.isprintable()):
        raise errors[0]("api_key must be printable ASCII (it is sent as an HTTP header value)")
    return api_key


def normalize(vector: Sequence[float]) -> tuple[float, ...]:
    """``vector`` scaled to length 1 (L2); an all-zero vector is returned unchanged."""
    norm = math.hypot(*vector)
    if norm == 0.0 or norm == 1.0:
        return tuple(float(x) for x in vector)
    return tuple(float(x) / norm for x in vector)


class Embedder(ABC):
    """Async, batched text embedding with a bounded cache.

    Args:
        model: Name of the model, as reported in outputs and stored with an index (a non-empty
            ``str`` UTF-8 can encode).
        dims: Length of every vector the model returns (an int >= 1).
        batch_size: Most texts sent to the model in one call (an int >= 1).
        cache_size: Most texts whose vectors are kept (an int >= 0; 0 turns the cache off).
        batch_wait_s: Seconds concurrent calls are collected before a batch that is not full
            goes to the model (a number in ``[0, 1]``; default
            :data:`~primitives.embeddings.batching.DEFAULT_MAX_WAIT_S`, 0: on the next turn of
            the event loop). Texts of concurrent callers also merge while a model call runs.
        max_in_flight: Model calls running at once (an int >= 1; default
            :attr:`max_in_flight_default` of the class: 1 for a local model, more for an HTTP
            endpoint).

    Vectors are L2-normalised, so cosine similarity is their dot product. Concurrent
    :meth:`embed` calls share model calls (see :mod:`primitives.embeddings.batching`): a failed
    call fails every caller whose texts were in it with the same error; a cancelled caller does
    not disturb the others.

    Raises:
        InvalidInputError: an argument is not accepted (an ``InvalidInputTypeError``, also a
            ``TypeError``, for a wrong type, a ``bool`` included).
    """

    #: Model calls running at once unless ``max_in_flight`` is given: a subclass sets its own
    #: (a local model on one worker thread: 1; an HTTP endpoint serves several).
    max_in_flight_default: int = 4

    def __init__(
        self,
        *,
        model: str,
        dims: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        batch_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_in_flight: int | None = None,
    ) -> None:
        model = check_text(model, "model", allow_empty=False)
        check_int(dims, "dims", minimum=1)
        check_int(batch_size, "batch_size", minimum=1)
        check_int(cache_size, "cache_size", minimum=0)
        self._model = model
        self._dims = dims
        self._batch_size = batch_size
        self._cache: LRUCache[str, tuple[float, ...]] | None = LRUCache(cache_size) if cache_size else None
        self._inflight: dict[str, asyncio.Future[tuple[float, ...]]] = {}
        self.stats = EmbedderStats()
        self._batcher: MicroBatcher[str, tuple[float, ...]] = MicroBatcher(
            self._model_call,
            max_batch=batch_size,
            max_wait_s=batch_wait_s,
            max_in_flight=self.max_in_flight_default if max_in_flight is None else max_in_flight,
        )

    @property
    def model(self) -> str:
        """The model's name."""
        return self._model

    @property
    def dims(self) -> int:
        """Length of every vector :meth:`embed` returns."""
        return self._dims

    @abstractmethod
    async def _embed_batch(self, texts: list[str]) -> Sequence[Sequence[float]]:
        """One model call: a vector per text, in order (need not be normalised)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of ``texts``, in order: ``len(texts)`` lists of :attr:`dims` floats, each of
        L2 norm 1.

        Texts found in the cache (or being embedded by a concurrent call) are not sent again;
        the rest go to the model in batches of ``batch_size``.

        Raises:
            InvalidInputError: ``texts`` is not a list or tuple of strings, none empty or only
                whitespace, that UTF-8 can encode (see :func:`check_texts`).
            EmbeddingResponseError: the model returned the wrong number of vectors, vectors of
                the wrong length, or values that are not finite numbers.
            EmbedderUnavailableError: the model or endpoint cannot be reached or loaded.
        """
        return [list(v) for v in await self.embed_tuples(texts)]

    async def embed_one(self, text: str) -> list[float]:
        """Vector of one text; see :meth:`embed`."""
        return (await self.embed([text]))[0]

    #: Put before a search query by :meth:`embed_query` and before a stored text by
    #: :meth:`embed_documents`: models trained with instructions need them (e5: ``"query: "`` and
    #: ``"passage: "``; bge-*-en-v1.5: ``"Represent this sentence for searching relevant
    #: passages: "`` before queries only). Empty for symmetric models such as all-MiniLM-L6-v2.
    #: Set per instance (a local model reads them from its own config; see ``embedder_from_env``).
    query_prefix: str = ""
    document_prefix: str = ""

    async def embed_query(self, query: str) -> tuple[float, ...]:
        """Unit vector of a search query: :attr:`query_prefix` + ``query``; see :meth:`embed`
        (the same errors). The cache keys the prefixed text, so a query never reuses the vector
        of the same text stored as a document."""
        check_texts([query])
        return (await self.embed_tuples([self.query_prefix + query]))[0]

    async def embed_documents(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        """Unit vectors of texts to store and search: :attr:`document_prefix` + each text; see
        :meth:`embed` (the same errors)."""
        if not self.document_prefix:
            return await self.embed_tuples(texts)
        return await self.embed_tuples([self.document_prefix + t for t in check_texts(texts)])

    async def embed_tuples(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        """As :meth:`embed`, returning the cached tuples themselves (no copy)."""
        items = check_texts(texts)
        out: list[tuple[float, ...] | None] = [None] * len(items)
        missing: dict[str, list[int]] = {}
        waiting: list[tuple[int, str, asyncio.Future[tuple[float, ...]]]] = []
        cache = self._cache
        for i, text in enumerate(items):
            vector = cache.get(text) if cache is not None else None
            if vector is not None:
                out[i] = vector
                self.stats.cache_hits += 1
            elif text in missing:
                missing[text].append(i)
                self.stats.cache_hits += 1
            elif (future := self._inflight.get(text)) is not None:
                waiting.append((i, text, future))
            else:
                missing[text] = [i]
        if missing:
            await self._fill(missing, out)
        for i, text, future in waiting:
            try:
                out[i] = await asyncio.shield(future)
                self.stats.cache_hits += 1
            except Exception:  # the other caller's batch failed: try this text ourselves
                out[i] = (await self.embed_tuples([text]))[0]
        return out  # type: ignore[return-value]

    async def _fill(self, missing: dict[str, list[int]], out: list[tuple[float, ...] | None]) -> None:
        loop = asyncio.get_running_loop()
        todo = list(missing)
        for text in todo:
            self._inflight[text] = loop.create_future()
        try:
            for start in range(0, len(todo), self._batch_size):
                chunk = todo[start : start + self._batch_size]
                vectors = await self._batcher.submit(chunk)
                for text, vector in zip(chunk, vectors):
                    if self._cache is not None:
                        self._cache[text] = vector
                    for i in missing[text]:
                        out[i] = vector
                    future = self._inflight.pop(text, None)
                    if future is not None and not future.done():
                        future.set_result(vector)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RuntimeError("embedding was cancelled")
            for text in todo:
                future = self._inflight.pop(text, None)
                if future is not None and not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise

    async def _model_call(self, texts: list[str]) -> list[tuple[float, ...]]:
        """One model call for the merged texts of concurrent callers (the micro-batcher's call)."""
        stats = self.stats
        stats.model_calls += 1
        stats.texts_embedded += len(texts)
        stats.largest_batch = max(stats.largest_batch, len(texts))
        return self._check(texts, await self._embed_batch(texts))

    def _check(self, texts: list[str], vectors: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
        if not isinstance(vectors, Sequence) or len(vectors) != len(texts):
            got = len(vectors) if isinstance(vectors, Sequence) else type(vectors).__name__
            raise EmbeddingResponseError(
                f"{self._model} returned {got} vectors for {len(texts)} texts; check that the "
                "endpoint serves /v1/embeddings for a list input (some servers embed only the "
                "first text)"
            )
        out = []
        for i, vector in enumerate(vectors):
            try:
                n = len(vector)
            except TypeError:
                raise EmbeddingResponseError(
                    f"{self._model} returned a {type(vector).__name__} instead of a vector for text {i}"
                ) from None
            if n != self._dims:
                raise EmbeddingResponseError(
                    f"{self._model} returned vectors of {n} floats but the embedder is configured "
                    f"with dims={self._dims}; set dims={n} (and re-embed stored memories with "
                    "`memory-primitives index migrate`) or point at the model you meant"
                )
            try:
                unit = normalize(vector)
            except (TypeError, ValueError):
                raise EmbeddingResponseError(f"{self._model} returned non-numeric values for text {i}") from None
            if not all(math.isfinite(x) for x in unit):
                raise EmbeddingResponseError(f"{self._model} returned non-finite values for text {i}")
            out.append(unit)
        return out

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self._model!r}, dims={self._dims})"
