-- A staging sequence takes the value the source's had in the snapshot
-- (elt/sql/sequence_state.sql).
SELECT pg_catalog.setval(%(sequence)s::regclass, %(value)s, %(is_called)s);
