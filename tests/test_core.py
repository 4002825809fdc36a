"""Composition (order, flattening, parallel failure, context isolation) and LambdaPrimitive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from primitives import LambdaPrimitive, ParallelPrimitive, SequentialPrimitive, WorkflowContext, WorkflowPrimitive
from primitives.errors import CompositionError, InvalidInputError, InvalidInputTypeError


class Append(WorkflowPrimitive[list, list]):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def execute(self, input: list, context: WorkflowContext) -> list:
        return [*input, self.tag]


class Duck:
    """Not a WorkflowPrimitive, but has async execute: composition must accept it."""

    async def execute(self, input: Any, context: WorkflowContext) -> Any:
        return [*input, "duck"]


async def test_sequential_runs_in_order_and_flattens() -> None:
    pipeline = Append("a") >> Append("b") >> Append("c")
    assert isinstance(pipeline, SequentialPrimitive)
    assert len(pipeline.steps) == 3  # flattened, not nested
    nested = (Append("x") >> Append("y")) >> (Append("z") >> Append("w"))
    assert len(nested.steps) == 4
    assert await pipeline.execute([], WorkflowContext()) == ["a", "b", "c"]
    assert await nested.execute([], WorkflowContext()) == ["x", "y", "z", "w"]


async def test_any_object_with_async_execute_composes_on_either_side() -> None:
    ctx = WorkflowContext()
    assert await (Append("a") >> Duck()).execute([], ctx) == ["a", "duck"]
    assert await (Duck() >> Append("a")).execute([], ctx) == ["duck", "a"]
    assert await (Duck() | Append("p")).execute([], ctx) == [["duck"], ["p"]]


@pytest.mark.parametrize("bad", [42, "text", lambda x: x, object()])
def test_composing_a_non_executable_is_a_typed_error(bad: object) -> None:
    with pytest.raises(CompositionError) as info:
        Append("a") >> bad  # type: ignore[operator]
    assert "LambdaPrimitive" in str(info.value)
    assert isinstance(info.value, TypeError)


async def test_sync_execute_is_refused() -> None:
    class SyncStep:
        def execute(self, input, context):
            return input

    with pytest.raises(CompositionError):
        Append("a") >> SyncStep()  # type: ignore[operator]


async def test_parallel_returns_outputs_in_branch_order_and_flattens() -> None:
    async def slow(x: list) -> str:
        await asyncio.sleep(0.02)
        return "slow"

    par = LambdaPrimitive(slow) | Append("fast") | Append("third")
    assert isinstance(par, ParallelPrimitive) and len(par.branches) == 3
    assert await par.execute([], WorkflowContext()) == ["slow", ["fast"], ["third"]]


async def test_parallel_branches_run_concurrently() -> None:
    started: list[str] = []
    gate = asyncio.Event()

    async def first(_: Any) -> str:
        started.append("first")
        await gate.wait()
        return "first"

    async def second(_: Any) -> str:
        started.append("second")
        gate.set()
        return "second"

    result = await asyncio.wait_for((LambdaPrimitive(first) | LambdaPrimitive(second)).execute(None, WorkflowContext()), 2)
    assert result == ["first", "second"]


async def test_parallel_failure_raises_branch_exception_and_cancels_others() -> None:
    cancelled = asyncio.Event()

    async def waits(_: Any) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fails(_: Any) -> None:
        await asyncio.sleep(0.01)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await (LambdaPrimitive(waits) | LambdaPrimitive(fails)).execute(None, WorkflowContext())
    assert cancelled.is_set()


async def test_sequential_failure_stops_the_chain() -> None:
    ran: list[str] = []

    def boom(_: Any) -> None:
        raise ValueError("bad step")

    pipeline = LambdaPrimitive(boom) >> LambdaPrimitive(lambda x: ran.append("after"))
    with pytest.raises(ValueError, match="bad step"):
        await pipeline.execute(None, WorkflowContext())
    assert ran == []


async def test_parallel_branches_get_isolated_child_contexts() -> None:
    seen: dict[str, dict] = {}

    def writer(name: str):
        def step(_: Any, context: WorkflowContext) -> str:
            context.state["who"] = name
            context.metadata["touched"] = name
            seen[name] = {"state": dict(context.state), "parent": context.parent_workflow_id,
                          "workflow_id": context.workflow_id, "corr": context.correlation_id,
                          "session": context.session_id}
            return name

        return LambdaPrimitive(step, name=name)

    parent = WorkflowContext(session_id="s1", metadata={"user_id": "u"}, state={"shared": 1})
    await (writer("left") | writer("right")).execute(None, parent)
    assert parent.state == {"shared": 1}
    assert parent.metadata == {"user_id": "u"}
    assert seen["left"]["state"] == {"shared": 1, "who": "left"}
    assert seen["right"]["state"] == {"shared": 1, "who": "right"}
    for name in ("left", "right"):
        assert seen[name]["parent"] == parent.workflow_id
        assert seen[name]["workflow_id"] != parent.workflow_id
        assert seen[name]["corr"] == parent.correlation_id
        assert seen[name]["session"] == "s1"


async def test_sequential_steps_share_one_context() -> None:
    def put(_: Any, context: WorkflowContext) -> None:
        context.state["k"] = "v"

    def get(_: Any, context: WorkflowContext) -> str:
        return context.state["k"]

    assert await (LambdaPrimitive(put) >> LambdaPrimitive(get)).execute(None, WorkflowContext()) == "v"


async def test_lambda_accepts_sync_async_and_context_taking_callables() -> None:
    async def aplus(x: int) -> int:
        return x + 1

    ctx = WorkflowContext(metadata={"user_id": "bob"})
    assert await LambdaPrimitive(lambda x: x * 2).execute(3, ctx) == 6
    assert await LambdaPrimitive(aplus).execute(3, ctx) == 4
    assert await LambdaPrimitive(lambda x, c: c.user_id).execute(3, ctx) == "bob"
    assert await LambdaPrimitive(str.upper).execute("a", ctx) == "A"
    assert LambdaPrimitive(aplus).name == "aplus"
    with pytest.raises(TypeError):
        LambdaPrimitive(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fn", "name", "error"),
    [(42, None, InvalidInputTypeError), (None, None, InvalidInputTypeError),
     (str, 5, InvalidInputTypeError), (str, b"n", InvalidInputTypeError), (str, "\ud800", InvalidInputError)],
)
def test_lambda_primitive_refuses_hostile_arguments_with_typed_errors(fn: Any, name: Any, error: type) -> None:
    with pytest.raises(error):
        LambdaPrimitive(fn, name=name)


def test_lambda_primitive_names_are_kept_and_composed() -> None:
    steps = LambdaPrimitive(str, name="\x00 step 🙂") >> LambdaPrimitive(str, name="")
    assert repr(steps) == "\x00 step 🙂 >> str"


def test_context_ids_are_unique_and_user_id_is_typed() -> None:
    ids = {WorkflowContext().workflow_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 for i in ids)
    assert WorkflowContext(metadata={"user_id": 5}).user_id is None
