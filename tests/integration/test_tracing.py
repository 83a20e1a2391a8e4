"""OpenTelemetry spans, recorded by the SDK's in-memory exporter: a send span around each defer
(one, batch, COPY, in the caller's transaction), a process span around each job run by a real
worker, linked to the send span whose context the job carried; error.type on a failure; and
nothing at all (no span, no trace context stored) without an SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import sqla_jobs
from sqla_jobs import migrations


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    recorded = InMemorySpanExporter()
    yield recorded
    recorded.clear()


@pytest.fixture
async def traced(db_url: str, exporter: InMemorySpanExporter) -> AsyncIterator[sqla_jobs.App]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = sqla_jobs.App(
        connector=sqla_jobs.PsycopgConnector(conninfo=db_url), tracer_provider=provider
    )
    async with app.open_async():
        yield app


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def stored_context(db_url: str, job_id: int) -> dict[str, str] | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT trace_context FROM sqla_jobs_jobs WHERE id = %s", [job_id]
        ).fetchone()
    assert row is not None
    return None if row[0] is None else dict(json.loads(row[0]))


async def run_all(app: sqla_jobs.App) -> None:
    await asyncio.wait_for(
        app.run_worker_async(wait=False, install_signal_handlers=False), timeout=30
    )


async def test_a_deferred_job_is_processed_in_a_span_linked_to_its_send_span(
    traced: sqla_jobs.App, exporter: InMemorySpanExporter, db_url: str
) -> None:
    app = traced
    ran_in: list[Any] = []

    @app.task(name="mail.send", queue="emails")
    async def send(to: str) -> None:
        from opentelemetry import trace

        ran_in.append(trace.get_current_span().get_span_context())

    tracer = app.job_manager.tracing.tracer()
    with tracer.start_as_current_span("POST /signup") as request:
        job_id = await send.defer_async(to="a@example.com")
    await run_all(app)

    (sent,) = spans(exporter, "send emails")
    assert sent.kind is SpanKind.PRODUCER
    assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
    assert dict(sent.attributes or {}) == {
        "messaging.system": "sqla_jobs",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "emails",
        "messaging.message.id": str(job_id),
    }
    context = stored_context(db_url, job_id)
    assert context is not None
    assert f"{sent.context.span_id:016x}" in context["traceparent"]

    (processed,) = spans(exporter, "process emails")
    assert processed.kind is SpanKind.CONSUMER
    assert [link.context.span_id for link in processed.links] == [sent.context.span_id]
    attributes = dict(processed.attributes or {})
    assert attributes["messaging.message.id"] == str(job_id)
    assert attributes["messaging.destination.name"] == "emails"
    assert attributes["sqla_jobs.task.name"] == "mail.send"
    assert "error.type" not in attributes
    assert ran_in == [processed.context]  # the task's own spans are its children


async def test_a_failing_job_sets_error_type_and_the_error_status(
    traced: sqla_jobs.App, exporter: InMemorySpanExporter
) -> None:
    @traced.task(name="broken")
    def broken() -> None:
        raise LookupError("nothing there")

    await broken.defer_async()
    await traced.configure_task("nobody.registered").defer_async()
    await run_all(traced)

    processed = spans(exporter, "process default")
    assert len(processed) == 2
    errors = sorted(str((span.attributes or {})["error.type"]) for span in processed)
    assert errors == ["LookupError", "sqla_jobs.worker.executor._UnknownTask"]
    assert all(span.status.status_code is StatusCode.ERROR for span in processed)


async def test_a_batch_is_one_send_span_and_every_job_links_to_it(
    traced: sqla_jobs.App, exporter: InMemorySpanExporter, db_url: str
) -> None:
    @traced.task(name="noop", queue="bulk")
    async def noop(n: int) -> None: ...

    small = await noop.batch_defer_async(*({"n": n} for n in range(3)))
    big = await noop.batch_defer_async(
        *({"n": n} for n in range(traced.job_manager.copy_threshold))
    )  # COPY
    await run_all(traced)

    sends = spans(exporter, "send bulk")
    assert [(span.attributes or {})["messaging.batch.message_count"] for span in sends] == [
        3,
        len(big),
    ]
    assert all("messaging.message.id" not in (span.attributes or {}) for span in sends)
    processed = spans(exporter, "process bulk")
    assert len(processed) == len(small) + len(big)
    linked = {link.context.span_id for span in processed for link in span.links}
    assert linked == {span.context.span_id for span in sends}
    assert stored_context(db_url, big[-1]) == stored_context(db_url, big[0])


async def test_a_defer_in_the_callers_transaction_is_traced_too(
    traced: sqla_jobs.App, exporter: InMemorySpanExporter, db_url: str
) -> None:
    engine = sa.create_engine(migrations.driver_url(db_url), poolclass=sa.NullPool)
    with engine.begin() as connection:
        job_id = traced.configure_task("t", bind=connection).defer()
    engine.dispose()
    (sent,) = spans(exporter, "send default")
    assert (sent.attributes or {})["messaging.message.id"] == str(job_id)
    assert stored_context(db_url, job_id) is not None


async def test_a_refused_defer_ends_its_span_with_the_error(
    traced: sqla_jobs.App, exporter: InMemorySpanExporter
) -> None:
    await traced.configure_task("t", queueing_lock="once").defer_async()
    with pytest.raises(sqla_jobs.AlreadyEnqueued):
        await traced.configure_task("t", queueing_lock="once").defer_async()
    failed = spans(exporter, "send default")[-1]
    assert (failed.attributes or {})["error.type"] == "sqla_jobs.errors.AlreadyEnqueued"
    assert failed.status.status_code is StatusCode.ERROR


async def test_without_an_sdk_nothing_is_traced_or_stored(db_url: str) -> None:
    from opentelemetry import trace

    # The process-wide provider is the API's proxy: no SDK configured.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url))
    assert app.job_manager.tracing.tracer() is None
    async with app.open_async():
        job_id = await app.configure_task("t").defer_async()
        ids = await app.configure_task("t").batch_defer_async({}, {})
    assert stored_context(db_url, job_id) is None
    assert all(stored_context(db_url, other) is None for other in ids)
