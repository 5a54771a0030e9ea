-- The one-stream load (prepare_destination.sql), when it has views to
-- re-create (recreate_views.sql): the restore script that follows ends the
-- transaction with its own COMMIT, after which nothing of the job's could run.
-- A deferred constraint trigger fires at that COMMIT, still inside the
-- transaction and once the new copy is complete: it re-creates the views, or
-- fails the COMMIT, and the whole load rolls back.
CREATE TEMPORARY TABLE elt_views_at_commit (id integer);
CREATE FUNCTION pg_temp.elt_views_at_commit() RETURNS trigger
LANGUAGE plpgsql
AS $at_commit$
BEGIN
    PERFORM pg_temp.elt_recreate_views();
    RETURN NULL;
END
$at_commit$;
CREATE CONSTRAINT TRIGGER elt_views_at_commit AFTER INSERT ON pg_temp.elt_views_at_commit
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION pg_temp.elt_views_at_commit();
INSERT INTO pg_temp.elt_views_at_commit VALUES (1);
