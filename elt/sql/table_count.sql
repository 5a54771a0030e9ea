-- Row count of one table, at validation level counts: table_digest.sql
-- without the digest. The caller fills in the relation, as in table_digest.sql.
SELECT pg_catalog.count(*) AS row_count, NULL AS digest
FROM {table} AS t;
