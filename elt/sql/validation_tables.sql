-- Every table whose rows pg_dump copies, in the copied schemas: ordinary
-- tables (partitions included, as they hold the rows of partitioned tables)
-- and materialized views; not extension-owned ones, which pg_dump skips.
--
-- columns / exact_hash: the columns, by name (not by position: pg_dump may
-- re-create an inheritance child with another column order), and for each
-- whether its type's own hash tells values apart exactly as its text form
-- does, so validate.py can hash it directly instead of through its text
-- (cheaper; docs/validation.md). Left out, and hashed through text: numeric (1.5 = 1.50),
-- floats (0 = -0), char(n), arrays, jsonb (its hash maps NULL, {} and [] alike
-- and ignores numeric scale), every other type, and any column with a
-- nondeterministic collation (case-insensitive text, say). Domains count as
-- their base type.
--
-- matview_query: a materialized view is not copied but refreshed on the
-- destination, from the copied data. Its source-side figures therefore come
-- from running its defining query in the snapshot, not from its stored rows,
-- which may be older than its tables.
--
-- bytes and locks decide which relations validate.py measures in one
-- statement: the planner's size (relpages, which takes no lock), and the
-- locks measuring it takes: the relation, each of its indexes (the planner
-- opens them) and its TOAST table and index.
SELECT n.nspname AS schema,
       c.relname AS name,
       c.relispopulated AS populated,
       CASE WHEN c.relkind = 'm'
            THEN pg_catalog.rtrim(pg_catalog.pg_get_viewdef(c.oid), '; ' || chr(10))
       END AS matview_query,
       ARRAY(
           SELECT a.attname::text
           FROM pg_catalog.pg_attribute AS a
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attname
       ) AS columns,
       ARRAY(
           SELECT (CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
                       IN ('pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype,
                           'pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.bool'::pg_catalog.regtype,
                           'pg_catalog.date'::pg_catalog.regtype, 'pg_catalog.timestamp'::pg_catalog.regtype,
                           'pg_catalog.timestamptz'::pg_catalog.regtype, 'pg_catalog.uuid'::pg_catalog.regtype,
                           'pg_catalog.bytea'::pg_catalog.regtype, 'pg_catalog.text'::pg_catalog.regtype,
                           'pg_catalog.varchar'::pg_catalog.regtype, 'pg_catalog.oid'::pg_catalog.regtype))
                   AND COALESCE(co.collisdeterministic, true)
           FROM pg_catalog.pg_attribute AS a
           JOIN pg_catalog.pg_type AS ty ON ty.oid = a.atttypid
           LEFT JOIN pg_catalog.pg_collation AS co ON co.oid = a.attcollation
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attname
       ) AS exact_hash,
       c.relpages::bigint * pg_catalog.current_setting('block_size')::integer AS bytes,
       1 + (SELECT pg_catalog.count(*)::integer
            FROM pg_catalog.pg_index AS i
            WHERE i.indrelid = c.oid)
         + CASE WHEN c.reltoastrelid <> 0 THEN 2 ELSE 0 END AS locks
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
