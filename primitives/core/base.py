"""The workflow-primitive model: ``WorkflowPrimitive`` and its ``>>`` / ``|`` composition.

The names follow the workflow-primitive convention of TTA.dev's primitives. Composition accepts any
object with an ``async execute(input, context)`` method, not only subclasses.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from primitives.core.context import WorkflowContext
from primitives.errors import CompositionError

__all__ = [
    "Executable",
    "WorkflowPrimitive",
    "SequentialPrimitive",
    "ParallelPrimitive",
]

T = TypeVar("T")
U = TypeVar("U")


@runtime_checkable
class Executable(Protocol):
    """Anything a pipeline can run: an object with ``async execute(input, context)``."""

    async def execute(self, input: Any, context: WorkflowContext) -> Any: ...


def _check_step(step: object) -> Executable:
    execute = getattr(step, "execute", None)
    if execute is None or not callable(execute):
        raise CompositionError(
            f"cannot compose {type(step).__name__!r}: a step needs an `async execute(input, context)` "
            "method; wrap a plain function in LambdaPrimitive(fn)"
        )
    if not (inspect.iscoroutinefunction(execute) or isinstance(step, WorkflowPrimitive)):
        # A sync `execute` would return a non-awaitable and fail deep inside a pipeline.
        raise CompositionError(
            f"cannot compose {type(step).__name__!r}: its execute() is not `async def`; "
            "wrap a plain function in LambdaPrimitive(fn)"
        )
    return step  # type: ignore[return-value]


class WorkflowPrimitive(ABC, Generic[T, U]):
    """One async step of a workflow: ``await step.execute(input, context) -> output``.

    ``a >> b`` runs ``a`` then ``b`` on ``a``'s output (chains are flattened, so
    ``a >> b >> c`` is one :class:`SequentialPrimitive` of three steps). ``a | b`` runs both on the
    same input concurrently, each with its own child context, and returns ``[out_a, out_b]``.
    """

    @property
    def name(self) -> str:
        """The step's name, used for spans and metrics; the class name unless overridden."""
        return type(self).__name__

    @abstractmethod
    async def execute(self, input: T, context: WorkflowContext) -> U:
        """Run the step.

        Args:
            input: The previous step's output (or the pipeline's input).
            context: The execution's context; see :class:`WorkflowContext`.

        Returns:
            This step's output, the next step's input.
        """

    def __rshift__(self, other: object) -> SequentialPrimitive:
        return SequentialPrimitive([self, _check_step(other)])

    def __rrshift__(self, other: object) -> SequentialPrimitive:
        return SequentialPrimitive([_check_step(other), self])

    def __or__(self, other: object) -> ParallelPrimitive:
        return ParallelPrimitive([self, _check_step(other)])

    def __ror__(self, other: object) -> ParallelPrimitive:
        return ParallelPrimitive([_check_step(other), self])


class SequentialPrimitive(WorkflowPrimitive[Any, Any]):
    """Runs its steps in order, each on the previous step's output, all with the same context.

    Nested sequences are flattened at construction. An exception in a step stops the chain and
    propagates unchanged.
    """


    def __init__(self, steps: Sequence[object]) -> None:
        flat: list[Executable] = []
        for step in steps:
            if isinstance(step, SequentialPrimitive):
                flat.extend(step.steps)
            else:
                flat.append(_check_step(step))
        if not flat:
            raise CompositionError("a SequentialPrimitive needs at least one step")
        self.steps: tuple[Executable, ...] = tuple(flat)

    def __rshift__(self, other: object) -> SequentialPrimitive:
        return SequentialPrimitive([*self.steps, other])

    async def execute(self, input: Any, context: WorkflowContext) -> Any:
        data = input
        for step in self.steps:
            data = await step.execute(data, context)
        return data

    def __repr__(self) -> str:
        return " >> ".join(getattr(s, "name", type(s).__name__) for s in self.steps)


class ParallelPrimitive(WorkflowPrimitive[Any, list[Any]]):
    """Runs its branches concurrently on the same input; returns their outputs in branch order.

    Each branch gets ``context.create_child_context()``, so branches cannot see each other's
    ``state`` changes. If a branch raises, the other branches are cancelled and that branch's
    exception (the first to finish failing) propagates unchanged, not wrapped in a group.
    Nested parallels are flattened at construction.
    """


    def __init__(self, branches: Sequence[object]) -> None:
        flat: list[Executable] = []
        for branch in branches:
            if isinstance(branch, ParallelPrimitive):
                flat.extend(branch.branches)
            else:
                flat.append(_check_step(branch))
        if not flat:
            raise CompositionError("a ParallelPrimitive needs at least one branch")
        self.branches: tuple[Executable, ...] = tuple(flat)

    def __or__(self, other: object) -> ParallelPrimitive:
        return ParallelPrimitive([*self.branches, other])

    async def execute(self, input: Any, context: WorkflowContext) -> list[Any]:
        tasks = [
            asyncio.ensure_future(branch.execute(input, context.create_child_context()))
            for branch in self.branches
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def __repr__(self) -> str:
        return " | ".join(getattr(b, "name", type(b).__name__) for b in self.branches)
