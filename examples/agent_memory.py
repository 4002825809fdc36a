"""The agent-memory API: steps, episodes, skills and knowledge, then a prompt-ready context.

Runs on the core install with no server (``python examples/agent_memory.py``); set
``MEMORY_BACKEND=redis`` and ``REDIS_URL`` (or ``ams`` and ``AGENT_MEMORY_SERVER_URL``) to run
the same code on a server. With ``MEMORY_LLM_URL`` and ``MEMORY_LLM_MODEL`` set (any
OpenAI-compatible endpoint: OpenAI, Ollama, vLLM, LiteLLM), it also extracts facts from a short
conversation.

It writes only under its own namespace (:data:`NAMESPACE`; each run is a new agent, so a new
user). Re-running it does not add to what an earlier run stored: it first deletes every record of
its namespace (:func:`clear_namespace`; on the Agent Memory Server, which cannot list records,
earlier runs' records stay). A missing extra or a configuration error prints
one line and exits with status 2.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

from primitives.errors import BackendUnavailableError, ConfigurationError, OutboxError
from primitives.memory import Memory, Message, create_memory_adapter
from primitives.memory.changes import Tombstone

#: Where this example's memories live.
NAMESPACE = "examples.agent_memory"


async def clear_namespace(memory: Memory, namespace: str) -> int:
    """Delete every record of ``namespace`` (episodes, facts, skills and their bookkeeping), found
    in the store's change list; returns how many. The Agent Memory Server cannot list its records:
    there nothing is deleted (0)."""
    ids: list[str] = []
    after = None
    try:
        while page := await memory.backend.changes(after, limit=1000):
            ids += [c.id for _, c in page if c.namespace == namespace and not isinstance(c, Tombstone)]
            after = page[-1].position
    except NotImplementedError:
        return 0
    return await memory.delete(ids, namespace=namespace) if ids else 0


async def main(backend: str | None = None) -> dict[str, Any]:
    """Run the tour; returns what it printed, for tests."""
    env = {**os.environ, "MEMORY_NAMESPACE": NAMESPACE}
    # a fresh agent (and so user, session chain and skill statistics) per run
    memory = await create_memory_adapter(backend=backend, agent_id=f"planner-{uuid.uuid4().hex[:8]}", env=env)
    try:
        await clear_namespace(memory.memory, NAMESPACE)  # start clean: earlier runs' records go
        await memory.add_step("search flights", "3 flights to Lisbon on Friday", reasoning="the user asked for Friday")
        await memory.add_step("book hotel", "Hotel Alfama is full", success=False)
        episode_id = await memory.save_episode(
            "Plan a weekend in Lisbon", "Booked a flight and Hotel Baixa", True, 95.0,
            tags=["travel"], importance=0.8,
        )
        await memory.save_skill("plan_trip", "Plan a city weekend", ["search flights", "book hotel", "send itinerary"],
                                tags=["travel"])
        await memory.record_skill_execution("plan_trip", True, 90.0)
        skill = await memory.record_skill_execution("plan_trip", False, 120.0)
        await memory.save_knowledge("The user prefers aisle seats", confidence=0.9, subject="seat preference")

        found = await memory.search_all("plan a trip to Lisbon: flights and seats", limit_per_type=2)
        print("episodes:", [(e.task_prompt, e.outcome, e.success) for e in found["episodic"]])
        print("knowledge:", [k.pattern for k in found["semantic"]])
        print("skills:", [(s.skill_name, s.success_rate) for s in found["skills"]])
        context = await memory.get_enriched_context("plan a trip to Lisbon: flights and seats", detailed_steps=5, limit_per_type=2)
        print(context)

        extracted: list[str] = []
        if memory.memory.llm is not None:  # MEMORY_LLM_URL is set
            await memory.memory.append_messages(memory.session_id, [
                Message("user", "I live in Porto."), Message("user", "I moved to Lisbon last month."),
            ])
            report = await memory.memory.extract(memory.session_id, user_id=memory.user_id)
            extracted = [w.record.text for w in report.writes]
            print("extracted:", extracted)
        old_session = memory.session_id
        new_session = await memory.rotate_session()
        history = await memory.get_session_history()
        return {
            "episode_id": episode_id, "found": found, "context": context, "success_rate": skill.success_rate if skill else None,
            "history": history, "old_session": old_session, "new_session": new_session, "extracted": extracted,
            "backend": memory.backend_name,
        }
    finally:
        await memory.close()


if __name__ == "__main__":
    try:
        asyncio.run(main(os.environ.get("EXAMPLE_BACKEND")))
    except (ImportError, ConfigurationError, BackendUnavailableError, OutboxError) as exc:
        # a missing extra, a configuration the store refuses, Redis down with no fallback, an outbox of another store
        print(f"agent_memory.py: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
