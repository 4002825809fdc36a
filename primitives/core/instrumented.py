"""``InstrumentedPrimitive``: a step that reports an OpenTelemetry span and duration metric."""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Generic, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

from primitives.core.base import WorkflowPrimitive
from primitives.core.context import WorkflowContext

__all__ = ["InstrumentedPrimitive", "DURATION_METRIC"]

T = TypeVar("T")
U = TypeVar("U")

#: Name of the histogram every instrumented step records its duration in, in seconds.
DURATION_METRIC = "workflow.primitive.duration"

_INSTRUMENTATION_SCOPE = "memory-primitives"


class InstrumentedPrimitive(WorkflowPrimitive[T, U], Generic[T, U]):
    """A step whose every ``execute`` makes a span and records its duration.

    Subclasses implement :meth:`_execute_impl`. Each call opens a span named :attr:`name` (with
    attributes ``primitive.name``, ``workflow.id``, ``workflow.correlation_id`` and
    ``session.id`` when set), marks it ``ERROR`` and records the exception when the call raises,
    and records the wall time of the call in seconds in the histogram :data:`DURATION_METRIC`
    with attributes ``primitive.name`` and ``status`` (``"ok"`` or ``"error"``).

    With no OpenTelemetry SDK configured the API's no-op tracer and meter are used, so nothing is
    exported and nothing fails.

    Args:
        tracer_provider: Where spans go; the global provider (``trace.get_tracer_provider()``)
            when ``None``.
        meter_provider: Where the histogram goes; the global provider when ``None``.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_INSTRUMENTATION_SCOPE, tracer_provider=tracer_provider)
        meter = (
            meter_provider.get_meter(_INSTRUMENTATION_SCOPE)
            if meter_provider is not None
            else metrics.get_meter(_INSTRUMENTATION_SCOPE)
        )
        self._duration = meter.create_histogram(
            DURATION_METRIC, unit="s", description="Duration of one execute() of a workflow primitive"
        )
        self._ok_attrs = {"primitive.name": self.name, "status": "ok"}
        self._error_attrs = {"primitive.name": self.name, "status": "error"}

    @abstractmethod
    async def _execute_impl(self, input: T, context: WorkflowContext) -> U:
        """The step's work; called by :meth:`execute` inside the span."""

    async def execute(self, input: T, context: WorkflowContext) -> U:
        start = time.perf_counter()
        span = self._tracer.start_span(self.name)
        if not span.is_recording():
            # No SDK (or sampled out): skip making the span current, which costs more than the
            # rest of the instrumentation together; the duration is still recorded.
            try:
                result = await self._execute_impl(input, context)
            except BaseException:
                self._duration.record(time.perf_counter() - start, self._error_attrs)
                raise
            self._duration.record(time.perf_counter() - start, self._ok_attrs)
            return result
        span.set_attribute("primitive.name", self.name)
        span.set_attribute("workflow.id", context.workflow_id)
        span.set_attribute("workflow.correlation_id", context.correlation_id)
        if context.session_id is not None:
            span.set_attribute("session.id", context.session_id)
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                result = await self._execute_impl(input, context)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                self._duration.record(time.perf_counter() - start, self._error_attrs)
                raise
            span.set_status(Status(StatusCode.OK))
            self._duration.record(time.perf_counter() - start, self._ok_attrs)
            return result
