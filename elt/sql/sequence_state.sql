-- One sequence's state in the source snapshot (its qualified name is
-- formatted in by the caller), set on its staging copy like pg_dump's
-- SEQUENCE SET.
SELECT last_value, is_called FROM {sequence};
