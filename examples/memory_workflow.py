"""A multi-turn conversation whose answers come from memory, with no server and no LLM.

    python examples/memory_workflow.py

Pipeline per turn: ``MemoryPrimitive >> responder >> RememberPrimitive``. The responder is a plain
function that answers a question with the best memory of what the user said earlier; pass
``llm=`` to :func:`make_responder` to have a model answer from the same retrieved memories.
The backend is whatever ``Memory.from_env()`` gives: in-process unless configured otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from primitives import LambdaPrimitive, WorkflowContext
from primitives.memory import Memory, MemoryPrimitive, RememberPrimitive

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
    """A responder step: ``MemoryPrimitive`` output in, ``{"response": str, ...}`` out.

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
        return {"response": response, "memory_backend": recalled["memory_backend"],
                "degraded": recalled["degraded"]}

    return respond


async def run_conversation(
    memory: Memory, turns: list[str], *, llm: Callable[[str], Any] | None = None
) -> list[dict[str, Any]]:
    """Run each turn through the pipeline in one session; returns each turn's responder output."""
    pipeline = (
        MemoryPrimitive(memory)
        >> LambdaPrimitive(make_responder(llm), name="responder")
        >> RememberPrimitive(memory, remember_response=False)
    )
    context = WorkflowContext(session_id="demo-session", metadata={"user_id": "alice"})
    outputs = []
    for text in turns:
        outputs.append(await pipeline.execute({"query": text}, context))
    return outputs


async def main() -> None:
    async with Memory.from_env() as memory:
        outputs = await run_conversation(memory, TURNS)
        for text, out in zip(TURNS, outputs):
            served = out["memory_backend"] + (" (degraded)" if out["degraded"] else "")
            print(f"[{served}] user: {text}")
            print(f"[{served}] assistant: {out['response']}")


if __name__ == "__main__":
    asyncio.run(main())
