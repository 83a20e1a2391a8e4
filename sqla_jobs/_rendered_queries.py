"""Written by ``python -m sqla_jobs.statements`` from the Core statements there: do not
edit (a unit test compares this file with a fresh rendering)."""

from ._query import Query

JOBS_TABLE = "sqla_jobs_jobs"
COPY_COLUMNS = (
    "id",
    "queue",
    "task_name",
    "priority",
    "lock",
    "queueing_lock",
    "args",
    "scheduled_at",
    "trace_context",
)
COPY_COLUMNS_WITH_TAGS = (
    "id",
    "queue",
    "task_name",
    "priority",
    "lock",
    "queueing_lock",
    "args",
    "scheduled_at",
    "trace_context",
    "tags",
    "meta",
)
CLAIM_TEMPLATE = "WITH candidates AS \n(SELECT ready.id AS id \nFROM (SELECT sqla_jobs_jobs.id AS id \nFROM sqla_jobs_jobs \nWHERE (SELECT set_config('synchronous_commit', 'off', true) AS set_config_1) = 'off' AND sqla_jobs_jobs.status = 'todo' AND (sqla_jobs_jobs.scheduled_at IS NULL OR sqla_jobs_jobs.scheduled_at <= now()) AND (sqla_jobs_jobs.lock IS NULL OR NOT (EXISTS (SELECT * \nFROM sqla_jobs_jobs AS running \nWHERE running.lock = sqla_jobs_jobs.lock AND running.status IN ('doing', 'aborting'))) AND NOT (EXISTS (SELECT * \nFROM sqla_jobs_jobs AS earlier \nWHERE earlier.lock = sqla_jobs_jobs.lock AND earlier.status = 'todo' AND earlier.id < sqla_jobs_jobs.id))) AND NOT (EXISTS (SELECT * \nFROM sqla_jobs_controls AS control \nWHERE control.paused OR control.concurrency_limit IS NOT NULL OR control.rate_limit IS NOT NULL)) ORDER BY sqla_jobs_jobs.priority DESC, sqla_jobs_jobs.id \n LIMIT (SELECT CAST(987654321 AS BIGINT) AS claim_size) FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED) AS ready \n LIMIT 987654321)\n UPDATE sqla_jobs_jobs SET status='doing', attempts=(sqla_jobs_jobs.attempts + 1), started_at=clock_timestamp(), worker_id=%(worker_id)s WHERE sqla_jobs_jobs.id = any(ARRAY(SELECT candidates.id \nFROM candidates)) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.parents_left"
CLAIM_IN_QUEUES_TEMPLATE = "WITH candidates AS \n(SELECT best.id AS id \nFROM unnest(CAST(%(queues)s AS TEXT[])) AS wanted(name) JOIN LATERAL (SELECT walk.id AS id, walk.priority AS priority \nFROM (SELECT sqla_jobs_jobs.id AS id, sqla_jobs_jobs.priority AS priority \nFROM sqla_jobs_jobs \nWHERE (SELECT set_config('synchronous_commit', 'off', true) AS set_config_1) = 'off' AND sqla_jobs_jobs.status = 'todo' AND (sqla_jobs_jobs.scheduled_at IS NULL OR sqla_jobs_jobs.scheduled_at <= now()) AND (sqla_jobs_jobs.lock IS NULL OR NOT (EXISTS (SELECT * \nFROM sqla_jobs_jobs AS running \nWHERE running.lock = sqla_jobs_jobs.lock AND running.status IN ('doing', 'aborting'))) AND NOT (EXISTS (SELECT * \nFROM sqla_jobs_jobs AS earlier \nWHERE earlier.lock = sqla_jobs_jobs.lock AND earlier.status = 'todo' AND earlier.id < sqla_jobs_jobs.id))) AND NOT (EXISTS (SELECT * \nFROM sqla_jobs_controls AS control \nWHERE (control.paused OR control.concurrency_limit IS NOT NULL OR control.rate_limit IS NOT NULL) AND (control.scope = 'task' OR control.name = any(CAST(%(queues)s AS TEXT[]))))) AND sqla_jobs_jobs.queue = any(ARRAY[wanted.name]) ORDER BY sqla_jobs_jobs.queue, sqla_jobs_jobs.priority DESC, sqla_jobs_jobs.id \n LIMIT (SELECT CAST(987654321 AS BIGINT) AS claim_size) FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED) AS walk \n LIMIT 987654321) AS best ON true ORDER BY best.priority DESC, best.id \n LIMIT 987654321)\n UPDATE sqla_jobs_jobs SET status='doing', attempts=(sqla_jobs_jobs.attempts + 1), started_at=clock_timestamp(), worker_id=%(worker_id)s WHERE sqla_jobs_jobs.id = any(ARRAY(SELECT candidates.id \nFROM candidates)) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.parents_left"

defer_job = Query(
    "defer_job",
    "INSERT INTO sqla_jobs_jobs (queue, task_name, priority, lock, queueing_lock, args, scheduled_at, trace_context, tags, meta, unique_key, unique_statuses) VALUES (%(queue)s, %(task_name)s, %(priority)s, %(lock)s, %(queueing_lock)s, CAST(%(args)s AS JSONB), %(scheduled_at)s, %(trace_context)s, CAST(%(tags)s AS TEXT[]), CAST(%(meta)s AS JSONB), %(unique_key)s, CAST(%(unique_statuses)s AS sqla_jobs_job_status[])) RETURNING sqla_jobs_jobs.id",
    prepared=True,
)

defer_jobs = Query(
    "defer_jobs",
    "INSERT INTO sqla_jobs_jobs (queue, task_name, priority, lock, queueing_lock, args, scheduled_at, trace_context, tags, meta, unique_key, unique_statuses) SELECT batch_rows.queue, batch_rows.task_name, batch_rows.priority, batch_rows.lock, batch_rows.queueing_lock, batch_rows.args, batch_rows.scheduled_at, batch_rows.trace_context, CAST(batch_rows.tags AS TEXT[]) AS tags, CAST(batch_rows.meta AS JSONB) AS meta, batch_rows.unique_key, CAST(batch_rows.unique_statuses AS sqla_jobs_job_status[]) AS unique_statuses \n"
    "FROM (SELECT batch.queue AS queue, batch.task_name AS task_name, batch.priority AS priority, batch.lock AS lock, batch.queueing_lock AS queueing_lock, batch.args AS args, batch.scheduled_at AS scheduled_at, batch.trace_context AS trace_context, batch.tags AS tags, batch.meta AS meta, batch.unique_key AS unique_key, batch.unique_statuses AS unique_statuses, batch.ord AS ord \n"
    "FROM unnest(CAST(%(queues)s AS TEXT[]), CAST(%(task_names)s AS TEXT[]), CAST(%(priorities)s AS INTEGER[]), CAST(%(locks)s AS TEXT[]), CAST(%(queueing_locks)s AS TEXT[]), CAST(CAST(%(args)s AS TEXT[]) AS JSONB[]), CAST(%(scheduled_ats)s AS TIMESTAMP WITH TIME ZONE[]), CAST(%(trace_contexts)s AS TEXT[]), CAST(%(tags)s AS TEXT[]), CAST(%(metas)s AS TEXT[]), CAST(%(unique_keys)s AS TEXT[]), CAST(%(unique_statuses)s AS TEXT[])) WITH ORDINALITY AS batch(queue, task_name, priority, lock, queueing_lock, args, scheduled_at, trace_context, tags, meta, unique_key, unique_statuses, ord)) AS batch_rows ORDER BY batch_rows.ord RETURNING sqla_jobs_jobs.id",
    prepared=False,
)

reserve_job_ids = Query(
    "reserve_job_ids",
    "SELECT array_agg(reserved.id) AS ids \n"
    "FROM (SELECT nextval(CAST('sqla_jobs_jobs_id_seq' AS REGCLASS)) AS id \n"
    "FROM generate_series(1, %(count)s) AS series(n)) AS reserved",
    prepared=False,
)

waiting_queueing_locks = Query(
    "waiting_queueing_locks",
    "SELECT sqla_jobs_jobs.queueing_lock \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status = 'todo' AND sqla_jobs_jobs.queueing_lock = any(CAST(%(queueing_locks)s AS TEXT[])) ORDER BY sqla_jobs_jobs.queueing_lock \n"
    " LIMIT 1",
    prepared=False,
)

defer_job_unless_unique_taken = Query(
    "defer_job_unless_unique_taken",
    "INSERT INTO sqla_jobs_jobs (queue, task_name, priority, lock, queueing_lock, args, scheduled_at, trace_context, tags, meta, unique_key, unique_statuses) VALUES (%(queue)s, %(task_name)s, %(priority)s, %(lock)s, %(queueing_lock)s, CAST(%(args)s AS JSONB), %(scheduled_at)s, %(trace_context)s, CAST(%(tags)s AS TEXT[]), CAST(%(meta)s AS JSONB), %(unique_key)s, CAST(%(unique_statuses)s AS sqla_jobs_job_status[])) ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status = any(unique_statuses) DO NOTHING RETURNING sqla_jobs_jobs.id",
    prepared=False,
)

defer_jobs_unless_unique_taken = Query(
    "defer_jobs_unless_unique_taken",
    "INSERT INTO sqla_jobs_jobs (queue, task_name, priority, lock, queueing_lock, args, scheduled_at, trace_context, tags, meta, unique_key, unique_statuses) SELECT batch_rows.queue, batch_rows.task_name, batch_rows.priority, batch_rows.lock, batch_rows.queueing_lock, batch_rows.args, batch_rows.scheduled_at, batch_rows.trace_context, CAST(batch_rows.tags AS TEXT[]) AS tags, CAST(batch_rows.meta AS JSONB) AS meta, batch_rows.unique_key, CAST(batch_rows.unique_statuses AS sqla_jobs_job_status[]) AS unique_statuses \n"
    "FROM (SELECT batch.queue AS queue, batch.task_name AS task_name, batch.priority AS priority, batch.lock AS lock, batch.queueing_lock AS queueing_lock, batch.args AS args, batch.scheduled_at AS scheduled_at, batch.trace_context AS trace_context, batch.tags AS tags, batch.meta AS meta, batch.unique_key AS unique_key, batch.unique_statuses AS unique_statuses, batch.ord AS ord \n"
    "FROM unnest(CAST(%(queues)s AS TEXT[]), CAST(%(task_names)s AS TEXT[]), CAST(%(priorities)s AS INTEGER[]), CAST(%(locks)s AS TEXT[]), CAST(%(queueing_locks)s AS TEXT[]), CAST(CAST(%(args)s AS TEXT[]) AS JSONB[]), CAST(%(scheduled_ats)s AS TIMESTAMP WITH TIME ZONE[]), CAST(%(trace_contexts)s AS TEXT[]), CAST(%(tags)s AS TEXT[]), CAST(%(metas)s AS TEXT[]), CAST(%(unique_keys)s AS TEXT[]), CAST(%(unique_statuses)s AS TEXT[])) WITH ORDINALITY AS batch(queue, task_name, priority, lock, queueing_lock, args, scheduled_at, trace_context, tags, meta, unique_key, unique_statuses, ord)) AS batch_rows ORDER BY batch_rows.ord ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status = any(unique_statuses) DO NOTHING RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.unique_key",
    prepared=False,
)

unique_jobs = Query(
    "unique_jobs",
    "SELECT sqla_jobs_jobs.id, sqla_jobs_jobs.unique_key, sqla_jobs_jobs.task_name, sqla_jobs_jobs.status \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.unique_key = any(CAST(%(unique_keys)s AS TEXT[])) AND sqla_jobs_jobs.status = any(sqla_jobs_jobs.unique_statuses)",
    prepared=False,
)

claim_jobs = Query(
    "claim_jobs",
    "WITH candidates AS \n"
    "(SELECT ready.id AS id \n"
    "FROM (SELECT sqla_jobs_jobs.id AS id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE (SELECT set_config('synchronous_commit', 'off', true) AS set_config_1) = 'off' AND sqla_jobs_jobs.status = 'todo' AND (sqla_jobs_jobs.scheduled_at IS NULL OR sqla_jobs_jobs.scheduled_at <= now()) AND (sqla_jobs_jobs.lock IS NULL OR NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS running \n"
    "WHERE running.lock = sqla_jobs_jobs.lock AND running.status IN ('doing', 'aborting'))) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS earlier \n"
    "WHERE earlier.lock = sqla_jobs_jobs.lock AND earlier.status = 'todo' AND earlier.id < sqla_jobs_jobs.id))) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_controls AS control \n"
    "WHERE control.paused OR control.concurrency_limit IS NOT NULL OR control.rate_limit IS NOT NULL)) ORDER BY sqla_jobs_jobs.priority DESC, sqla_jobs_jobs.id \n"
    " LIMIT (SELECT CAST(%(limit)s AS BIGINT) AS claim_size) FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED) AS ready \n"
    " LIMIT %(limit)s)\n"
    " UPDATE sqla_jobs_jobs SET status='doing', attempts=(sqla_jobs_jobs.attempts + 1), started_at=clock_timestamp(), worker_id=%(worker_id)s WHERE sqla_jobs_jobs.id = any(ARRAY(SELECT candidates.id \n"
    "FROM candidates)) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.parents_left",
    prepared=True,
)

claim_jobs_in_queues = Query(
    "claim_jobs_in_queues",
    "WITH candidates AS \n"
    "(SELECT best.id AS id \n"
    "FROM unnest(CAST(%(queues)s AS TEXT[])) AS wanted(name) JOIN LATERAL (SELECT walk.id AS id, walk.priority AS priority \n"
    "FROM (SELECT sqla_jobs_jobs.id AS id, sqla_jobs_jobs.priority AS priority \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE (SELECT set_config('synchronous_commit', 'off', true) AS set_config_1) = 'off' AND sqla_jobs_jobs.status = 'todo' AND (sqla_jobs_jobs.scheduled_at IS NULL OR sqla_jobs_jobs.scheduled_at <= now()) AND (sqla_jobs_jobs.lock IS NULL OR NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS running \n"
    "WHERE running.lock = sqla_jobs_jobs.lock AND running.status IN ('doing', 'aborting'))) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS earlier \n"
    "WHERE earlier.lock = sqla_jobs_jobs.lock AND earlier.status = 'todo' AND earlier.id < sqla_jobs_jobs.id))) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_controls AS control \n"
    "WHERE (control.paused OR control.concurrency_limit IS NOT NULL OR control.rate_limit IS NOT NULL) AND (control.scope = 'task' OR control.name = any(CAST(%(queues)s AS TEXT[]))))) AND sqla_jobs_jobs.queue = any(ARRAY[wanted.name]) ORDER BY sqla_jobs_jobs.queue, sqla_jobs_jobs.priority DESC, sqla_jobs_jobs.id \n"
    " LIMIT (SELECT CAST(%(limit)s AS BIGINT) AS claim_size) FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED) AS walk \n"
    " LIMIT %(limit)s) AS best ON true ORDER BY best.priority DESC, best.id \n"
    " LIMIT %(limit)s)\n"
    " UPDATE sqla_jobs_jobs SET status='doing', attempts=(sqla_jobs_jobs.attempts + 1), started_at=clock_timestamp(), worker_id=%(worker_id)s WHERE sqla_jobs_jobs.id = any(ARRAY(SELECT candidates.id \n"
    "FROM candidates)) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.parents_left",
    prepared=True,
)

finish_succeeded = Query(
    "finish_succeeded",
    "WITH finished AS \n"
    "(UPDATE sqla_jobs_jobs SET status='succeeded', finished_at=clock_timestamp(), has_dependents=CASE WHEN sqla_jobs_jobs.has_dependents THEN false ELSE NULL END FROM unnest((SELECT CAST(%(ids)s AS BIGINT[]) AS anon_1), (SELECT CAST(%(attempts)s AS INTEGER[]) AS anon_2)) AS done(id, attempt) WHERE sqla_jobs_jobs.id = done.id AND sqla_jobs_jobs.attempts = done.attempt AND (sqla_jobs_jobs.status NOT IN ('todo', 'succeeded', 'failed', 'cancelled', 'aborted', 'blocked')) AND sqla_jobs_jobs.worker_id = %(worker_id)s RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.has_dependents), \n"
    "counted AS \n"
    "(SELECT sqla_jobs_job_dependencies.job_id AS job_id, count(*) AS parents \n"
    "FROM finished JOIN sqla_jobs_job_dependencies ON sqla_jobs_job_dependencies.parent_id = finished.id \n"
    "WHERE finished.has_dependents IS false GROUP BY sqla_jobs_job_dependencies.job_id)\n"
    " UPDATE sqla_jobs_jobs AS child SET status=CASE WHEN (child.parents_left <= counted.parents) THEN CAST('todo' AS sqla_jobs_job_status) ELSE child.status END, parents_left=(child.parents_left - counted.parents) FROM counted WHERE child.id = counted.job_id AND child.status = 'blocked'",
    prepared=True,
)

finish_succeeded_with_results = Query(
    "finish_succeeded_with_results",
    "WITH finished AS \n"
    "(UPDATE sqla_jobs_jobs SET status='succeeded', finished_at=clock_timestamp(), result=CAST(done.result AS JSONB), has_dependents=CASE WHEN sqla_jobs_jobs.has_dependents THEN false ELSE NULL END FROM unnest((SELECT CAST(%(ids)s AS BIGINT[]) AS anon_1), (SELECT CAST(%(attempts)s AS INTEGER[]) AS anon_2), (SELECT CAST(%(results)s AS TEXT[]) AS anon_3)) AS done(id, attempt, result) WHERE sqla_jobs_jobs.id = done.id AND sqla_jobs_jobs.attempts = done.attempt AND (sqla_jobs_jobs.status NOT IN ('todo', 'succeeded', 'failed', 'cancelled', 'aborted', 'blocked')) AND sqla_jobs_jobs.worker_id = %(worker_id)s RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.has_dependents), \n"
    "counted AS \n"
    "(SELECT sqla_jobs_job_dependencies.job_id AS job_id, count(*) AS parents \n"
    "FROM finished JOIN sqla_jobs_job_dependencies ON sqla_jobs_job_dependencies.parent_id = finished.id \n"
    "WHERE finished.has_dependents IS false GROUP BY sqla_jobs_job_dependencies.job_id)\n"
    " UPDATE sqla_jobs_jobs AS child SET status=CASE WHEN (child.parents_left <= counted.parents) THEN CAST('todo' AS sqla_jobs_job_status) ELSE child.status END, parents_left=(child.parents_left - counted.parents) FROM counted WHERE child.id = counted.job_id AND child.status = 'blocked'",
    prepared=True,
)

delete_jobs_by_id = Query(
    "delete_jobs_by_id",
    "DELETE FROM sqla_jobs_jobs USING unnest((SELECT CAST(%(ids)s AS BIGINT[]) AS anon_1), (SELECT CAST(%(attempts)s AS INTEGER[]) AS anon_2)) AS deleted(id, attempt) WHERE sqla_jobs_jobs.id = deleted.id AND sqla_jobs_jobs.attempts = deleted.attempt AND sqla_jobs_jobs.worker_id = %(worker_id)s",
    prepared=True,
)

finish_jobs = Query(
    "finish_jobs",
    "UPDATE sqla_jobs_jobs SET status=outcomes.status, scheduled_at=coalesce(outcomes.retry_at, sqla_jobs_jobs.scheduled_at), attempts=(sqla_jobs_jobs.attempts - outcomes.refund), finished_at=CASE WHEN outcomes.status = 'todo' THEN NULL ELSE clock_timestamp() END, last_error=coalesce(outcomes.error, sqla_jobs_jobs.last_error), worker_id=CASE WHEN outcomes.status = 'todo' THEN NULL ELSE sqla_jobs_jobs.worker_id END FROM (SELECT outcome.id AS id, outcome.status AS status, outcome.error AS error, outcome.retry_at AS retry_at, outcome.attempt AS attempt, outcome.refund AS refund \n"
    "FROM unnest((SELECT CAST(%(ids)s AS BIGINT[]) AS anon_1), (SELECT CAST(CAST(%(statuses)s AS TEXT[]) AS sqla_jobs_job_status[]) AS anon_2), (SELECT CAST(%(errors)s AS TEXT[]) AS anon_3), (SELECT CAST(%(retry_ats)s AS TIMESTAMP WITH TIME ZONE[]) AS anon_4), (SELECT CAST(%(attempts)s AS INTEGER[]) AS anon_5), (SELECT CAST(%(refunds)s AS INTEGER[]) AS anon_6)) AS outcome(id, status, error, retry_at, attempt, refund)) AS outcomes WHERE sqla_jobs_jobs.id = outcomes.id AND sqla_jobs_jobs.attempts = outcomes.attempt AND (sqla_jobs_jobs.status NOT IN ('todo', 'succeeded', 'failed', 'cancelled', 'aborted', 'blocked')) AND sqla_jobs_jobs.worker_id = %(worker_id)s",
    prepared=True,
)

register_worker = Query(
    "register_worker",
    "INSERT INTO sqla_jobs_workers (name, hostname, pid, queues, concurrency) VALUES (%(name)s, %(hostname)s, %(pid)s, CAST(%(queues)s AS TEXT[]), %(concurrency)s) RETURNING sqla_jobs_workers.id",
    prepared=False,
)

heartbeat = Query(
    "heartbeat",
    "UPDATE sqla_jobs_workers SET last_heartbeat=now() WHERE sqla_jobs_workers.id = %(worker_id)s RETURNING sqla_jobs_workers.id",
    prepared=True,
)

notify = Query(
    "notify",
    "SELECT pg_notify(%(channel)s, %(payload)s) AS pg_notify_1",
    prepared=False,
)

unregister_worker = Query(
    "unregister_worker",
    "DELETE FROM sqla_jobs_workers WHERE sqla_jobs_workers.id = %(worker_id)s",
    prepared=False,
)

requeue_worker_jobs = Query(
    "requeue_worker_jobs",
    "UPDATE sqla_jobs_jobs SET status=CASE WHEN (sqla_jobs_jobs.status = 'aborting') THEN CAST('aborted' AS sqla_jobs_job_status) ELSE CAST('todo' AS sqla_jobs_job_status) END, scheduled_at=CASE WHEN (sqla_jobs_jobs.status != 'aborting' AND sqla_jobs_jobs.id = any(CAST(%(held)s AS BIGINT[]))) THEN now() + CAST(%(held_for)s AS INTERVAL) ELSE sqla_jobs_jobs.scheduled_at END, attempts=CASE WHEN (sqla_jobs_jobs.status != 'aborting' AND sqla_jobs_jobs.id = any(CAST(%(unstarted)s AS BIGINT[]))) THEN sqla_jobs_jobs.attempts - 1 ELSE sqla_jobs_jobs.attempts END, started_at=CASE WHEN (sqla_jobs_jobs.status = 'aborting') THEN sqla_jobs_jobs.started_at ELSE NULL END, finished_at=CASE WHEN (sqla_jobs_jobs.status = 'aborting') THEN clock_timestamp() ELSE NULL END, worker_id=CASE WHEN (sqla_jobs_jobs.status = 'aborting') THEN sqla_jobs_jobs.worker_id ELSE NULL END WHERE sqla_jobs_jobs.worker_id = %(worker_id)s AND sqla_jobs_jobs.status IN ('doing', 'aborting') AND sqla_jobs_jobs.id = any(CAST(%(ids)s AS BIGINT[]))",
    prepared=False,
)

list_workers = Query(
    "list_workers",
    "SELECT sqla_jobs_workers.id, sqla_jobs_workers.name, sqla_jobs_workers.hostname, sqla_jobs_workers.pid, sqla_jobs_workers.queues, sqla_jobs_workers.concurrency, sqla_jobs_workers.started_at, sqla_jobs_workers.last_heartbeat, EXTRACT(epoch FROM now() - sqla_jobs_workers.last_heartbeat) AS heartbeat_age \n"
    "FROM sqla_jobs_workers ORDER BY sqla_jobs_workers.id",
    prepared=False,
)

get_job = Query(
    "get_job",
    "SELECT sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.worker_id, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.unique_key, CAST(sqla_jobs_jobs.result AS TEXT) AS result \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.id = %(job_id)s",
    prepared=False,
)

await_job = Query(
    "await_job",
    "UPDATE sqla_jobs_jobs SET awaited=true WHERE sqla_jobs_jobs.id = %(job_id)s AND (sqla_jobs_jobs.status NOT IN ('succeeded', 'failed', 'cancelled', 'aborted')) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.worker_id, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.unique_key, CAST(sqla_jobs_jobs.result AS TEXT) AS result",
    prepared=False,
)

count_jobs_by_status = Query(
    "count_jobs_by_status",
    "SELECT sqla_jobs_jobs.queue, sqla_jobs_jobs.status, count(*) AS count \n"
    "FROM sqla_jobs_jobs GROUP BY sqla_jobs_jobs.queue, sqla_jobs_jobs.status",
    prepared=False,
)

check_schema = Query(
    "check_schema",
    "SELECT count(*) AS count_1 \nFROM sqla_jobs_jobs \nWHERE sqla_jobs_jobs.id = -1",
    prepared=False,
)

list_jobs = Query(
    "list_jobs",
    "SELECT sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.worker_id, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.unique_key \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE (CAST(%(queue)s AS TEXT) IS NULL OR sqla_jobs_jobs.queue = %(queue)s) AND (CAST(%(task_name)s AS TEXT) IS NULL OR sqla_jobs_jobs.task_name = %(task_name)s) AND (CAST(%(lock)s AS TEXT) IS NULL OR sqla_jobs_jobs.lock = %(lock)s) AND (CAST(%(workflow_id)s AS TEXT) IS NULL OR sqla_jobs_jobs.workflow_id = CAST(%(workflow_id)s AS BIGINT)) AND (CAST(%(statuses)s AS TEXT[]) IS NULL OR sqla_jobs_jobs.status = any(CAST(CAST(%(statuses)s AS TEXT[]) AS sqla_jobs_job_status[]))) ORDER BY sqla_jobs_jobs.id DESC \n"
    " LIMIT %(limit)s OFFSET %(offset)s",
    prepared=False,
)

list_jobs_with_tags = Query(
    "list_jobs_with_tags",
    "SELECT sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.worker_id, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.unique_key \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE (CAST(%(queue)s AS TEXT) IS NULL OR sqla_jobs_jobs.queue = %(queue)s) AND (CAST(%(task_name)s AS TEXT) IS NULL OR sqla_jobs_jobs.task_name = %(task_name)s) AND (CAST(%(lock)s AS TEXT) IS NULL OR sqla_jobs_jobs.lock = %(lock)s) AND (CAST(%(workflow_id)s AS TEXT) IS NULL OR sqla_jobs_jobs.workflow_id = CAST(%(workflow_id)s AS BIGINT)) AND (CAST(%(statuses)s AS TEXT[]) IS NULL OR sqla_jobs_jobs.status = any(CAST(CAST(%(statuses)s AS TEXT[]) AS sqla_jobs_job_status[]))) AND sqla_jobs_jobs.tags @> CAST(%(tags)s AS TEXT[]) ORDER BY sqla_jobs_jobs.id DESC \n"
    " LIMIT %(limit)s OFFSET %(offset)s",
    prepared=False,
)

count_jobs_by_status_with_tags = Query(
    "count_jobs_by_status_with_tags",
    "SELECT sqla_jobs_jobs.queue, sqla_jobs_jobs.status, count(*) AS count \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.tags @> CAST(%(tags)s AS TEXT[]) GROUP BY sqla_jobs_jobs.queue, sqla_jobs_jobs.status",
    prepared=False,
)

job_history = Query(
    "job_history",
    "SELECT sqla_jobs_job_history.status, sqla_jobs_job_history.at, sqla_jobs_job_history.error \n"
    "FROM (SELECT sqla_jobs_job_events.job_id AS job_id, sqla_jobs_job_events.status AS status, sqla_jobs_job_events.at AS at, sqla_jobs_job_events.error AS error \n"
    "FROM sqla_jobs_job_events UNION SELECT sqla_jobs_jobs.id AS job_id, CASE WHEN (sqla_jobs_jobs.parents_left IS NOT NULL) THEN CAST('blocked' AS sqla_jobs_job_status) ELSE CAST('todo' AS sqla_jobs_job_status) END AS status, sqla_jobs_jobs.created_at AS at, NULL AS error \n"
    "FROM sqla_jobs_jobs UNION SELECT sqla_jobs_jobs.id AS id, CAST('doing' AS sqla_jobs_job_status) AS anon_1, sqla_jobs_jobs.started_at AS started_at, NULL AS anon_2 \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.started_at IS NOT NULL AND sqla_jobs_jobs.status != 'todo' UNION SELECT sqla_jobs_jobs.id AS id, sqla_jobs_jobs.status AS status, sqla_jobs_jobs.finished_at AS finished_at, CASE WHEN (sqla_jobs_jobs.status IN ('failed', 'aborted')) THEN sqla_jobs_jobs.last_error WHEN (sqla_jobs_jobs.status = 'cancelled' AND (starts_with(sqla_jobs_jobs.last_error, 'Cancelled by the task') OR starts_with(sqla_jobs_jobs.last_error, 'Cancelled because a job it depends on did not succeed'))) THEN sqla_jobs_jobs.last_error ELSE NULL END AS anon_3 \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status IN ('succeeded', 'failed', 'cancelled', 'aborted') AND sqla_jobs_jobs.finished_at IS NOT NULL) AS sqla_jobs_job_history \n"
    "WHERE sqla_jobs_job_history.job_id = %(job_id)s ORDER BY sqla_jobs_job_history.at, CASE WHEN (sqla_jobs_job_history.status = 'blocked') THEN -1 WHEN (sqla_jobs_job_history.status = 'todo') THEN 0 WHEN (sqla_jobs_job_history.status = 'doing') THEN 1 WHEN (sqla_jobs_job_history.status = 'aborting') THEN 2 ELSE 3 END",
    prepared=False,
)

cancel_jobs = Query(
    "cancel_jobs",
    "UPDATE sqla_jobs_jobs SET status='cancelled', finished_at=clock_timestamp() WHERE sqla_jobs_jobs.id = any(CAST(%(job_ids)s AS BIGINT[])) AND sqla_jobs_jobs.status IN ('todo', 'blocked') RETURNING sqla_jobs_jobs.id",
    prepared=False,
)

abort_jobs = Query(
    "abort_jobs",
    "UPDATE sqla_jobs_jobs SET status=CASE WHEN (sqla_jobs_jobs.status IN ('todo', 'blocked')) THEN CAST('cancelled' AS sqla_jobs_job_status) ELSE CAST('aborting' AS sqla_jobs_job_status) END, finished_at=CASE WHEN (sqla_jobs_jobs.status IN ('todo', 'blocked')) THEN clock_timestamp() ELSE NULL END WHERE sqla_jobs_jobs.id = any(CAST(%(job_ids)s AS BIGINT[])) AND sqla_jobs_jobs.status IN ('todo', 'blocked', 'doing') RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.status",
    prepared=False,
)

retry_jobs = Query(
    "retry_jobs",
    "UPDATE sqla_jobs_jobs SET status='todo', scheduled_at=CAST(%(scheduled_at)s AS TIMESTAMP WITH TIME ZONE), attempts=0, started_at=NULL, finished_at=NULL, worker_id=NULL WHERE sqla_jobs_jobs.id = any(CAST(%(job_ids)s AS BIGINT[])) AND sqla_jobs_jobs.status IN ('failed', 'cancelled', 'aborted') RETURNING sqla_jobs_jobs.id",
    prepared=False,
)

delete_jobs = Query(
    "delete_jobs",
    "DELETE FROM sqla_jobs_jobs WHERE sqla_jobs_jobs.id = any(CAST(%(job_ids)s AS BIGINT[])) AND (sqla_jobs_jobs.status NOT IN ('doing', 'aborting')) RETURNING sqla_jobs_jobs.id",
    prepared=False,
)

existing_job_ids = Query(
    "existing_job_ids",
    "SELECT sqla_jobs_jobs.id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.id = any(CAST(%(job_ids)s AS BIGINT[])) ORDER BY sqla_jobs_jobs.id",
    prepared=False,
)

prune_jobs = Query(
    "prune_jobs",
    "WITH pruned AS \n"
    "(DELETE FROM sqla_jobs_jobs WHERE sqla_jobs_jobs.id IN (SELECT sqla_jobs_jobs.id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status = any(CAST(CAST(%(statuses)s AS TEXT[]) AS sqla_jobs_job_status[])) AND coalesce(sqla_jobs_jobs.finished_at, sqla_jobs_jobs.created_at) < now() - CAST(%(older_than)s AS INTERVAL) \n"
    " LIMIT %(batch_size)s FOR UPDATE SKIP LOCKED) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.workflow_id), \n"
    "emptied AS \n"
    "(DELETE FROM sqla_jobs_workflows WHERE sqla_jobs_workflows.id IN (SELECT pruned.workflow_id \n"
    "FROM pruned \n"
    "WHERE pruned.workflow_id IS NOT NULL) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.workflow_id = sqla_jobs_workflows.id AND (sqla_jobs_jobs.id NOT IN (SELECT pruned.id \n"
    "FROM pruned)))) RETURNING sqla_jobs_workflows.id)\n"
    " SELECT count(*) AS count \n"
    "FROM pruned",
    prepared=False,
)

defer_periodic_jobs = Query(
    "defer_periodic_jobs",
    "WITH ticks AS \n"
    "(SELECT tick.task_name AS task_name, tick.periodic_id AS periodic_id, tick.defer_timestamp AS defer_timestamp, tick.queue AS queue, tick.priority AS priority, tick.lock AS lock, tick.queueing_lock AS queueing_lock, tick.args AS args \n"
    "FROM unnest(CAST(%(task_names)s AS TEXT[]), CAST(%(periodic_ids)s AS TEXT[]), CAST(%(defer_timestamps)s AS BIGINT[]), CAST(%(queues)s AS TEXT[]), CAST(%(priorities)s AS INTEGER[]), CAST(%(locks)s AS TEXT[]), CAST(%(queueing_locks)s AS TEXT[]), CAST(CAST(%(args)s AS TEXT[]) AS JSONB[])) AS tick(task_name, periodic_id, defer_timestamp, queue, priority, lock, queueing_lock, args)), \n"
    "deferred AS \n"
    "(INSERT INTO sqla_jobs_periodic_defers (task_name, periodic_id, defer_timestamp, job_id) SELECT ticks.task_name AS task_name, ticks.periodic_id AS periodic_id, ticks.defer_timestamp AS defer_timestamp, nextval(pg_get_serial_sequence('sqla_jobs_jobs', 'id')) AS nextval_1 \n"
    "FROM ticks ON CONFLICT ON CONSTRAINT uq_sqla_jobs_periodic_defers_tick DO NOTHING RETURNING sqla_jobs_periodic_defers.task_name, sqla_jobs_periodic_defers.periodic_id, sqla_jobs_periodic_defers.defer_timestamp, sqla_jobs_periodic_defers.job_id), \n"
    "inserted AS \n"
    "(INSERT INTO sqla_jobs_jobs (id, queue, task_name, priority, lock, queueing_lock, args) SELECT deferred.job_id AS job_id, ticks.queue AS queue, ticks.task_name AS task_name, ticks.priority AS priority, ticks.lock AS lock, ticks.queueing_lock AS queueing_lock, ticks.args AS args \n"
    "FROM deferred JOIN ticks ON deferred.task_name = ticks.task_name AND deferred.periodic_id = ticks.periodic_id AND deferred.defer_timestamp = ticks.defer_timestamp ON CONFLICT DO NOTHING RETURNING sqla_jobs_jobs.id)\n"
    " SELECT deferred.task_name, deferred.periodic_id, deferred.defer_timestamp, inserted.id AS job_id \n"
    "FROM deferred LEFT OUTER JOIN inserted ON inserted.id = deferred.job_id",
    prepared=False,
)

prune_periodic_defers = Query(
    "prune_periodic_defers",
    "WITH pruned AS \n"
    "(DELETE FROM sqla_jobs_periodic_defers WHERE sqla_jobs_periodic_defers.id IN (SELECT sqla_jobs_periodic_defers.id \n"
    "FROM sqla_jobs_periodic_defers \n"
    "WHERE sqla_jobs_periodic_defers.id IN (SELECT ranked.id \n"
    "FROM (SELECT sqla_jobs_periodic_defers.id AS id, sqla_jobs_periodic_defers.defer_timestamp AS defer_timestamp, row_number() OVER (PARTITION BY sqla_jobs_periodic_defers.task_name, sqla_jobs_periodic_defers.periodic_id ORDER BY sqla_jobs_periodic_defers.defer_timestamp DESC) AS newest_first \n"
    "FROM sqla_jobs_periodic_defers) AS ranked \n"
    "WHERE ranked.newest_first > %(keep)s AND ranked.defer_timestamp < %(before)s) FOR UPDATE SKIP LOCKED) RETURNING sqla_jobs_periodic_defers.id)\n"
    " SELECT count(*) AS count \n"
    "FROM pruned",
    prepared=False,
)

adopt_stalled_jobs = Query(
    "adopt_stalled_jobs",
    "WITH stalled AS \n"
    "(SELECT sqla_jobs_jobs.id AS id, sqla_jobs_jobs.worker_id AS stalled_worker_id, owner.name AS stalled_worker_name, EXTRACT(epoch FROM now() - owner.last_heartbeat) AS heartbeat_age \n"
    "FROM sqla_jobs_jobs LEFT OUTER JOIN sqla_jobs_workers AS owner ON owner.id = sqla_jobs_jobs.worker_id \n"
    "WHERE sqla_jobs_jobs.status IN ('doing', 'aborting') AND sqla_jobs_jobs.worker_id IS DISTINCT FROM %(worker_id)s AND (owner.id IS NULL OR owner.last_heartbeat < now() - CAST(%(stalled_timeout)s AS INTERVAL)) ORDER BY sqla_jobs_jobs.id \n"
    " LIMIT %(limit)s FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED)\n"
    " UPDATE sqla_jobs_jobs SET worker_id=%(worker_id)s FROM stalled WHERE sqla_jobs_jobs.id = stalled.id AND sqla_jobs_jobs.status IN ('doing', 'aborting') RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, stalled.stalled_worker_id, stalled.stalled_worker_name, stalled.heartbeat_age",
    prepared=False,
)

finish_recovered_jobs = Query(
    "finish_recovered_jobs",
    "UPDATE sqla_jobs_jobs SET status=CASE WHEN (sqla_jobs_jobs.status = 'aborting') THEN CAST('aborted' AS sqla_jobs_job_status) ELSE recovered_jobs.status END, scheduled_at=coalesce(recovered_jobs.retry_at, sqla_jobs_jobs.scheduled_at), finished_at=CASE WHEN (recovered_jobs.status = CAST('todo' AS sqla_jobs_job_status) AND sqla_jobs_jobs.status != 'aborting') THEN NULL ELSE clock_timestamp() END, last_error=recovered_jobs.error, worker_id=CASE WHEN (recovered_jobs.status = CAST('todo' AS sqla_jobs_job_status) AND sqla_jobs_jobs.status != 'aborting') THEN NULL ELSE recovered_jobs.stalled_worker_id END FROM (SELECT recovered.id AS id, recovered.status AS status, recovered.error AS error, recovered.retry_at AS retry_at, recovered.stalled_worker_id AS stalled_worker_id \n"
    "FROM unnest((SELECT CAST(%(ids)s AS BIGINT[]) AS anon_1), (SELECT CAST(CAST(%(statuses)s AS TEXT[]) AS sqla_jobs_job_status[]) AS anon_2), (SELECT CAST(%(errors)s AS TEXT[]) AS anon_3), (SELECT CAST(%(retry_ats)s AS TIMESTAMP WITH TIME ZONE[]) AS anon_4), (SELECT CAST(%(stalled_worker_ids)s AS BIGINT[]) AS anon_5)) AS recovered(id, status, error, retry_at, stalled_worker_id)) AS recovered_jobs WHERE sqla_jobs_jobs.id = recovered_jobs.id AND sqla_jobs_jobs.worker_id = %(worker_id)s AND sqla_jobs_jobs.status IN ('doing', 'aborting') RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.status",
    prepared=False,
)

delete_stalled_workers = Query(
    "delete_stalled_workers",
    "DELETE FROM sqla_jobs_workers WHERE sqla_jobs_workers.id != %(worker_id)s AND sqla_jobs_workers.last_heartbeat < now() - CAST(%(stalled_timeout)s AS INTERVAL) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.worker_id = sqla_jobs_workers.id AND sqla_jobs_jobs.status IN ('doing', 'aborting'))) RETURNING sqla_jobs_workers.id, sqla_jobs_workers.name, sqla_jobs_workers.hostname, sqla_jobs_workers.pid, EXTRACT(epoch FROM now() - sqla_jobs_workers.last_heartbeat) AS heartbeat_age",
    prepared=False,
)

aborting_jobs_of_worker = Query(
    "aborting_jobs_of_worker",
    "SELECT sqla_jobs_jobs.id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.worker_id = %(worker_id)s AND sqla_jobs_jobs.status = 'aborting'",
    prepared=False,
)

reregister_worker = Query(
    "reregister_worker",
    "INSERT INTO sqla_jobs_workers (id, name, hostname, pid, queues, concurrency) SELECT CAST(%(worker_id)s AS BIGINT) AS anon_1, CAST(%(name)s AS TEXT) AS anon_2, CAST(%(hostname)s AS TEXT) AS anon_3, CAST(%(pid)s AS INTEGER) AS anon_4, CAST(%(queues)s AS TEXT[]) AS anon_5, CAST(%(concurrency)s AS INTEGER) AS anon_6 \n"
    "WHERE NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_workers \n"
    "WHERE sqla_jobs_workers.id = %(worker_id)s)) RETURNING sqla_jobs_workers.id",
    prepared=False,
)

dashboard_jobs_page = Query(
    "dashboard_jobs_page",
    "SELECT sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.worker_id, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.id < coalesce(CAST(%(before)s AS BIGINT), 9223372036854775807) AND sqla_jobs_jobs.id >= (SELECT min(scanned.id) AS min_1 \n"
    "FROM (SELECT sqla_jobs_jobs.id AS id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.id < coalesce(CAST(%(before)s AS BIGINT), 9223372036854775807) ORDER BY sqla_jobs_jobs.id DESC \n"
    " LIMIT %(scan)s) AS scanned) AND (CAST(%(queue)s AS TEXT) IS NULL OR sqla_jobs_jobs.queue = %(queue)s) AND (CAST(%(task_name)s AS TEXT) IS NULL OR sqla_jobs_jobs.task_name = %(task_name)s) AND (CAST(%(lock)s AS TEXT) IS NULL OR sqla_jobs_jobs.lock = %(lock)s) AND (CAST(%(queueing_lock)s AS TEXT) IS NULL OR sqla_jobs_jobs.queueing_lock = %(queueing_lock)s) AND (CAST(%(tag)s AS TEXT) IS NULL OR (sqla_jobs_jobs.tags @> ARRAY[CAST(%(tag)s AS TEXT)])) AND (CAST(%(job_id)s AS BIGINT) IS NULL OR sqla_jobs_jobs.id = CAST(%(job_id)s AS BIGINT)) AND (CAST(%(workflow_id)s AS BIGINT) IS NULL OR sqla_jobs_jobs.workflow_id = CAST(%(workflow_id)s AS BIGINT)) AND (CAST(%(statuses)s AS TEXT[]) IS NULL OR sqla_jobs_jobs.status = any(CAST(CAST(%(statuses)s AS TEXT[]) AS sqla_jobs_job_status[]))) ORDER BY sqla_jobs_jobs.id DESC \n"
    " LIMIT %(limit)s",
    prepared=False,
)

dashboard_scan_floor = Query(
    "dashboard_scan_floor",
    "SELECT count(*) AS scanned, min(scanned.id) AS floor \n"
    "FROM (SELECT sqla_jobs_jobs.id AS id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.id < coalesce(CAST(%(before)s AS BIGINT), 9223372036854775807) ORDER BY sqla_jobs_jobs.id DESC \n"
    " LIMIT %(scan)s) AS scanned",
    prepared=False,
)

dashboard_matching_job_ids = Query(
    "dashboard_matching_job_ids",
    "SELECT sqla_jobs_jobs.id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE (CAST(%(queue)s AS TEXT) IS NULL OR sqla_jobs_jobs.queue = %(queue)s) AND (CAST(%(task_name)s AS TEXT) IS NULL OR sqla_jobs_jobs.task_name = %(task_name)s) AND (CAST(%(lock)s AS TEXT) IS NULL OR sqla_jobs_jobs.lock = %(lock)s) AND (CAST(%(queueing_lock)s AS TEXT) IS NULL OR sqla_jobs_jobs.queueing_lock = %(queueing_lock)s) AND (CAST(%(tag)s AS TEXT) IS NULL OR (sqla_jobs_jobs.tags @> ARRAY[CAST(%(tag)s AS TEXT)])) AND (CAST(%(job_id)s AS BIGINT) IS NULL OR sqla_jobs_jobs.id = CAST(%(job_id)s AS BIGINT)) AND (CAST(%(workflow_id)s AS BIGINT) IS NULL OR sqla_jobs_jobs.workflow_id = CAST(%(workflow_id)s AS BIGINT)) AND (CAST(%(statuses)s AS TEXT[]) IS NULL OR sqla_jobs_jobs.status = any(CAST(CAST(%(statuses)s AS TEXT[]) AS sqla_jobs_job_status[]))) ORDER BY sqla_jobs_jobs.id DESC \n"
    " LIMIT %(limit)s",
    prepared=False,
)

dashboard_id_span = Query(
    "dashboard_id_span",
    "SELECT coalesce((max(sqla_jobs_jobs.id) - min(sqla_jobs_jobs.id)) + 1, 0) AS span \n"
    "FROM sqla_jobs_jobs",
    prepared=False,
)

dashboard_sampled_counts = Query(
    "dashboard_sampled_counts",
    "SELECT sampled.queue, sampled.status, count(*) AS count \n"
    "FROM sqla_jobs_jobs AS sampled TABLESAMPLE system(CAST(%(percent)s AS FLOAT)) GROUP BY sampled.queue, sampled.status",
    prepared=False,
)

dashboard_oldest_waiting = Query(
    "dashboard_oldest_waiting",
    "SELECT sqla_jobs_jobs.queue, count(*) AS waiting, EXTRACT(epoch FROM now() - min(sqla_jobs_jobs.created_at)) AS age \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status = 'todo' AND (sqla_jobs_jobs.scheduled_at IS NULL OR sqla_jobs_jobs.scheduled_at <= now()) GROUP BY sqla_jobs_jobs.queue ORDER BY sqla_jobs_jobs.queue",
    prepared=False,
)

dashboard_finished_per_minute = Query(
    "dashboard_finished_per_minute",
    "SELECT CAST(EXTRACT(epoch FROM date_trunc('minute', sqla_jobs_jobs.finished_at)) AS BIGINT) AS minute, sqla_jobs_jobs.status, count(*) AS count \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.finished_at >= date_trunc('minute', now()) - make_interval(0, 0, 0, 0, 0, 59) GROUP BY date_trunc('minute', sqla_jobs_jobs.finished_at), sqla_jobs_jobs.status",
    prepared=False,
)

dashboard_running_per_worker = Query(
    "dashboard_running_per_worker",
    "SELECT sqla_jobs_jobs.worker_id, count(*) AS running \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status IN ('doing', 'aborting') AND sqla_jobs_jobs.worker_id IS NOT NULL GROUP BY sqla_jobs_jobs.worker_id",
    prepared=False,
)

dashboard_last_periodic_ticks = Query(
    "dashboard_last_periodic_ticks",
    "SELECT ticks.task_name, ticks.periodic_id, ticks.defer_timestamp, ticks.job_id, sqla_jobs_jobs.status \n"
    "FROM (SELECT sqla_jobs_periodic_defers.task_name AS task_name, sqla_jobs_periodic_defers.periodic_id AS periodic_id, sqla_jobs_periodic_defers.defer_timestamp AS defer_timestamp, sqla_jobs_periodic_defers.job_id AS job_id, row_number() OVER (PARTITION BY sqla_jobs_periodic_defers.task_name, sqla_jobs_periodic_defers.periodic_id ORDER BY sqla_jobs_periodic_defers.defer_timestamp DESC) AS recency \n"
    "FROM sqla_jobs_periodic_defers) AS ticks LEFT OUTER JOIN sqla_jobs_jobs ON sqla_jobs_jobs.id = ticks.job_id \n"
    "WHERE ticks.recency = 1 ORDER BY ticks.task_name, ticks.periodic_id",
    prepared=False,
)

dashboard_workflow_counts = Query(
    "dashboard_workflow_counts",
    "SELECT sqla_jobs_jobs.status, count(*) AS count \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.workflow_id = %(workflow_id)s GROUP BY sqla_jobs_jobs.status",
    prepared=False,
)

dashboard_workflow_jobs = Query(
    "dashboard_workflow_jobs",
    "SELECT sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.worker_id, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, array((SELECT sqla_jobs_job_dependencies.parent_id \n"
    "FROM sqla_jobs_job_dependencies \n"
    "WHERE sqla_jobs_job_dependencies.job_id = sqla_jobs_jobs.id ORDER BY sqla_jobs_job_dependencies.parent_id)) AS parent_ids \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.workflow_id = %(workflow_id)s ORDER BY sqla_jobs_jobs.id \n"
    " LIMIT %(limit)s",
    prepared=False,
)

dashboard_job_links = Query(
    "dashboard_job_links",
    "SELECT parent.id, parent.status, parent.side \n"
    "FROM (SELECT sqla_jobs_job_dependencies.parent_id AS id, sqla_jobs_jobs.status AS status, 'parent' AS side \n"
    "FROM sqla_jobs_job_dependencies JOIN sqla_jobs_jobs ON sqla_jobs_jobs.id = sqla_jobs_job_dependencies.parent_id \n"
    "WHERE sqla_jobs_job_dependencies.job_id = %(job_id)s ORDER BY sqla_jobs_job_dependencies.parent_id \n"
    " LIMIT %(limit)s) AS parent UNION ALL SELECT dependent.id, dependent.status, dependent.side \n"
    "FROM (SELECT sqla_jobs_job_dependencies.job_id AS id, sqla_jobs_jobs.status AS status, 'dependent' AS side \n"
    "FROM sqla_jobs_job_dependencies JOIN sqla_jobs_jobs ON sqla_jobs_jobs.id = sqla_jobs_job_dependencies.job_id \n"
    "WHERE sqla_jobs_job_dependencies.parent_id = %(job_id)s ORDER BY sqla_jobs_job_dependencies.job_id \n"
    " LIMIT %(limit)s) AS dependent",
    prepared=False,
)

set_paused = Query(
    "set_paused",
    "WITH changed AS \n"
    "(INSERT INTO sqla_jobs_controls (scope, name, paused) VALUES (%(scope)s, %(name)s, %(paused)s) ON CONFLICT (scope, name) DO UPDATE SET paused = excluded.paused, updated_at = now() RETURNING sqla_jobs_controls.scope)\n"
    " SELECT changed.scope, pg_notify('sqla_jobs_controls', 'controls') AS notified \n"
    "FROM changed",
    prepared=False,
)

set_limits = Query(
    "set_limits",
    "WITH changed AS \n"
    "(INSERT INTO sqla_jobs_controls (scope, name, concurrency_limit, rate_limit, rate_period, tokens, refilled_at) VALUES (%(scope)s, %(name)s, CAST(%(concurrency_limit)s AS INTEGER), CAST(%(rate_limit)s AS INTEGER), CAST(%(rate_period)s AS FLOAT), CAST(CAST(%(rate_limit)s AS INTEGER) AS FLOAT), clock_timestamp()) ON CONFLICT (scope, name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit, rate_limit = excluded.rate_limit, rate_period = excluded.rate_period, tokens = CASE WHEN (sqla_jobs_controls.rate_limit IS DISTINCT FROM excluded.rate_limit OR sqla_jobs_controls.rate_period IS DISTINCT FROM excluded.rate_period) THEN excluded.tokens ELSE sqla_jobs_controls.tokens END, refilled_at = CASE WHEN (sqla_jobs_controls.rate_limit IS DISTINCT FROM excluded.rate_limit OR sqla_jobs_controls.rate_period IS DISTINCT FROM excluded.rate_period) THEN excluded.refilled_at ELSE sqla_jobs_controls.refilled_at END, updated_at = now() RETURNING sqla_jobs_controls.scope)\n"
    " SELECT changed.scope, pg_notify('sqla_jobs_controls', 'controls') AS notified \n"
    "FROM changed",
    prepared=False,
)

list_controls = Query(
    "list_controls",
    "SELECT sqla_jobs_controls.scope, sqla_jobs_controls.name, sqla_jobs_controls.paused, sqla_jobs_controls.concurrency_limit, sqla_jobs_controls.rate_limit, sqla_jobs_controls.rate_period, sqla_jobs_controls.updated_at \n"
    "FROM sqla_jobs_controls ORDER BY sqla_jobs_controls.scope, sqla_jobs_controls.name",
    prepared=False,
)

running_per_queue_and_task = Query(
    "running_per_queue_and_task",
    "SELECT sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, count(*) AS running \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status IN ('doing', 'aborting') GROUP BY sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name",
    prepared=False,
)

claim_controlled = Query(
    "claim_controlled",
    "WITH RECURSIVE waiting_queues(name) AS \n"
    "(SELECT min(sqla_jobs_jobs.queue) AS name \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status = 'todo' UNION ALL SELECT (SELECT min(sqla_jobs_jobs.queue) AS min_1 \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status = 'todo' AND sqla_jobs_jobs.queue > waiting_queues.name) AS anon_1 \n"
    "FROM waiting_queues \n"
    "WHERE waiting_queues.name IS NOT NULL), \n"
    "limited AS \n"
    "(SELECT control.scope AS scope, control.name AS name \n"
    "FROM sqla_jobs_controls AS control \n"
    "WHERE control.concurrency_limit IS NOT NULL), \n"
    "running_counts AS \n"
    "(SELECT sqla_jobs_jobs.queue AS queue, sqla_jobs_jobs.task_name AS task_name, count(*) AS n \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status IN ('doing', 'aborting') AND (sqla_jobs_jobs.queue = any(ARRAY(SELECT limited.name \n"
    "FROM limited \n"
    "WHERE limited.scope = 'queue')) OR sqla_jobs_jobs.task_name = any(ARRAY(SELECT limited.name \n"
    "FROM limited \n"
    "WHERE limited.scope = 'task'))) GROUP BY sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name), \n"
    "clock AS \n"
    "(SELECT clock_timestamp() AS at), \n"
    "caps AS \n"
    "(SELECT control.scope AS scope, control.name AS name, least(CASE WHEN control.paused THEN 0 ELSE NULL END, CASE WHEN (control.concurrency_limit IS NOT NULL) THEN control.concurrency_limit - (SELECT coalesce(sum(running_counts.n), 0) AS coalesce_1 \n"
    "FROM running_counts \n"
    "WHERE CASE WHEN (control.scope = 'queue') THEN running_counts.queue = control.name ELSE running_counts.task_name = control.name END) ELSE NULL END, CAST(floor(CASE WHEN (control.rate_limit IS NOT NULL) THEN least(CAST(control.rate_limit AS FLOAT), coalesce(control.tokens, CAST(control.rate_limit AS FLOAT)) + (coalesce(EXTRACT(epoch FROM clock.at - control.refilled_at), 0) * control.rate_limit) / CAST(control.rate_period AS FLOAT)) ELSE NULL END) AS INTEGER)) AS cap, CASE WHEN (control.rate_limit IS NOT NULL) THEN least(CAST(control.rate_limit AS FLOAT), coalesce(control.tokens, CAST(control.rate_limit AS FLOAT)) + (coalesce(EXTRACT(epoch FROM clock.at - control.refilled_at), 0) * control.rate_limit) / CAST(control.rate_period AS FLOAT)) ELSE NULL END AS available \n"
    "FROM sqla_jobs_controls AS control JOIN clock ON true \n"
    "WHERE control.paused OR control.concurrency_limit IS NOT NULL OR control.rate_limit IS NOT NULL), \n"
    "wanted AS \n"
    "(SELECT named.name AS name, queue_cap.cap AS cap \n"
    "FROM (SELECT waiting_queues.name AS name \n"
    "FROM waiting_queues \n"
    "WHERE waiting_queues.name IS NOT NULL) AS named LEFT OUTER JOIN caps AS queue_cap ON queue_cap.scope = 'queue' AND queue_cap.name = named.name \n"
    "WHERE queue_cap.cap IS NULL OR queue_cap.cap > 0), \n"
    "ranked AS \n"
    "(SELECT best.id AS id, best.priority AS priority, best.task_name AS task_name, wanted.cap AS queue_cap, row_number() OVER (PARTITION BY best.queue ORDER BY best.priority DESC, best.id) AS in_queue, row_number() OVER (PARTITION BY best.task_name ORDER BY best.priority DESC, best.id) AS in_task \n"
    "FROM wanted JOIN LATERAL (SELECT walk.id AS id, walk.priority AS priority, walk.queue AS queue, walk.task_name AS task_name \n"
    "FROM (SELECT sqla_jobs_jobs.id AS id, sqla_jobs_jobs.priority AS priority, sqla_jobs_jobs.queue AS queue, sqla_jobs_jobs.task_name AS task_name \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE (SELECT set_config('synchronous_commit', 'off', true) AS set_config_1) = 'off' AND sqla_jobs_jobs.status = 'todo' AND (sqla_jobs_jobs.scheduled_at IS NULL OR sqla_jobs_jobs.scheduled_at <= now()) AND (sqla_jobs_jobs.lock IS NULL OR NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS running \n"
    "WHERE running.lock = sqla_jobs_jobs.lock AND running.status IN ('doing', 'aborting'))) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS earlier \n"
    "WHERE earlier.lock = sqla_jobs_jobs.lock AND earlier.status = 'todo' AND earlier.id < sqla_jobs_jobs.id))) AND sqla_jobs_jobs.queue = any(ARRAY[wanted.name]) AND sqla_jobs_jobs.task_name != all(coalesce(ARRAY(SELECT caps.name \n"
    "FROM caps \n"
    "WHERE caps.scope = 'task' AND caps.cap <= 0), CAST('{}' AS TEXT[]))) ORDER BY sqla_jobs_jobs.queue, sqla_jobs_jobs.priority DESC, sqla_jobs_jobs.id \n"
    " LIMIT (SELECT CAST(%(limit)s AS BIGINT) AS claim_size) FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED) AS walk \n"
    " LIMIT %(limit)s) AS best ON true), \n"
    "candidates AS \n"
    "(SELECT ranked.id AS id \n"
    "FROM ranked LEFT OUTER JOIN caps AS task_cap ON task_cap.scope = 'task' AND task_cap.name = ranked.task_name \n"
    "WHERE (ranked.queue_cap IS NULL OR ranked.in_queue <= ranked.queue_cap) AND (task_cap.cap IS NULL OR ranked.in_task <= task_cap.cap) ORDER BY ranked.priority DESC, ranked.id \n"
    " LIMIT %(limit)s), \n"
    "claimed AS \n"
    "(UPDATE sqla_jobs_jobs SET status='doing', attempts=(sqla_jobs_jobs.attempts + 1), started_at=clock_timestamp(), worker_id=%(worker_id)s WHERE sqla_jobs_jobs.id = any(ARRAY(SELECT candidates.id \n"
    "FROM candidates)) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.parents_left), \n"
    "spent AS \n"
    "(UPDATE sqla_jobs_controls SET tokens=(caps.available - (SELECT count(*) AS count_1 \n"
    "FROM claimed \n"
    "WHERE CASE WHEN (sqla_jobs_controls.scope = 'queue') THEN claimed.queue = sqla_jobs_controls.name ELSE claimed.task_name = sqla_jobs_controls.name END)), refilled_at=clock.at FROM caps, clock WHERE sqla_jobs_controls.rate_limit IS NOT NULL AND sqla_jobs_controls.scope = caps.scope AND sqla_jobs_controls.name = caps.name RETURNING sqla_jobs_controls.scope)\n"
    " SELECT claimed.id, claimed.queue, claimed.task_name, claimed.args, claimed.priority, claimed.lock, claimed.queueing_lock, claimed.scheduled_at, claimed.attempts, claimed.created_at, claimed.started_at, claimed.finished_at, claimed.last_error, claimed.trace_context, claimed.tags, claimed.meta, claimed.workflow_id, claimed.parents_left \n"
    "FROM claimed",
    prepared=False,
    preamble=(
        "SELECT set_config('jit', 'off', true) AS set_config_1",
        "SELECT 1 AS anon_1 \n"
        "FROM sqla_jobs_controls \n"
        "WHERE sqla_jobs_controls.concurrency_limit IS NOT NULL OR sqla_jobs_controls.rate_limit IS NOT NULL ORDER BY sqla_jobs_controls.scope, sqla_jobs_controls.name FOR UPDATE OF sqla_jobs_controls",
    ),
)

claim_controlled_in_queues = Query(
    "claim_controlled_in_queues",
    "WITH limited AS \n"
    "(SELECT control.scope AS scope, control.name AS name \n"
    "FROM sqla_jobs_controls AS control \n"
    "WHERE control.concurrency_limit IS NOT NULL AND (control.scope = 'task' OR control.name = any(CAST(%(queues)s AS TEXT[])))), \n"
    "running_counts AS \n"
    "(SELECT sqla_jobs_jobs.queue AS queue, sqla_jobs_jobs.task_name AS task_name, count(*) AS n \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.status IN ('doing', 'aborting') AND (sqla_jobs_jobs.queue = any(ARRAY(SELECT limited.name \n"
    "FROM limited \n"
    "WHERE limited.scope = 'queue')) OR sqla_jobs_jobs.task_name = any(ARRAY(SELECT limited.name \n"
    "FROM limited \n"
    "WHERE limited.scope = 'task'))) GROUP BY sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name), \n"
    "clock AS \n"
    "(SELECT clock_timestamp() AS at), \n"
    "caps AS \n"
    "(SELECT control.scope AS scope, control.name AS name, least(CASE WHEN control.paused THEN 0 ELSE NULL END, CASE WHEN (control.concurrency_limit IS NOT NULL) THEN control.concurrency_limit - (SELECT coalesce(sum(running_counts.n), 0) AS coalesce_1 \n"
    "FROM running_counts \n"
    "WHERE CASE WHEN (control.scope = 'queue') THEN running_counts.queue = control.name ELSE running_counts.task_name = control.name END) ELSE NULL END, CAST(floor(CASE WHEN (control.rate_limit IS NOT NULL) THEN least(CAST(control.rate_limit AS FLOAT), coalesce(control.tokens, CAST(control.rate_limit AS FLOAT)) + (coalesce(EXTRACT(epoch FROM clock.at - control.refilled_at), 0) * control.rate_limit) / CAST(control.rate_period AS FLOAT)) ELSE NULL END) AS INTEGER)) AS cap, CASE WHEN (control.rate_limit IS NOT NULL) THEN least(CAST(control.rate_limit AS FLOAT), coalesce(control.tokens, CAST(control.rate_limit AS FLOAT)) + (coalesce(EXTRACT(epoch FROM clock.at - control.refilled_at), 0) * control.rate_limit) / CAST(control.rate_period AS FLOAT)) ELSE NULL END AS available \n"
    "FROM sqla_jobs_controls AS control JOIN clock ON true \n"
    "WHERE (control.paused OR control.concurrency_limit IS NOT NULL OR control.rate_limit IS NOT NULL) AND (control.scope = 'task' OR control.name = any(CAST(%(queues)s AS TEXT[])))), \n"
    "wanted AS \n"
    "(SELECT named.name AS name, queue_cap.cap AS cap \n"
    "FROM (SELECT source.name AS name \n"
    "FROM unnest(CAST(%(queues)s AS TEXT[])) AS source(name)) AS named LEFT OUTER JOIN caps AS queue_cap ON queue_cap.scope = 'queue' AND queue_cap.name = named.name \n"
    "WHERE queue_cap.cap IS NULL OR queue_cap.cap > 0), \n"
    "ranked AS \n"
    "(SELECT best.id AS id, best.priority AS priority, best.task_name AS task_name, wanted.cap AS queue_cap, row_number() OVER (PARTITION BY best.queue ORDER BY best.priority DESC, best.id) AS in_queue, row_number() OVER (PARTITION BY best.task_name ORDER BY best.priority DESC, best.id) AS in_task \n"
    "FROM wanted JOIN LATERAL (SELECT walk.id AS id, walk.priority AS priority, walk.queue AS queue, walk.task_name AS task_name \n"
    "FROM (SELECT sqla_jobs_jobs.id AS id, sqla_jobs_jobs.priority AS priority, sqla_jobs_jobs.queue AS queue, sqla_jobs_jobs.task_name AS task_name \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE (SELECT set_config('synchronous_commit', 'off', true) AS set_config_1) = 'off' AND sqla_jobs_jobs.status = 'todo' AND (sqla_jobs_jobs.scheduled_at IS NULL OR sqla_jobs_jobs.scheduled_at <= now()) AND (sqla_jobs_jobs.lock IS NULL OR NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS running \n"
    "WHERE running.lock = sqla_jobs_jobs.lock AND running.status IN ('doing', 'aborting'))) AND NOT (EXISTS (SELECT * \n"
    "FROM sqla_jobs_jobs AS earlier \n"
    "WHERE earlier.lock = sqla_jobs_jobs.lock AND earlier.status = 'todo' AND earlier.id < sqla_jobs_jobs.id))) AND sqla_jobs_jobs.queue = any(ARRAY[wanted.name]) AND sqla_jobs_jobs.task_name != all(coalesce(ARRAY(SELECT caps.name \n"
    "FROM caps \n"
    "WHERE caps.scope = 'task' AND caps.cap <= 0), CAST('{}' AS TEXT[]))) ORDER BY sqla_jobs_jobs.queue, sqla_jobs_jobs.priority DESC, sqla_jobs_jobs.id \n"
    " LIMIT (SELECT CAST(%(limit)s AS BIGINT) AS claim_size) FOR UPDATE OF sqla_jobs_jobs SKIP LOCKED) AS walk \n"
    " LIMIT %(limit)s) AS best ON true), \n"
    "candidates AS \n"
    "(SELECT ranked.id AS id \n"
    "FROM ranked LEFT OUTER JOIN caps AS task_cap ON task_cap.scope = 'task' AND task_cap.name = ranked.task_name \n"
    "WHERE (ranked.queue_cap IS NULL OR ranked.in_queue <= ranked.queue_cap) AND (task_cap.cap IS NULL OR ranked.in_task <= task_cap.cap) ORDER BY ranked.priority DESC, ranked.id \n"
    " LIMIT %(limit)s), \n"
    "claimed AS \n"
    "(UPDATE sqla_jobs_jobs SET status='doing', attempts=(sqla_jobs_jobs.attempts + 1), started_at=clock_timestamp(), worker_id=%(worker_id)s WHERE sqla_jobs_jobs.id = any(ARRAY(SELECT candidates.id \n"
    "FROM candidates)) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.parents_left), \n"
    "spent AS \n"
    "(UPDATE sqla_jobs_controls SET tokens=(caps.available - (SELECT count(*) AS count_1 \n"
    "FROM claimed \n"
    "WHERE CASE WHEN (sqla_jobs_controls.scope = 'queue') THEN claimed.queue = sqla_jobs_controls.name ELSE claimed.task_name = sqla_jobs_controls.name END)), refilled_at=clock.at FROM caps, clock WHERE sqla_jobs_controls.rate_limit IS NOT NULL AND sqla_jobs_controls.scope = caps.scope AND sqla_jobs_controls.name = caps.name RETURNING sqla_jobs_controls.scope)\n"
    " SELECT claimed.id, claimed.queue, claimed.task_name, claimed.args, claimed.priority, claimed.lock, claimed.queueing_lock, claimed.scheduled_at, claimed.attempts, claimed.created_at, claimed.started_at, claimed.finished_at, claimed.last_error, claimed.trace_context, claimed.tags, claimed.meta, claimed.workflow_id, claimed.parents_left \n"
    "FROM claimed",
    prepared=False,
    preamble=(
        "SELECT set_config('jit', 'off', true) AS set_config_1",
        "SELECT 1 AS anon_1 \n"
        "FROM sqla_jobs_controls \n"
        "WHERE (sqla_jobs_controls.concurrency_limit IS NOT NULL OR sqla_jobs_controls.rate_limit IS NOT NULL) AND (sqla_jobs_controls.scope = 'task' OR sqla_jobs_controls.name = any(CAST(%(queues)s AS TEXT[]))) ORDER BY sqla_jobs_controls.scope, sqla_jobs_controls.name FOR UPDATE OF sqla_jobs_controls",
    ),
)

defer_workflow = Query(
    "defer_workflow",
    "WITH workflow AS \n"
    "(INSERT INTO sqla_jobs_workflows (name) VALUES (%(name)s) RETURNING sqla_jobs_workflows.id, sqla_jobs_workflows.created_at), \n"
    "written_jobs AS \n"
    "(INSERT INTO sqla_jobs_jobs (id, queue, task_name, priority, lock, args, scheduled_at, trace_context, tags, meta, parents_left, has_dependents, status, workflow_id) SELECT step.id AS id, step.queue AS queue, step.task_name AS task_name, step.priority AS priority, step.lock AS lock, step.args AS args, step.scheduled_at AS scheduled_at, step.trace_context AS trace_context, CAST(step.tags AS TEXT[]) AS tags, CAST(step.meta AS JSONB) AS meta, step.parents_left AS parents_left, step.has_dependents AS has_dependents, CASE WHEN (step.parents_left IS NULL) THEN CAST('todo' AS sqla_jobs_job_status) ELSE CAST('blocked' AS sqla_jobs_job_status) END AS anon_1, (SELECT workflow.id \n"
    "FROM workflow) AS anon_2 \n"
    "FROM unnest(CAST(%(ids)s AS BIGINT[]), CAST(%(queues)s AS TEXT[]), CAST(%(task_names)s AS TEXT[]), CAST(%(priorities)s AS INTEGER[]), CAST(%(locks)s AS TEXT[]), CAST(CAST(%(args)s AS TEXT[]) AS JSONB[]), CAST(%(scheduled_ats)s AS TIMESTAMP WITH TIME ZONE[]), CAST(%(trace_contexts)s AS TEXT[]), CAST(%(tags)s AS TEXT[]), CAST(%(metas)s AS TEXT[]), CAST(%(parents_lefts)s AS INTEGER[]), CAST(%(has_dependents)s AS BOOLEAN[])) AS step(id, queue, task_name, priority, lock, args, scheduled_at, trace_context, tags, meta, parents_left, has_dependents) RETURNING sqla_jobs_jobs.id), \n"
    "written_edges AS \n"
    "(INSERT INTO sqla_jobs_job_dependencies (job_id, parent_id, on_parent_failure) SELECT edge.job_id AS job_id, edge.parent_id AS parent_id, edge.on_parent_failure AS on_parent_failure \n"
    "FROM unnest(CAST(%(edge_job_ids)s AS BIGINT[]), CAST(%(edge_parent_ids)s AS BIGINT[]), CAST(%(edge_policies)s AS TEXT[])) AS edge(job_id, parent_id, on_parent_failure) RETURNING sqla_jobs_job_dependencies.job_id)\n"
    " SELECT workflow.id AS workflow_id, workflow.created_at \n"
    "FROM workflow",
    prepared=False,
)

get_workflow = Query(
    "get_workflow",
    "SELECT sqla_jobs_workflows.id, sqla_jobs_workflows.name, sqla_jobs_workflows.created_at \n"
    "FROM sqla_jobs_workflows \n"
    "WHERE sqla_jobs_workflows.id = %(workflow_id)s",
    prepared=False,
)

workflow_jobs = Query(
    "workflow_jobs",
    "SELECT sqla_jobs_jobs.id, sqla_jobs_jobs.queue, sqla_jobs_jobs.task_name, CAST(sqla_jobs_jobs.args AS TEXT) AS args, sqla_jobs_jobs.priority, sqla_jobs_jobs.lock, sqla_jobs_jobs.queueing_lock, sqla_jobs_jobs.status, sqla_jobs_jobs.scheduled_at, sqla_jobs_jobs.attempts, sqla_jobs_jobs.created_at, sqla_jobs_jobs.started_at, sqla_jobs_jobs.finished_at, sqla_jobs_jobs.last_error, sqla_jobs_jobs.worker_id, sqla_jobs_jobs.trace_context, sqla_jobs_jobs.tags, CAST(sqla_jobs_jobs.meta AS TEXT) AS meta, sqla_jobs_jobs.workflow_id, sqla_jobs_jobs.unique_key \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.workflow_id = %(workflow_id)s ORDER BY sqla_jobs_jobs.id",
    prepared=False,
)

workflow_dependencies = Query(
    "workflow_dependencies",
    "SELECT sqla_jobs_job_dependencies.job_id, sqla_jobs_job_dependencies.parent_id, sqla_jobs_job_dependencies.on_parent_failure \n"
    "FROM sqla_jobs_job_dependencies \n"
    "WHERE sqla_jobs_job_dependencies.job_id IN (SELECT sqla_jobs_jobs.id \n"
    "FROM sqla_jobs_jobs \n"
    "WHERE sqla_jobs_jobs.workflow_id = %(workflow_id)s) ORDER BY sqla_jobs_job_dependencies.job_id, sqla_jobs_job_dependencies.parent_id",
    prepared=False,
)

parent_results = Query(
    "parent_results",
    "SELECT sqla_jobs_job_dependencies.job_id, sqla_jobs_jobs.id AS parent_id, sqla_jobs_jobs.task_name, sqla_jobs_jobs.status, CAST(sqla_jobs_jobs.result AS TEXT) AS result \n"
    "FROM sqla_jobs_job_dependencies JOIN sqla_jobs_jobs ON sqla_jobs_jobs.id = sqla_jobs_job_dependencies.parent_id \n"
    "WHERE sqla_jobs_job_dependencies.job_id = any(CAST(%(job_ids)s AS BIGINT[])) ORDER BY sqla_jobs_job_dependencies.job_id, sqla_jobs_job_dependencies.parent_id",
    prepared=False,
)

cancel_workflow = Query(
    "cancel_workflow",
    "UPDATE sqla_jobs_jobs SET status=CASE WHEN (sqla_jobs_jobs.status = 'doing') THEN CAST('aborting' AS sqla_jobs_job_status) ELSE CAST('cancelled' AS sqla_jobs_job_status) END, finished_at=CASE WHEN (sqla_jobs_jobs.status = 'doing') THEN NULL ELSE clock_timestamp() END WHERE sqla_jobs_jobs.workflow_id = %(workflow_id)s AND (sqla_jobs_jobs.status IN ('todo', 'blocked') OR sqla_jobs_jobs.status = 'doing' AND CAST(%(abort)s AS BOOLEAN) IS true) RETURNING sqla_jobs_jobs.id, sqla_jobs_jobs.status",
    prepared=False,
)

ALL = (
    defer_job,
    defer_jobs,
    reserve_job_ids,
    waiting_queueing_locks,
    defer_job_unless_unique_taken,
    defer_jobs_unless_unique_taken,
    unique_jobs,
    claim_jobs,
    claim_jobs_in_queues,
    finish_succeeded,
    finish_succeeded_with_results,
    delete_jobs_by_id,
    finish_jobs,
    register_worker,
    heartbeat,
    notify,
    unregister_worker,
    requeue_worker_jobs,
    list_workers,
    get_job,
    await_job,
    count_jobs_by_status,
    check_schema,
    list_jobs,
    list_jobs_with_tags,
    count_jobs_by_status_with_tags,
    job_history,
    cancel_jobs,
    abort_jobs,
    retry_jobs,
    delete_jobs,
    existing_job_ids,
    prune_jobs,
    defer_periodic_jobs,
    prune_periodic_defers,
    adopt_stalled_jobs,
    finish_recovered_jobs,
    delete_stalled_workers,
    aborting_jobs_of_worker,
    reregister_worker,
    dashboard_jobs_page,
    dashboard_scan_floor,
    dashboard_matching_job_ids,
    dashboard_id_span,
    dashboard_sampled_counts,
    dashboard_oldest_waiting,
    dashboard_finished_per_minute,
    dashboard_running_per_worker,
    dashboard_last_periodic_ticks,
    dashboard_workflow_counts,
    dashboard_workflow_jobs,
    dashboard_job_links,
    set_paused,
    set_limits,
    list_controls,
    running_per_queue_and_task,
    claim_controlled,
    claim_controlled_in_queues,
    defer_workflow,
    get_workflow,
    workflow_jobs,
    workflow_dependencies,
    parent_results,
    cancel_workflow,
)
