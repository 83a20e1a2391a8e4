"""The worker: claims jobs in batches, runs them, and records their outcomes in batches.

It is a set of roles with one job each (River's shape), run by one supervisor
(`supervisor.Worker`):

- the *fetcher* (`fetcher`) keeps the slots full, claiming as many jobs as slots are free
  with one ``FOR UPDATE SKIP LOCKED`` statement, up to two claims in flight;
- the *executor* (`executor`) runs each job in its own asyncio task (sync tasks in threads)
  and turns how it ended into an outcome;
- the *completer* (`completer`) writes outcomes in batches, all successes in one statement,
  while the next jobs already run;
- the *heartbeat* and the *listener* (`maintenance`) keep the worker alive in the workers
  table, recover the jobs of stalled workers, and LISTEN for new jobs and abort requests
  (polling is the fallback); the *periodic deferrer* (`sqla_jobs.periodic`) defers periodic
  tasks at their ticks.

A role that crashes is logged with its traceback and restarted with backoff; one that keeps
crashing stops the worker, and `Worker.run` raises `WorkerFailed`.
"""

from ._common import ABORT_CHANNEL
from .options import DeleteJobs, JobContext, WorkerOptions
from .supervisor import Worker

__all__ = [
    "ABORT_CHANNEL",
    "DeleteJobs",
    "JobContext",
    "Worker",
    "WorkerOptions",
]
