-- The source database's size on disk and its number of tables (partitions
-- included), which decide whether the parallel copy pays off
-- (ELT_PARALLEL_MIN_MB, ELT_PARALLEL_MIN_TABLE_MB). pg_database_size reads the
-- directory and pg_class takes no lock, so a locked source table cannot hold up
-- this decision.
SELECT pg_catalog.pg_database_size(pg_catalog.current_database()) AS bytes,
       (SELECT pg_catalog.count(*)
        FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname = ANY (%(schemas)s)) AS tables;
