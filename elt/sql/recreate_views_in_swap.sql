-- The parallel copy's swap, after replace_schemas.sql and recreate_views.sql
-- in the same transaction: the new copy is in place, re-create the views now.
SELECT pg_temp.elt_recreate_views();
