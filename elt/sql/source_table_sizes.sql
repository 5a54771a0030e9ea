-- Each table's size on the source's disk, for the one-stream copy's progress
-- estimate and the count of tables that chooses the copy path. The planner's
-- page count (relpages), which takes no lock: a locked source table must hold
-- up pg_dump, where the job reports it, not this.
SELECT n.nspname || '.' || c.relname AS table_name,
       c.relpages::bigint * pg_catalog.current_setting('block_size')::integer AS bytes
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname = ANY (%(schemas)s);
