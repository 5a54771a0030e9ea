-- Replaces the destination's copies of the source's schemas, inside the
-- caller's transaction, right after dependents.sql. Shared by both load paths
-- (see docs/destination.md):
--   * the streamed load (prepare_destination.sql, psql): drops them, and the
--     restore script that follows re-creates them;
--   * the parallel load (its swap): drops them and renames the staging
--     schemas, already loaded and indexed, into their place.
-- Session settings read:
--   elt.replaced_schemas  text[]: the source schemas this load replaces;
--   elt.blockers          set by dependents.sql: 'none', or what would be lost;
--   elt.views             set by dependents.sql: oid[] of the views outside the
--                         copied schemas that use them, in creation order;
--   elt.recreated         text[], optional: database-wide objects the load
--                         re-creates itself (dependents.sql);
--   elt.staged_schemas    text[] of the same length, each replaced schema's
--                         staging schema (unset for the streamed load);
--   elt.staged_comments   text[] of the same length, the comment each staging
--                         schema takes once renamed (it carries the job's
--                         marker until then); for public, NULL keeps the
--                         destination's comment (pg_dump wrote none).
-- It sets elt.saved_views (transaction-local): those views' definitions, for
-- recreate_views.sql to re-create once the new copy is in place.

DO $prepare$
DECLARE
    replaced text[] := pg_catalog.current_setting('elt.replaced_schemas')::text[];
    staged text[] := COALESCE(
        NULLIF(pg_catalog.current_setting('elt.staged_schemas', true), ''), '{}')::text[];
    comments text[] := COALESCE(
        NULLIF(pg_catalog.current_setting('elt.staged_comments', true), ''), '{}')::text[];
    recreated text[] := COALESCE(
        NULLIF(pg_catalog.current_setting('elt.recreated', true), ''), '{}')::text[];
    blockers text := pg_catalog.current_setting('elt.blockers', true);
    views oid[] := COALESCE(
        NULLIF(pg_catalog.current_setting('elt.views', true), ''), '{}')::oid[];
    search_path_was text := pg_catalog.current_setting('search_path');
    saved jsonb;
    position integer := 0;
    schema_name text;
    public_owner text;
    public_acl aclitem[];
    public_comment text;
    grant_row record;
    survivors text[];
    lost text;
    -- What the safety net below watches (built-in objects aside), and the
    -- schema each belongs to, if any, quoted as pg_identify_object quotes it.
    watched constant text := $watched$
        SELECT o.type || ' ' || o.identity AS object, o.schema, c.classid, c.objid
        FROM (
            SELECT 'pg_catalog.pg_class'::pg_catalog.regclass AS classid, oid AS objid
            FROM pg_catalog.pg_class
            UNION ALL SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, oid FROM pg_catalog.pg_proc
            UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, oid FROM pg_catalog.pg_type
            UNION ALL SELECT 'pg_catalog.pg_event_trigger'::pg_catalog.regclass, oid
            FROM pg_catalog.pg_event_trigger
            UNION ALL SELECT 'pg_catalog.pg_cast'::pg_catalog.regclass, oid FROM pg_catalog.pg_cast
            UNION ALL SELECT 'pg_catalog.pg_transform'::pg_catalog.regclass, oid
            FROM pg_catalog.pg_transform
            UNION ALL SELECT 'pg_catalog.pg_extension'::pg_catalog.regclass, oid
            FROM pg_catalog.pg_extension
            UNION ALL SELECT 'pg_catalog.pg_foreign_data_wrapper'::pg_catalog.regclass, oid
            FROM pg_catalog.pg_foreign_data_wrapper
            UNION ALL SELECT 'pg_catalog.pg_foreign_server'::pg_catalog.regclass, oid
            FROM pg_catalog.pg_foreign_server
            UNION ALL SELECT 'pg_catalog.pg_publication_rel'::pg_catalog.regclass, oid
            FROM pg_catalog.pg_publication_rel
        ) AS c
        CROSS JOIN LATERAL pg_catalog.pg_identify_object(c.classid, c.objid, 0) AS o
        WHERE c.objid >= 16384  -- FirstNormalObjectId
          -- an extension's own objects go with it: the extension is watched
          AND NOT EXISTS (
              SELECT 1 FROM pg_catalog.pg_depend AS e
              WHERE e.classid = c.classid AND e.objid = c.objid AND e.deptype = 'e')
    $watched$;
BEGIN
    -- One load at a time per destination database (elt.lock_key: the caller
    -- sets it from LOCK_KEY). A second run fails here, before it has changed anything.
    IF NOT pg_catalog.pg_try_advisory_xact_lock(
            pg_catalog.current_setting('elt.lock_key')::bigint) THEN
        RAISE EXCEPTION 'ELT: another ELT run is loading this destination database right now'
            USING HINT = 'Wait for it to finish, then run again.';
    END IF;

    -- Each replaced schema is dropped with CASCADE. Objects elsewhere that
    -- depend on it (a reporting view over a copied table, an event trigger
    -- calling a copied function, say) would vanish silently: dependents.sql,
    -- run just before in this transaction, names them; refuse.
    IF blockers IS NULL OR blockers = '' THEN
        RAISE EXCEPTION 'ELT: internal error: dependents.sql did not run before replace_schemas.sql';
    END IF;
    IF blockers <> 'none' THEN
        RAISE EXCEPTION 'ELT: destination objects outside the copied schemas depend on objects this load replaces: %', blockers
            USING HINT = 'Drop them before the run and re-create them after it, or keep them in a schema of their own that does not reference the copied schemas.';
    END IF;

    -- The views outside the copied schemas that use them go with the drops,
    -- and are re-created against the new copy in this transaction
    -- (recreate_views.sql). Their definitions, fully qualified:
    PERFORM pg_catalog.set_config('search_path', '', true);
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'kind', c.relkind,
               'schema', n.nspname,
               'name', c.relname,
               'definition', pg_catalog.pg_get_viewdef(c.oid),
               -- a materialized view's TOAST table's storage parameters are its
               -- own, spelled toast.* in CREATE MATERIALIZED VIEW ... WITH
               'options', c.reloptions || ARRAY(
                   SELECT 'toast.' || o
                   FROM pg_catalog.pg_class AS t
                   CROSS JOIN LATERAL pg_catalog.unnest(t.reloptions) AS o
                   WHERE t.oid = c.reltoastrelid),
               'tablespace', (SELECT ts.spcname FROM pg_catalog.pg_tablespace AS ts
                              WHERE ts.oid = c.reltablespace),
               'method', am.amname,
               'populated', c.relispopulated,
               'owner', c.relowner::pg_catalog.regrole::text,
               'acl', c.relacl::text,
               'comment', pg_catalog.obj_description(c.oid, 'pg_class'),
               'columns', (
                   SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'name', a.attname,
                       'comment', pg_catalog.col_description(c.oid, a.attnum),
                       'acl', a.attacl::text))
                   FROM pg_catalog.pg_attribute AS a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
               'indexes', (
                   SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'name', ic.relname,
                       'definition', pg_catalog.pg_get_indexdef(i.indexrelid),
                       'comment', pg_catalog.obj_description(i.indexrelid, 'pg_class'),
                       'tablespace', (SELECT ts.spcname FROM pg_catalog.pg_tablespace AS ts
                                      WHERE ts.oid = ic.reltablespace),
                       'clustered', i.indisclustered))
                   FROM pg_catalog.pg_index AS i
                   JOIN pg_catalog.pg_class AS ic ON ic.oid = i.indexrelid
                   WHERE i.indrelid = c.oid))
               ORDER BY u.ord), '[]')
    INTO saved
    FROM pg_catalog.unnest(views) WITH ORDINALITY AS u(oid, ord)
    JOIN pg_catalog.pg_class AS c ON c.oid = u.oid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_am AS am ON am.oid = c.relam;
    PERFORM pg_catalog.set_config('search_path', search_path_was, true);
    PERFORM pg_catalog.set_config('elt.saved_views', saved::text, true);

    -- Safety net for what the check above cannot see (a chain through a
    -- database-wide object, such as an extension whose foreign tables live in
    -- another schema): every relation, function and type outside the replaced
    -- schemas, and every database-wide object that the load does not
    -- re-create itself, must still exist after the drops. The staging
    -- schemas are renamed below, so their names change; they are this run's own.
    -- So are the views saved above, their row types and their indexes.
    EXECUTE 'SELECT ARRAY(SELECT w.object FROM (' || watched || ') AS w '
            'WHERE CASE WHEN w.schema IS NULL THEN NOT w.object = ANY ($1) '
            'ELSE w.schema !~ ''^(pg_|information_schema$)'' AND NOT w.schema = ANY ($2) END '
            'AND NOT w.objid = ANY ($3))'
        INTO survivors
        USING recreated,
              ARRAY(SELECT pg_catalog.quote_ident(s) FROM pg_catalog.unnest(replaced || staged) AS s),
              views
              || ARRAY(SELECT i.indexrelid FROM pg_catalog.pg_index AS i WHERE i.indrelid = ANY (views))
              || ARRAY(SELECT t.oid FROM pg_catalog.pg_type AS t
                       JOIN pg_catalog.pg_class AS c ON t.oid = c.reltype OR t.typelem = c.reltype
                       WHERE c.oid = ANY (views) AND c.reltype <> 0);

    FOREACH schema_name IN ARRAY replaced LOOP
        position := position + 1;
        IF schema_name = 'public' THEN
            -- pg_dump never emits CREATE SCHEMA public (initdb creates it). The
            -- new public gets the owner and privileges the old one had, and the
            -- comment pg_dump writes for the source's (its own, or none); when
            -- it writes none (initdb's stock comment), the old one's.
            SELECT n.nspowner::regrole::text, n.nspacl, pg_catalog.obj_description(n.oid, 'pg_namespace')
            INTO public_owner, public_acl, public_comment
            FROM pg_catalog.pg_namespace AS n
            WHERE n.nspname = 'public';
            DROP SCHEMA IF EXISTS public CASCADE;
            IF pg_catalog.cardinality(staged) > 0 THEN
                EXECUTE pg_catalog.format('ALTER SCHEMA %I RENAME TO public', staged[position]);
                EXECUTE pg_catalog.format('COMMENT ON SCHEMA public IS %L',
                    COALESCE(comments[position], public_comment));
                IF public_owner IS NOT NULL THEN
                    EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %s', public_owner);
                END IF;
            ELSE
                IF public_owner IS NULL THEN
                    CREATE SCHEMA public;
                ELSE
                    EXECUTE pg_catalog.format('CREATE SCHEMA public AUTHORIZATION %s', public_owner);
                END IF;
                -- the restore script that follows writes the source's, if pg_dump does
                IF public_comment IS NOT NULL THEN
                    EXECUTE pg_catalog.format('COMMENT ON SCHEMA public IS %L', public_comment);
                END IF;
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
            END IF;
        ELSE
            EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', schema_name);
            IF pg_catalog.cardinality(staged) > 0 THEN
                EXECUTE pg_catalog.format('ALTER SCHEMA %I RENAME TO %I', staged[position], schema_name);
                EXECUTE pg_catalog.format('COMMENT ON SCHEMA %I IS %L', schema_name, comments[position]);
            END IF;
        END IF;
    END LOOP;

    EXECUTE 'SELECT pg_catalog.string_agg(l.gone, '', '' ORDER BY l.gone) FROM ('
            'SELECT gone FROM pg_catalog.unnest($1) AS gone '
            'EXCEPT SELECT object FROM (' || watched || ') AS w) AS l'
        INTO lost
        USING survivors;
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'ELT: replacing the copied schemas would also drop objects outside them: %', lost
            USING HINT = 'They depend on the copied schemas through a database-wide object (an extension, say). Drop them before the run and re-create them after it, or install that object in a schema of its own.';
    END IF;
END
$prepare$;
