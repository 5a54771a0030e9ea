-- Each of %(schemas)s with its comment (NULL if it has none).
SELECT n.nspname, pg_catalog.obj_description(n.oid, 'pg_namespace') AS comment
FROM pg_catalog.pg_namespace AS n
WHERE n.nspname = ANY (%(schemas)s::text[]);
