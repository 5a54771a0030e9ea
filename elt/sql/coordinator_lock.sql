-- The parallel copy's coordinator session: takes the run's lock (the key that
-- elt/sql/replace_schemas.sql takes too: "ELT") for the whole run, and reads
-- what the scratch database must match: the destination database's OID (its
-- name), encoding and locale.
SELECT pg_catalog.pg_try_advisory_lock(4541524),
       d.oid::bigint,
       pg_catalog.pg_encoding_to_char(d.encoding),
       d.datcollate,
       d.datctype
FROM pg_catalog.pg_database AS d
WHERE d.datname = pg_catalog.current_database();
