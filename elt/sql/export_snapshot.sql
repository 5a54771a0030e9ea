-- The snapshot of the source's REPEATABLE READ transaction, for pg_dump --snapshot
-- and the parallel copy's workers to read exactly the same state.
SELECT pg_catalog.pg_export_snapshot() AS snapshot_id;
