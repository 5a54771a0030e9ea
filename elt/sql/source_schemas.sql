-- The schemas pg_dump copies: every schema but the system ones and those an
-- extension creates for itself (pg_dump leaves those to CREATE EXTENSION).
-- The destination's copies of exactly these schemas are replaced by the load;
-- every other destination schema is left alone.
SELECT n.nspname AS schema
FROM pg_catalog.pg_namespace AS n
WHERE n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
  AND NOT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_depend AS d
    WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
      AND d.objid = n.oid
      AND d.deptype = 'e'
  )
ORDER BY n.nspname;
