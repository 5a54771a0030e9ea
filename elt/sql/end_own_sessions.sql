-- Ends this run's other sessions on the destination before the parallel
-- copy's clean-up drops the staging schemas: those with the job's
-- application_name whose statement names one of this run's staging schemas.
-- The names carry the run's ID, so no other run's or job's session matches.
SELECT pg_catalog.pg_terminate_backend(a.pid)
FROM pg_catalog.pg_stat_activity AS a
WHERE a.datname = pg_catalog.current_database()
  AND a.application_name = %(name)s
  AND a.pid <> pg_catalog.pg_backend_pid()
  AND EXISTS (SELECT 1 FROM pg_catalog.unnest(%(schemas)s::text[]) AS s
              WHERE pg_catalog.strpos(a.query, s) > 0);
