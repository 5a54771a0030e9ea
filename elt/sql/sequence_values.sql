-- Current value of every sequence in the copied schemas (NULL until first
-- used). Sequences are not transactional: the snapshot does not freeze them.
SELECT pg_catalog.format('%%I.%%I', s.schemaname, s.sequencename) AS sequence, s.last_value
FROM pg_catalog.pg_sequences AS s
WHERE s.schemaname = ANY (%(schemas)s)
ORDER BY 1;
