"""The package's error hierarchy.

One base, :class:`PrimitivesError`; each subclass also derives from the builtin whose meaning it
shares, so ``except ValueError`` keeps working for callers that do not know this package.
"""

from __future__ import annotations

__all__ = [
    "PrimitivesError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "InvalidRecordError",
    "InvalidRecordTypeError",
    "InvalidFilterError",
    "ConfigurationError",
    "CompositionError",
    "BackendUnavailableError",
    "AuthenticationFailedError",
    "QueryEngineUnavailableError",
    "IndexSchemaMismatchError",
    "RecordTooLargeError",
    "EmbedderUnavailableError",
    "EmbeddingResponseError",
    "DimensionMismatchError",
    "LongTermMemoryDisabledError",
    "PermissionDeniedError",
    "InvalidKeyError",
    "InvalidTTLError",
    "SerializationError",
    "CorruptValueError",
    "RateLimitExceededError",
    "InvalidStreamIdError",
    "ChangeFeedGapError",
    "CorruptRecordError",
    "OutboxError",
    "OutboxCorruptError",
    "UnscopedAccessError",
    "SyncTargetUnavailableError",
    "SyncSchemaError",
    "LLMError",
    "LLMUnavailableError",
    "LLMTimeoutError",
    "LLMResponseError",
]


class PrimitivesError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(PrimitivesError, ValueError):
    """An argument at the public edge has a value that is not accepted (e.g. ``limit`` < 1)."""


class InvalidInputTypeError(InvalidInputError, TypeError):
    """An argument at the public edge has the wrong type (e.g. ``limit="5"``, ``ids=None``)."""


class InvalidRecordError(InvalidInputError):
    """A memory record has a field value that is not accepted (empty id, negative ttl, ...)."""


class InvalidRecordTypeError(InvalidRecordError, TypeError):
    """A memory record field has the wrong type (e.g. ``text`` that is not a ``str``)."""


class InvalidFilterError(InvalidInputError):
    """A search filter names an unknown field or gives a value of the wrong shape."""


class ConfigurationError(PrimitivesError, ValueError):
    """The environment or constructor arguments describe a configuration that cannot work."""


class CompositionError(PrimitivesError, TypeError):
    """An object given to ``>>`` or ``|`` has no ``async execute(input, context)`` method."""


class BackendUnavailableError(PrimitivesError, ConnectionError):
    """The configured server could not be reached (refused, timed out, connection lost)."""


class AuthenticationFailedError(ConfigurationError):
    """The server refused the credentials (wrong password or ACL user)."""


class QueryEngineUnavailableError(ConfigurationError):
    """The Redis server has no Query Engine (``FT.*`` commands), so it cannot store or search
    memories. Every memory call raises it (a configuration error, not an outage: nothing falls
    back in process); the message names the fix (a Redis 8 / Redis Stack, or
    ``pip install 'memory-primitives[redis-local]' && memory-primitives redis start``)."""


class IndexSchemaMismatchError(ConfigurationError):
    """An existing search index's schema differs from the one this configuration needs."""


class RecordTooLargeError(InvalidRecordError):
    """A record is larger than the backend's configured size limit."""


class EmbedderUnavailableError(ConfigurationError):
    """The embedding model or endpoint cannot be used (extra not installed, model path missing,
    endpoint unreachable)."""


class EmbeddingResponseError(PrimitivesError, ValueError):
    """An embedding endpoint answered with something that is not the vectors asked for (malformed
    JSON, the wrong number of vectors, vectors of the wrong length, an error body)."""


class DimensionMismatchError(ConfigurationError):
    """Vectors of one length meet a store, index or embedder of another (e.g. a 384-dims model and
    a 1536-dims index, or an index built without a vector field). The message names both and the
    exact command that re-embeds, with the environment it needs (e.g.
    ``MEMORY_EMBEDDINGS=local memory-primitives index migrate --prefix memory:``)."""


class LongTermMemoryDisabledError(ConfigurationError):
    """The Agent Memory Server answered that long-term memory is disabled on it."""


class PermissionDeniedError(PrimitivesError, PermissionError):
    """The server refused a command for this user (a Redis ACL ``NOPERM``: a key, channel or
    command the user's ACL rules do not allow)."""


class InvalidKeyError(InvalidInputError):
    """A key part (namespace, entity, id; a session id, a rate-limit key) is empty, not a ``str``,
    or has a lone surrogate (UTF-8 cannot encode it)."""


class InvalidTTLError(InvalidInputError):
    """A ``ttl`` is not a finite number of seconds in ``(0, MAX_TTL]``."""


class SerializationError(InvalidInputError, TypeError):
    """A value cannot be serialized by the configured serializer (JSON by default); nothing was
    written."""


class CorruptValueError(PrimitivesError, ValueError):
    """Stored bytes cannot be decoded: an unknown header byte, a broken compressed body, or a body
    the serializer rejects. The stored value is left as it is."""


class RateLimitExceededError(PrimitivesError):
    """A rate limit refused the call.

    Attributes:
        key: The limited key (as the caller named it).
        limit: Calls allowed per window.
        retry_after: Seconds to wait before the next call can be allowed (``> 0``).
    """

    def __init__(self, message: str, *, key: str, limit: int, retry_after: float) -> None:
        super().__init__(message)
        self.key = key
        self.limit = limit
        self.retry_after = retry_after


class InvalidStreamIdError(InvalidInputError):
    """A change-feed position is not a Redis stream id (``<ms>-<seq>``), or lies in the future of
    the stream."""


class ChangeFeedGapError(PrimitivesError):
    """Events after a reader's position were trimmed from the capped change-feed stream before it
    read them, so catching up from that position would miss some.

    Attributes:
        after: The position the reader asked to resume after.
        first_available: The oldest stream id still in the stream.
    """

    def __init__(self, message: str, *, after: str, first_available: str) -> None:
        super().__init__(message)
        self.after = after
        self.first_available = first_available


class CorruptRecordError(PrimitivesError, ValueError):
    """A stored record (or working-memory message) cannot be decoded: bytes that are not UTF-8,
    JSON that does not parse, a timestamp that is not a number, a missing field, a vector with
    NaN. Raised by a direct read (``get``) of that record; searches skip such a record, count it
    in ``SearchResult.skipped`` and log it. ``memory-primitives doctor`` lists damaged records and
    ``memory-primitives repair`` moves them to a quarantine key space.

    Attributes:
        key: Where the record is stored (a Redis key, an AMS id).
        reason: What is wrong with it.
    """

    def __init__(self, message: str, *, key: str, reason: str) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason


class OutboxError(PrimitivesError, OSError):
    """The durable outbox (the journal of writes made while the configured backend may be down)
    cannot be used: its file is damaged, not an outbox, or its directory cannot be created. The
    message names the file and the command that fixes it.

    Attributes:
        path: The outbox file.
        fix: What to run or change.
    """

    def __init__(self, message: str, *, path: str, fix: str) -> None:
        super().__init__(f"{message}. Fix: {fix}")
        self.path = path
        self.fix = fix


class OutboxCorruptError(OutboxError):
    """A file at the outbox path exists but is not a usable outbox: empty, not SQLite, truncated
    or damaged (fails ``PRAGMA quick_check``), a SQLite database of another application, a
    directory, an outbox of a newer schema, or a write-ahead log left without its database.
    Nothing in it was changed; the fix moves it aside, where it is kept for inspection.

    Attributes:
        path: The outbox file.
        fix: What to run or change.
        reason: What is wrong with the file, without the fix.
    """

    def __init__(self, message: str, *, path: str, fix: str, reason: str = "") -> None:
        super().__init__(message, path=path, fix=fix)
        self.reason = reason or message


class UnscopedAccessError(PrimitivesError, ValueError):
    """A pipeline step was asked to read or write memory without a ``user_id`` on a memory that
    is multi-user (the default), which would mix every user's memories. Set
    ``context.metadata["user_id"]``, or declare the memory single-user
    (``Memory(..., single_user=True)`` or ``MEMORY_SINGLE_USER=1``)."""


class SyncTargetUnavailableError(BackendUnavailableError):
    """A sync target (warehouse, database, lake, Data Cloud) did not answer or refused the
    connection. Nothing was committed by the failed batch and the cursor stayed where it was;
    running the sync again resumes from there.

    Attributes:
        target: The target's redacted URL or name.
    """

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target


class SyncSchemaError(ConfigurationError):
    """A sync target's table does not have the columns sync needs (a column missing or of a type
    that cannot hold the values). The message names the table, the column and the fix.

    Attributes:
        table: The table.
        column: The target's name of the column.
        fix: What to run or change.
    """

    def __init__(self, message: str, *, table: str, column: str, fix: str) -> None:
        super().__init__(f"{message}. Fix: {fix}")
        self.table = table
        self.column = column
        self.fix = fix


class LLMError(PrimitivesError):
    """Base of the errors of the LLM seam (:mod:`primitives.llm`). An operation that used the
    LLM (extraction, reflection, supersession, summarisation) wrote nothing when it raises one.

    Attributes:
        model: The model that was asked (``""`` when unknown).
    """

    def __init__(self, message: str, *, model: str = "") -> None:
        super().__init__(message)
        self.model = model


class LLMUnavailableError(LLMError, ConnectionError):
    """The LLM endpoint could not be used: refused, connection lost, or a 5xx/429 answer after
    the one retry. The message names the URL (without credentials) and what to check."""


class LLMTimeoutError(LLMUnavailableError, TimeoutError):
    """The LLM did not answer within the configured timeout (after the one retry)."""


class LLMResponseError(LLMError, ValueError):
    """The LLM answered with something that is not what was asked for: an empty answer, text
    that is not JSON in JSON mode, JSON of the wrong shape, or an error body. The message says
    what was expected and quotes the start of what came back."""
