-- A parallel copy worker's build session, or the plan's session in the scratch
-- database. Durability is kept by the swap's synchronous commit
-- (elt/sql/swap_session.sql), which flushes the WAL of every commit before it;
-- nothing in the scratch database is kept.
SET synchronous_commit = off;
