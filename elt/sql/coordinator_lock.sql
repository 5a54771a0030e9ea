-- The parallel copy's coordinator, in the run's own destination session
-- (which holds the run's lock, elt/sql/run_lock.sql): takes the load's lock
-- (the key that elt/sql/replace_schemas.sql takes too) until the run
-- ends or falls back to one stream, and reads what the scratch database must
-- match: the destination database's OID (its name), encoding and locale.
SELECT pg_catalog.pg_try_advisory_lock(%(lock_key)s) AS locked,
       d.oid::bigint AS oid,
       pg_catalog.pg_encoding_to_char(d.encoding) AS encoding,
       d.datcollate,
       d.datctype
FROM pg_catalog.pg_database AS d
WHERE d.datname = pg_catalog.current_database();
