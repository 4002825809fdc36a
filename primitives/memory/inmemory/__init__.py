"""The in-process backend: an LRU store with per-record expiry, an incremental BM25 inverted index and, with
an embedder, exact-cosine vectors. No server, no extra."""

from primitives.memory.inmemory.backend import InMemoryBackend

__all__ = ["InMemoryBackend"]
