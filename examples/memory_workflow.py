"""A multi-turn conversation whose answers come from memory, with no server and no LLM.

    python examples/memory_workflow.py

Pipeline per turn: ``MemoryPrimitive >> responder >> RememberPrimitive``. The responder is a plain
function that answers a question with the best memory of what the user said earlier; pass
``llm=`` to :func:`make_responder` to have a model answer from the same retrieved memories.
The backend is whatever ``Memory.from_env()`` gives: in-process unless configured otherwise.

It writes only under its own namespace and user (:data:`NAMESPACE`, :data:`USER_ID`), so other
examples' memories never answer its questions, and re-running it on the same Redis leaves the
same records: it clears its session first and gives each turn a fixed record id (``turn-N``), so
a second run replaces the first run's records instead of adding to them. A missing extra or a
configuration error (Redis without the Query Engine, an index of another dimension) prints one
line and exits with status 2.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from primitives import LambdaPrimitive, WorkflowContext
from primitives.errors import BackendUnavailableError, ConfigurationError, OutboxError
from primitives.memory import Memory, MemoryPrimitive, RememberPrimitive

#: Where this example's memories live: its own namespace, user and session.
NAMESPACE = "examples.memory_workflow"
USER_ID = "examples.memory_workflow.alice"
SESSION_ID = "examples.memory_workflow"

TURNS = [
    "My favourite colour is blue",
    "I adopted a cat called Miso last spring",
    "I work as a nurse in Lisbon",
    "What is my favourite colour?",
    "Where do I work?",
    "What is the name of my cat?",
]


def _prompt(recalled: dict[str, Any]) -> str:
    facts = "\n".join(f"- {m['text']}" for m in recalled["relevant_memories"])
    return f"Known facts about the user:\n{facts}\n\nUser: {recalled['input']['query']}\nAssistant:"


def make_responder(
    llm: Callable[[str], str | Awaitable[str]] | None = None,
) -> Callable[[dict[str, Any]], Any]:
    """A responder step: ``MemoryPrimitive`` output in, ``{"response": str, "id": str | None,
    "memory_backend": str, "degraded": bool}`` out (``id``: the input's, for ``RememberPrimitive``).

    Without ``llm``: a question is answered with the best-scoring thing the user said before (not
    the question itself); anything else is acknowledged. With ``llm``: the model gets a prompt
    with the retrieved memories and its text is the response.
    """

    async def respond(recalled: dict[str, Any]) -> dict[str, Any]:
        query: str = recalled["input"]["query"]
        if llm is not None:
            answer = llm(_prompt(recalled))
            response = await answer if isinstance(answer, Awaitable) else answer
        elif query.rstrip().endswith("?"):
            said = [
                m for m in recalled["relevant_memories"]
                if m["metadata"].get("role") == "user" and m["text"] != query
            ]
            response = f'You told me: "{said[0]["text"]}".' if said else "I don't know yet."
        else:
            response = "Noted."
        # "id" is passed on so that RememberPrimitive stores the turn under it (None: a new id)
        return {"response": response, "id": recalled["input"].get("id"),
                "memory_backend": recalled["memory_backend"], "degraded": recalled["degraded"]}

    return respond


async def run_conversation(
    memory: Memory, turns: list[str], *, llm: Callable[[str], Any] | None = None
) -> list[dict[str, Any]]:
    """Run each turn through the pipeline in this example's session (cleared first), namespace
    and user; turn ``i`` is stored as record ``turn-i``. Returns each turn's responder output."""
    pipeline = (
        MemoryPrimitive(memory)
        >> LambdaPrimitive(make_responder(llm), name="responder")
        >> RememberPrimitive(memory, remember_response=False)
    )
    await memory.clear_session(SESSION_ID, namespace=NAMESPACE)
    context = WorkflowContext(session_id=SESSION_ID, metadata={"user_id": USER_ID, "namespace": NAMESPACE})
    outputs = []
    for i, text in enumerate(turns):
        outputs.append(await pipeline.execute({"query": text, "id": f"turn-{i}"}, context))
    return outputs


async def main() -> None:
    async with Memory.from_env() as memory:
        outputs = await run_conversation(memory, TURNS)
        for text, out in zip(TURNS, outputs):
            served = out["memory_backend"] + (" (degraded)" if out["degraded"] else "")
            print(f"[{served}] user: {text}")
            print(f"[{served}] assistant: {out['response']}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ImportError, ConfigurationError, BackendUnavailableError, OutboxError) as exc:
        # a missing extra, a configuration the store refuses, Redis down with no fallback, an outbox of another store
        print(f"memory_workflow.py: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
