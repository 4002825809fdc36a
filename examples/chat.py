"""A chat loop with bounded history and a rate limit, with no LLM and, by default, no server.

    python -m examples.chat                                    # in-process history and limiter
    REDIS_URL=redis://127.0.0.1:6379 python -m examples.chat   # the same on Redis

(from the repository root; ``python examples/chat.py`` works too where the package is installed)

Each turn runs the pipeline ``RateLimitPrimitive >> load history >> reply >> save turn``:

- the rate limit allows ``LIMIT`` turns per user per minute; the next one raises
  ``RateLimitExceededError`` carrying ``retry_after`` and nothing after it runs;
- the history keeps only the last ``MAX_MESSAGES`` messages of the session (older ones are dropped
  atomically on append) and expires after an hour without activity;
- the reply is a plain deterministic function of the user's text and the history it sees, so the
  bound is visible: asked what it remembers first, it answers with the oldest message kept.

At the end the session is rotated (a new session linked to the old one) and the chain printed.

Its history and limiter live under their own names (namespace :data:`NAMESPACE`, limiter key
``chat:<user>`` under the limiter's prefix); each run is a new session whose history expires an
hour after its last message, so re-runs do not pile up. A missing extra (``REDIS_URL`` set on the
core install) or an unreachable Redis prints one line and exits with status 2.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

from primitives import LambdaPrimitive, WorkflowContext
from primitives.errors import BackendUnavailableError, ConfigurationError, OutboxError, RateLimitExceededError
from primitives.store.ratelimit import (
    BaseRateLimiter,
    InMemoryRateLimiter,
    RateLimitPrimitive,
)
from primitives.store.session import BaseSessionHistory, InMemorySessionHistory

#: The session history's namespace.
NAMESPACE = "examples.chat"
#: Messages kept per session (two per turn: the user's and the assistant's).
MAX_MESSAGES = 4
#: Turns allowed per user per WINDOW seconds.
LIMIT, WINDOW = 5, 60.0

TURNS = [
    "Hi, I'm Ana.",
    "I like green tea.",
    "I live in Porto.",
    "What is the first thing you remember me saying?",
    "How many messages do you keep?",
    "One more thing?",
]


def reply(text: str, history: list[dict[str, Any]]) -> str:
    """The assistant: a deterministic answer from the user's text and the history it was given."""
    said = [m["content"] for m in history if m["role"] == "user"]
    if "first thing" in text:
        return f'The first thing I still remember is: "{said[0]}"' if said else "Nothing yet."
    if "how many" in text.lower():
        return f"I keep the last {MAX_MESSAGES} messages; I can see {len(history)} now."
    return f"Noted. ({len(history)} earlier messages in view)"


def build_pipeline(history: BaseSessionHistory, limiter: BaseRateLimiter) -> Any:
    """``RateLimitPrimitive >> load >> respond >> save`` for ``{"text": str}`` inputs; the output
    is ``{"text", "reply", "history_seen"}``. Needs ``context.session_id`` and a ``user_id``."""

    async def load(turn: dict[str, Any], ctx: WorkflowContext) -> dict[str, Any]:
        return {**turn, "history": await history.read(ctx.session_id)}

    def respond(turn: dict[str, Any]) -> dict[str, Any]:
        return {**turn, "reply": reply(turn["text"], turn["history"])}

    async def save(turn: dict[str, Any], ctx: WorkflowContext) -> dict[str, Any]:
        await history.append(
            ctx.session_id,
            [{"role": "user", "content": turn["text"]}, {"role": "assistant", "content": turn["reply"]}],
        )
        return {"text": turn["text"], "reply": turn["reply"], "history_seen": len(turn["history"])}

    return (
        RateLimitPrimitive(limiter, key=lambda _input, ctx: f"chat:{ctx.user_id}")
        >> LambdaPrimitive(load, name="load_history")
        >> LambdaPrimitive(respond, name="respond")
        >> LambdaPrimitive(save, name="save_turn")
    )


async def run_chat(
    history: BaseSessionHistory,
    limiter: BaseRateLimiter,
    turns: list[str],
    *,
    session_id: str,
    user_id: str = "ana",
) -> dict[str, Any]:
    """Run the scripted ``turns``; returns ``{"turns": [...], "kept": [...], "chain": [...]}``.

    Each turn is ``{"text", "reply", "history_seen"}`` or, when refused,
    ``{"text", "rate_limited": True, "retry_after": seconds}``. ``kept`` is the session's history
    after the loop; ``chain`` the session ids after rotating the session once.
    """
    pipeline = build_pipeline(history, limiter)
    await limiter.reset(f"chat:{user_id}")  # a fresh allowance for this demo run
    context = WorkflowContext(session_id=session_id, metadata={"user_id": user_id})
    outcomes: list[dict[str, Any]] = []
    for text in turns:
        try:
            outcomes.append(await pipeline.execute({"text": text}, context))
        except RateLimitExceededError as exc:
            outcomes.append({"text": text, "rate_limited": True, "retry_after": exc.retry_after})
    kept = await history.read(session_id)
    new_session = await history.rotate(session_id)
    return {"turns": outcomes, "kept": kept, "chain": await history.chain(new_session)}


async def main() -> None:
    url = os.environ.get("REDIS_URL")
    session_id = f"chat-{uuid.uuid4().hex[:8]}"
    client = None
    if url:
        from primitives.redis_connection import connect
        from primitives.store.ratelimit_redis import RateLimiter
        from primitives.store.session_redis import SessionHistory

        client = connect(url)
        backend = f"redis ({url.rsplit('@', 1)[-1]})"
        history: BaseSessionHistory = SessionHistory(client, namespace=NAMESPACE, max_messages=MAX_MESSAGES, ttl=3600)
        limiter: BaseRateLimiter = RateLimiter(client, limit=LIMIT, window=WINDOW, algorithm="sliding")
    else:
        backend = "in-memory"
        history = InMemorySessionHistory(namespace=NAMESPACE, max_messages=MAX_MESSAGES, ttl=3600)
        limiter = InMemoryRateLimiter(limit=LIMIT, window=WINDOW, algorithm="sliding")
    try:
        result = await run_chat(history, limiter, TURNS, session_id=session_id)
    finally:
        if client is not None:
            await client.aclose()
    print(f"backend: {backend}; history bound {MAX_MESSAGES} messages; limit {LIMIT} turns per {WINDOW:g} s")
    for turn in result["turns"]:
        print(f"user: {turn['text']}")
        if turn.get("rate_limited"):
            print(f"  -> rate limited, retry after {turn['retry_after']:.1f} s")
        else:
            print(f"assistant: {turn['reply']}")
    print(f"kept in {session_id}: {[m['content'] for m in result['kept']]}")
    print(f"rotated; chain: {' -> '.join(result['chain'])}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ImportError, ConfigurationError, BackendUnavailableError, OutboxError) as exc:
        # a missing extra, a configuration the store refuses, Redis unreachable
        print(f"chat.py: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
