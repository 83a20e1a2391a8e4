"""Every statement sqla_jobs sends, as driver-ready SQL text; no SQLAlchemy at run time.

The statements are built from the Core tables in ``sqla_jobs.statements`` and rendered once, into
``_rendered_queries`` (a unit test keeps the two in agreement), so that a worker or a defer
loads neither SQLAlchemy nor the compiler. Each `Query` is plain SQL with ``%(name)s``
placeholders, which every connector's driver accepts as it is.
"""

from __future__ import annotations

import functools

from ._query import LIMIT_MARKER, Query
from ._rendered_queries import *  # noqa: F403
from ._rendered_queries import (
    ALL,
    CLAIM_IN_QUEUES_TEMPLATE,
    CLAIM_TEMPLATE,
    COPY_COLUMNS,
    COPY_COLUMNS_WITH_TAGS,
    JOBS_TABLE,
)

__all__ = [
    "ALL",
    "COPY_COLUMNS",
    "COPY_COLUMNS_WITH_TAGS",
    "DEFAULT",
    "JOBS_TABLE",
    "LIMIT_MARKER",
    "Query",
    "Statements",
    "check_schema_name",
    "claim_query",
    "claim_size",
    "for_schema",
]

_EXACT_CLAIM_SIZES = 16


class Statements:
    """Every statement, for the job tables in one place: found by the connection's
    ``search_path`` (`DEFAULT`, the pre-rendered module), or in a named PostgreSQL schema
    (`for_schema`, rendered from the same Core statements once per schema).

    Code that sends a statement names it by its module-level `Query` (``queries.defer_job``);
    ``statements[query]`` is that statement for these tables. The operations' runner and the
    worker's database do the lookup, so no other code knows where the tables are.
    """

    def __init__(
        self,
        schema: str | None,
        all: tuple[Query, ...],
        claim_template: str,
        claim_in_queues_template: str,
        jobs_table: str,
    ) -> None:
        #: The schema named, or None: the tables are found by the ``search_path``.
        self.schema = schema
        self._by_name = {query.name: query for query in all}
        self._claim_templates = {False: claim_template, True: claim_in_queues_template}
        self._claims: dict[tuple[int, bool], Query] = {}
        #: The jobs table as SQL (quoted, qualified by the schema if one is named): for COPY.
        self.jobs_table = jobs_table
        #: Each statement's server-side bound in milliseconds, or None (see `bounded`).
        self.timeout_ms: int | None = None

    def __repr__(self) -> str:
        bound = f" timeout_ms={self.timeout_ms}" if self.timeout_ms is not None else ""
        return f"<Statements schema={self.schema!r}{bound}>"

    def __getitem__(self, query: Query) -> Query:
        """``query`` (one of this module's), for these tables."""
        return self._by_name[query.name]

    def bounded(self, seconds: float) -> Statements:
        """These statements, each cancelled by the server after ``seconds`` (its
        ``statement_timeout``, for that statement alone: see `Query.with_timeout`). For
        readers that must not load a shared database for long, such as the dashboard; a
        statement sent through ``bind=`` runs under the host transaction's own settings."""
        if not seconds > 0:
            raise ValueError(f"a statement timeout must be more than 0 seconds, not {seconds!r}")
        milliseconds = max(1, round(seconds * 1000))
        bounded = Statements.__new__(Statements)
        bounded.schema = self.schema
        bounded._by_name = {
            name: query.with_timeout(milliseconds) for name, query in self._by_name.items()
        }
        bounded._claim_templates = self._claim_templates
        bounded._claims = {}
        bounded.jobs_table = self.jobs_table
        bounded.timeout_ms = milliseconds
        return bounded

    def claim_query(self, limit: int, *, in_queues: bool) -> Query:
        """The claim with its limit written in, under the same name.

        A claim whose limit is a parameter is planned at every call: a generic plan would not
        know how many rows it takes, and would cost it as a tenth of the queue (with 1,000,000
        jobs waiting, enough to JIT-compile it at every call: 250 ms). With the limit in the
        text, PostgreSQL finds after a few calls that one plan serves them all and stops
        planning (a third of the claim's server time for small batches). The worker claims in
        a few sizes (`claim_size`), so that a connection holds some twenty of these
        statements at most.
        """
        key = (int(limit), in_queues)
        query = self._claims.get(key)
        if query is None:
            name = "claim_jobs_in_queues" if in_queues else "claim_jobs"
            sql = self._claim_templates[in_queues].replace(str(LIMIT_MARKER), str(key[0]))
            query = Query(name, sql, prepared=True)
            if self.timeout_ms is not None:
                query = query.with_timeout(self.timeout_ms)
            self._claims[key] = query
        return query


#: The statements for tables found by the connection's ``search_path`` (no schema named).
DEFAULT = Statements(None, ALL, CLAIM_TEMPLATE, CLAIM_IN_QUEUES_TEMPLATE, JOBS_TABLE)

#: The longest PostgreSQL identifier, in bytes; PostgreSQL cuts longer names silently.
MAX_IDENTIFIER_BYTES = 63


def check_schema_name(schema: object) -> str | None:
    """``schema`` if it can name a PostgreSQL schema (None: no schema named), else a clear
    error. Any characters are fine: the name is always quoted."""
    if schema is None:
        return None
    if not isinstance(schema, str):
        raise TypeError(
            f"schema must be a string (a PostgreSQL schema name) or None, not {schema!r}"
        )
    if not schema:
        raise ValueError("schema must not be empty: pass None to use the search_path")
    if "\x00" in schema:
        raise ValueError(f"schema {schema!r} contains a NUL character, which PostgreSQL refuses")
    size = len(schema.encode("utf-8", "surrogatepass"))
    if size > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"schema {schema[:20]!r}... is {size} bytes long; PostgreSQL names are at most "
            f"{MAX_IDENTIFIER_BYTES} bytes (it would cut it silently)"
        )
    try:
        schema.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"schema {schema!r} is not valid text (a lone surrogate)") from None
    return schema


@functools.cache
def for_schema(schema: str | None) -> Statements:
    """The statements for tables in PostgreSQL schema ``schema`` (None: `DEFAULT`)."""
    schema = check_schema_name(schema)
    if schema is None:
        return DEFAULT
    # Imported here: only an app that names its schema renders statements at run time.
    from .statements import in_schema

    rendered = in_schema(schema)
    return Statements(
        schema,
        rendered.all,
        rendered.claim_template,
        rendered.claim_in_queues_template,
        rendered.jobs_table,
    )


def claim_query(limit: int, *, in_queues: bool) -> Query:
    """`Statements.claim_query` for `DEFAULT`."""
    return DEFAULT.claim_query(limit, in_queues=in_queues)


def claim_size(wanted: int, largest: int) -> int:
    """The batch size to claim when ``wanted`` slots are free: ``largest`` (the worker's
    fetch_batch), ``wanted`` itself up to 16, else the greatest power of two not above it;
    0 for nothing. Small workers claim exactly what they can run, in one statement."""
    if wanted >= largest:
        return largest
    if wanted <= _EXACT_CLAIM_SIZES:
        return max(wanted, 0)
    return 1 << (wanted.bit_length() - 1)
