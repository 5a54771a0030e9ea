-- The tables whose rows the parallel copy streams, largest first, read in the
-- source snapshot. Like pg_dump: ordinary tables and leaf partitions only
-- (a partitioned table holds no rows of its own), every column except
-- generated ones (the destination computes those), in column order.
-- binary: every column has a built-in type with binary input and output.
--   Binary COPY is then exact and cheaper; anything else goes as text,
--   because binary arrays and composites carry type OIDs that differ between
--   the two databases, and some types (aclitem) have no binary form.
-- oid_columns: columns of an OID alias type (regclass, regtype, ...), or an
--   array or domain of one. Their values name objects, which the swap moves
--   from the staging schemas: the parallel copy leaves such sources to the
--   one-stream path, which resolves them where they end up.
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
           JOIN pg_catalog.pg_type AS ty ON ty.oid = a.atttypid
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             AND (a.atttypid >= 16384 OR ty.typsend = 0 OR ty.typreceive = 0)) AS binary,
       ARRAY(
           SELECT a.attname::text
           FROM pg_catalog.pg_attribute AS a
           JOIN pg_catalog.pg_type AS ty ON ty.oid = a.atttypid
           JOIN pg_catalog.pg_type AS base
             ON base.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
           LEFT JOIN pg_catalog.pg_type AS elem ON elem.oid = base.typelem
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             AND (base.typname ~ '^reg' AND base.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
                  OR elem.typname ~ '^reg' AND elem.typnamespace = 'pg_catalog'::pg_catalog.regnamespace)
           ORDER BY a.attnum) AS oid_columns
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s)
  AND c.relkind = 'r'
  -- like pg_dump: no rows of unlogged tables on a hot standby, which has none
  -- (standby_unlogged_tables.sql); the staging schemas still get the table
  AND NOT (c.relpersistence = 'u' AND pg_catalog.pg_is_in_recovery())
ORDER BY size DESC, n.nspname, c.relname;
