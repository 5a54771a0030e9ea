-- Whether replace_schemas.sql saved views to re-create (the parallel copy's swap;
-- prepare_destination.sql asks the same with psql's \gset).
SELECT pg_catalog.current_setting('elt.saved_views') <> '[]' AS saved;
