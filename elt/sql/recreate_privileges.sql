-- What DESTINATION_POSTGRES_USER lacks to re-create the views that
-- dependents.sql, run just before in this transaction, chose (elt.views):
-- recreate_views.sql creates temporary objects; CREATE [MATERIALIZED] VIEW
-- needs CREATE on the view's schema, and what follows it USAGE there;
-- ALTER ... OWNER TO (then the grants, made as the owner) needs the owner's
-- privileges and, from PostgreSQL 16, SET on it, and the owner needs CREATE on
-- the schema; a tablespace of a materialized view or of its indexes needs
-- CREATE on it. A superuser needs none of these.
-- One row per missing privilege: what is missing, the GRANT that gives it,
-- and the views that need it.
WITH views AS (
    SELECT c.oid, c.oid::pg_catalog.regclass::text AS view, c.relnamespace, n.nspname,
           c.relowner
    FROM pg_catalog.unnest(COALESCE(
        NULLIF(pg_catalog.current_setting('elt.views', true), ''), '{}')::oid[]) AS u(oid)
    JOIN pg_catalog.pg_class AS c ON c.oid = u.oid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
),
me AS (
    SELECT r.oid, r.rolname, r.rolsuper FROM pg_catalog.pg_roles AS r
    WHERE r.rolname = CURRENT_USER
),
missing AS (
    SELECT pg_catalog.format('TEMPORARY on database %I', pg_catalog.current_database())
               AS privilege,
           pg_catalog.format('GRANT TEMPORARY ON DATABASE %I TO %I',
                             pg_catalog.current_database(), me.rolname) AS grant_sql,
           v.view
    FROM views AS v CROSS JOIN me
    WHERE NOT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'TEMPORARY')
    UNION ALL
    SELECT pg_catalog.format('USAGE and CREATE on schema %I', v.nspname),
           pg_catalog.format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', v.nspname, me.rolname),
           v.view
    FROM views AS v CROSS JOIN me
    WHERE NOT (pg_catalog.has_schema_privilege(v.relnamespace, 'CREATE')
               AND pg_catalog.has_schema_privilege(v.relnamespace, 'USAGE'))
    UNION ALL
    SELECT pg_catalog.format('membership in role %I, the owner', o.rolname),
           pg_catalog.format('GRANT %I TO %I', o.rolname, me.rolname),
           v.view
    FROM views AS v CROSS JOIN me
    JOIN pg_catalog.pg_roles AS o ON o.oid = v.relowner
    WHERE NOT me.rolsuper
      AND NOT (pg_catalog.pg_has_role(v.relowner, 'USAGE')
               AND CASE WHEN pg_catalog.current_setting('server_version_num')::integer >= 160000
                        THEN pg_catalog.pg_has_role(v.relowner, 'SET') ELSE true END)
    UNION ALL
    SELECT pg_catalog.format('CREATE on schema %I for the owner %I', v.nspname, o.rolname),
           pg_catalog.format('GRANT CREATE ON SCHEMA %I TO %I', v.nspname, o.rolname),
           v.view
    FROM views AS v CROSS JOIN me
    JOIN pg_catalog.pg_roles AS o ON o.oid = v.relowner
    WHERE NOT me.rolsuper AND v.relowner <> me.oid
      AND NOT pg_catalog.has_schema_privilege(v.relowner, v.relnamespace, 'CREATE')
    UNION ALL
    -- a materialized view, and its indexes, in a tablespace of their own
    SELECT DISTINCT pg_catalog.format('CREATE on tablespace %I', ts.spcname),
           pg_catalog.format('GRANT CREATE ON TABLESPACE %I TO %I', ts.spcname, me.rolname),
           v.view
    FROM views AS v CROSS JOIN me
    JOIN pg_catalog.pg_class AS r
      ON r.oid = v.oid OR r.oid IN (SELECT i.indexrelid FROM pg_catalog.pg_index AS i
                                    WHERE i.indrelid = v.oid)
    JOIN pg_catalog.pg_tablespace AS ts ON ts.oid = r.reltablespace
    WHERE NOT pg_catalog.has_tablespace_privilege(ts.oid, 'CREATE')
)
SELECT privilege, grant_sql, pg_catalog.array_agg(view ORDER BY view) AS views
FROM missing
GROUP BY privilege, grant_sql
ORDER BY privilege;
