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
    #: Statements sent ahead of this one in the same message (see `message_sql`): the lock
    #: that a controlled claim takes before it counts, for one.
    preamble: tuple[str, ...] = ()
    #: The server's ``statement_timeout`` for this statement alone, in milliseconds (None: the
    #: connection's own). See `with_timeout`.
    timeout_ms: int | None = None

    def __str__(self) -> str:
        return self.sql

    def with_timeout(self, milliseconds: int) -> Query:
        """This statement, cancelled by the server after ``milliseconds``: a ``SET LOCAL``
        sent ahead of it (`message_sql`), so that the setting ends with it and never stays on
        a pooled connection. Never prepared."""
        return dataclasses.replace(self, prepared=False, timeout_ms=int(milliseconds))

    @property
    def leading(self) -> int:
        """How many statements `message_sql` sends ahead of this one (their results are
        skipped; the rows are this statement's)."""
        return len(self.preamble) + (self.timeout_ms is not None)

    @property
    def message_sql(self) -> str:
        """What to send: this statement, after its `leading` ones, in one simple-protocol
        message, which PostgreSQL runs as one implicit transaction (each statement with a
        snapshot of its own). Connectors send it whenever `leading` is not 0, with
        client-side binding (psycopg 3's ``ClientCursor``; psycopg2 always binds so)."""
        parts = []
        if self.timeout_ms is not None:
            parts.append(f"SET LOCAL statement_timeout = {self.timeout_ms}")
        parts.extend(self.preamble)
        parts.append(self.sql)
        return "; ".join(parts)


#: The limit written in the claim templates, replaced by each claim's own.
LIMIT_MARKER = 987654321
