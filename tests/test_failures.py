"""Each failure on both copy paths: the same exit code, the same kind of error line.

One row per failure, run on the streamed and on the parallel path against
real servers (elt/failures.py classifies both). For each: the exit code, the
error line's `message`, an `error` that matches the same wording pattern, a
`hint`, the `tool` where one failed, the cause in `stderr_tail`, and the
destination exactly as it was (or, for a validation failure, as loaded).

No row waits on the clock: a run is held with a lock the test owns, and the
test acts when pg_stat_activity shows the job waiting there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    REFUSE_FILM_ACTORS_KEYS,
    RELEASE_HOLD,
    SEEDED_TEMPLATE,
    Databases,
    EltRun,
    PgServer,
    both_paths,
    elt_sessions,
    finish,
    gated_matview,
    load_held,
    load_is_waiting,
    run_elt,
    start_job,
    the_error,
    wait_until,
)
from elt.sql import LOCK_KEY

TOOLS = ("pg_isready", "pg_dump", "pg_restore", "psql")
READER_PASSWORD = "reader pw ' for the failures table"
INTRUDER_PASSWORD = "intruder pw ' for the failures table"


@pytest.fixture(params=["streamed", "parallel"])
def dbs(request: pytest.FixtureRequest, dbs: Databases) -> Databases:
    return both_paths(request, dbs)


def loaded_then_changed(dbs: Databases) -> str:
    """A destination with a first copy in it, and a source a re-run would change."""
    first = run_elt(dbs.env())
    assert first.returncode == 0, first.stdout
    dbs.source.execute("source_db", "DELETE FROM film_actors; UPDATE users SET email = NULL")
    return dbs.destination.fingerprint("destination_db")


# --- how each failure is brought about: each returns the failed run -------------


def without(tool: str) -> Callable[[Databases, Path], EltRun]:
    """A PATH with the job's client tools except `tool`."""

    def run(dbs: Databases, tmp_path: Path) -> EltRun:
        tools = tmp_path / "bin"
        tools.mkdir()
        for name in TOOLS:
            if name != tool:
                (tools / name).symlink_to(dbs.source.bindir / name)
        return run_elt(dbs.env(PATH=str(tools)))

    return run


def pg_dump_fails_on_the_snapshot(dbs: Databases, tmp_path: Path) -> EltRun:
    """pg_dump exits with an error whenever it reads the source's snapshot: the
    whole dump on the streamed path, the schema dump of planning on the parallel one."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in TOOLS:
        (tools / name).symlink_to(dbs.source.bindir / name)
    (tools / "pg_dump").unlink()
    (tools / "pg_dump").write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in --snapshot=*)\n'
        '    echo "pg_dump: error: injected failure on the source" >&2; exit 1;; esac; done\n'
        f'exec "{dbs.source.bindir / "pg_dump"}" "$@"\n'
    )
    (tools / "pg_dump").chmod(0o755)
    return run_elt(dbs.env(PATH=str(tools)))


def source_refuses_a_table(dbs: Databases, tmp_path: Path) -> EltRun:
    """SOURCE_POSTGRES_USER may read every table but `users`. Validation off:
    with it on, the job's own snapshot locks every table first, on both paths."""
    dbs.source.execute(
        "postgres", f"CREATE ROLE reader LOGIN PASSWORD '{READER_PASSWORD.replace("'", "''")}'"
    )
    try:
        dbs.source.execute(
            "source_db",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader;"
            "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO reader;"
            "REVOKE SELECT ON public.users FROM reader",
        )
        return run_elt(
            dbs.env(
                SOURCE_POSTGRES_USER="reader",
                SOURCE_POSTGRES_PASSWORD=READER_PASSWORD,
                ELT_VALIDATION="off",
            )
        )
    finally:
        dbs.source.execute("source_db", "DROP OWNED BY reader")
        dbs.source.execute("postgres", "DROP ROLE reader")


def source_session_ends(dbs: Databases, tmp_path: Path) -> EltRun:
    """The job's source session that waits on a table the test holds is terminated
    (pg_dump's on the streamed path, the snapshot's on the parallel one)."""
    dbs.source.execute("source_db", "CREATE TABLE gate (id int)")
    env = dbs.env(ELT_VALIDATION="off")
    with dbs.source.connect("source_db", autocommit=False) as holder:
        holder.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        job = start_job(env)
        waiting = "wait_event_type = 'Lock'"
        wait_until(lambda: elt_sessions(dbs.source, waiting) == 1, "the job to wait on gate")
        dbs.source.execute(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = 'elt_pipeline' AND {waiting}",
        )
        return finish(job, env)


def another_run_holds_the_lock(dbs: Databases, tmp_path: Path) -> EltRun:
    with dbs.destination.connect("destination_db") as other_run:
        other_run.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        return run_elt(dbs.env())


def destination_role_without_rights(dbs: Databases, tmp_path: Path) -> EltRun:
    """A role that may log in and create databases, but owns nothing in destination_db."""
    quoted = INTRUDER_PASSWORD.replace("'", "''")
    dbs.destination.execute("postgres", f"CREATE ROLE intruder LOGIN CREATEDB PASSWORD '{quoted}'")
    try:
        return run_elt(
            dbs.env(
                DESTINATION_POSTGRES_USER="intruder",
                DESTINATION_POSTGRES_PASSWORD=INTRUDER_PASSWORD,
            )
        )
    finally:
        dbs.destination.execute("destination_db", "DROP OWNED BY intruder")
        dbs.destination.execute("postgres", "DROP OWNED BY intruder; DROP ROLE intruder")


# The keys of film_actors are added after its rows on both paths: the session
# adding them ends itself there, as a destination that goes away would.
END_OWN_SESSION = REFUSE_FILM_ACTORS_KEYS.replace(
    "RAISE EXCEPTION 'injected failure in the keys of film_actors'",
    "PERFORM pg_terminate_backend(pg_backend_pid())",
)


def end_own_session(dbs: Databases) -> None:
    dbs.destination.execute("destination_db", END_OWN_SESSION)


def plain_run(dbs: Databases, tmp_path: Path) -> EltRun:
    return run_elt(dbs.env())


# Validation recomputes a materialized view's query in the source snapshot
# (both paths, after the copy): there the job's session ends itself.
SOURCE_SESSION_ENDS_IN_VALIDATION = """
CREATE FUNCTION public.end_job_session() RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF pg_catalog.current_database() = 'source_db'
       AND pg_catalog.current_setting('application_name') = 'elt_pipeline' THEN
        PERFORM pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid());
    END IF;
    RETURN 1;
END $$;
CREATE MATERIALIZED VIEW public.watched AS SELECT public.end_job_session() AS x;
"""


def source_figures_fail(dbs: Databases, tmp_path: Path) -> EltRun:
    dbs.source.execute("source_db", SOURCE_SESSION_ENDS_IN_VALIDATION)
    return run_elt(dbs.env())


GATED_MATVIEW = gated_matview(4343)


@contextmanager
def load_held_then_released(dbs: Databases) -> Iterator[Callable[[], None]]:
    """The load stops before its commit (conftest.load_held) until the block ends,
    or until the function it gives is called; then the hold's trigger is dropped."""
    try:
        with load_held(dbs) as holder:
            yield holder.close
    finally:
        dbs.destination.execute("destination_db", RELEASE_HOLD)


def source_figures_fail_before_the_commit(dbs: Databases, tmp_path: Path) -> EltRun:
    """On the streamed path the source's figures start when pg_dump has exited, and
    here fail while the load waits before its commit; the load commits all the same,
    and the failure is told after it, as when the figures fail after the commit.
    (The parallel path takes the materialized view's figures after its swap.)"""
    dbs.source.execute("source_db", SOURCE_SESSION_ENDS_IN_VALIDATION)
    env = dbs.env()
    with load_held_then_released(dbs) as release:
        job = start_job(env)
        wait_until(lambda: load_is_waiting(dbs), "the load to wait before its commit")
        if dbs.path == "streamed":
            wait_until(lambda: elt_sessions(dbs.source) == 0, "the source's figures to fail")
        release()
        return finish(job, env)


def load_fails_while_source_figures_run(dbs: Databases, tmp_path: Path) -> EltRun:
    """The load fails while the source's figures wait (streamed path; the parallel
    path has not started them then): the job stops them itself, with the source's
    gate still held, and the load's failure is the one told."""
    dbs.source.execute("source_db", GATED_MATVIEW)
    env = dbs.env()
    with dbs.source.connect("source_db") as gate, load_held_then_released(dbs):
        gate.execute("SELECT pg_advisory_lock(4343)")
        job = start_job(env)
        wait_until(lambda: load_is_waiting(dbs), "the load to wait before its commit")
        if dbs.path == "streamed":
            at_gate = "wait_event_type = 'Lock' AND wait_event = 'advisory'"
            wait_until(lambda: elt_sessions(dbs.source, at_gate) == 1, "the figures at the gate")
        dbs.destination.execute(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'elt_pipeline' AND wait_event = 'advisory'",
        )
        return finish(job, env)


# --- the table ----------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    cause: Callable[[Databases, Path], EltRun]
    exit_code: int
    message: str  # the error line's `message`
    error: str  # a pattern its `error` matches on both paths
    tool: str | None = None  # the error line's `tool`, where a tool failed
    side: str | None = None  # the error line's `side`: which server failed
    stderr: str | None = None  # a pattern of the cause, somewhere in `stderr_tail`
    hint: str | None = None  # a pattern the `hint` matches
    loaded: bool = False  # the destination as loaded (validation), not unchanged
    prepare: Callable[[Databases], None] | None = None  # on the destination, before the run


MISSING = "^{tool} was not found on PATH$"
SOURCE = r"^Reading the source failed \(.+\); nothing was changed$"
DESTINATION = r"^Loading the destination failed \(.+\); nothing was changed$"
FAILURES = {
    "pg_dump missing": Failure(
        without("pg_dump"), 2, "Invalid configuration", MISSING.format(tool="pg_dump"), "pg_dump"
    ),
    "pg_restore missing": Failure(
        without("pg_restore"),
        2,
        "Invalid configuration",
        MISSING.format(tool="pg_restore"),
        "pg_restore",
    ),
    "psql missing": Failure(
        without("psql"), 2, "Invalid configuration", MISSING.format(tool="psql"), "psql"
    ),
    "the source refuses a table": Failure(
        source_refuses_a_table,
        4,
        "Data extraction failed",
        SOURCE,
        stderr="permission denied for table users",
        side="source",
    ),
    "pg_dump fails on the source": Failure(
        pg_dump_fails_on_the_snapshot,
        4,
        "Data extraction failed",
        SOURCE,
        tool="pg_dump",
        stderr="injected failure on the source",
        side="source",
    ),
    "the source session ends mid-run": Failure(
        source_session_ends,
        4,
        "Data extraction failed",
        SOURCE,
        stderr="terminating connection due to administrator command",
        side="source",
        hint="^The connection to the source was lost mid-run",
    ),
    "another run holds the lock": Failure(
        another_run_holds_the_lock,
        5,
        "Data load failed",
        r"^Another ELT run is loading this destination database right now",
    ),
    "the destination refuses the role": Failure(
        destination_role_without_rights,
        5,
        "Data load failed",
        DESTINATION,
        stderr="must be owner|permission denied",
        side="destination",
    ),
    "the destination session ends mid-load": Failure(
        plain_run,
        5,
        "Data load failed",
        DESTINATION,
        stderr="terminating connection due to administrator command",
        side="destination",
        hint="^The connection to the destination was lost mid-run",
        prepare=end_own_session,
    ),
    "the source figures cannot be computed": Failure(
        source_figures_fail,
        6,
        "Data validation failed",
        r"^Validation could not be completed: the source figures could not be computed",
        stderr="terminating connection due to administrator command",
        loaded=True,
        side="source",
    ),
    "the source figures fail before the load commits": Failure(
        source_figures_fail_before_the_commit,
        6,
        "Data validation failed",
        r"^Validation could not be completed: the source figures could not be computed$",
        stderr="terminating connection due to administrator command",
        hint="^The copy was committed but is not proven",
        loaded=True,
        side="source",
    ),
    "the load fails while the source figures run": Failure(
        load_fails_while_source_figures_run,
        5,
        "Data load failed",
        DESTINATION,
        stderr="terminating connection due to administrator command",
        side="destination",
        hint="^The connection to the destination was lost mid-run",
    ),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_the_same_failure_ends_the_same_way_on_both_paths(
    dbs: Databases, tmp_path: Path, failure: Failure
) -> None:
    before = loaded_then_changed(dbs)
    if failure.prepare is not None:
        failure.prepare(dbs)
        before = dbs.destination.fingerprint("destination_db")

    run = failure.cause(dbs, tmp_path)

    error = the_error(run)
    outcome: dict[str, Any] = {
        k: error.get(k) for k in ("message", "error", "tool", "stderr_tail", "hint")
    }
    assert (run.returncode, error["message"]) == (failure.exit_code, failure.message), outcome
    assert re.search(failure.error, error["error"]), outcome
    if failure.tool is not None:
        assert error.get("tool") == failure.tool, outcome
    if failure.side is not None:
        assert error["side"] == failure.side, outcome
    if failure.stderr is not None:
        assert re.search(failure.stderr, " ".join(error.get("stderr_tail", []))), outcome
    if failure.hint is not None:
        assert re.search(failure.hint, error["hint"]), outcome
    after = dbs.destination.fingerprint("destination_db")
    if failure.loaded:
        assert after == dbs.source.fingerprint("source_db")
    else:
        assert after == before
        assert not run.find("ELT pipeline completed successfully")


def test_one_database_under_two_host_names_is_refused_before_copying(
    source_server: PgServer,
) -> None:
    """Told apart by name, one server: the identity read after login (server_identity.sql)
    refuses it before either path starts."""
    source_server.recreate_database("source_db", template=SEEDED_TEMPLATE)
    same = Databases(source_server, source_server, destination_db="source_db")
    before = source_server.fingerprint("source_db")

    run = run_elt(same.env(DESTINATION_POSTGRES_HOST="localhost"))

    assert run.returncode == 2, run.stdout
    error = the_error(run)
    assert error["error"] == "Source and destination settings lead to the same database"
    assert error["variable"] == "DESTINATION_POSTGRES_DB"
    assert source_server.fingerprint("source_db") == before
