"""How a statement is built and rendered: the compiler, and the pieces several statements share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Interval,
    Text,
    bindparam,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.base import PGCompiler
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from .._query import Query
from ..schema import JobStatus, job_status, jobs


class _Compiler(PGCompiler):
    """Writes values that are part of a statement (a status, a literal 1) inline, so that the
    only placeholders left are the named parameters the caller passes."""

    def visit_bindparam(self, bindparam: BindParameter[Any], **kw: Any) -> str:  # type: ignore[override]
        if bindparam.unique:
            kw["literal_binds"] = True
        result: str = super().visit_bindparam(bindparam, **kw)  # type: ignore[no-untyped-call]
        return result


_DIALECT = PGDialect_psycopg2()  # type: ignore[no-untyped-call]
_DIALECT.statement_compiler = _Compiler


#: Every statement `render` has rendered, by name: what `render_in_schema` renders again.
SOURCES: dict[str, tuple[ClauseElement, bool, tuple[ClauseElement, ...]]] = {}


def render(
    name: str,
    statement: ClauseElement,
    *,
    prepared: bool = False,
    preamble: tuple[ClauseElement, ...] = (),
) -> Query:
    """Compile a Core statement to driver-ready SQL text, once, for the tables found by the
    connection's ``search_path`` (no schema named). ``preamble``: statements sent ahead of
    it in the same message and transaction (`Query.preamble`)."""
    SOURCES[name] = (statement, prepared, preamble)
    return _query(name, statement, prepared, preamble, None)


def render_in_schema(name: str, schema: str) -> Query:
    """Statement ``name`` again, its tables (and their type and sequence) in ``schema``."""
    statement, prepared, preamble = SOURCES[name]
    return _query(name, statement, prepared, preamble, schema)


def _query(
    name: str,
    statement: ClauseElement,
    prepared: bool,
    preamble: tuple[ClauseElement, ...],
    schema: str | None,
) -> Query:
    before = tuple(_compiled(ahead, schema) for ahead in preamble)
    return Query(name, _compiled(statement, schema), prepared, preamble=before)


def compile_in_schema(statement: ClauseElement, schema: str | None) -> str:
    """A statement that `render` does not keep (the claim's templates), in ``schema``."""
    return _compiled(statement, schema)


def _compiled(statement: ClauseElement, schema: str | None) -> str:
    if schema is None:
        return str(statement.compile(dialect=_DIALECT))
    # SQLAlchemy's schema translation names the schema, quoted, wherever a table or a type
    # of the metadata appears; `QualifiedName` does it inside the literals that name one.
    compiled = statement.compile(
        dialect=_DIALECT, schema_translate_map={None: schema}, render_schema_translate=True
    )
    return str(compiled)


def quoted_name(name: str, schema: str | None) -> str:
    """``name`` (a table, a sequence) as SQL: quoted where needed, after its schema if any."""
    preparer = _DIALECT.identifier_preparer
    if schema is None:
        return preparer.quote(name)
    return f"{preparer.quote_schema(schema)}.{preparer.quote(name)}"


class QualifiedName(ColumnElement[Any]):
    """A string literal naming one of our tables or sequences, as ``regclass`` and
    ``pg_get_serial_sequence`` read it: in the schema of the statement's tables, which
    SQLAlchemy's schema translation does not reach inside a literal."""

    inherit_cache = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.type = Text()


@compiles(QualifiedName)
def _compile_qualified_name(element: QualifiedName, compiler: SQLCompiler, **kw: Any) -> str:
    translate = getattr(compiler, "schema_translate_map", None) or {}
    qualified = quoted_name(element.name, translate.get(None))
    return "'" + qualified.replace("'", "''") + "'"


class ArrayOf(ColumnElement[Any]):
    """``ARRAY(SELECT ...)``: a subquery's rows as one array, computed once per statement."""

    inherit_cache = True

    def __init__(self, query: Select[Any], item_type: type[Any] = BigInteger) -> None:
        self.query = query.scalar_subquery()
        self.type = ARRAY(item_type())


@compiles(ArrayOf)
def _compile_array_of(element: ArrayOf, compiler: SQLCompiler, **kw: Any) -> str:
    return f"ARRAY{compiler.process(element.query, **kw)}"


def array_param(
    name: str, item_type: type[Text] | type[Integer] | type[BigInteger] | type[DateTime]
) -> ColumnElement[Any]:
    element = DateTime(timezone=True) if item_type is DateTime else item_type()
    return cast(bindparam(name), ARRAY(element))


# The arguments as text: each job's are decoded on their own (`Job.from_row`), so that one row
# the driver could not decode (nested too deep, edited by hand) cannot fail a claim or a list.
JOB_COLUMNS = (
    jobs.c.id,
    jobs.c.queue,
    jobs.c.task_name,
    cast(jobs.c.args, Text).label("args"),
    jobs.c.priority,
    jobs.c.lock,
    jobs.c.queueing_lock,
    jobs.c.status,
    jobs.c.scheduled_at,
    jobs.c.attempts,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
    jobs.c.last_error,
    jobs.c.worker_id,
    jobs.c.trace_context,
    jobs.c.tags,
    cast(jobs.c.meta, Text).label("meta"),  # as text, like the arguments
    jobs.c.workflow_id,
)

#: What a claim returns: a job's columns but the two the claim sets to what the worker knows
#: (status 'doing', its worker_id: `Job.from_claim_row`; a column sent is a column decoded, per
#: job), and whether it depends on other jobs (``parents_left`` is not NULL), for the worker to
#: read their results (only then: see `WorkerDatabase.claim`).
CLAIM_COLUMNS = (
    *(column for column in JOB_COLUMNS if column.name not in ("status", "worker_id")),
    jobs.c.parents_left,
)


def step_time() -> ColumnElement[Any]:
    """When a job starts or ends: ``clock_timestamp()``, read after the statement's snapshot,
    not ``now()``, the start of a transaction that may have begun before the change it acts on
    was committed. A job's history is ordered by these times (schema.job_history): a claim that
    sees a retry committed must start after it."""
    return func.clock_timestamp()


def batch_array(
    name: str, item_type: type[Text] | type[Integer] | type[BigInteger] | type[DateTime]
) -> ColumnElement[Any]:
    """An array of a batch the worker sends, for ``unnest``, in a sub-select: PostgreSQL then
    counts on a few rows, whatever the batch's size, and finds each job by its primary key,
    one probe per row of the batch. Given the array itself, it knows the batch's size: it
    then read and hashed the whole table for a batch of 2,000 on a table of 20,000, or, on a
    table never analysed, for a batch of 100. The ids as ``id = ANY(...)`` and a join with
    the batch for the rest was worse: the batch scanned once per job found (25,000,000
    comparisons, 6 s, for a batch of 5,000)."""
    return select(array_param(name, item_type)).scalar_subquery()


# Any outcome, one row per job: new status, error text, and (for a retry) when to run again.
def unnest_outcomes(*extra: tuple[str, type[BigInteger] | type[Integer]]) -> Any:
    """The table of outcomes sent as arrays: id, status, error, retry_at, then ``extra``
    (name, type) columns."""
    return func.unnest(
        batch_array("ids", BigInteger),
        select(cast(array_param("statuses", Text), ARRAY(job_status))).scalar_subquery(),
        batch_array("errors", Text),
        batch_array("retry_ats", DateTime),
        *(batch_array(f"{name}s", item_type) for name, item_type in extra),
    ).table_valued("id", "status", "error", "retry_at", *(name for name, _ in extra))


def status_literal(value: JobStatus) -> ColumnElement[Any]:
    return cast(literal(value.value), job_status)


#: The stalled timeout (seconds, as an interval) and the caller's own worker id.
stalled_timeout = cast(bindparam("stalled_timeout"), Interval)
this_worker = bindparam("worker_id", type_=BigInteger)
