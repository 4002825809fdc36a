"""The LLM seam: one async method, ``complete(messages) -> str``, and helpers built on it.

An :class:`LLM` is anything with a ``model`` name and an ``async complete(messages, *, json_mode,
max_tokens, temperature) -> str``. :func:`as_llm` turns a plain async function
``fn(messages) -> str`` into one (:class:`CallableLLM`); :func:`complete_json` asks for a JSON
object and checks that one came back; :func:`check_messages` is the one validator of chat messages.

Messages are OpenAI chat messages: ``{"role": "system" | "user" | "assistant", "content": str}``.
Their text is passed on exactly as given (NUL, emoji, quotes, text that looks like another
message): it is JSON-encoded by the client, never spliced into a prompt here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

from primitives.errors import (
    InvalidInputError,
    InvalidInputTypeError,
    LLMError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from primitives.validation import (
    check_bool,
    check_identifier,
    check_int,
    check_number,
    check_text,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "LLM",
    "ROLES",
    "CallableLLM",
    "ChatMessage",
    "as_llm",
    "check_messages",
    "complete_json",
]

#: One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``.
ChatMessage = Mapping[str, str]

#: The accepted values of a message's ``role``.
ROLES: Final = ("system", "user", "assistant")
#: Seconds one call may take before it fails with :class:`~primitives.errors.LLMTimeoutError`.
DEFAULT_TIMEOUT: Final = 60.0
#: Characters of an answer quoted in an error message.
_QUOTE_CHARS: Final = 200
_KEYS: Final = frozenset(("role", "content"))
#: One surrounding Markdown code fence, with an optional ``json`` tag: ```json {...} ```.
_FENCE: Final = re.compile(r"```(?:json(?![\w-]))?[ \t]*\r?\n?(.*?)\s*```", re.DOTALL | re.IGNORECASE)


@runtime_checkable
class LLM(Protocol):
    """A chat model: the seam every LLM-using step of this package calls.

    Attributes:
        model: The model's name, recorded in the provenance of what the LLM produced.
    """

    model: str

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        temperature: float = 0.0,
    ) -> str:
        """The model's answer to ``messages``.

        Args:
            messages: The conversation, oldest first (see :func:`check_messages`).
            json_mode: Ask for a JSON object (the answer is still returned as text; use
                :func:`complete_json` to parse and check it).
            max_tokens: Most tokens to generate; ``None``: the server's default.
            temperature: Sampling temperature, ``0.0`` (the default) for the most likely answer.

        Returns:
            The answer text, non-empty.

        Raises:
            InvalidInputError: malformed ``messages`` or arguments.
            LLMUnavailableError: the model could not be reached (``LLMTimeoutError``: it did
                not answer in time).
            LLMResponseError: an empty or malformed answer.
        """
        ...


def check_messages(messages: object) -> list[dict[str, str]]:
    """``messages`` as a new list of plain ``{"role": ..., "content": ...}`` dicts.

    Args:
        messages: A non-empty sequence (``list``, ``tuple``) of mappings, each with exactly the
            keys ``role`` (one of :data:`ROLES`) and ``content`` (a ``str``, possibly empty,
            that UTF-8 can encode; every character is kept).

    Returns:
        A list of ``len(messages)`` dicts, in order; the caller's objects are not kept.

    Raises:
        InvalidInputTypeError: ``messages`` is not a sequence (a ``str`` or a mapping included),
            an item is not a mapping, or a role or content is not a ``str``.
        InvalidInputError: no messages, a missing or unknown key, an unknown role, or a content
            with a lone surrogate.
    """
    if isinstance(messages, (str, bytes, bytearray, Mapping)) or not isinstance(messages, Sequence):
        raise InvalidInputTypeError(
            f"messages must be a list of {{'role': ..., 'content': ...}} mappings, got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidInputError("messages must hold at least one message")
    checked: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidInputTypeError(
                f"{where} must be a mapping {{'role': ..., 'content': ...}}, got {type(message).__name__}"
            )
        keys = set(message)
        if keys != _KEYS:
            missing = sorted(_KEYS - keys)
            extra = sorted(map(repr, keys - _KEYS))
            what = f"missing {', '.join(missing)}" if missing else f"unknown key(s) {', '.join(extra)}"
            raise InvalidInputError(f"{where} must have exactly the keys 'role' and 'content' ({what})")
        role = message["role"]
        if not isinstance(role, str):
            raise InvalidInputTypeError(f"{where}['role'] must be a str, got {type(role).__name__}")
        if role not in ROLES:
            raise InvalidInputError(f"{where}['role'] must be one of {', '.join(ROLES)}; got {role[:40]!r}")
        content = check_text(message["content"], f"{where}['content']")
        checked.append({"role": role, "content": content})
    return checked


def check_options(max_tokens: object, temperature: object, json_mode: object = False) -> tuple[int | None, float, bool]:
    """The options of :meth:`LLM.complete` in normal form: ``max_tokens`` ``None`` or an ``int``
    >= 1, ``temperature`` a finite ``float`` in ``[0, 2]`` (OpenAI's range), ``json_mode`` a
    ``bool``.

    Raises:
        InvalidInputTypeError: a value of the wrong type.
        InvalidInputError: a value out of range.
    """
    if max_tokens is not None:
        max_tokens = check_int(max_tokens, "max_tokens", minimum=1)
    return (
        max_tokens,  # type: ignore[return-value]
        check_number(temperature, "temperature", minimum=0.0, maximum=2.0),
        check_bool(json_mode, "json_mode"),
    )


def quote_answer(answer: str) -> str:
    """The first :data:`_QUOTE_CHARS` characters of ``answer``, as a Python literal."""
    return repr(answer[:_QUOTE_CHARS]) + (f"... ({len(answer)} characters)" if len(answer) > _QUOTE_CHARS else "")


class CallableLLM:
    """An :class:`LLM` made of an async function ``fn(messages) -> str``.

    ``fn`` receives the checked messages (a new ``list`` of ``{"role", "content"}`` dicts) as its
    one positional argument, and ``json_mode=<bool>`` as a keyword when its signature has a
    parameter named ``json_mode``. ``max_tokens`` and ``temperature`` are checked, not passed.

    Args:
        fn: An ``async def`` function, bound method, ``functools.partial`` of one, or an object
            whose ``__call__`` is ``async def``.
        model: The name recorded in provenance; default ``fn.__name__`` (for an object without
            one, its class name).
        timeout: Seconds one call may take (finite, > 0), default 60.

    Errors of a call: a call running longer than ``timeout`` is cancelled and raises
    :class:`~primitives.errors.LLMTimeoutError` (so does a ``TimeoutError`` from ``fn``); a
    ``ConnectionError`` or other ``OSError`` from ``fn`` becomes
    :class:`~primitives.errors.LLMUnavailableError` (cause chained); an
    :class:`~primitives.errors.LLMError` from ``fn`` passes unchanged; an answer that is not a
    ``str``, or is empty or only whitespace, raises :class:`~primitives.errors.LLMResponseError`;
    any other exception from ``fn`` propagates unchanged (a bug in ``fn`` is not hidden).

    Raises:
        InvalidInputTypeError: ``fn`` is not an async callable that accepts one positional
            argument, or ``model`` is not a ``str``.
        InvalidInputError: an empty ``model`` or a ``timeout`` that is not a finite number > 0.
    """

    def __init__(self, fn: Any, *, model: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not _is_async_callable(fn):
            raise InvalidInputTypeError(
                f"an LLM must be an object with `model` and `async def complete(messages, ...)`, or an "
                f"`async def fn(messages) -> str`; got {_describe(fn)} (wrap a sync client in an async "
                "function, e.g. with asyncio.to_thread)"
            )
        signature = _signature(fn)
        if signature is not None:
            try:
                signature.bind([])
            except TypeError:
                raise InvalidInputTypeError(
                    f"{_describe(fn)} must accept the messages as its one positional argument "
                    f"(signature {signature})"
                ) from None
        if model is None:
            inner = getattr(fn, "func", None)  # a functools.partial
            model = getattr(fn, "__name__", None) or getattr(inner, "__name__", None) or type(fn).__name__
        self.model: str = check_identifier(model, "model")
        self.timeout: float = check_number(timeout, "timeout", minimum=0.0, exclusive_minimum=True)
        self._fn = fn
        self._json_kw = signature is not None and _accepts_keyword(signature, "json_mode")

    @property
    def fn(self) -> Any:
        """The wrapped async callable."""
        return self._fn

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        json_mode: bool = False,
        max_tokens: int | None = None,
        temperature: float = 0.0,
    ) -> str:
        """``fn``'s answer to ``messages``; see :class:`LLM` and the class docstring.

        Raises:
            InvalidInputError: malformed ``messages`` or options (see :func:`check_messages`).
            LLMTimeoutError: no answer within ``timeout`` seconds.
            LLMUnavailableError: ``fn`` raised a ``ConnectionError`` or other ``OSError``.
            LLMResponseError: the answer is not a ``str``, or is empty or only whitespace.
            LLMError: raised by ``fn`` (passed unchanged), like any other exception of ``fn``.
        """
        checked = check_messages(messages)
        _, _, json_mode = check_options(max_tokens, temperature, json_mode)
        kwargs = {"json_mode": json_mode} if self._json_kw else {}
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._fn(checked, **kwargs)
        except LLMError:
            raise
        except TimeoutError as exc:
            raise LLMTimeoutError(
                f"the LLM {self.model!r} did not answer within {self.timeout:g} s; raise the timeout "
                "(as_llm(..., timeout=...)) or check the model behind it",
                model=self.model,
            ) from exc
        except OSError as exc:
            raise LLMUnavailableError(
                f"the LLM {self.model!r} cannot be reached ({type(exc).__name__}: {exc}); check the "
                "service behind it",
                model=self.model,
            ) from exc
        return _check_answer(answer, self.model)

    def __repr__(self) -> str:
        return f"CallableLLM(model={self.model!r}, timeout={self.timeout:g})"


def as_llm(obj: object, *, model: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> LLM:
    """``obj`` as an :class:`LLM`.

    Args:
        obj: An LLM (an object with a non-empty ``str`` attribute ``model`` and an ``async def
            complete``), returned as it is; or an async callable ``fn(messages) -> str``
            (optionally accepting ``json_mode=``), wrapped in a :class:`CallableLLM`.
        model: For a callable: the name recorded in provenance (default: its ``__name__``).
            Ignored for an LLM, which names itself.
        timeout: For a callable: seconds one call may take (finite, > 0; default 60). Ignored
            for an LLM, which has its own.

    Returns:
        ``obj`` itself, or a new :class:`CallableLLM`.

    Raises:
        InvalidInputTypeError: ``obj`` is neither (a sync function, a non-callable, an object
            whose ``complete`` is not async or whose ``model`` is not a ``str``).
        InvalidInputError: an empty ``model``, or a ``timeout`` that is not a finite number > 0.
    """
    if not isinstance(obj, type) and hasattr(obj, "complete") and hasattr(obj, "model"):
        complete = obj.complete  # type: ignore[attr-defined]
        name = obj.model  # type: ignore[attr-defined]
        if not inspect.iscoroutinefunction(complete):
            raise InvalidInputTypeError(
                f"{_describe(obj)} has a `complete` that is not `async def`; an LLM's complete must be a "
                "coroutine function"
            )
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputTypeError(f"{_describe(obj)}.model must be a non-empty str, got {name!r}"[:300])
        return obj  # type: ignore[return-value]
    return CallableLLM(obj, model=model, timeout=timeout)


async def complete_json(llm: LLM, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> dict[str, Any]:
    """Ask ``llm`` for a JSON object and return it parsed.

    Calls ``llm.complete(messages, json_mode=True, max_tokens=max_tokens)``. The messages should
    ask for JSON themselves: servers that honour ``response_format`` (OpenAI) refuse JSON mode
    when no message mentions JSON, and servers configured with ``json_mode="prompt"`` only have
    the prompt to go by. Around the answer, whitespace and one Markdown code fence (```` ```json
    ... ``` ```` or ```` ``` ... ``` ````) are removed; the rest must be one JSON object.

    Args:
        llm: Any :class:`LLM`.
        messages: See :func:`check_messages`.
        max_tokens: Most tokens to generate (``None``: the server's default).

    Returns:
        The object as a ``dict`` (keys ``str``, values JSON: ``dict``, ``list``, ``str``, ``int``,
        ``float``, ``bool``, ``None``).

    Raises:
        InvalidInputError: malformed ``messages`` or ``max_tokens``.
        LLMResponseError: the answer is not a ``str``, is not JSON, is JSON but not an object
            (a list, a string, a number), uses ``NaN``/``Infinity``, or nests too deeply. The
            message says "expected a JSON object" and quotes the answer's first 200 characters.
        LLMUnavailableError, LLMTimeoutError, LLMResponseError: from ``llm.complete``.
    """
    checked = check_messages(messages)
    max_tokens, _, _ = check_options(max_tokens, 0.0)
    model = getattr(llm, "model", "")
    model = model if isinstance(model, str) else ""
    answer = await llm.complete(checked, json_mode=True, max_tokens=max_tokens)
    if not isinstance(answer, str):
        raise LLMResponseError(
            f"the LLM {model!r} answered a {type(answer).__name__}; expected a JSON object as text", model=model
        )
    text = answer.strip()
    fenced = _FENCE.fullmatch(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, _ConstantError) else (
            "JSON nested too deeply" if isinstance(exc, RecursionError) else f"not JSON: {exc}")
        raise LLMResponseError(
            f"the LLM {model!r} answered {quote_answer(answer)}; expected a JSON object ({reason})", model=model
        ) from None
    if not isinstance(value, dict):
        raise LLMResponseError(
            f"the LLM {model!r} answered {quote_answer(answer)}; expected a JSON object, got a JSON "
            f"{_json_kind(value)}",
            model=model,
        )
    return value


class _ConstantError(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not valid JSON")


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _check_answer(answer: object, model: str) -> str:
    if not isinstance(answer, str):
        raise LLMResponseError(
            f"the LLM {model!r} returned a {type(answer).__name__} ({_describe(answer)}); expected a non-empty str",
            model=model,
        )
    if not answer.strip():
        raise LLMResponseError(f"the LLM {model!r} returned an empty answer ({answer[:40]!r})", model=model)
    return str.__str__(answer)


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004  # an object with an async __call__
    return not inspect.isroutine(fn) and not isinstance(fn, type) and inspect.iscoroutinefunction(call)


def _signature(fn: object) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None


def _accepts_keyword(signature: inspect.Signature, name: str) -> bool:
    parameter = signature.parameters.get(name)
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _describe(value: object) -> str:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{type(value).__name__} {text}"
