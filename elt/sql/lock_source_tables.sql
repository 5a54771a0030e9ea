-- Locks the copied source tables against TRUNCATE and rewrites until the
-- snapshot's transaction ends (extract.SourceSnapshot.lock_tables says why).
-- The caller fills in the tables, quoted, schema-qualified, comma-separated.
LOCK TABLE {tables} IN ACCESS SHARE MODE;
