"""`Query`: one statement as the connectors receive it (a leaf: no sqla_jobs import)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """One statement: its name (for messages) and its SQL.

    ``prepared``: the worker sends it over and over on the same connections, so drivers that
    can (psycopg 3) make it a server-side prepared statement at once: parsed once per
    connection, and planned once too where PostgreSQL finds a generic plan as good as a
    custom one (not for the claim: with its limit unknown, a generic plan is costed as if it
    took a tenth of the queue). Other statements are never prepared.
    """

    name: str
    sql: str
    prepared: bool = False
    #: The server's ``statement_timeout`` for this statement alone, in milliseconds (None: the
    #: connection's own). See `with_timeout`.
    timeout_ms: int | None = None

    def __str__(self) -> str:
        return self.sql

    def with_timeout(self, milliseconds: int) -> Query:
        """This statement, cancelled by the server after ``milliseconds``.

        Connectors send it as `bounded_sql`: a ``SET LOCAL`` and the statement in one
        simple-protocol message, which PostgreSQL runs as one implicit transaction, so the
        setting ends with it and never stays on a pooled connection. Never prepared."""
        return dataclasses.replace(self, prepared=False, timeout_ms=int(milliseconds))

    @property
    def bounded_sql(self) -> str:
        """The SQL to send for a statement `with_timeout`: two statements, the rows of the
        second are the statement's."""
        return f"SET LOCAL statement_timeout = {self.timeout_ms}; {self.sql}"


#: The limit written in the claim templates, replaced by each claim's own.
LIMIT_MARKER = 987654321
