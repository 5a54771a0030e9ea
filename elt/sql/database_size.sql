-- The source database's size on disk, which with its number of tables
-- (source_table_sizes.sql) decides whether the parallel copy pays off
-- (ELT_PARALLEL_MIN_MB, ELT_PARALLEL_MIN_TABLE_MB). pg_database_size reads the
-- directory and takes no lock, so a locked source table cannot hold up this decision.
SELECT pg_catalog.pg_database_size(pg_catalog.current_database()) AS bytes;
