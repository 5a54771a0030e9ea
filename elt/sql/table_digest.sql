-- Row count and an order-independent digest of one table: the sum of a 64-bit
-- hash of each row's text form. A sum does not depend on row order, and memory
-- stays constant however big the table is. A lost, added or changed row moves
-- the sum unless its hash is 0 or collides (odds about 2^-64 per row).
-- The text form is computed once per row (the expensive part); do not wrap the
-- subquery in OFFSET 0: measured on PostgreSQL 15, that doubled the cost.
-- {table} is filled in by validate.py with a properly quoted identifier.
SELECT pg_catalog.count(*),
       pg_catalog.sum(pg_catalog.hashtextextended(elt_row.row_text, 0))::text
FROM (SELECT (t.*)::text AS row_text FROM {table} AS t) AS elt_row;
