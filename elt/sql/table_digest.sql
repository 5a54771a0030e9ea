-- Row count and an order-independent digest of one table: the sum of a 64-bit
-- hash of each row's text form. A sum does not depend on row order, and memory
-- stays constant however big the table is. A lost, added or changed row moves
-- the sum unless its hash is 0 or collides (odds about 2^-64 per row).
-- OFFSET 0 keeps the subquery from being flattened, so each row's text form
-- (the expensive part) is computed once.
-- {table} is filled in by validate.py with a properly quoted identifier.
SELECT pg_catalog.count(*),
       pg_catalog.sum(pg_catalog.hashtextextended(elt_row.row_text, 0))::text
FROM (SELECT (t.*)::text AS row_text FROM {table} AS t OFFSET 0) AS elt_row;
