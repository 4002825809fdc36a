"""examples/chat.py: the same scripted chat in process and on a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from examples import chat
from primitives.redis_connection import connect
from primitives.store.ratelimit import InMemoryRateLimiter
from primitives.store.ratelimit_redis import RateLimiter
from primitives.store.session import InMemorySessionHistory
from primitives.store.session_redis import SessionHistory

ROOT = Path(__file__).resolve().parents[1]


def check_outcome(result: dict, session_id: str) -> None:
    turns = result["turns"]
    assert len(turns) == len(chat.TURNS) == chat.LIMIT + 1
    assert [t["history_seen"] for t in turns[: chat.LIMIT]] == [0, 2, 4, 4, 4]
    # the bound dropped the first turn: the oldest remembered user message is the second one
    assert turns[3]["reply"] == 'The first thing I still remember is: "I like green tea."'
    assert turns[4]["reply"] == "I keep the last 4 messages; I can see 4 now."
    refused = turns[-1]
    assert refused["rate_limited"] is True and 0 < refused["retry_after"] <= chat.WINDOW
    assert "reply" not in refused
    assert [m["content"] for m in result["kept"]] == [
        chat.TURNS[3], turns[3]["reply"], chat.TURNS[4], turns[4]["reply"],
    ]
    assert [m["role"] for m in result["kept"]] == ["user", "assistant"] * 2
    first, second = result["chain"]
    assert first == session_id and second != session_id


async def test_chat_in_process(clock) -> None:
    history = InMemorySessionHistory(max_messages=chat.MAX_MESSAGES, clock=clock)
    limiter = InMemoryRateLimiter(limit=chat.LIMIT, window=chat.WINDOW, clock=clock)
    result = await chat.run_chat(history, limiter, chat.TURNS, session_id="s1")
    check_outcome(result, "s1")
    assert result["turns"][-1]["retry_after"] == chat.WINDOW  # the fake clock did not move


@pytest.mark.integration
async def test_chat_on_redis(plain_redis_server) -> None:
    client = connect(plain_redis_server.url)
    try:
        history = SessionHistory(client, namespace=uuid.uuid4().hex, max_messages=chat.MAX_MESSAGES)
        prefix = f"{uuid.uuid4().hex}:"
        limiter = RateLimiter(client, limit=chat.LIMIT, window=chat.WINDOW, prefix=prefix)
        result = await chat.run_chat(history, limiter, chat.TURNS, session_id="s1")
        check_outcome(result, "s1")
        # the state is really in Redis: another client sees the bounded history
        other = connect(plain_redis_server.url)
        try:
            again = SessionHistory(other, namespace=history.namespace)
            assert [m["content"] for m in await again.read("s1")] == [m["content"] for m in result["kept"]]
            shared = RateLimiter(other, limit=chat.LIMIT, window=chat.WINDOW, prefix=prefix)
            assert (await shared.peek("chat:ana")).allowed is False
        finally:
            await other.aclose()
    finally:
        await client.aclose()


def run_script(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, "-m", "examples.chat"], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_printout(out: str) -> None:
    assert 'assistant: The first thing I still remember is: "I like green tea."' in out
    assert out.count("assistant: ") == chat.LIMIT
    assert "-> rate limited, retry after" in out
    assert "rotated; chain: chat-" in out


def test_chat_script_without_a_server() -> None:
    out = run_script({})
    assert out.startswith("backend: in-memory;")
    check_printout(out)


@pytest.mark.integration
def test_chat_script_on_redis(plain_redis_server) -> None:
    out = run_script({"REDIS_URL": plain_redis_server.url})
    assert out.startswith(f"backend: redis ({plain_redis_server.url})")
    check_printout(out)
    # run twice: the demo resets its user's allowance, so the second run is served the same way
    check_printout(run_script({"REDIS_URL": plain_redis_server.url}))
