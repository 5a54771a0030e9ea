-- The run's lock, held in a destination session of its own from before the
-- copy until validation has finished, on both copy paths: a second run
-- refuses at once instead of replacing the schemas while this run still
-- measures them (the one-stream load's own lock ends at its COMMIT, before
-- validation). The load keeps its own lock on the key LOCK_KEY
-- (replace_schemas.sql, coordinator_lock.sql), which also keeps out a run of
-- an older version of this job; this is another key of the same family,
-- so that the run's own load does not collide with it.
SELECT pg_catalog.pg_try_advisory_lock(%(lock_key)s, 1);
