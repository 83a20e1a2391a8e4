"""OpenTelemetry tracing: a ``send {queue}`` span around each defer, a ``process {queue}`` span
around each job, linked to the span that deferred it.

Only OpenTelemetry's API is used (extra ``sqla_jobs[opentelemetry]``), and nothing happens until
the application configures an SDK (a real `TracerProvider`, global or given as
``App(tracer_provider=...)``): without one, a defer writes no trace context and a worker opens
no span, so the hot path pays one check per job. The spans follow OpenTelemetry's messaging
conventions: ``messaging.system`` is ``sqla_jobs``, the destination is the queue, the message id
the job id; a failure sets ``error.type`` (the exception's class) and the span's error status.

The deferring span's context (W3C ``traceparent``/``tracestate``) is stored with the job
(``sqla_jobs_jobs.trace_context``), and the job's ``process`` span links to it: a job runs
later, maybe much later, than the request that deferred it, so it is linked rather than a child.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .task_controls import CancelJob, Snooze

if TYPE_CHECKING:
    from .jobs import Job, JobSpec

__all__ = ["SYSTEM", "Sending", "Tracing"]

#: ``messaging.system`` of every span.
SYSTEM = "sqla_jobs"
_INSTRUMENTATION = "sqla_jobs"


_UNSET: Any = object()


def _trace_api() -> Any:
    """OpenTelemetry's trace API, or None when it is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def _api() -> tuple[Any, Any]:
    """The trace and propagation APIs (propagation loads its propagators: imported only
    once something is traced)."""
    from opentelemetry import propagate, trace

    return trace, propagate


@dataclasses.dataclass(slots=True)
class Sending:
    """What a traced defer writes: its jobs, carrying the trace context of the send span; call
    `sent` with their ids once written."""

    specs: Sequence[JobSpec]
    span: Any = None

    def sent(self, job_ids: Sequence[int]) -> None:
        if self.span is not None and len(job_ids) == 1:
            self.span.set_attribute("messaging.message.id", str(job_ids[0]))


class Tracing:
    """The spans of one app. ``tracer_provider``: the SDK provider to use; None: the global
    one, once the application has set it (``opentelemetry.trace.set_tracer_provider``)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer_provider = tracer_provider
        self._trace = _UNSET  # the API, imported at the first defer or job
        self._tracers: dict[int, Any] = {}

    def tracer(self) -> Any:
        """The tracer to use now, or None: OpenTelemetry missing, or no SDK configured (the
        API's default provider, a proxy until one is set, or a no-op one)."""
        trace = self._trace
        if trace is _UNSET:
            trace = self._trace = _trace_api()
        if trace is None:
            return None
        provider = self.tracer_provider
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
                return None
        tracer = self._tracers.get(id(provider))
        if tracer is None:
            from . import __version__

            tracer = provider.get_tracer(_INSTRUMENTATION, __version__)
            self._tracers[id(provider)] = tracer
        return tracer

    @contextlib.contextmanager
    def sending(self, specs: Sequence[JobSpec]) -> Iterator[Sending]:
        """Around a defer of ``specs``: a ``send`` span (a producer span, current while the
        jobs are written), whose context the jobs carry. Without an SDK, the specs as they
        are and no span."""
        tracer = self.tracer()
        if tracer is None or not specs:
            yield Sending(specs)
            return
        trace, propagate = _api()
        queues = {spec.queue for spec in specs}
        queue = next(iter(queues)) if len(queues) == 1 else None
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
        if len(specs) > 1:
            attributes["messaging.batch.message_count"] = len(specs)
        span = tracer.start_span(
            f"send {queue}" if queue is not None else "send",
            kind=trace.SpanKind.PRODUCER,
            attributes=attributes,
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        context = json.dumps(carrier, separators=(",", ":"))
        traced = [dataclasses.replace(spec, trace_context=context) for spec in specs]
        with trace.use_span(span, end_on_exit=True, record_exception=False):
            try:
                yield Sending(traced, span)
            except BaseException as exc:
                _failed(trace, span, exc)
                raise

    def processing(self, job: Job) -> contextlib.AbstractContextManager[Any]:
        """Around one run of ``job``: a ``process`` span (a consumer span, current while the
        task runs, so that the task's own spans are its children), linked to the span that
        deferred the job. A null context without an SDK."""
        tracer = self.tracer()
        if tracer is None:
            return contextlib.nullcontext()
        return self._processing(tracer, job)

    @contextlib.contextmanager
    def _processing(self, tracer: Any, job: Job) -> Iterator[Any]:
        trace, propagate = _api()
        links = []
        if job.trace_context:
            try:
                carrier = json.loads(job.trace_context)
            except ValueError:
                carrier = None
            if isinstance(carrier, dict):
                deferred = trace.get_current_span(propagate.extract(carrier)).get_span_context()
                if deferred.is_valid:
                    links.append(trace.Link(deferred))
        span = tracer.start_span(
            f"process {job.queue}",
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.id),
                "sqla_jobs.task.name": job.task_name,
                "sqla_jobs.job.attempt": job.attempts,
            },
        )
        with trace.use_span(span, end_on_exit=True, record_exception=False):
            try:
                yield span
            except (Snooze, CancelJob) as exc:
                # The task decided what becomes of its job: not an error.
                span.set_attribute("sqla_jobs.job.outcome", type(exc).__name__)
                raise
            except BaseException as exc:
                _failed(trace, span, exc)
                raise


def _failed(trace: Any, span: Any, exc: BaseException) -> None:
    kind = type(exc)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    span.set_attribute("error.type", f"{module}{kind.__qualname__}")
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)[:1000]))
