-- What the parallel copy must carry over besides tables, read in the source
-- snapshot: sequences (set like pg_dump's SEQUENCE SET) and which
-- materialized views are populated (pg_dump refreshes exactly those).
-- kind 'S': sequence; 'm': populated materialized view; 'L': large objects
-- exist (the parallel copy leaves those to the streamed path); 'E': an
-- extension created after initdb exists (pg_dump dumps it, and the parallel
-- copy leaves the source to the streamed path: the plan then creates no
-- scratch database ahead of its checks).
SELECT c.relkind::text, n.nspname, c.relname
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s)
  AND (c.relkind = 'S' OR (c.relkind = 'm' AND c.relispopulated))
  -- like pg_dump: no value of an unlogged sequence on a hot standby, which
  -- cannot read it; the staging schema still gets the sequence
  AND NOT (c.relpersistence = 'u' AND pg_catalog.pg_is_in_recovery())
UNION ALL
SELECT 'L', NULL, NULL
WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata)
UNION ALL
SELECT 'E', NULL, NULL
WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE oid >= 16384);
