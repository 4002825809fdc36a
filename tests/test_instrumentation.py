"""InstrumentedPrimitive: a span per call with status and exception, a duration histogram in
seconds; silent without an SDK. Uses the OpenTelemetry SDK's in-memory exporter and reader."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from primitives import InstrumentedPrimitive, WorkflowContext
from primitives.core import DURATION_METRIC


class Echo(InstrumentedPrimitive[Any, Any]):
    async def _execute_impl(self, input: Any, context: WorkflowContext) -> Any:
        if input == "fail":
            raise RuntimeError("step failed")
        return input


@pytest.fixture
def otel():
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield exporter, reader, {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _histogram_points(reader: InMemoryMetricReader):
    data = reader.get_metrics_data()
    points = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == DURATION_METRIC:
                    assert metric.unit == "s"
                    points.extend(metric.data.data_points)
    return points


async def test_success_makes_an_ok_span_and_records_duration(otel) -> None:
    exporter, reader, providers = otel
    step = Echo(**providers)
    ctx = WorkflowContext(session_id="s-7")
    assert await step.execute("hi", ctx) == "hi"
    (span,) = exporter.get_finished_spans()
    assert span.name == "Echo"
    assert span.status.status_code is StatusCode.OK
    assert span.attributes["session.id"] == "s-7"
    assert span.attributes["workflow.correlation_id"] == ctx.correlation_id
    (point,) = _histogram_points(reader)
    assert point.count == 1 and point.sum > 0
    assert dict(point.attributes) == {"primitive.name": "Echo", "status": "ok"}


async def test_failure_marks_span_error_records_exception_and_reraises(otel) -> None:
    exporter, reader, providers = otel
    step = Echo(**providers)
    with pytest.raises(RuntimeError, match="step failed"):
        await step.execute("fail", WorkflowContext())
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert "RuntimeError" in span.status.description
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"
    (point,) = _histogram_points(reader)
    assert dict(point.attributes)["status"] == "error"


async def test_nested_steps_make_child_spans(otel) -> None:
    exporter, _, providers = otel
    inner = Echo(**providers)

    class Outer(InstrumentedPrimitive[Any, Any]):
        async def _execute_impl(self, input: Any, context: WorkflowContext) -> Any:
            return await inner.execute(input, context)

    await Outer(**providers).execute("x", WorkflowContext())
    child, parent = exporter.get_finished_spans()
    assert child.parent.span_id == parent.context.span_id


async def test_without_sdk_it_runs_silently() -> None:
    # No provider given and none configured globally: the API's no-op tracer and meter.
    assert await Echo().execute("quiet", WorkflowContext()) == "quiet"
    with pytest.raises(RuntimeError):
        await Echo().execute("fail", WorkflowContext())
