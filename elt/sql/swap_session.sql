-- The swap's transaction: its commit is synchronous, which flushes the WAL of
-- the parallel copy's earlier commits (made with synchronous_commit = off), so
-- success is never reported before the data is durable; notices stay quiet.
SET LOCAL synchronous_commit = on;
SET LOCAL client_min_messages = error;
