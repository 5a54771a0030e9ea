"""The parallel copy's two ways of moving rows, chosen by a table's size
(elt/parallel/insession.py: small tables through the workers' sessions;
elt/parallel/transfer.py: large ones through a psql pair), against real servers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import (
    Databases,
    elt_sessions,
    finish,
    leftovers,
    run_elt,
    start_job,
    the_error,
    wait_until,
)
from elt.parallel.insession import SMALL_TABLE_BYTES, Cancelled, SessionPair, copy_rows
from elt.parallel.tables import CopyTable
from elt.progress import Progress

# Text-format rows (a user-defined type sends a table to text) and binary ones,
# each in a small table and in one just over the threshold.
TABLES = """
CREATE TYPE public.mood AS ENUM ('calm', 'tense');
CREATE TABLE public.{name}_text (id int PRIMARY KEY, note text, m public.mood, at timestamptz);
CREATE TABLE public.{name}_binary (id int PRIMARY KEY, note text, at timestamptz, v numeric);
CREATE INDEX ON public.{name}_text (note);
INSERT INTO public.{name}_text
    SELECT i, repeat(E'tab\\there ', i % 5) || i, 'tense', '2026-01-01 12:00+02'::timestamptz + i * interval '1 min'
    FROM generate_series(1, {rows}) AS i;
INSERT INTO public.{name}_binary
    SELECT i, 'ümlaut ' || i, '2026-01-01 12:00+02'::timestamptz, i / 7.0
    FROM generate_series(1, {rows}) AS i;
"""
SMALL_ROWS = 50
LARGE_ROWS = 120_000  # about 9 MB per table: over SMALL_TABLE_BYTES


@pytest.fixture
def dbs(dbs: Databases) -> Databases:
    dbs.path = "parallel"
    return dbs


def test_small_tables_go_through_sessions_and_large_ones_through_psql(dbs: Databases) -> None:
    dbs.source.execute("source_db", TABLES.format(name="small", rows=SMALL_ROWS))
    large = TABLES.format(name="large", rows=LARGE_ROWS).replace("CREATE TYPE", "-- ")
    dbs.source.execute("source_db", large)
    sizes = dict(
        dbs.source.query(
            "source_db",
            "SELECT relname::text, pg_table_size(oid) FROM pg_class "
            "WHERE relname IN ('small_text', 'small_binary', 'large_text', 'large_binary')",
        )
    )
    assert all(
        (size >= SMALL_TABLE_BYTES) == name.startswith("large") for name, size in sizes.items()
    ), sizes

    run = run_elt(dbs.env(ELT_LOG_LEVEL="DEBUG"))

    assert run.returncode == 0, run.stdout
    assert run.stderr == ""
    assert run.logs[-1]["copy_path"] == "parallel"
    through = {line["table"]: line["through"] for line in run.find("Rows moved")}
    assert through["public.large_text"] == through["public.large_binary"] == "psql"
    assert through["public.small_text"] == through["public.small_binary"] == "sessions"
    assert {t for t, way in through.items() if way == "psql"} == {
        "public.large_text",
        "public.large_binary",
    }
    copied = {line["table"]: line["rows"] for line in run.find("Table copied")}
    assert copied["public.small_text"] == copied["public.small_binary"] == SMALL_ROWS
    assert copied["public.large_text"] == copied["public.large_binary"] == LARGE_ROWS
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


# A text-format table (a domain is not a built-in type) and a binary one, both
# small; each value's bytes as stored (see tests/test_sources.py).
WORD_TABLES = """
CREATE DOMAIN public.word AS text;
CREATE TABLE public.words_text (id int PRIMARY KEY, w public.word);
CREATE TABLE public.words_binary (id int PRIMARY KEY, w text);
"""
INSERT_WORD = "INSERT INTO public.{table} SELECT 1, convert_from(%(raw)s, 'SQL_ASCII')"
STORED = "SELECT convert_to(w, 'SQL_ASCII') FROM public.{table}"
# (source encoding, destination encoding, a word as the source stores it, as the
# destination must store it, whether the rows travel in UTF8)
WORD_CASES = {
    "LATIN1 into UTF8": ("LATIN1", "UTF8", "café ÿ".encode("latin1"), "café ÿ".encode(), False),
    "UTF8 into LATIN1": ("UTF8", "LATIN1", "café ÿ".encode(), "café ÿ".encode("latin1"), True),
    "SQL_ASCII holding LATIN1 bytes into SQL_ASCII": (
        "SQL_ASCII", "SQL_ASCII", "café".encode("latin1"), "café".encode("latin1"), False,
    ),
    "SQL_ASCII holding UTF-8 into UTF8": (
        "SQL_ASCII", "UTF8", "naïve ☃".encode(), "naïve ☃".encode(), True,
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("source", "destination", "word", "stored", "utf8"), WORD_CASES.values(), ids=WORD_CASES.keys()
)
def test_text_in_other_encodings_through_the_sessions(
    dbs: Databases, source: str, destination: str, word: bytes, stored: bytes, utf8: bool
) -> None:
    """Text-format rows go through the sessions in any encoding (COPY's ENCODING
    option); binary ones only when they travel in the sessions' UTF8."""
    dbs.source.recreate_database(dbs.source_db, encoding=source)
    dbs.destination.recreate_database(dbs.destination_db, encoding=destination)
    with dbs.source.connect(dbs.source_db) as conn:
        conn.execute(WORD_TABLES)
        for table in ("words_text", "words_binary"):
            conn.execute(INSERT_WORD.format(table=table), {"raw": word})

    run = run_elt(dbs.env(ELT_LOG_LEVEL="DEBUG"))

    assert run.returncode == 0, run.stdout
    assert run.stderr == ""
    through = {line["table"]: line["through"] for line in run.find("Rows moved")}
    assert through == {
        "public.words_text": "sessions",
        "public.words_binary": "sessions" if utf8 else "psql",
    }
    for table in ("words_text", "words_binary"):
        query = STORED.format(table=table)
        assert dbs.destination.query(dbs.destination_db, query) == [(stored,)], table


# The largest table, copied first; its load on the destination waits at its
# first row for an advisory lock the test holds (a built-in function in a
# domain CHECK, as in tests/test_parallel_copy.py).
GATED_FIRST = """
CREATE DOMAIN public.gated AS int
    CHECK (VALUE IS NOT NULL AND pg_catalog.pg_advisory_xact_lock_shared(4244)::text = '');
CREATE TABLE public.gated_rows (v public.gated, pad text);
INSERT INTO public.gated_rows SELECT i, repeat('x', 100) FROM generate_series(1, 2000) AS i;
"""
SOURCE_COPY_SESSION = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = 'elt_pipeline' "
    "AND query LIKE 'COPY %TO STDOUT%'"
)


def test_a_source_session_lost_between_tables_is_an_extract_error(dbs: Databases) -> None:
    """The sessions' source side ends (its server process is terminated) while
    the first table's load waits; the next table read through it fails: exit 4,
    the destination unchanged."""
    dbs.source.execute("source_db", GATED_FIRST)
    before = dbs.destination.fingerprint("destination_db")
    env = dbs.env(ELT_VALIDATION="off")
    with dbs.destination.connect("destination_db") as holder:
        holder.execute("SELECT pg_advisory_lock(4244)")
        job = start_job(env)
        wait_until(
            lambda: elt_sessions(dbs.destination, "wait_event = 'advisory'") == 1,
            "the first table's load to wait",
        )
        (pid,) = [row[0] for row in dbs.source.query("postgres", SOURCE_COPY_SESSION)]
        dbs.source.execute("postgres", f"SELECT pg_terminate_backend({pid}, 10000)")
    run = finish(job, env)  # the lock is released: the first table's load ends

    assert run.returncode == 4, run.stdout
    error = the_error(run)
    assert error["message"] == "Data extraction failed"
    assert "SOURCE_POSTGRES_USER" in error["hint"]
    assert dbs.destination.fingerprint("destination_db") == before
    assert leftovers(dbs) == ([], [])


# A row the destination refuses and the source holds: the domain's CHECK
# (built-in functions only) depends on the database it runs in.
REFUSED_BY_THE_DESTINATION = """
CREATE DOMAIN public.here_only AS text
    CHECK (VALUE <> 'refused' OR pg_catalog.current_database() = 'source_db');
CREATE TABLE public.refused_rows (v public.here_only);
INSERT INTO public.refused_rows VALUES ('fine'), ('refused');
"""


def test_a_row_the_destination_refuses_in_a_session_copy_is_a_load_error(dbs: Databases) -> None:
    dbs.source.execute("source_db", REFUSED_BY_THE_DESTINATION)
    before = dbs.destination.fingerprint("destination_db")

    run = run_elt(dbs.env(ELT_LOG_LEVEL="DEBUG"))

    assert run.returncode == 5, run.stdout
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert any("here_only" in line for line in error["stderr_tail"]), error
    # All small, so the tables copied before it went through the sessions, as it did.
    assert all(line["through"] == "sessions" for line in run.find("Rows moved"))
    assert dbs.destination.fingerprint("destination_db") == before
    assert leftovers(dbs) == ([], [])


def test_a_missing_psql_fails_a_run_of_small_tables_too(dbs: Databases, tmp_path: Path) -> None:
    """psql moves only large tables' rows, and is still required up front (as
    pg_dump and pg_restore are), not only by runs that have a large table."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("pg_isready", "pg_dump", "pg_restore"):
        (tools / name).symlink_to(dbs.source.bindir / name)
    before = dbs.destination.fingerprint("destination_db")

    run = run_elt(dbs.env(PATH=str(tools)))

    assert run.returncode != 0, run.stdout
    error = the_error(run)
    assert "psql" in error["error"], error
    assert not run.find("Table copied")
    assert dbs.destination.fingerprint("destination_db") == before
    assert leftovers(dbs) == ([], [])


# Rows enough for several of the relay's writes (insession._WRITE_BYTES).
STOPPED_ROWS = """
CREATE TABLE public.stopped (id int, note text);
INSERT INTO public.stopped SELECT i, repeat('x', 100) FROM generate_series(1, 5000) AS i;
"""
STOPPED_STAGING = """
CREATE SCHEMA stage;
CREATE TABLE stage.stopped (id int, note text);
INSERT INTO stage.stopped VALUES (0, 'kept');
"""


def test_a_session_copy_stopped_between_writes_raises_cancelled_and_commits_nothing(
    dbs: Databases,
) -> None:
    """The worker's flag, set once the first write is in: the relay raises the
    worker's Cancelled at the next write, and the staging table's TRUNCATE and
    rows are rolled back with the COPY."""
    dbs.source.execute("source_db", STOPPED_ROWS)
    dbs.destination.execute("destination_db", STOPPED_STAGING)
    table = CopyTable("public", "stopped", 0, ("id", "note"), binary=False)
    progress = Progress(logging.getLogger("test"), 1, 1, 3600.0)
    checks: list[bool] = []

    def cancelled() -> bool:
        checks.append(len(checks) > 0)
        return checks[-1]

    with (
        dbs.source.connect("source_db", autocommit=False) as source,
        dbs.destination.connect("destination_db", autocommit=False) as destination,
    ):
        pair = SessionPair(source, destination)
        with pytest.raises(Cancelled):
            copy_rows(pair, progress, table, "stage", encoding="UTF8", cancelled=cancelled)
        destination.rollback()

    assert checks == [False, True]
    assert dbs.destination.query("destination_db", "TABLE stage.stopped") == [(0, "kept")]
