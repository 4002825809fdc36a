"""memory-primitives: composable async workflow primitives that give AI agents memory.

``from primitives import WorkflowContext, LambdaPrimitive`` for the workflow model;
``from primitives.memory import Memory, MemoryPrimitive, RememberPrimitive`` for memory.
"""

from primitives.core import (
    InstrumentedPrimitive,
    LambdaPrimitive,
    ParallelPrimitive,
    SequentialPrimitive,
    WorkflowContext,
    WorkflowPrimitive,
)
from primitives._moved import install as _install_moved
from primitives.errors import PrimitivesError

_install_moved()

__version__ = "0.1.0"

__all__ = [
    "InstrumentedPrimitive",
    "LambdaPrimitive",
    "ParallelPrimitive",
    "PrimitivesError",
    "SequentialPrimitive",
    "WorkflowContext",
    "WorkflowPrimitive",
    "__version__",
]
