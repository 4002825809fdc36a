"""``WorkflowContext``: what travels with one execution of a pipeline."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WorkflowContext"]


_PROCESS_PREFIX = uuid.uuid4().hex[:16]
_counter = itertools.count()


def _new_id() -> str:
    """A 32-hex-digit id unique across processes: a random per-process prefix and a counter.

    As unique as ``uuid4().hex`` for correlation purposes at a tenth of the cost (no system call
    per id): contexts are made once per request, so the id is on every request's path.
    """
    return f"{_PROCESS_PREFIX}{next(_counter):016x}"


@dataclass(slots=True)
class WorkflowContext:
    """Per-execution context handed to every step of a pipeline.

    Attributes:
        session_id: The conversation this execution belongs to (working memory is keyed by it);
            ``None`` when the caller has no session.
        workflow_id: Identifies this execution; a fresh 32-hex-digit id by default.
        metadata: Caller-supplied facts (``user_id``, ``namespace``, ...). Read-only by convention.
        state: Scratch space steps use to pass data that is not part of the input/output chain.
        correlation_id: Shared by a context and all its children, for tracing one request end to
            end; a fresh 32-hex-digit id by default.
        parent_workflow_id: The ``workflow_id`` of the context this one was derived from, if any.
    """

    session_id: str | None = None
    workflow_id: str = field(default_factory=_new_id)
    metadata: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    correlation_id: str = field(default_factory=_new_id)
    parent_workflow_id: str | None = None

    @property
    def user_id(self) -> str | None:
        """``metadata["user_id"]`` when it is a string, else ``None``."""
        value = self.metadata.get("user_id")
        return value if isinstance(value, str) else None

    def create_child_context(self) -> WorkflowContext:
        """A context for one parallel branch.

        The child keeps ``session_id`` and ``correlation_id``, gets a new ``workflow_id`` (its
        ``parent_workflow_id`` is this context's), and gets shallow copies of ``metadata`` and
        ``state``: a branch may add or replace keys without its siblings or its parent seeing it.
        """
        return WorkflowContext(
            session_id=self.session_id,
            metadata=dict(self.metadata),
            state=dict(self.state),
            correlation_id=self.correlation_id,
            parent_workflow_id=self.workflow_id,
        )
