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

    def __str__(self) -> str:
        return self.sql


#: The limit written in the claim templates, replaced by each claim's own.
LIMIT_MARKER = 987654321
