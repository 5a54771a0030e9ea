-- Replaces the destination's copies of the source's schemas, inside the
-- caller's transaction. Shared by both load paths (see README "How the load
-- stays atomic"):
--   * the streamed load (prepare_destination.sql, psql): drops them, and the
--     restore script that follows re-creates them;
--   * the parallel load (parallel_copy.py): drops them and renames the staging
--     schemas, already loaded and indexed, into their place.
-- Session settings read:
--   elt.replaced_schemas  text[]: the source schemas this load replaces;
--   elt.staged_schemas    text[] of the same length, each replaced schema's
--                         staging schema (unset for the streamed load).

DO $prepare$
DECLARE
    replaced text[] := pg_catalog.current_setting('elt.replaced_schemas')::text[];
    staged text[] := COALESCE(
        NULLIF(pg_catalog.current_setting('elt.staged_schemas', true), ''), '{}')::text[];
    position integer := 0;
    -- Staging schemas a killed parallel run left behind. The parallel copy
    -- removes them itself before it stages; the streamed load removes them here.
    leftovers text[] := CASE WHEN pg_catalog.cardinality(staged) = 0 THEN ARRAY(
        SELECT n.nspname::text FROM pg_catalog.pg_namespace AS n
        WHERE n.nspname LIKE 'elt\_staging\_%') ELSE '{}' END;
    blockers text;
    schema_name text;
    public_owner text;
    public_acl aclitem[];
    public_comment text;
    grant_row record;
    survivors text[];
    lost text;
BEGIN
    -- One load at a time per destination database (the key spells "ELT").
    -- A second run fails here, before it has changed anything.
    IF NOT pg_catalog.pg_try_advisory_xact_lock(4541524) THEN
        RAISE EXCEPTION 'ELT: another ELT run is loading this destination database right now'
            USING HINT = 'Wait for it to finish, then run again.';
    END IF;

    -- Each replaced schema is dropped with CASCADE. Objects elsewhere that depend
    -- on it (a reporting view over a copied table, say) would vanish silently;
    -- refuse instead and name them.
    -- Defaults, triggers, rules (views) and policies have no schema of their
    -- own: they belong to their table's. Database-wide objects (casts, event
    -- triggers, publication members) are not checked: the dump re-creates the
    -- source's own, and README.md says where the rest stands.
    WITH dependents AS (
        SELECT dep.type, dep.identity,
               COALESCE(dep.schema, (
                   SELECT n.nspname
                   FROM pg_catalog.pg_class AS c
                   JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                   WHERE c.oid = CASE d.classid
                       WHEN 'pg_catalog.pg_attrdef'::regclass
                           THEN (SELECT a.adrelid FROM pg_catalog.pg_attrdef AS a WHERE a.oid = d.objid)
                       WHEN 'pg_catalog.pg_trigger'::regclass
                           THEN (SELECT t.tgrelid FROM pg_catalog.pg_trigger AS t WHERE t.oid = d.objid)
                       WHEN 'pg_catalog.pg_rewrite'::regclass
                           THEN (SELECT r.ev_class FROM pg_catalog.pg_rewrite AS r WHERE r.oid = d.objid)
                       WHEN 'pg_catalog.pg_policy'::regclass
                           THEN (SELECT p.polrelid FROM pg_catalog.pg_policy AS p WHERE p.oid = d.objid)
                   END)) AS owner_schema
        FROM pg_catalog.pg_depend AS d
        CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) AS dep
        CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid) AS ref
        WHERE d.deptype IN ('n', 'a')
          AND ref.schema = ANY (replaced)
    )
    SELECT pg_catalog.string_agg(DISTINCT dependents.type || ' ' || dependents.identity, ', ')
    INTO blockers
    FROM dependents
    WHERE NOT owner_schema = ANY (replaced)
      AND NOT owner_schema = ANY (leftovers);
    IF blockers IS NOT NULL THEN
        RAISE EXCEPTION 'ELT: destination objects outside the copied schemas depend on objects this load replaces: %', blockers
            USING HINT = 'Drop them before the run and re-create them after it, or keep them in a schema of their own that does not reference the copied schemas.';
    END IF;

    -- Safety net for what the check above cannot see (a chain through a
    -- database-wide object, such as an extension whose foreign tables live in
    -- another schema): every relation, function and type outside the replaced
    -- schemas must still exist after the drops.
    survivors := ARRAY(
        SELECT pg_catalog.pg_describe_object(o.classid, o.objid, 0)
        FROM (
            SELECT 'pg_catalog.pg_class'::regclass AS classid, c.oid AS objid, c.relnamespace AS nsp
            FROM pg_catalog.pg_class AS c
            UNION ALL
            SELECT 'pg_catalog.pg_proc'::regclass, p.oid, p.pronamespace FROM pg_catalog.pg_proc AS p
            UNION ALL
            SELECT 'pg_catalog.pg_type'::regclass, t.oid, t.typnamespace FROM pg_catalog.pg_type AS t
        ) AS o
        JOIN pg_catalog.pg_namespace AS n ON n.oid = o.nsp
        WHERE n.nspname !~ '^pg_'
          AND n.nspname <> 'information_schema'
          AND NOT n.nspname = ANY (replaced)
          -- renamed below, so their names change; they are this run's own
          AND NOT n.nspname = ANY (staged)
          AND NOT n.nspname = ANY (leftovers));

    FOREACH schema_name IN ARRAY leftovers LOOP
        EXECUTE pg_catalog.format('DROP SCHEMA %I CASCADE', schema_name);
    END LOOP;

    FOREACH schema_name IN ARRAY replaced LOOP
        position := position + 1;
        IF schema_name = 'public' THEN
            -- pg_dump never emits CREATE SCHEMA public (initdb creates it). The
            -- new public gets the owner, privileges and comment the old one had.
            SELECT n.nspowner::regrole::text, n.nspacl, pg_catalog.obj_description(n.oid, 'pg_namespace')
            INTO public_owner, public_acl, public_comment
            FROM pg_catalog.pg_namespace AS n
            WHERE n.nspname = 'public';
            DROP SCHEMA IF EXISTS public CASCADE;
            IF pg_catalog.cardinality(staged) > 0 THEN
                EXECUTE pg_catalog.format('ALTER SCHEMA %I RENAME TO public', staged[position]);
                IF public_owner IS NOT NULL THEN
                    EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %s', public_owner);
                END IF;
            ELSIF public_owner IS NULL THEN
                CREATE SCHEMA public;
            ELSE
                EXECUTE pg_catalog.format('CREATE SCHEMA public AUTHORIZATION %s', public_owner);
            END IF;
            IF public_owner IS NOT NULL THEN
                FOR grant_row IN
                    SELECT a.privilege_type, a.grantee, a.is_grantable
                    FROM pg_catalog.aclexplode(public_acl) AS a
                LOOP
                    EXECUTE pg_catalog.format(
                        'GRANT %s ON SCHEMA public TO %s%s',
                        grant_row.privilege_type,
                        CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                             ELSE grant_row.grantee::regrole::text END,
                        CASE WHEN grant_row.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
                END LOOP;
                IF public_comment IS NOT NULL THEN
                    EXECUTE pg_catalog.format('COMMENT ON SCHEMA public IS %L', public_comment);
                END IF;
            END IF;
        ELSE
            EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', schema_name);
            IF pg_catalog.cardinality(staged) > 0 THEN
                EXECUTE pg_catalog.format('ALTER SCHEMA %I RENAME TO %I', staged[position], schema_name);
            END IF;
        END IF;
    END LOOP;

    SELECT pg_catalog.string_agg(gone, ', ')
    INTO lost
    FROM (
        SELECT gone FROM pg_catalog.unnest(survivors) AS gone
        EXCEPT
        SELECT pg_catalog.pg_describe_object(o.classid, o.objid, 0)
        FROM (
            SELECT 'pg_catalog.pg_class'::regclass AS classid, c.oid AS objid FROM pg_catalog.pg_class AS c
            UNION ALL
            SELECT 'pg_catalog.pg_proc'::regclass, p.oid FROM pg_catalog.pg_proc AS p
            UNION ALL
            SELECT 'pg_catalog.pg_type'::regclass, t.oid FROM pg_catalog.pg_type AS t
        ) AS o
    ) AS vanished;
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'ELT: replacing the copied schemas would also drop objects in other schemas: %', lost
            USING HINT = 'They depend on the copied schemas through a database-wide object (an extension, say). Drop them before the run and re-create them after it, or install that object in a schema of its own.';
    END IF;
END
$prepare$;
