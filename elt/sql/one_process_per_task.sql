-- The parallel copy's worker sessions (builds and validation figures, on both
-- servers): each task runs in one server process. Its workers already keep
-- the cores busy; parallel query or index workers would only take CPU from
-- the other tasks, among them the slowest build (the largest table's GIN
-- index, typically), which sets the run's length (docs/performance.md).
SET max_parallel_workers_per_gather = 0;
SET max_parallel_maintenance_workers = 0;
