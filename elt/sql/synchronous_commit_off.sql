-- A parallel copy worker's build session. Durability is kept by the swap's
-- synchronous commit (elt/sql/swap_session.sql), which flushes the WAL of
-- every commit before it.
SET synchronous_commit = off;
