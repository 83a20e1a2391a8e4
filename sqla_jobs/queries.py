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
    JOBS_TABLE,
)

__all__ = [
    "ALL",
    "COPY_COLUMNS",
    "JOBS_TABLE",
    "LIMIT_MARKER",
    "Query",
    "claim_query",
    "claim_size",
]

_EXACT_CLAIM_SIZES = 16


@functools.cache
def claim_query(limit: int, *, in_queues: bool) -> Query:
    """The claim with its limit written in, under the same name.

    A claim whose limit is a parameter is planned at every call: a generic plan would not know
    how many rows it takes, and would cost it as a tenth of the queue (with 1,000,000 jobs
    waiting, enough to JIT-compile it at every call: 250 ms). With the limit in the text,
    PostgreSQL finds after a few calls that one plan serves them all and stops planning (a
    third of the claim's server time for small batches). The worker claims in a few sizes
    (`claim_size`), so that a connection holds some twenty of these statements at most.
    """
    template = CLAIM_IN_QUEUES_TEMPLATE if in_queues else CLAIM_TEMPLATE
    name = "claim_jobs_in_queues" if in_queues else "claim_jobs"
    sql = template.replace(str(LIMIT_MARKER), str(int(limit)))
    return Query(name, sql, prepared=True)


def claim_size(wanted: int, largest: int) -> int:
    """The batch size to claim when ``wanted`` slots are free: ``largest`` (the worker's
    fetch_batch), ``wanted`` itself up to 16, else the greatest power of two not above it;
    0 for nothing. Small workers claim exactly what they can run, in one statement."""
    if wanted >= largest:
        return largest
    if wanted <= _EXACT_CLAIM_SIZES:
        return max(wanted, 0)
    return 1 << (wanted.bit_length() - 1)
