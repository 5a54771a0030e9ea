-- How many more connections the current role may open to this database now,
-- by the checks the server makes at login: max_connections less the sessions
-- open and the slots reserved for superusers (superuser_reserved_connections)
-- and for pg_use_reserved_connections (reserved_connections, PostgreSQL 16+);
-- the role's and the database's CONNECTION LIMIT (which superusers ignore).
WITH me AS (
    SELECT r.oid AS role, r.rolsuper, r.rolconnlimit, d.oid AS db, d.datconnlimit,
           EXISTS (
               SELECT 1 FROM pg_catalog.pg_roles AS u
               WHERE u.rolname = 'pg_use_reserved_connections'
                 AND pg_catalog.pg_has_role(u.oid, 'MEMBER')) AS may_use_reserved
    FROM pg_catalog.pg_roles AS r, pg_catalog.pg_database AS d
    WHERE r.rolname = CURRENT_USER AND d.datname = pg_catalog.current_database()
), open AS (
    SELECT pg_catalog.count(*) AS total,
           pg_catalog.count(*) FILTER (WHERE a.usesysid = me.role) AS by_role,
           pg_catalog.count(*) FILTER (WHERE a.datid = me.db) AS in_database
    FROM pg_catalog.pg_stat_activity AS a, me
    -- Other roles' sessions show no backend_type to a role without pg_read_all_stats;
    -- count those that have a user and a database (a background worker among
    -- them only makes the figure smaller, never too large).
    WHERE a.backend_type = 'client backend'
       OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL AND a.datid IS NOT NULL)
)
SELECT LEAST(
           pg_catalog.current_setting('max_connections')::integer - open.total
           - CASE WHEN me.rolsuper THEN 0
                  ELSE pg_catalog.current_setting('superuser_reserved_connections')::integer
                       + CASE WHEN me.may_use_reserved THEN 0
                              ELSE COALESCE(pg_catalog.current_setting('reserved_connections', true),
                                            '0')::integer
                         END
             END,
           CASE WHEN NOT me.rolsuper AND me.rolconnlimit >= 0
                THEN me.rolconnlimit - open.by_role END,
           CASE WHEN NOT me.rolsuper AND me.datconnlimit >= 0
                THEN me.datconnlimit - open.in_database END) AS free,
       pg_catalog.current_setting('max_connections')::integer AS max_connections,
       open.total AS open
FROM me, open;
