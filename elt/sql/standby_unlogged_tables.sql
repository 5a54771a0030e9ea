-- Unlogged tables and sequences in the copied schemas when the source is a
-- hot standby (in recovery): PostgreSQL keeps no data of them there (only the
-- primary has it), and reading them fails. pg_dump copies their definitions
-- without data; the parallel copy does the same (copy_tables.sql,
-- source_extras.sql), and validation leaves the tables out on both sides.
-- Empty on a primary. relkind: 'r' table, 'S' sequence.
SELECT c.relkind::text, n.nspname, c.relname
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE pg_catalog.pg_is_in_recovery()
  AND c.relpersistence = 'u'
  AND c.relkind IN ('r', 'S')
  AND n.nspname = ANY (%(schemas)s)
ORDER BY n.nspname, c.relname;
