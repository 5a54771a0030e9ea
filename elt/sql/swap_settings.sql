-- What elt/sql/replace_schemas.sql replaces in the parallel copy's swap: the
-- source schemas, the staging schemas that take their place with the comments
-- they take, and the advisory lock key. Local to the swap's transaction.
SELECT pg_catalog.set_config('elt.replaced_schemas', %(replaced)s::text[]::text, true),
       pg_catalog.set_config('elt.staged_schemas', %(staged)s::text[]::text, true),
       pg_catalog.set_config('elt.staged_comments', %(comments)s::text[]::text, true),
       pg_catalog.set_config('elt.lock_key', %(lock_key)s::text, true);
