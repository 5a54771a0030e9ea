-- Is there room in the shared lock table for %(locks)s more locks, now? Takes
-- that many advisory locks (kept in the same table as every other lock) in
-- the caller's transaction or savepoint, which rolls them back at once. The
-- keys are in the job's family (LOCK_KEY) but never its run lock's (1);
-- shared and try_: they neither wait for nor block anybody.
SELECT pg_catalog.count(*)
FROM pg_catalog.generate_series(1, %(locks)s::integer) AS g
WHERE pg_catalog.pg_try_advisory_xact_lock_shared(%(lock_key)s, -g);
