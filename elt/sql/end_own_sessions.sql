-- Ends this run's other sessions on the destination before its clean-up
-- drops the staging schemas (parallel_copy._clean_up). Only called while the
-- caller holds the run's lock, so every other session with the job's
-- application_name in this database belongs to this run.
SELECT pg_catalog.pg_terminate_backend(a.pid)
FROM pg_catalog.pg_stat_activity AS a
WHERE a.datname = pg_catalog.current_database()
  AND a.application_name = %(name)s
  AND a.pid <> pg_catalog.pg_backend_pid();
