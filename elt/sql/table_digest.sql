-- Row count and an order-independent digest of one table: two sums of 64-bit
-- hashes (two seeds) of each row's text form. Sums commute, so the digest does
-- not depend on row order, and memory stays constant however big the table is.
-- {table} is filled in by validate.py with a properly quoted identifier.
SELECT pg_catalog.count(*),
       pg_catalog.concat_ws(
           ':',
           pg_catalog.sum(pg_catalog.hashtextextended(elt_row.row_text, 0)),
           pg_catalog.sum(pg_catalog.hashtextextended(elt_row.row_text, 1)))
FROM (SELECT (t.*)::text AS row_text FROM {table} AS t) AS elt_row;
