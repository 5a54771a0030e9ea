-- A parallel copy worker's source session joins the run's exported snapshot
-- (a literal, formatted in by the caller), so that its validation figures see
-- what was copied.
SET TRANSACTION SNAPSHOT {snapshot};
