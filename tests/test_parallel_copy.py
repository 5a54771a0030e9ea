"""The parallel copy against real servers, forced on the small seed (elt/parallel/).

Log lines and totals, the fallbacks to the streamed path, staging leftovers, a
busy destination, and faults inside an index or key build. As in
test_faults.py, no test waits on the clock: a run is held inside a build by an
event trigger that waits for an advisory lock the test owns, and the test goes
on when pg_stat_activity shows the job waiting there.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

import psycopg
import pytest

from conftest import (
    REFUSAL,
    REFUSE_FILM_ACTORS_KEYS,
    RELEASE_REFUSAL,
    SEED_COUNTS,
    Databases,
    PgServer,
    descendants,
    elt_sessions,
    finish,
    leftovers,
    loaded_then_changed,
    rerun_succeeds,
    run_elt,
    start_job,
    the_error,
    the_interruption,
    wait_until,
)
from elt.parallel.insession import SMALL_TABLE_BYTES
from elt.replace import STAGING_MARKER
from elt.sql import LOCK_KEY

HOLD_KEY = 4242


@pytest.fixture
def dbs(dbs: Databases) -> Databases:
    dbs.path = "parallel"
    return dbs


def destination_oid(dbs: Databases) -> int:
    rows = dbs.destination.query(
        "postgres", "SELECT oid FROM pg_database WHERE datname = 'destination_db'"
    )
    return int(rows[0][0])


def fingerprint_outside_staging(server: PgServer) -> str:
    """PgServer.fingerprint, without the elt_staging_* schemas."""
    proc = subprocess.run(
        [
            *server.client_argv("pg_dump", "destination_db"),
            "--no-owner",
            "--no-privileges",
            "--exclude-schema=elt_staging_*",
        ],
        env=server.client_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    # as PgServer.fingerprint: pg_dump >= 15.14 brackets its output with a random key
    restrict = ("\\restrict", "\\unrestrict")
    keep = (line for line in proc.stdout.splitlines() if not line.startswith(restrict))
    return "\n".join(keep)


def assert_no_staging_left(dbs: Databases) -> None:
    assert leftovers(dbs) == ([], [])


# --- lines and totals ------------------------------------------------------------


def test_parallel_run_logs_every_table_and_consistent_totals(dbs: Databases) -> None:
    run = run_elt(dbs.env())

    assert run.returncode == 0, run.stdout
    assert run.stderr == ""
    copied = run.find("Table copied")
    assert sorted(line["table"] for line in copied) == sorted(f"public.{t}" for t in SEED_COUNTS)
    assert {line["table"]: line["rows"] for line in copied} == {
        f"public.{t}": n for t, n in SEED_COUNTS.items()
    }
    assert all(line["bytes"] > 0 for line in copied)
    progress = run.find("Copy progress")
    last = progress[-1]
    assert (last["tables_done"], last["tables_total"], last["rows"]) == (5, 5, 113)
    assert last["percent"] == 100.0
    assert run.logs.index(last) > max(run.logs.index(line) for line in copied)
    (planned,) = run.find("Parallel copy planned")
    (staging,) = planned["staging_schemas"]
    assert re.fullmatch(r"elt_staging_[0-9]+_0", staging), staging  # unique to the run
    final = run.logs[-1]
    assert final["message"] == "ELT pipeline completed successfully"
    assert final["copy_path"] == "parallel"
    assert (final["tables"], final["rows"]) == (5, 113)
    assert final["bytes"] == sum(line["bytes"] for line in copied) == last["bytes"]
    assert isinstance(final["mb_per_second"], int | float)
    assert not isinstance(final["mb_per_second"], bool)
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- fallbacks to the streamed path --------------------------------------------

LOADER = "parallel_loader"
LOADER_PASSWORD = "loader pw ' with quote"


@contextmanager
def non_superuser_owner(dbs: Databases) -> Iterator[dict[str, str]]:
    """A role without CREATEDB that owns destination_db; yields the job's settings for it."""
    quoted = LOADER_PASSWORD.replace("'", "''")
    dbs.destination.execute(
        "postgres", f"CREATE ROLE {LOADER} LOGIN NOCREATEDB PASSWORD '{quoted}'"
    )
    try:
        dbs.destination.execute("postgres", f"ALTER DATABASE destination_db OWNER TO {LOADER}")
        yield {
            "DESTINATION_POSTGRES_USER": LOADER,
            "DESTINATION_POSTGRES_PASSWORD": LOADER_PASSWORD,
        }
    finally:
        dbs.destination.execute("destination_db", f"REASSIGN OWNED BY {LOADER} TO postgres")
        dbs.destination.execute("postgres", "ALTER DATABASE destination_db OWNER TO postgres")
        dbs.destination.execute("postgres", f"DROP ROLE {LOADER}")


@contextmanager
def superuser_owner(dbs: Databases) -> Iterator[dict[str, str]]:
    yield {}


DestinationOwner = Callable[[Databases], AbstractContextManager[dict[str, str]]]


def with_settings(**settings: str) -> DestinationOwner:
    """The destination's superuser, with these job settings."""

    @contextmanager
    def owner(dbs: Databases) -> Iterator[dict[str, str]]:
        yield settings

    return owner


FORTY_SMALL_TABLES = """DO $$ BEGIN FOR i IN 1..40 LOOP
    EXECUTE pg_catalog.format('CREATE TABLE public.small_%s (id integer PRIMARY KEY)', i);
END LOOP; END $$"""

# (SQL run on the source first, how the destination is reached, text the reason must contain)
FALLBACKS: dict[str, tuple[str, DestinationOwner, str]] = {
    "large object": ("SELECT lo_from_bytea(0, 'x')", superuser_owner, "large objects"),
    "extension": ("CREATE EXTENSION citext", superuser_owner, "EXTENSION"),
    "destination user without CREATEDB": ("", non_superuser_owner, "CREATEDB"),
    "database smaller than ELT_PARALLEL_MIN_MB": (
        "",
        with_settings(ELT_PARALLEL_MIN_MB="100000"),
        "smaller than ELT_PARALLEL_MIN_MB (100000)",
    ),
    "many small tables (ELT_PARALLEL_MIN_TABLE_MB's default)": (
        FORTY_SMALL_TABLES,
        with_settings(ELT_PARALLEL_MIN_TABLE_MB="1"),
        "source's 45 tables hold",
    ),
}


@pytest.mark.parametrize(("source_sql", "owner", "reason"), FALLBACKS.values(), ids=FALLBACKS)
def test_sources_the_parallel_path_cannot_stage_are_streamed(
    dbs: Databases, source_sql: str, owner: DestinationOwner, reason: str
) -> None:
    if source_sql:
        dbs.source.execute("source_db", source_sql)
    with owner(dbs) as overrides:
        run = run_elt(dbs.env(**overrides))

    assert run.returncode == 0, run.stdout
    assert run.stderr == ""
    (not_used,) = run.find("Parallel copy not used")
    assert reason in not_used["reason"]
    assert run.find("Parallel copy planned") == []
    assert run.logs[-1]["copy_path"] == "streamed"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- leftovers of a run that was killed outright --------------------------------

# (staging schemas left in destination_db, whether a scratch database was left)
LEFTOVERS = {
    "staging schemas and scratch database": (["elt_staging_0", "elt_staging_1"], True),
    "staging schemas only": (["elt_staging_0"], False),
    "scratch database only": ([], True),
}


@pytest.mark.parametrize(("schemas", "scratch"), LEFTOVERS.values(), ids=LEFTOVERS)
def test_leftovers_of_a_killed_run_are_removed_first(
    dbs: Databases, schemas: list[str], scratch: bool
) -> None:
    for schema in schemas:
        dbs.destination.execute(
            "destination_db",
            f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.film_actors (film_id int); "
            f"COMMENT ON SCHEMA {schema} IS '{STAGING_MARKER}'",
        )
    scratch_name = f"elt_scratch_{destination_oid(dbs)}"
    if scratch:
        dbs.destination.execute("postgres", f"CREATE DATABASE {scratch_name}")
    assert leftovers(dbs) == (schemas, [scratch_name] if scratch else [])

    run = run_elt(dbs.env())

    assert run.returncode == 0, run.stdout
    warnings = run.find("Removing staging schemas left by an interrupted run")
    assert [(w["level"], w["schemas"]) for w in warnings] == (
        [("WARNING", schemas)] if schemas else []
    )
    assert run.logs[-1]["copy_path"] == "parallel"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- a busy destination -----------------------------------------------------------


def test_a_run_refuses_while_another_run_holds_the_destination(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    with dbs.destination.connect("destination_db") as other_run:
        other_run.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        other_run.execute("CREATE SCHEMA elt_staging_0")
        other_run.execute("CREATE TABLE elt_staging_0.film_actors (film_id int)")
        other_run.execute(f"COMMENT ON SCHEMA elt_staging_0 IS '{STAGING_MARKER}'")
        before = dbs.destination.fingerprint("destination_db")

        run = run_elt(dbs.env())

        assert run.returncode == 5
        error = the_error(run)
        assert "Another ELT run" in error["error"]
        assert "Wait for the other run" in error["hint"]
        assert leftovers(dbs) == (["elt_staging_0"], [])  # the other run's staging is kept
        assert dbs.destination.fingerprint("destination_db") == before
    # Once the other run is gone, its staging is a leftover like any other.
    rerun_succeeds(dbs)
    assert_no_staging_left(dbs)


# --- a failure inside a build -----------------------------------------------------


def test_a_failing_build_leaves_the_destination_as_it_was(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    dbs.destination.execute("destination_db", REFUSE_FILM_ACTORS_KEYS)
    before = dbs.destination.fingerprint("destination_db")

    run = run_elt(dbs.env())

    assert run.returncode == 5
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert REFUSAL in " ".join(error["stderr_tail"])
    assert run.find("Parallel copy planned"), "the failure must be in the parallel path"
    assert dbs.destination.fingerprint("destination_db") == before
    assert_no_staging_left(dbs)
    dbs.destination.execute("destination_db", RELEASE_REFUSAL)
    rerun_succeeds(dbs)


# --- held inside a build: signals and a stopped destination ----------------------

HOLD_BUILD = f"""
CREATE SCHEMA guard;
CREATE FUNCTION guard.hold() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A key of film_actors, built in the staging schema: wait for the test.
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
               WHERE object_identity LIKE '%.film_actors') THEN
        PERFORM pg_advisory_lock({HOLD_KEY});
        PERFORM pg_advisory_unlock({HOLD_KEY});
    END IF;
END $$;
CREATE EVENT TRIGGER hold_build ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION guard.hold();
"""
RELEASE_BUILD = "DROP EVENT TRIGGER hold_build; DROP SCHEMA guard CASCADE"


@contextmanager
def build_held(dbs: Databases) -> Iterator[None]:
    """Make the next parallel run stop inside a build of film_actors until the context ends."""
    dbs.destination.execute("destination_db", HOLD_BUILD)
    holder = dbs.destination.connect("destination_db")
    holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
    try:
        yield
    finally:
        with suppress(psycopg.Error):
            holder.close()  # releases the lock (or the server is already gone)


def build_is_waiting(dbs: Databases) -> bool:
    return elt_sessions(dbs.destination, "wait_event = 'advisory'") == 1


def start_held_run(dbs: Databases, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start a run and wait until it is held inside the build; returns it and the fingerprint."""
    before = dbs.destination.fingerprint("destination_db")
    job = start_job(env)
    wait_until(lambda: build_is_waiting(dbs), "the job to wait inside a build")
    return job, before


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_inside_a_build_stops_everything_and_cleans_up(
    dbs: Databases, signum: int, code: int
) -> None:
    loaded_then_changed(dbs)
    env = dbs.env()
    with build_held(dbs):
        job, before = start_held_run(dbs, env)
        (staging,) = leftovers(dbs)[0]  # it is inside the parallel path
        assert re.fullmatch(r"elt_staging_[0-9]+_0", staging), staging
        children = descendants(job.pid)
        job.send_signal(signum)
        run = finish(job, env)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the job"
        # The held build was cancelled, not left waiting: every session is gone
        # while the test still holds the lock.
        wait_until(lambda: elt_sessions(dbs.destination) == 0, "the destination sessions to end")
        wait_until(lambda: elt_sessions(dbs.source) == 0, "the source sessions to end")

    the_interruption(run, signum, code)
    assert_no_staging_left(dbs)
    assert dbs.destination.fingerprint("destination_db") == before
    dbs.destination.execute("destination_db", RELEASE_BUILD)
    rerun_succeeds(dbs)


def other_builds_done(dbs: Databases) -> bool:
    """Every key outside film_actors is built in the staging schema: the other worker is idle."""
    keys = """
        SELECT count(*) FROM pg_constraint
        WHERE connamespace = '{0}'::regnamespace AND contype IN ('p', 'f')
          AND conrelid <> '{0}.film_actors'::regclass
    """
    expected = dbs.source.query("source_db", keys.format("public"))
    staging = dbs.destination.query(
        "destination_db", r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'elt\_staging\_%'"
    )
    if len(staging) != 1:
        return False
    built = dbs.destination.query("destination_db", keys.format(staging[0][0]))
    return bool(built == expected)


def test_destination_stopped_inside_a_build_then_a_plain_rerun_recovers(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    # Validation off, and the stop only once the other worker has nothing left
    # to do: then the held build is the only work the stop interrupts, and the
    # failing step (and so the error) is always the same.
    env = dbs.env(ELT_VALIDATION="off")
    with build_held(dbs):
        job, before = start_held_run(dbs, env)
        wait_until(lambda: other_builds_done(dbs), "the other builds to be committed")
        dbs.destination.stop("fast")
        run = finish(job, env)
    dbs.destination.restart()

    assert run.returncode == 5
    error = the_error(run)
    assert error["message"] == "Data load failed"
    # It could not remove its staging schemas, and said so; the real schemas are untouched.
    assert run.find("Could not remove the staging schemas; the next run removes them")
    (left,), scratch = leftovers(dbs)
    assert re.fullmatch(r"elt_staging_[0-9]+_0", left), left
    assert scratch == []
    assert fingerprint_outside_staging(dbs.destination) == before
    dbs.destination.execute("destination_db", RELEASE_BUILD)

    again = run_elt(dbs.env())

    assert again.returncode == 0, again.stdout
    (warning,) = again.find("Removing staging schemas left by an interrupted run")
    assert warning["schemas"] == [left]
    assert again.logs[-1]["copy_path"] == "parallel"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- a dependent object created while the copy runs --------------------------------


def test_a_dependent_created_during_the_copy_is_refused_at_the_swap(dbs: Databases) -> None:
    # The run checks before copying, and again in the swap's transaction.
    loaded_then_changed(dbs)
    env = dbs.env()
    with build_held(dbs):
        job, _ = start_held_run(dbs, env)
        dbs.destination.execute(
            "destination_db",
            "CREATE SCHEMA reports; CREATE TABLE reports.r (u int REFERENCES public.users (id))",
        )
        before = fingerprint_outside_staging(dbs.destination)
    run = finish(job, env)

    assert run.returncode == 5, run.stdout
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert "r_u_fkey on reports.r" in " ".join(error["stderr_tail"])
    assert run.find("Table copied"), "the refusal must come at the swap"
    assert_no_staging_left(dbs)
    assert dbs.destination.fingerprint("destination_db") == before


# --- keys built in two steps ------------------------------------------------------

# Every form of primary key and unique constraint that ADD CONSTRAINT ... USING
# INDEX has to reproduce (NULLS NOT DISTINCT: PostgreSQL 15), plus a foreign
# key and a comment that wait for one of them.
KEY_FORMS = """
CREATE SCHEMA "Key Forms";
CREATE TABLE "Key Forms"."T" (
    id int, code text, a int, b int, c int, d int,
    CONSTRAINT "T pk" PRIMARY KEY (id) WITH (fillfactor = 70),
    CONSTRAINT t_code UNIQUE NULLS NOT DISTINCT (code),
    CONSTRAINT t_a_incl UNIQUE (a) INCLUDE (b),
    CONSTRAINT t_c_deferred UNIQUE (c) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT t_d_deferrable UNIQUE (d) DEFERRABLE
);
CREATE TABLE "Key Forms".child (t_id int CONSTRAINT child_t REFERENCES "Key Forms"."T" (id));
COMMENT ON CONSTRAINT "T pk" ON "Key Forms"."T" IS 'the key';
INSERT INTO "Key Forms"."T" SELECT i, CASE WHEN i > 1 THEN 'c' || i END, i, i, i, i
FROM generate_series(1, 50) AS i;
INSERT INTO "Key Forms".child SELECT i FROM generate_series(1, 50, 7) AS i;
"""
KEY_CATALOG = """
SELECT c.conname, c.contype, c.condeferrable, c.condeferred, c.conindid::regclass::text,
       i.indisprimary, i.indimmediate, i.indnullsnotdistinct, ic.reloptions,
       pg_get_constraintdef(c.oid), d.deptype
FROM pg_constraint AS c
JOIN pg_index AS i ON i.indexrelid = c.conindid
JOIN pg_class AS ic ON ic.oid = c.conindid
LEFT JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = c.conindid
    AND d.refclassid = 'pg_constraint'::regclass
WHERE c.connamespace = '"Key Forms"'::regnamespace
ORDER BY c.conname
"""


def test_keys_built_as_an_index_then_attached_match_the_source(dbs: Databases) -> None:
    dbs.source.execute("source_db", KEY_FORMS)

    run = run_elt(dbs.env(ELT_LOG_LEVEL="DEBUG"))

    assert run.returncode == 0, run.stdout
    assert run.logs[-1]["copy_path"] == "parallel"
    attached = [
        line["entry"]
        for line in run.find("Built")
        if line["entry"].startswith("ALTER TABLE ONLY") and '."T" ' in line["entry"]
    ]
    assert len(attached) == 5, attached  # each key took the two-step route
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    source = dbs.source.query("source_db", KEY_CATALOG)
    assert len(source) == 6  # five keys, one foreign key
    assert dbs.destination.query("destination_db", KEY_CATALOG) == source


# --- bugs found while writing these tests (fixed; each test failed before) ---------


def test_a_comment_on_a_foreign_key_to_a_partitioned_table(dbs: Databases) -> None:
    dbs.source.execute(
        "source_db",
        """
        CREATE TABLE regions (id int PRIMARY KEY) PARTITION BY RANGE (id);
        CREATE TABLE regions_low PARTITION OF regions FOR VALUES FROM (0) TO (100);
        CREATE TABLE stores (region_id int CONSTRAINT stores_region_fkey REFERENCES regions (id));
        INSERT INTO regions VALUES (1);
        INSERT INTO stores VALUES (1);
        COMMENT ON CONSTRAINT stores_region_fkey ON stores IS 'a key to a partitioned table';
        """,
    )
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    assert run.logs[-1]["copy_path"] == "parallel"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


def test_the_final_progress_line_is_100_percent_for_empty_tables(dbs: Databases) -> None:
    dbs.source.execute("source_db", "TRUNCATE users, films, film_category, actors, film_actors")
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    last = run.find("Copy progress")[-1]
    assert (last["tables_done"], last["rows"], last["percent"]) == (5, 0, 100.0)


# A built-in function only: user-defined code in a CHECK sends the source to the
# one-stream path (docs/parallel-copy.md, "When it is not used"). The source's INSERT runs before
# the test takes the lock; on the destination, the staging COPY waits for it.
GATED_COPY = """
CREATE DOMAIN public.gated AS int
    CHECK (VALUE IS NOT NULL AND pg_catalog.pg_advisory_xact_lock_shared(4243)::text = '');
CREATE TABLE public.gated_rows (v public.gated);
INSERT INTO public.gated_rows VALUES (1);
"""
# A safety net: a signalled job ends in well under a second.
PROMPT_EXIT_SECONDS = 10.0


# Rows that make gated_rows larger than insession.SMALL_TABLE_BYTES.
LARGE_GATED_ROWS = 400_000


@pytest.mark.parametrize("by_psql", [False, True], ids=["in_session", "psql_pair"])
def test_sigterm_while_a_copy_waits_in_the_destination_ends_the_job(
    dbs: Databases, by_psql: bool
) -> None:
    dbs.source.execute("source_db", GATED_COPY)
    if by_psql:
        more = f"INSERT INTO public.gated_rows SELECT 1 FROM generate_series(2, {LARGE_GATED_ROWS})"
        dbs.source.execute("source_db", more)
    size = dbs.source.query("source_db", "SELECT pg_table_size('public.gated_rows')")[0][0]
    assert (size >= SMALL_TABLE_BYTES) == by_psql, size
    env = dbs.env()
    with dbs.destination.connect("destination_db") as holder:
        holder.execute("SELECT pg_advisory_lock(4243)")
        job = start_job(env)
        wait_until(lambda: build_is_waiting(dbs), "the COPY into the staging table to wait")
        children = descendants(job.pid)
        # A small table is copied by the job's own sessions, a large one by psql.
        by = any("FROM STDIN" in cmdline for cmdline in children.values())
        assert by == by_psql, children
        job.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            job.wait(timeout=PROMPT_EXIT_SECONDS)
        ended_while_held = job.returncode is not None
    run = finish(job, env)  # the lock is released: the job ends either way

    assert ended_while_held, "the job waited for the COPY it had abandoned"
    assert run.returncode == 143
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the job"
    assert_no_staging_left(dbs)
