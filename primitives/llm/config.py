"""Choose an :class:`~primitives.llm.base.LLM` from environment variables.

=========================  ==========================================================================
variable                   meaning
=========================  ==========================================================================
``MEMORY_LLM_URL``         the ``/v1`` root of an OpenAI-compatible API; unset or empty: no LLM
``MEMORY_LLM_MODEL``       the model name sent to it (required with ``MEMORY_LLM_URL``)
``MEMORY_LLM_API_KEY``     bearer token; unset: ``OPENAI_API_KEY`` when the URL's host is
                           ``api.openai.com``, else none
``MEMORY_LLM_TIMEOUT``     seconds per HTTP request, a finite number > 0 (default 60)
``MEMORY_LLM_JSON_MODE``   ``response_format`` (default) or ``prompt`` (for servers that refuse
                           ``response_format``)
=========================  ==========================================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from primitives.errors import ConfigurationError
from primitives.llm.base import DEFAULT_TIMEOUT
from primitives.llm.openai_chat import (
    JSON_MODES,
    OpenAIChatLLM,
    check_api_key,
    check_base_url,
)

__all__ = ["llm_from_env"]

#: The only host whose key ``OPENAI_API_KEY`` is taken to be.
_OPENAI_HOST = "api.openai.com"


def llm_from_env(env: Mapping[str, str] | None = None) -> OpenAIChatLLM | None:
    """The LLM the environment describes, or ``None`` when it describes none.

    Nothing is contacted here: a wrong URL, key or model shows on the first call.

    Args:
        env: Variables to read (default ``os.environ``); see the module docstring for names.

    Returns:
        An :class:`~primitives.llm.openai_chat.OpenAIChatLLM` when ``MEMORY_LLM_URL`` is set,
        else ``None``.

    Raises:
        ConfigurationError: ``MEMORY_LLM_URL`` is not an ``http(s)://`` URL; it is set without
            ``MEMORY_LLM_MODEL``, or ``MEMORY_LLM_MODEL`` is set without it; a
            ``MEMORY_LLM_TIMEOUT`` that is not a finite number > 0; an unknown
            ``MEMORY_LLM_JSON_MODE``; an API key that is not printable ASCII; httpx is not
            installed (the message says ``pip install "memory-primitives[llm]"``). The message
            names the variable to fix.
    """
    env = os.environ if env is None else env
    url = env.get("MEMORY_LLM_URL", "").strip()
    model = env.get("MEMORY_LLM_MODEL", "").strip()
    if not url:
        if model:
            raise ConfigurationError(
                f"MEMORY_LLM_MODEL={model!r} is set but MEMORY_LLM_URL is not: set MEMORY_LLM_URL to the "
                "/v1 root of the API that serves it (e.g. http://localhost:11434/v1 for Ollama, "
                "https://api.openai.com/v1), or unset MEMORY_LLM_MODEL"
            )
        return None
    parts = check_base_url(url, "MEMORY_LLM_URL")
    if not model:
        raise ConfigurationError(
            "MEMORY_LLM_URL is set but MEMORY_LLM_MODEL is not: set it to the model to use (e.g. "
            "gpt-4o-mini for OpenAI, llama3.2 for Ollama, gemini-2.0-flash for Gemini)"
        )
    api_key = env.get("MEMORY_LLM_API_KEY", "").strip()
    if not api_key and (parts.hostname or "").lower() == _OPENAI_HOST:
        api_key = env.get("OPENAI_API_KEY", "").strip()
        source = "OPENAI_API_KEY"
    else:
        source = "MEMORY_LLM_API_KEY"
    check_api_key(api_key, source)
    timeout = _timeout(env)
    json_mode = env.get("MEMORY_LLM_JSON_MODE", "").strip().lower() or JSON_MODES[0]
    if json_mode not in JSON_MODES:
        raise ConfigurationError(
            f"MEMORY_LLM_JSON_MODE={json_mode!r} must be one of {', '.join(JSON_MODES)} (prompt: for "
            "servers that refuse response_format)"
        )
    return OpenAIChatLLM(base_url=url, model=model, api_key=api_key or None, timeout=timeout, json_mode=json_mode)


def _timeout(env: Mapping[str, str]) -> float:
    raw = env.get("MEMORY_LLM_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"MEMORY_LLM_TIMEOUT={raw!r} must be a number of seconds > 0 (default 60)")
    return value
