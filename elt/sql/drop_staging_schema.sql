-- Drops one of the job's own staging schemas (the caller has checked its
-- marker, staging_leftovers.sql) with everything in it. The caller fills in
-- the quoted schema name.
DROP SCHEMA {schema} CASCADE;
