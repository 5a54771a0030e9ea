-- Run in the scratch database after its schemas were renamed to the staging
-- names: for the TOC entries the parallel copy schedules itself, the table
-- each belongs to. kind: 'c' constraint, 'i' index, 'm' materialized view.
--   conindid  the index a constraint is built on (for a foreign key: the
--             referenced table's unique index, which must exist first)
--   method    the index's access method (GIN and GiST builds are slow)
--   index_def for a primary key or unique constraint, its index as CREATE
--             UNIQUE INDEX: built under a SHARE lock, alongside the table's
--             other index builds, and then attached with ADD CONSTRAINT ...
--             USING INDEX. The caller sets search_path to '' first, so that
--             every name in it is qualified.
SELECT 'c' AS kind, c.oid, n.nspname, r.relname, r.relkind::text, c.contype::text,
       c.conindid, fn.nspname AS ref_schema, fr.relname AS ref_table, am.amname::text AS method,
       c.conname::text,
       CASE WHEN c.contype IN ('p', 'u') THEN pg_catalog.pg_get_indexdef(c.conindid) END
         AS index_def,
       c.condeferrable, c.condeferred
FROM pg_catalog.pg_constraint AS c
JOIN pg_catalog.pg_class AS r ON r.oid = c.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = r.relnamespace
LEFT JOIN pg_catalog.pg_class AS fr ON fr.oid = c.confrelid
LEFT JOIN pg_catalog.pg_namespace AS fn ON fn.oid = fr.relnamespace
LEFT JOIN pg_catalog.pg_class AS ic ON ic.oid = c.conindid
LEFT JOIN pg_catalog.pg_am AS am ON am.oid = ic.relam
WHERE c.oid = ANY (%(constraints)s)
UNION ALL
SELECT 'i', i.indexrelid, n.nspname, r.relname, r.relkind::text, NULL,
       i.indexrelid, NULL, NULL, am.amname::text, NULL, NULL, NULL, NULL
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS r ON r.oid = i.indrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = r.relnamespace
JOIN pg_catalog.pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am AS am ON am.oid = ic.relam
WHERE i.indexrelid = ANY (%(indexes)s)
UNION ALL
SELECT 'm', c.oid, n.nspname, c.relname, c.relkind::text, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.oid = ANY (%(matviews)s);
