-- A parallel copy worker's build session: the encoding of the SQL it runs
-- (the staging archive's, which is the destination database's).
SELECT pg_catalog.set_config('client_encoding', %(encoding)s, false);
