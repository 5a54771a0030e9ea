-- Gives back the load's lock that elt/sql/coordinator_lock.sql took, when the
-- parallel copy ends without a swap or leaves the run to one stream.
SELECT pg_catalog.pg_advisory_unlock(%(lock_key)s);
