"""The LLM seam: :class:`LLM` (``async complete(messages) -> str``) and its implementations.

:class:`OpenAIChatLLM` calls any OpenAI-compatible ``/v1/chat/completions`` endpoint (extra
``llm``: httpx, imported when a client is made, so this package imports without it);
:func:`as_llm` wraps any async function ``fn(messages) -> str``; :func:`llm_from_env` builds the
client the ``MEMORY_LLM_*`` variables describe. See ``docs/llm.md``.
"""

from __future__ import annotations

from primitives.llm.base import (
    LLM,
    CallableLLM,
    ChatMessage,
    as_llm,
    check_messages,
    complete_json,
)
from primitives.llm.config import llm_from_env
from primitives.llm.openai_chat import OpenAIChatLLM

__all__ = [
    "LLM",
    "CallableLLM",
    "ChatMessage",
    "OpenAIChatLLM",
    "as_llm",
    "check_messages",
    "complete_json",
    "llm_from_env",
]
