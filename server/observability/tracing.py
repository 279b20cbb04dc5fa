"""OpenTelemetry spans per request stage, exported over OTLP — or nothing at all.

With ``GGSERVE_OTLP_ENDPOINT`` unset, :class:`Tracing` holds no tracer: ``span`` returns one
shared no-op context manager and ``stages`` returns at once, and the OpenTelemetry packages are
never imported. With it set, each request gets a root span (the request id as an attribute)
and child spans for auth, rate limit, retrieval (embed, search), queue wait, prefill, decode.

The engine measures queue wait, prefill and decode itself (:class:`server.engine.types.Timings`);
those spans are laid back to back from its figures when the request finishes, so tracing adds
no work inside the batching loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Tracer

_NOOP: AbstractContextManager[None] = contextlib.nullcontext()
Attributes = dict[str, str | int | float | bool | tuple[str, ...]]


class Tracing:
    """The app's tracer (one per app, never global)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer: Tracer | None = provider.get_tracer("ggserve") if provider else None

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded."""
        return self._tracer is not None

    def span(self, name: str, attributes: Attributes | None = None) -> AbstractContextManager[Any]:
        """A span around a block, child of the current one (a no-op when tracing is off)."""
        if self._tracer is None:
            return _NOOP
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def stages(
        self,
        stages: Sequence[tuple[str, float]],
        attributes: Attributes | None = None,
        *,
        end_ns: int | None = None,
    ) -> None:
        """Child spans for ``(name, duration_ms)`` stages that ran back to back and ended at
        ``end_ns`` (now by default): timings measured elsewhere, recorded after the fact."""
        if self._tracer is None or not stages:
            return
        cursor = end_ns if end_ns is not None else time.time_ns()
        spans = []
        for name, duration_ms in reversed(stages):
            start = cursor - int(max(duration_ms, 0.0) * 1_000_000)
            spans.append((name, start, cursor))
            cursor = start
        for name, start, end in reversed(spans):
            span = self._tracer.start_span(name, start_time=start, attributes=attributes)
            span.end(end_time=end)

    def generation(
        self,
        name: str,
        attributes: Attributes,
        stages: Sequence[tuple[str, float]],
        stage_attributes: Attributes | None = None,
        *,
        start_ns: int,
        end_ns: int | None = None,
    ) -> None:
        """A span for one model call (``chat {model}`` with its ``gen_ai.*`` attributes) from
        ``start_ns`` to ``end_ns`` (now by default), child of the current span, with the
        engine's ``stages`` laid back to back inside it: recorded after the fact, like
        :meth:`stages`."""
        if self._tracer is None:
            return
        from opentelemetry import trace

        end = end_ns if end_ns is not None else time.time_ns()
        staged = sum(int(max(ms, 0.0) * 1_000_000) for _, ms in stages)
        start = min(start_ns, end - staged)  # a span covers its children, whatever the clocks say
        span = self._tracer.start_span(name, start_time=start, attributes=attributes)
        with trace.use_span(span, end_on_exit=False):
            self.stages(stages, stage_attributes, end_ns=end)
        span.end(end_time=end)

    def shutdown(self) -> None:
        """Flush and stop the exporter (at app shutdown)."""
        if self._provider is not None:
            self._provider.shutdown()


def build_tracing(
    endpoint: str | None,
    service_name: str = "ggserve",
    *,
    processor: SpanProcessor | None = None,
) -> Tracing:
    """Tracing to the OTLP/HTTP collector at ``endpoint`` (e.g. ``http://otel:4318``), or
    through ``processor`` (tests pass an in-memory one); off when both are None."""
    if endpoint is None and processor is None:
        return Tracing(None)
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "GGSERVE_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'ggserve[otel]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = (endpoint or "").rstrip("/")
        traces_url = base if base.endswith("/v1/traces") else base + "/v1/traces"
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url))
    provider.add_span_processor(processor)
    return Tracing(provider)


@contextlib.contextmanager
def request_span(
    tracing: Tracing, name: str, request_id: str, attributes: Attributes | None = None
) -> Iterator[Any]:
    """The root span of one request, carrying its id (what ties the span to the log line).
    Yields the span, to add attributes known at the end (route, status), or None when off."""
    if not tracing.enabled:
        yield None
        return
    with tracing.span(name, {"ggserve.request_id": request_id, **(attributes or {})}) as span:
        yield span
