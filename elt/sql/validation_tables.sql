-- Every table whose rows pg_dump copies, in the copied schemas: ordinary
-- tables (partitions included, as they hold the rows of partitioned tables)
-- and materialized views; not extension-owned ones, which pg_dump skips.
SELECT n.nspname, c.relname, c.relispopulated
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname = ANY (%(schemas)s)
  AND NOT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_depend AS d
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.objid = c.oid
      AND d.deptype = 'e'
  )
ORDER BY n.nspname, c.relname;
