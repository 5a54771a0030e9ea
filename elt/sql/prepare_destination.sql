-- Runs in psql on the destination right before the restore script, in the
-- SAME transaction: if anything later fails, this is rolled back with it and
-- the destination is exactly as it was. psql variables:
--   :schemas    text[] literal of the source schemas that this load replaces;
--   :recreated  text[] literal of the database-wide objects the restore script
--               re-creates (the source's own, see dependents.sql);
--   :lock_key   the key of the job's advisory locks (elt.sql.LOCK_KEY).

BEGIN;

-- The destination's own timeouts must not end the load halfway (the restore
-- script sets these too, but only after this file has run).
SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;

-- The restore script that follows starts with its own BEGIN (pg_restore
-- --single-transaction). Inside this transaction that BEGIN is a no-op that
-- only warns "there is already a transaction in progress"; hide that one
-- warning. The script sets client_min_messages again right after it.
SET client_min_messages = error;

SELECT pg_catalog.set_config('elt.replaced_schemas', :'schemas', true),
       pg_catalog.set_config('elt.recreated', :'recreated', true),
       pg_catalog.set_config('elt.lock_key', :'lock_key', true);

\ir dependents.sql
\ir replace_schemas.sql

-- Views in other schemas that use the copied ones, re-created at the COMMIT
-- that ends the restore script (recreate_views_at_commit.sql).
SELECT pg_catalog.current_setting('elt.saved_views') <> '[]' AS elt_saved_views \gset
\if :elt_saved_views
\ir recreate_views.sql
\ir recreate_views_at_commit.sql
\endif


-- The restore script follows; it must not see this file's variables.
\unset schemas
\unset recreated
\unset lock_key
\unset elt_saved_views
