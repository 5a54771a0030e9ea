-- The settings dependents.sql reads, for the rest of the caller's transaction
-- (text[] literals).
SELECT pg_catalog.set_config('elt.replaced_schemas', %(schemas)s::text[]::text, true),
       pg_catalog.set_config('elt.recreated', %(recreated)s::text[]::text, true);
