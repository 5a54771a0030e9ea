-- Objects outside the copied schemas that depend on them, and so would go
-- with the schemas' DROP ... CASCADE. Run on the destination before the copy
-- (replace.py) and again in the load's own transaction, right before
-- replace_schemas.sql, which refuses unless this found none. Run on the
-- source, it lists the source's own database-wide dependents, which the
-- one-stream load re-creates. Settings read (text[]):
--   elt.replaced_schemas  the copied schemas, unquoted;
--   elt.recreated         optional: objects (as in the result) that the load
--                         drops and re-creates itself: not blockers.
-- It sets elt.blockers (transaction-local) to the list, or to 'none'.
-- Names compare quoted: pg_identify_object quotes the schemas it returns.
-- Defaults, triggers, rules (views), policies and operator-family members
-- have no schema of their own and belong to their table's or family's.
-- Database-wide objects (event triggers, casts, extensions, publication
-- members, foreign servers, ...) belong to no schema: each one is a blocker
-- unless the load re-creates it. Default privileges for a copied schema
-- (ALTER DEFAULT PRIVILEGES IN SCHEMA) are settings of that schema and go
-- with it (README "Known limitations").
WITH replaced AS (
    SELECT pg_catalog.quote_ident(s) AS schema
    FROM pg_catalog.unnest(pg_catalog.current_setting('elt.replaced_schemas')::text[]) AS s
),
dependents AS (
    SELECT dep.type || ' ' || dep.identity AS object,
           COALESCE(dep.schema, (
               SELECT pg_catalog.quote_ident(n.nspname)
               FROM pg_catalog.pg_class AS c
               JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
               WHERE c.oid = CASE d.classid
                   WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                       THEN (SELECT a.adrelid FROM pg_catalog.pg_attrdef AS a WHERE a.oid = d.objid)
                   WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass
                       THEN (SELECT t.tgrelid FROM pg_catalog.pg_trigger AS t WHERE t.oid = d.objid)
                   WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                       THEN (SELECT r.ev_class FROM pg_catalog.pg_rewrite AS r WHERE r.oid = d.objid)
                   WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass
                       THEN (SELECT p.polrelid FROM pg_catalog.pg_policy AS p WHERE p.oid = d.objid)
               END), (
               SELECT pg_catalog.quote_ident(n.nspname)
               FROM pg_catalog.pg_opfamily AS f
               JOIN pg_catalog.pg_namespace AS n ON n.oid = f.opfnamespace
               WHERE f.oid = CASE d.classid
                   WHEN 'pg_catalog.pg_amop'::pg_catalog.regclass
                       THEN (SELECT o.amopfamily FROM pg_catalog.pg_amop AS o WHERE o.oid = d.objid)
                   WHEN 'pg_catalog.pg_amproc'::pg_catalog.regclass
                       THEN (SELECT p.amprocfamily FROM pg_catalog.pg_amproc AS p WHERE p.oid = d.objid)
               END)) AS owner_schema,
           d.classid
    FROM pg_catalog.pg_depend AS d
    CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) AS dep
    CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid) AS ref
    WHERE d.deptype IN ('n', 'a')
      -- an extension's own objects go with it: the extension is named instead
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend AS e
          WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e')
      AND (ref.schema IN (SELECT schema FROM replaced)
           -- the schema itself: what lives in it, and extensions installed in it
           OR d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
              AND ref.identity IN (SELECT schema FROM replaced))
),
outside AS (
    SELECT DISTINCT object, owner_schema IS NULL AS database_wide
    FROM dependents
    WHERE (owner_schema IS NULL OR owner_schema NOT IN (SELECT schema FROM replaced))
      AND classid <> 'pg_catalog.pg_default_acl'::pg_catalog.regclass
)
SELECT pg_catalog.set_config(
           'elt.blockers',
           COALESCE((
               SELECT pg_catalog.string_agg(object, ', ' ORDER BY object)
               FROM outside
               WHERE NOT object = ANY (COALESCE(
                   NULLIF(pg_catalog.current_setting('elt.recreated', true), ''),
                   '{}')::text[])), 'none'),
           true) AS blockers,
       ARRAY(SELECT object FROM outside WHERE database_wide ORDER BY object) AS database_wide;
