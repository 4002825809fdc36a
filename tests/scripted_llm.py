"""A scripted LLM for unit tests of this package's own logic (extraction, supersession,
reflection, summaries): answers come from a queue, every call is recorded."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any


class ScriptedLLM:
    """Answers with the next item of ``answers``: a ``str`` as is, a ``dict``/``list`` as JSON, an
    exception instance is raised, a callable is called with the messages. An empty queue fails the
    test with an AssertionError (an unexpected call)."""

    def __init__(self, answers: Sequence[Any] = (), *, model: str = "scripted-1") -> None:
        self.model = model
        self.answers = list(answers)
        self.calls: list[list[dict[str, str]]] = []

    def push(self, *answers: Any) -> None:
        self.answers.extend(answers)

    async def complete(self, messages, *, json_mode: bool = False, max_tokens=None, temperature: float = 0.0) -> str:
        self.calls.append([dict(m) for m in messages])
        if not self.answers:
            raise AssertionError(f"unexpected LLM call #{len(self.calls)}: {messages[-1]['content'][:200]!r}")
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer(messages)
        return answer if isinstance(answer, str) else json.dumps(answer)


def facts(*items: tuple[str, str | None] | str, **extra: Any) -> dict[str, Any]:
    """``{"memories": [...]}`` for the discrete strategy: each item a text or (text, subject)."""
    out = []
    for item in items:
        text, subject = (item, None) if isinstance(item, str) else item
        out.append({"text": text, "subject": subject, "importance": 0.5, **extra})
    return {"memories": out}


def decisions(*items: tuple[int, str, list[str]]) -> dict[str, Any]:
    return {"decisions": [{"new": i, "action": a, "ids": ids} for i, a, ids in items]}


Answer = Callable[[list[dict[str, str]]], str]
