-- The size of the server's shared lock table, shared by all its sessions:
-- max_locks_per_transaction locks for each server process and prepared
-- transaction it is sized for. The processes are max_connections, the
-- autovacuum workers (autovacuum_worker_slots from PostgreSQL 18 on) and
-- their launcher, the background workers and the WAL senders.
SELECT pg_catalog.current_setting('max_locks_per_transaction')::integer AS per_transaction,
       pg_catalog.current_setting('max_connections')::integer
       + pg_catalog.current_setting('max_prepared_transactions')::integer
       + COALESCE(pg_catalog.current_setting('autovacuum_worker_slots', true),
                  pg_catalog.current_setting('autovacuum_max_workers'))::integer
       + 1
       + pg_catalog.current_setting('max_worker_processes')::integer
       + pg_catalog.current_setting('max_wal_senders')::integer AS slots;
