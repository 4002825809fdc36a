"""Text embeddings: the :class:`Embedder` seam and its implementations.

``SentenceTransformerEmbedder`` (extra ``embeddings``) runs a local model; ``OpenAIEmbedder``
(extra ``openai``) calls any OpenAI-compatible ``/v1/embeddings`` endpoint. Both are imported
lazily so that this package imports without their extras.
"""

from __future__ import annotations

from typing import Any

from primitives.embeddings.base import Embedder, EmbedderStats
from primitives.embeddings.config import embedder_from_env

__all__ = ["Embedder", "EmbedderStats", "OpenAIEmbedder", "SentenceTransformerEmbedder", "embedder_from_env"]


def __getattr__(name: str) -> Any:
    if name == "SentenceTransformerEmbedder":
        from primitives.embeddings.local import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder
    if name == "OpenAIEmbedder":
        from primitives.embeddings.openai_http import OpenAIEmbedder

        return OpenAIEmbedder
    raise AttributeError(name)
