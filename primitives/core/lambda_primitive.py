"""``LambdaPrimitive``: a plain function as a pipeline step."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from primitives.core.base import WorkflowPrimitive
from primitives.core.context import WorkflowContext
from primitives.errors import InvalidInputTypeError
from primitives.validation import check_text

__all__ = ["LambdaPrimitive"]


def _wants_context(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature take the input only
        return False
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    return len(positional) >= 2 or varargs


class LambdaPrimitive(WorkflowPrimitive[Any, Any]):
    """Wraps a sync or async callable as a step.

    The callable is called as ``fn(input, context)`` when it accepts two positional arguments (or
    ``*args``), else as ``fn(input)``. An awaitable result is awaited. A sync callable runs on the
    event loop thread, so it should not block.

    Args:
        fn: The function to run.
        name: The step's name for spans and ``repr`` (a ``str``); ``fn.__name__`` when ``None``
            or empty.

    Raises:
        InvalidInputTypeError: (also a ``TypeError``) ``fn`` is not callable, or ``name`` is
            neither ``None`` nor a ``str``.
        InvalidInputError: ``name`` has a lone surrogate.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise InvalidInputTypeError(f"LambdaPrimitive needs a callable, got {type(fn).__name__}")
        if name is not None:
            name = check_text(name, "name")
        self._fn = fn
        self._with_context = _wants_context(fn)
        self._name = name or str(getattr(fn, "__name__", type(fn).__name__))

    @property
    def name(self) -> str:
        return self._name

    async def execute(self, input: Any, context: WorkflowContext) -> Any:
        result = self._fn(input, context) if self._with_context else self._fn(input)
        if inspect.isawaitable(result):
            result = await result
        return result

    def __repr__(self) -> str:
        return f"LambdaPrimitive({self._name})"
