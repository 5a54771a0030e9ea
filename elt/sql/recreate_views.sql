-- pg_temp.elt_recreate_views(): re-creates the views and materialized views
-- outside the copied schemas that use them (dependents.sql chose them,
-- replace_schemas.sql saved them in elt.saved_views before the drops), against
-- the new copy, in the load's own transaction and in dependency order: the
-- definition, options (a materialized view's toast.* too), access method,
-- tablespace, WITH [NO] DATA, owner, grants (columns' too), comments, and a
-- materialized view's indexes (with their tablespaces). A definition that no
-- longer applies (a column it uses is gone, say) fails the load, naming the
-- view and the reason; the whole transaction then rolls back.
-- A temporary function, because the one-stream load runs it from a deferred
-- trigger at its COMMIT (prepare_destination.sql); the parallel copy calls it
-- in its swap. Both create it only when there is a view
-- to re-create.
CREATE FUNCTION pg_temp.elt_recreate_views() RETURNS void
LANGUAGE plpgsql
AS $recreate$
DECLARE
    saved jsonb := COALESCE(
        NULLIF(pg_catalog.current_setting('elt.saved_views', true), ''), '[]')::jsonb;
    v jsonb;
    item jsonb;
    target text;
    kind text;
    options text;
    body text;
    grant_row record;
BEGIN
    FOR v IN SELECT s.value FROM pg_catalog.jsonb_array_elements(saved) AS s LOOP
        target := pg_catalog.format('%I.%I', v->>'schema', v->>'name');
        kind := CASE v->>'kind' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END;
        options := COALESCE(' WITH (' || (
            SELECT pg_catalog.string_agg(o.value, ', ')
            FROM pg_catalog.jsonb_array_elements_text(
                CASE WHEN pg_catalog.jsonb_typeof(v->'options') = 'array'
                     THEN v->'options' ELSE '[]' END) AS o) || ')', '');
        body := pg_catalog.regexp_replace(v->>'definition', ';\s*$', '');
        BEGIN
            IF v->>'kind' = 'm' THEN
                EXECUTE pg_catalog.format(
                    'CREATE MATERIALIZED VIEW %s USING %I%s%s AS %s WITH %s',
                    target, v->>'method', options,
                    COALESCE(' TABLESPACE ' || pg_catalog.quote_ident(v->>'tablespace'), ''),
                    body,
                    CASE WHEN (v->>'populated')::boolean THEN 'DATA' ELSE 'NO DATA' END);
            ELSE
                EXECUTE pg_catalog.format('CREATE VIEW %s%s AS %s', target, options, body);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'ELT: % % no longer applies to the new copy: %',
                pg_catalog.lower(kind), target, SQLERRM
                USING HINT = 'Change or drop it so that it fits the source''s tables, then run again.';
        END;
        -- replace.check_dependents checked the privileges before the copy;
        -- should one be gone since, the failure still names the view.
        BEGIN
            EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %s', kind, target, v->>'owner');
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'ELT: giving the re-created % % back to its owner % failed: %',
                pg_catalog.lower(kind), target, v->>'owner', SQLERRM
                USING HINT = pg_catalog.format(
                    'Grant DESTINATION_POSTGRES_USER that role (GRANT %s TO %I), or drop the view before the run and re-create it after it.',
                    v->>'owner', CURRENT_USER);
        END;
        IF v->>'acl' IS NOT NULL THEN
            -- exactly the saved privileges: none of the new object's defaults
            FOR grant_row IN
                SELECT DISTINCT a.grantee
                FROM pg_catalog.pg_class AS c
                CROSS JOIN LATERAL pg_catalog.aclexplode(
                    COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner))) AS a
                WHERE c.oid = target::pg_catalog.regclass
            LOOP
                EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM %s CASCADE', target,
                    CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                         ELSE grant_row.grantee::pg_catalog.regrole::text END);
            END LOOP;
            FOR grant_row IN
                SELECT a.privilege_type, a.grantee, a.is_grantable
                FROM pg_catalog.aclexplode((v->>'acl')::aclitem[]) AS a
            LOOP
                EXECUTE pg_catalog.format('GRANT %s ON TABLE %s TO %s%s',
                    grant_row.privilege_type, target,
                    CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                         ELSE grant_row.grantee::pg_catalog.regrole::text END,
                    CASE WHEN grant_row.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END IF;
        IF v->>'comment' IS NOT NULL THEN
            EXECUTE pg_catalog.format('COMMENT ON %s %s IS %L', kind, target, v->>'comment');
        END IF;
        FOR item IN SELECT c.value FROM pg_catalog.jsonb_array_elements(
                COALESCE(NULLIF(v->'columns', 'null'), '[]')) AS c LOOP
            IF item->>'comment' IS NOT NULL THEN
                EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L',
                    target, item->>'name', item->>'comment');
            END IF;
            FOR grant_row IN
                SELECT a.privilege_type, a.grantee, a.is_grantable
                FROM pg_catalog.aclexplode((item->>'acl')::aclitem[]) AS a
            LOOP
                EXECUTE pg_catalog.format('GRANT %s (%I) ON TABLE %s TO %s%s',
                    grant_row.privilege_type, item->>'name', target,
                    CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                         ELSE grant_row.grantee::pg_catalog.regrole::text END,
                    CASE WHEN grant_row.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END LOOP;
        FOR item IN SELECT i.value FROM pg_catalog.jsonb_array_elements(
                COALESCE(NULLIF(v->'indexes', 'null'), '[]')) AS i LOOP
            EXECUTE item->>'definition';
            IF item->>'tablespace' IS NOT NULL THEN
                EXECUTE pg_catalog.format('ALTER INDEX %I.%I SET TABLESPACE %I',
                    v->>'schema', item->>'name', item->>'tablespace');
            END IF;
            IF item->>'comment' IS NOT NULL THEN
                EXECUTE pg_catalog.format('COMMENT ON INDEX %I.%I IS %L',
                    v->>'schema', item->>'name', item->>'comment');
            END IF;
            IF (item->>'clustered')::boolean THEN
                EXECUTE pg_catalog.format('ALTER MATERIALIZED VIEW %s CLUSTER ON %I',
                    target, item->>'name');
            END IF;
        END LOOP;
    END LOOP;
END
$recreate$;
