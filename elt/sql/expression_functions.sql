-- User-defined functions, operators and operator classes that the server runs while the
-- parallel copy loads or indexes a copied table: in CHECK constraints (of
-- tables and of domains), index expressions and predicates, generated columns
-- and partition keys. Their bodies may name other copied tables
-- (public.prices), which during the copy are the destination's current ones,
-- not the staged ones: so the parallel copy leaves such sources to the
-- one-stream path. Any user function counts, since no body can be proven not
-- to reach a table (EXECUTE, calls to other functions).
SELECT DISTINCT
       pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS used_by,
       pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0) AS uses
FROM pg_catalog.pg_depend AS d
WHERE d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass,
                       'pg_catalog.pg_operator'::pg_catalog.regclass,
                       'pg_catalog.pg_opclass'::pg_catalog.regclass)
  AND d.refobjid >= 16384
  AND (
    (d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND EXISTS (
        SELECT 1
        FROM pg_catalog.pg_constraint AS con
        LEFT JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
        LEFT JOIN pg_catalog.pg_type AS t ON t.oid = con.contypid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = COALESCE(c.relnamespace, t.typnamespace)
        WHERE con.oid = d.objid AND con.contype = 'c' AND n.nspname = ANY (%(schemas)s)))
    OR (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND EXISTS (
        SELECT 1
        FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = d.objid AND c.relkind IN ('r', 'p', 'i', 'I')
          AND n.nspname = ANY (%(schemas)s)))
    OR (d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND EXISTS (
        SELECT 1
        FROM pg_catalog.pg_attrdef AS ad
        JOIN pg_catalog.pg_attribute AS a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
        JOIN pg_catalog.pg_class AS c ON c.oid = ad.adrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE ad.oid = d.objid AND a.attgenerated <> '' AND n.nspname = ANY (%(schemas)s)))
  )
ORDER BY 1, 2;
