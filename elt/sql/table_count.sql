-- Row count of one table, at validation level counts: table_digest.sql
-- without the digest. The caller fills in the position and the relation, as
-- in table_digest.sql (no semicolon: parts are joined by UNION ALL).
SELECT {position} AS position, pg_catalog.count(*) AS row_count, NULL::text AS digest
FROM {table} AS t
