-- The objects in the copied schemas, counted for the estimate of the locks a
-- run holds at once (elt/limits.py). A transaction locks each object it
-- creates, drops or builds on until it ends, one entry each in the shared lock
-- table (tests/test_limits.py measures these figures against pg_locks):
--   tables    ordinary and partitioned tables, which pg_dump locks all at once
--             (not those of extensions, which it does not dump);
--   created   what a load creates from them in one transaction: every
--             relation, plus a TOAST table and its index for each table with a
--             column of unbounded length (which the destination gives one
--             whatever the data), the row types and other types that are not
--             arrays, the keys, unique, exclusion and foreign-key constraints
--             (locked as they are added), the functions, the statistics
--             objects, and each schema;
--   existing  what a load drops: every relation with its TOAST table and
--             index, and every object DROP SCHEMA ... CASCADE locks with them:
--             all types (arrays too), functions, constraints, column
--             defaults, triggers, rules, policies and statistics objects.
WITH relations AS (
    SELECT c.oid, c.relkind, c.reltoastrelid,
           c.relkind IN ('r', 'p')
               AND NOT EXISTS (
                   SELECT 1
                   FROM pg_catalog.pg_depend AS d
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                     AND d.objid = c.oid
                     AND d.deptype = 'e') AS dumped_table,
           c.relkind IN ('r', 'm')
               AND EXISTS (
                   SELECT 1
                   FROM pg_catalog.pg_attribute AS a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.attlen = -1 AND a.attstorage <> 'p'
                     AND a.atttypmod < 0) AS toastable
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY (%(schemas)s)
),
spaces AS (
    SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = ANY (%(schemas)s)
),
types AS (
    SELECT pg_catalog.count(*) AS all_types,
           pg_catalog.count(*) FILTER (WHERE t.typcategory <> 'A') AS not_arrays
    FROM pg_catalog.pg_type AS t
    WHERE t.typnamespace IN (SELECT oid FROM spaces)
),
constraints AS (
    SELECT pg_catalog.count(*) AS all_constraints,
           pg_catalog.count(*) FILTER (WHERE k.contype IN ('p', 'u', 'x', 'f')) AS added
    FROM pg_catalog.pg_constraint AS k
    WHERE k.connamespace IN (SELECT oid FROM spaces)
),
shared AS (
    -- created and dropped alike: the schemas, their functions and statistics objects
    SELECT (SELECT pg_catalog.count(*) FROM spaces)
           + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc
              WHERE pronamespace IN (SELECT oid FROM spaces))
           + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_statistic_ext
              WHERE stxnamespace IN (SELECT oid FROM spaces)) AS objects
),
attached AS (
    -- dropped with their relation
    SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attrdef
            WHERE adrelid IN (SELECT oid FROM relations))
           + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger
              WHERE tgrelid IN (SELECT oid FROM relations))
           + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_rewrite
              WHERE ev_class IN (SELECT oid FROM relations))
           + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_policy
              WHERE polrelid IN (SELECT oid FROM relations)) AS objects
)
SELECT pg_catalog.count(*) FILTER (WHERE r.dumped_table) AS tables,
       pg_catalog.count(*) + 2 * pg_catalog.count(*) FILTER (WHERE r.toastable)
           + (SELECT not_arrays FROM types) + (SELECT added FROM constraints)
           + (SELECT objects FROM shared) AS created,
       pg_catalog.count(*) + 2 * pg_catalog.count(*) FILTER (WHERE r.reltoastrelid <> 0)
           + (SELECT all_types FROM types) + (SELECT all_constraints FROM constraints)
           + (SELECT objects FROM shared) + (SELECT objects FROM attached) AS existing
FROM relations AS r;
