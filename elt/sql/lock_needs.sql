-- The relations in the copied schemas, counted for the estimate of the locks a
-- run holds at once (elt/limits.py). Each figure is a lower bound:
--   tables    ordinary and partitioned tables, which pg_dump locks all at once
--             (not those of extensions, which it does not dump);
--   created   what a load creates from them in one transaction, each relation
--             locked until it ends: every relation, plus a TOAST table and its
--             index for each table with a column of unbounded length (which
--             the destination gives one whatever the data);
--   existing  what is there now, with TOAST tables and their indexes: what a
--             load drops, again locking each relation.
SELECT pg_catalog.count(*) FILTER (
           WHERE c.relkind IN ('r', 'p')
             AND NOT EXISTS (
                 SELECT 1
                 FROM pg_catalog.pg_depend AS d
                 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.objid = c.oid
                   AND d.deptype = 'e')) AS tables,
       pg_catalog.count(*) + 2 * pg_catalog.count(*) FILTER (
           WHERE c.relkind IN ('r', 'm')
             AND EXISTS (
                 SELECT 1
                 FROM pg_catalog.pg_attribute AS a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attlen = -1 AND a.attstorage <> 'p' AND a.atttypmod < 0)) AS created,
       pg_catalog.count(*) + 2 * pg_catalog.count(*) FILTER (WHERE c.reltoastrelid <> 0) AS existing
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s);
