-- The staging schemas the parallel copy created: it marks each one with a
-- comment (replace.STAGING_MARKER) in the transaction that creates it, and
-- the swap gives it the source schema's comment. Only these may be removed:
-- a user's own schema named elt_staging_... carries no such comment.
-- %(names)s: NULL for all of them, or the names to consider.
SELECT n.nspname AS schema
FROM pg_catalog.pg_namespace AS n
WHERE pg_catalog.starts_with(n.nspname, %(prefix)s)
  AND pg_catalog.obj_description(n.oid, 'pg_namespace') = %(marker)s
  AND (%(names)s::text[] IS NULL OR n.nspname = ANY (%(names)s::text[]))
ORDER BY n.nspname;
