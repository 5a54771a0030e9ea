"""The source's validation figures taken while the parallel copy is planned
(elt/parallel/early.py), against real servers: in the run's snapshot, stopped
and cleaned up with the run, and never a failure of their own.

No test waits on the clock: a measuring is held by a lock the test holds on
the source's indexes, and the test goes on when pg_stat_activity shows it waiting.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from conftest import (
    SEED_COUNTS,
    Databases,
    EltRun,
    elt_sessions,
    finish,
    leftovers,
    run_elt,
    start_job,
    the_interruption,
    wait_until,
)
from elt.config import load_settings
from elt.parallel.early import EarlySourceFigures
from elt.parallel.tables import CopyTable
from elt.validate import RECORD_HASH_MIN_VERSION, table_key

LOGGER = logging.getLogger("test_parallel_early")
# The seed's tables, as the parallel copy lists them (only the names and the
# sizes matter to the measuring).
TABLES = [CopyTable("public", name, 8192, (), binary=True) for name in SEED_COUNTS]
# A measuring session waiting for a table's lock (table_digest.sql names row_count).
MEASURING_HELD = "wait_event_type = 'Lock' AND query LIKE '%row_count%'"
# A write that changes the users' count and the films' digest.
WRITE = (
    "INSERT INTO public.users (first_name) VALUES ('after the snapshot');"
    "UPDATE public.films SET title = title || '!'"
)


@pytest.fixture
def dbs(dbs: Databases) -> Databases:
    dbs.path = "parallel"
    return dbs


@contextmanager
def exported_snapshot(dbs: Databases) -> Iterator[str]:
    """A snapshot of source_db, exported and held open as the job's is."""
    with dbs.source.connect("source_db", autocommit=False) as exporter:
        exporter.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        row = exporter.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
        assert row is not None
        yield str(row[0])


def early(dbs: Databases, snapshot_id: str) -> EarlySourceFigures:
    version = int(dbs.source.query("postgres", "SHOW server_version_num")[0][0])
    figures = EarlySourceFigures(
        load_settings(dbs.env()),
        snapshot_id,
        TABLES,
        LOGGER,
        hashing=(version >= RECORD_HASH_MIN_VERSION, None),
    )
    figures.start()
    return figures


def measured_to_the_end(dbs: Databases, snapshot_id: str) -> dict[str, tuple[Any, Any]]:
    figures = early(dbs, snapshot_id)
    wait_until(figures.done, "the measuring to end")
    return {k: (v.rows, v.digest) for k, v in figures.stop().items()}


def test_figures_taken_while_planning_are_the_snapshots(dbs: Databases) -> None:
    with exported_snapshot(dbs) as snapshot_id:
        before = measured_to_the_end(dbs, snapshot_id)
        dbs.source.execute("source_db", WRITE)
        in_the_snapshot = measured_to_the_end(dbs, snapshot_id)
    with exported_snapshot(dbs) as later:
        after = measured_to_the_end(dbs, later)

    assert in_the_snapshot == before
    assert {k: rows for k, (rows, _) in before.items()} == {
        table_key("public", name): count for name, count in SEED_COUNTS.items()
    }
    # the write shows outside the snapshot: the figures above could have moved
    users, films = table_key("public", "users"), table_key("public", "films")
    assert after[users][0] == SEED_COUNTS["users"] + 1
    assert after[films][1] != before[films][1]
    assert elt_sessions(dbs.source) == 0


@contextmanager
def indexes_locked(dbs: Databases) -> Iterator[psycopg.Connection[Any]]:
    """Every seed table's indexes locked on the source until the context ends (by
    a REINDEX left uncommitted). A measuring plans a query on the table, which
    opens its indexes, and waits; the job's own lock on the tables (ACCESS SHARE),
    pg_dump and the row copies do not."""
    with dbs.source.connect("source_db", autocommit=False) as holder:
        for name in SEED_COUNTS:
            holder.execute(f"REINDEX TABLE public.{name}")
        yield holder


def test_stop_cancels_a_measuring_in_progress(dbs: Databases) -> None:
    with exported_snapshot(dbs) as snapshot_id, indexes_locked(dbs):
        figures = early(dbs, snapshot_id)
        wait_until(lambda: elt_sessions(dbs.source, MEASURING_HELD) == 1, "the measuring to wait")
        assert not figures.done()
        assert figures.stop() == {}
        assert figures.done()
        assert elt_sessions(dbs.source) == 0  # while the lock is still held


def test_a_failed_measuring_is_left_to_the_tasks(dbs: Databases) -> None:
    """The measuring session ends under it (terminated): no error, no figures, and
    the run goes on, the copy's tasks measuring every table."""
    env = dbs.env(ELT_LOG_LEVEL="DEBUG")
    with indexes_locked(dbs) as holder:
        job = start_job(env)
        wait_until(lambda: elt_sessions(dbs.source, MEASURING_HELD) == 1, "the measuring to wait")
        holder.execute(
            "SELECT pg_catalog.pg_terminate_backend(pid, 10000) FROM pg_catalog.pg_stat_activity "
            f"WHERE application_name = 'elt_pipeline' AND {MEASURING_HELD}"
        )
        holder.commit()
    run = finish(job, env)

    assert run.returncode == 0, run.stdout
    assert run.find("Measured while planning") == []
    assert sorted(source_tasks(run)) == sorted(f"public.{name}" for name in SEED_COUNTS)
    assert run.find("Validation summary")
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


def source_tasks(run: EltRun) -> list[str]:
    """The tables whose source figures the copy's tasks took."""
    return [
        str(line["task"]).removeprefix("check_source:")
        for line in run.find("Measured")
        if str(line["task"]).startswith("check_source:")
    ]


def test_each_tables_source_figures_are_taken_once(dbs: Databases) -> None:
    run = run_elt(dbs.env(ELT_LOG_LEVEL="DEBUG"))

    assert run.returncode == 0, run.stdout
    early_ones = [line["table"] for line in run.find("Measured while planning")]
    # how many each way depends on how long planning took; together, each once
    assert sorted(early_ones + source_tasks(run)) == sorted(
        f"public.{name}" for name in SEED_COUNTS
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_measuring_and_planning_leaves_nothing_behind(
    dbs: Databases, signum: int, code: int
) -> None:
    env = dbs.env()
    before = dbs.destination.fingerprint("destination_db")
    with indexes_locked(dbs):
        job = start_job(env)
        wait_until(lambda: elt_sessions(dbs.source, MEASURING_HELD) == 1, "the measuring to wait")
        job.send_signal(signum)
        run = finish(job, env)
        # every session ended while the lock is still held: none was left waiting
        wait_until(lambda: elt_sessions(dbs.source) == 0, "the source sessions to end")
        wait_until(lambda: elt_sessions(dbs.destination) == 0, "the destination sessions to end")

    the_interruption(run, signum, code)
    assert leftovers(dbs) == ([], [])
    assert dbs.destination.fingerprint("destination_db") == before
