"""The parallel copy from start to end: size, plan, stage, run the tasks, finish, swap.

A failure anywhere before the swap commits drops the staging schemas; the
destination's real schemas were never touched (docs/parallel-copy.md).
"""

from __future__ import annotations

import logging
import time

import psycopg

from elt.config import Settings
from elt.connect import Connection
from elt.failures import classify, swap_failed
from elt.parallel.insession import SessionPool
from elt.parallel.plan import Plan, make_plan
from elt.parallel.scheduler import Scheduler
from elt.parallel.sizing import sized_settings
from elt.parallel.staging import Coordinator, clean_up, create_staging, finish_staging, swap
from elt.parallel.tables import CopyTable
from elt.parallel.worker import Worker
from elt.processes import ToolFailed
from elt.progress import CopyStats, Progress, mb_per_second


def copy(
    settings: Settings,
    *,
    snapshot: Connection,
    snapshot_id: str,
    schemas: list[str],
    tables: list[CopyTable],
    logger: logging.Logger,
    session: Connection,
) -> CopyStats:
    """Copy in parallel and swap in; raise NotEligible (nothing changed) or an EltError.

    `session` is the run's destination session (autocommit), which holds the
    run's lock. After a successful swap the load's lock stays held in it too,
    until the caller closes it after validation.
    """
    started = time.monotonic()
    coordinator = Coordinator(session, logger)
    swapped = False
    try:
        settings = sized_settings(settings, snapshot, coordinator.conn, logger)
        plan = _plan_and_stage(
            settings,
            coordinator,
            snapshot=snapshot,
            snapshot_id=snapshot_id,
            schemas=schemas,
            tables=tables,
            logger=logger,
            started=started,
        )
        stats = _perform_tasks(settings, snapshot_id, plan, logger)
        try:
            finish_staging(settings, coordinator, plan)
        except (ToolFailed, psycopg.Error) as exc:
            raise classify(exc, step="finishing the staging schemas") from None
        event_triggers = _swap_in(coordinator, plan, schemas)
        swapped = True
        _log_loaded(logger, stats, started)
        if event_triggers:
            # They ran user code inside the swap (and during the builds), after
            # the destination figures were taken: measure the destination again.
            plan.destination_figures.clear()
        return CopyStats(
            stats.tables,
            stats.rows,
            stats.bytes,
            time.monotonic() - started,
            plan.source_figures,
            plan.destination_figures,
        )
    finally:
        if not swapped:
            clean_up(coordinator, logger)
            coordinator.release()


def _plan_and_stage(
    settings: Settings,
    coordinator: Coordinator,
    *,
    snapshot: Connection,
    snapshot_id: str,
    schemas: list[str],
    tables: list[CopyTable],
    logger: logging.Logger,
    started: float,
) -> Plan:
    """The plan, and its staging schemas created on the destination."""
    try:
        plan = make_plan(
            settings,
            coordinator=coordinator,
            snapshot=snapshot,
            snapshot_id=snapshot_id,
            schemas=schemas,
            tables=tables,
        )
    except (ToolFailed, psycopg.Error) as exc:
        raise classify(exc, step="planning the parallel copy") from None
    logger.info(
        "Parallel copy planned",
        extra={
            "jobs": settings.jobs,
            "tables": len(plan.tables),
            "tasks": len(plan.tasks),
            "staging_schemas": sorted(plan.staged.values()),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    coordinator.staging = list(plan.staged.values())
    try:
        create_staging(settings, coordinator, plan)
    except (ToolFailed, psycopg.Error) as exc:
        raise classify(exc, step="creating the staging schemas") from None
    return plan


def _swap_in(coordinator: Coordinator, plan: Plan, schemas: list[str]) -> bool:
    """swap(), its failures reported as the swap's errors (or the busy error)."""
    try:
        return swap(coordinator, plan, schemas)
    except psycopg.Error as exc:
        raise swap_failed(exc) from None


def _log_loaded(logger: logging.Logger, stats: CopyStats, started: float) -> None:
    logger.info(
        "Data load completed successfully",
        extra={
            "duration_seconds": round(time.monotonic() - started, 3),
            "tables": stats.tables,
            "rows": stats.rows,
            "bytes": stats.bytes,
            "mb_per_second": mb_per_second(stats.bytes, stats.seconds),
        },
    )


def _perform_tasks(
    settings: Settings, snapshot_id: str, plan: Plan, logger: logging.Logger
) -> CopyStats:
    """Every task of the plan, by the workers; the rows' totals."""
    progress = Progress(
        logger, len(plan.tables), sum(t.size for t in plan.tables), settings.progress_seconds
    )
    scheduler = Scheduler(plan.tasks, max_copies=max(1, settings.jobs // 2))
    pool = SessionPool(settings, snapshot_id, scheduler.max_copies)
    workers = [
        Worker(
            i + 1,
            settings=settings,
            snapshot_id=snapshot_id,
            plan=plan,
            scheduler=scheduler,
            progress=progress,
            pool=pool,
        )
        for i in range(max(1, min(settings.jobs, len(plan.tasks))))
    ]
    logger.info(
        "Starting data extraction from source database",
        extra={"schemas": list(plan.staged), "snapshot": snapshot_id, "jobs": len(workers)},
    )
    progress.start()
    for worker in workers:
        worker.start()
    try:
        while not scheduler.wait(0.5):
            pass
    except BaseException:
        scheduler.stop()
        raise
    finally:
        _stop_workers(workers, stopping=scheduler.stopped)
        pool.close()
        progress.stop()
    if scheduler.error is not None:
        raise classify(scheduler.error, step="copying the tables")
    progress.finish()
    logger.info(
        "Data extraction completed successfully",
        extra={"duration_seconds": round(time.monotonic() - progress.started, 3)},
    )
    return CopyStats(
        progress.tables_done, progress.rows, progress.bytes, time.monotonic() - progress.started
    )


def _stop_workers(workers: list[Worker], *, stopping: bool) -> None:
    """Join the workers; when stopping, cancel again until each has ended.

    A cancel can land between two statements and be missed, and psql ignores
    SIGINT between its commands: so the cancel is repeated, and after a few
    rounds the psql processes are killed (the clean-up then ends their
    sessions on the destination).
    """
    rounds = 0
    while alive := [w for w in workers if w.is_alive()]:
        for worker in alive:
            if stopping:
                worker.cancel()
                if rounds >= 5:
                    worker.kill()
            worker.join(timeout=1.0)
        rounds += 1
