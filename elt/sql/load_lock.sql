-- The load's lock (the key replace_schemas.sql and coordinator_lock.sql take),
-- for the rest of the caller's transaction: removing staging schemas waits
-- for no other load, and never removes those of a load that is running.
SELECT pg_catalog.pg_try_advisory_xact_lock(%(lock_key)s) AS locked;
