"""Any task name that registration accepts works to the end, fuzzed on PostgreSQL: registered,
deferred, found and run by a real worker (the refusals are tests/unit/test_task_registration.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sqla_jobs
from sqla_jobs.jobs import MAX_NAME_BYTES

if TYPE_CHECKING:
    from conftest import Database

settings.register_profile(
    "sqla_jobs_task_name_fuzz",
    max_examples=100,  # each runs a worker: ~50 ms
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FUZZ = settings.get_profile("sqla_jobs_task_name_fuzz")

storable_names = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40),
    st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"), min_size=240, max_size=1000
    ).filter(lambda name: len(name.encode()) <= MAX_NAME_BYTES),
)


@given(name=storable_names)
@example(name="o'brien")
@example(name="a\\b\nc$$d.e")
@example(name="n" * MAX_NAME_BYTES)
@FUZZ
async def test_a_task_registered_under_any_storable_name_runs_in_a_worker(
    db_url: str, database: Database, name: str
) -> None:
    app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector(conninfo=db_url, min_size=1))
    received: list[dict[str, Any]] = []

    @app.task(name=name)
    def record(**kwargs: Any) -> None:
        received.append(kwargs)

    async with app.open_async():
        job_id = await record.defer_async(name=name)
        await app.run_worker_async(wait=False)
        job = app.job_manager.get_job(job_id)

    assert (job.task_name, job.status) == (name, sqla_jobs.JobStatus.SUCCEEDED)
    assert received == [{"name": name}]
    database.rows("DELETE FROM sqla_jobs_jobs RETURNING id")
