"""The workflow-primitive model: steps, composition with ``>>`` and ``|``, context, instrumentation."""

from primitives.core.base import Executable, ParallelPrimitive, SequentialPrimitive, WorkflowPrimitive
from primitives.core.context import WorkflowContext
from primitives.core.instrumented import DURATION_METRIC, InstrumentedPrimitive
from primitives.core.lambda_primitive import LambdaPrimitive

__all__ = [
    "DURATION_METRIC",
    "Executable",
    "InstrumentedPrimitive",
    "LambdaPrimitive",
    "ParallelPrimitive",
    "SequentialPrimitive",
    "WorkflowContext",
    "WorkflowPrimitive",
]
