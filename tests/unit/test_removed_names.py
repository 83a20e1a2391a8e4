"""Names removed from sqla_jobs say what replaced them."""

from __future__ import annotations

import pytest

import sqla_jobs


def test_the_removed_in_memory_connector_points_to_sqla_jobs_testing() -> None:
    with pytest.raises(ImportError, match=r"InMemoryConnector was removed.*sqla_jobs\.testing"):
        sqla_jobs.InMemoryConnector  # noqa: B018
    with pytest.raises(ImportError, match=r"InMemoryConnector was removed.*sqla_jobs\.testing"):
        from sqla_jobs import InMemoryConnector  # noqa: F401
