-- The tables whose rows the parallel copy streams, largest first, read in the
-- source snapshot. Like pg_dump: ordinary tables and leaf partitions only
-- (a partitioned table holds no rows of its own), every column except
-- generated ones (the destination computes those), in column order.
-- binary: every column has a built-in type. Binary COPY is then exact and
-- cheaper; user-defined types go as text, because binary arrays and composites
-- carry type OIDs that differ between the two databases.
SELECT n.nspname,
       c.relname,
       pg_catalog.pg_table_size(c.oid) AS size,
       ARRAY(
           SELECT a.attname::text
           FROM pg_catalog.pg_attribute AS a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
           ORDER BY a.attnum) AS columns,
       NOT EXISTS (
           SELECT 1
           FROM pg_catalog.pg_attribute AS a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             AND a.atttypid >= 16384) AS binary
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s)
  AND c.relkind = 'r'
ORDER BY size DESC, n.nspname, c.relname;
