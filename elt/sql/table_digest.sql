-- Row count and an order-independent digest of one table: the sum of a 64-bit
-- hash of each row. A sum does not depend on row order, and memory stays
-- constant however big the table is. A lost, added or changed row moves the
-- sum unless its hash is 0 or collides (odds about 2^-64 per row).
-- digests.py fills in the three placeholders below (and only there: never put
-- one in a comment): the part's position in its statement, the relation (a
-- quoted table name or a parenthesized query), and the row hash
-- (digests.row_hash): a hash over the row's columns, each hashed directly or
-- through its text form. Several small tables are measured in one statement,
-- these parts joined by UNION ALL, so there is no semicolon here.
-- Do not move the hash into a subquery with OFFSET 0: that is much slower
-- (docs/performance.md).
SELECT {position} AS position,
       pg_catalog.count(*) AS row_count,
       pg_catalog.sum({row_hash})::text AS digest
FROM {table} AS t
