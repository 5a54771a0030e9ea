-- Whether the destination has enabled event triggers: the swap's DDL ran their
-- code, which may have changed rows after they were measured.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtenabled <> 'D') AS enabled;
