-- Objects outside the copied schemas that depend on them, and so would go
-- with the schemas' DROP ... CASCADE. Run on the destination before the copy
-- (replace.py) and again in the load's own transaction, right before
-- replace_schemas.sql, which refuses unless this found no blocker. Run on the
-- source, it lists the source's own database-wide dependents, which the
-- one-stream load re-creates. Settings read (text[]; see dependents_settings.sql):
--   elt.replaced_schemas  the copied schemas, unquoted;
--   elt.recreated         optional: objects (as in the result) that the load
--                         drops and re-creates itself: not blockers.
-- It sets (transaction-local) elt.blockers to the list of blockers, or to
-- 'none', and elt.views to the views it re-creates (oid[], in creation order),
-- and returns both, with the database-wide dependents and the views' names.
-- Views and materialized views outside the copied schemas whose query uses
-- them, and views built on those, are not blockers: replace_schemas.sql saves
-- their definitions and recreate_views.sql re-creates them against the new
-- copy. Anything else that depends on such a view (a function returning its
-- row type, an INSTEAD OF trigger, ...) is a blocker.
-- Names compare quoted: pg_identify_object quotes the schemas it returns.
-- Defaults, triggers, rules (views), policies and operator-family members
-- have no schema of their own and belong to their table's or family's.
-- Database-wide objects (event triggers, casts, extensions, publication
-- members, foreign servers, ...) belong to no schema: each one is a blocker
-- unless the load re-creates it. Default privileges for a copied schema
-- (ALTER DEFAULT PRIVILEGES IN SCHEMA) are settings of that schema and go
-- with it (docs/limitations.md).
WITH RECURSIVE replaced AS (
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
           d.classid,
           d.objid
    FROM pg_catalog.pg_depend AS d
    CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) AS dep
    CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid) AS ref
    WHERE d.deptype IN ('n', 'a')
      -- Before pg_identify_object, which is most of the query's cost: objects in
      -- the copied schemas have OIDs from FirstNormalObjectId (16384) on, even
      -- after OID wraparound (GetNewOidWithIndex); only their schemas may not.
      AND (d.refobjid >= 16384 OR d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass)
      -- an extension's own objects go with it: the extension is named instead
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend AS e
          WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e')
      AND (ref.schema IN (SELECT schema FROM replaced)
           -- the schema itself: what lives in it, and extensions installed in it
           OR d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
              AND ref.identity IN (SELECT schema FROM replaced))
),
-- The view (or materialized view) whose query a rule is, outside the copied schemas.
view_rules AS (
    SELECT r.oid AS rule, c.oid AS view, c.reltype
    FROM pg_catalog.pg_rewrite AS r
    JOIN pg_catalog.pg_class AS c ON c.oid = r.ev_class
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE r.rulename = '_RETURN'
      AND c.relkind IN ('v', 'm')
      AND pg_catalog.quote_ident(n.nspname) NOT IN (SELECT schema FROM replaced)
      AND n.nspname !~ '^pg_'
),
views AS (
    SELECT v.view, v.reltype, 1 AS depth
    FROM dependents AS d
    JOIN view_rules AS v ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                        AND v.rule = d.objid
    UNION
    SELECT v.view, v.reltype, views.depth + 1
    FROM views
    JOIN pg_catalog.pg_depend AS d
      ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
     AND (d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = views.view
          OR d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
             AND d.refobjid = views.reltype)
     AND d.deptype = 'n'
    JOIN view_rules AS v ON v.rule = d.objid AND v.view <> views.view
),
recreated_views AS (
    SELECT view, reltype, max(depth) AS depth FROM views GROUP BY view, reltype
),
-- What else depends on a view that is re-created: it would be lost.
view_dependents AS (
    SELECT dep.type || ' ' || dep.identity AS object
    FROM recreated_views AS v
    JOIN pg_catalog.pg_depend AS d
      ON (d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = v.view
          OR d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.refobjid = v.reltype)
     AND d.deptype IN ('n', 'a')
    CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) AS dep
    WHERE NOT (d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
               AND d.objid IN (SELECT r.rule FROM view_rules AS r
                               JOIN recreated_views AS rv ON rv.view = r.view))
      -- a materialized view's indexes are re-created with it
      AND NOT (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.objid IN (SELECT i.indexrelid FROM pg_catalog.pg_index AS i
                               JOIN recreated_views AS rv ON rv.view = i.indrelid))
      AND NOT COALESCE(dep.schema IN (SELECT schema FROM replaced), false)
),
outside AS (
    SELECT DISTINCT object, owner_schema IS NULL AS database_wide
    FROM dependents
    WHERE (owner_schema IS NULL OR owner_schema NOT IN (SELECT schema FROM replaced))
      AND classid <> 'pg_catalog.pg_default_acl'::pg_catalog.regclass
      AND NOT (classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
               AND objid IN (SELECT r.rule FROM view_rules AS r
                             JOIN recreated_views AS rv ON rv.view = r.view))
    UNION
    SELECT object, false FROM view_dependents
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
       ARRAY(SELECT object FROM outside WHERE database_wide ORDER BY object) AS database_wide,
       pg_catalog.set_config(
           'elt.views',
           ARRAY(SELECT view FROM recreated_views ORDER BY depth, view)::text,
           true) AS views,
       ARRAY(SELECT view::pg_catalog.regclass::text FROM recreated_views ORDER BY depth, view)
         AS view_names;
