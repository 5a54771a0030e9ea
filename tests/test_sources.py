"""Tier 1: sources as people really have them (issue #10), on both copy paths.

Databases in other server encodings (SQL_ASCII, LATIN1), a hot standby with
unlogged tables, and passwords that are also names. Each case must give the
same outcome and exit code on both paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from conftest import (
    SEED_COUNTS,
    SEED_DIR,
    Databases,
    PgServer,
    both_paths,
    run_elt,
    wait_for_replay,
)
from elt.extract import SourceSnapshot


@pytest.fixture(params=["streamed", "parallel"])
def dbs(request: pytest.FixtureRequest, dbs: Databases) -> Databases:
    return both_paths(request, dbs)


# Text in every form the digest reads it: a text column (hashed directly), a
# varchar, an array (through its text form), a primary key and an index on it.
WORDS_TABLE = """
CREATE TABLE public.words (
    id int PRIMARY KEY,
    w text NOT NULL,
    v varchar(40),
    a text[]
);
CREATE INDEX words_w ON public.words (w);
"""
# A value's bytes as the server stores them, whatever the database's encoding:
# convert_from(..., 'SQL_ASCII') takes them as they are (after checking them
# against the database's encoding), convert_to(..., 'SQL_ASCII') gives them back.
INSERT_WORD = (
    "INSERT INTO public.words "
    "SELECT %(id)s, w, w, ARRAY[w, 'x'] FROM convert_from(%(raw)s, 'SQL_ASCII') AS w"
)
RAW_WORDS = "SELECT id, convert_to(w, 'SQL_ASCII') FROM public.words ORDER BY id"

ASCII = b"plain ascii, it's fine"
# (source encoding, destination encoding, a word as the source stores it, the
# same word as the destination must store it; None: it cannot be stored there)
ENCODING_CASES = {
    "SQL_ASCII holding UTF-8 into UTF8": (
        "SQL_ASCII", "UTF8", "naïve ☃".encode(), "naïve ☃".encode(),
    ),
    "SQL_ASCII holding LATIN1 bytes into SQL_ASCII": (
        "SQL_ASCII", "SQL_ASCII", "café".encode("latin1"), "café".encode("latin1"),
    ),
    "LATIN1 into UTF8": ("LATIN1", "UTF8", "café ÿ".encode("latin1"), "café ÿ".encode()),
    "UTF8 into LATIN1": ("UTF8", "LATIN1", "café ÿ".encode(), "café ÿ".encode("latin1")),
    "SQL_ASCII holding LATIN1 bytes into UTF8": (
        "SQL_ASCII", "UTF8", "café".encode("latin1"), None,
    ),
    "UTF8 into LATIN1, with a character LATIN1 lacks": (
        "UTF8", "LATIN1", "snow ☃".encode(), None,
    ),
}  # fmt: skip


def encoded_databases(dbs: Databases, source: str, destination: str, word: bytes) -> None:
    dbs.source.recreate_database(dbs.source_db, encoding=source)
    dbs.destination.recreate_database(dbs.destination_db, encoding=destination)
    with dbs.source.connect(dbs.source_db) as conn:
        conn.execute(WORDS_TABLE)
        for key, raw in enumerate([ASCII, word]):
            conn.execute(INSERT_WORD, {"id": key, "raw": raw})


@pytest.mark.parametrize(
    ("source", "destination", "word", "stored"),
    ENCODING_CASES.values(),
    ids=ENCODING_CASES.keys(),
)
def test_sources_in_other_encodings_copy_and_validate(
    dbs: Databases, source: str, destination: str, word: bytes, stored: bytes | None
) -> None:
    encoded_databases(dbs, source, destination, word)

    for attempt in (1, 2):  # a re-run too: the first run leaves the table behind
        run = run_elt(dbs.env())
        if stored is None:
            # PostgreSQL cannot store these bytes in the destination's encoding:
            # one line naming both encodings and what to change; nothing changed.
            assert run.returncode == 5, run.stdout
            (error,) = run.errors()
            assert error["message"] == "Data load failed"
            assert source in error["error"]
            assert destination in error["error"]
            assert "ENCODING" in error["hint"]
            assert dbs.destination.query(
                dbs.destination_db, "SELECT to_regclass('public.words') IS NULL"
            ) == [(True,)]
            continue
        assert run.returncode == 0, f"run {attempt}: {run.stdout}"
        assert run.stderr == ""
        assert run.logs[-1]["copy_path"] == dbs.path
        (summary,) = run.find("Validation summary")
        assert summary["tables_checked"] == 1
        assert summary["tables_mismatched"] == 0
        rows = dbs.destination.query(dbs.destination_db, RAW_WORDS)
        assert rows == [(0, ASCII), (1, stored)]


def test_a_sql_ascii_source_with_names_that_are_not_utf8_is_refused(dbs: Databases) -> None:
    dbs.source.recreate_database(dbs.source_db, encoding="SQL_ASCII")
    dbs.source.execute(
        dbs.source_db,
        "DO $$ BEGIN EXECUTE format('CREATE TABLE public.%I (id int)', "
        "convert_from('\\x636166e9'::bytea, 'SQL_ASCII')); END $$",
    )

    run = run_elt(dbs.env())

    assert run.returncode == 4, run.stdout
    (error,) = run.errors()
    assert "not valid UTF-8" in error["error"]
    assert "Rename" in error["hint"]


def test_a_snapshot_id_read_as_bytes_is_a_bug_not_a_tool_failure(dbs: Databases) -> None:
    # A driver session that returns text as bytes (psycopg does so on a
    # SQL_ASCII database unless the job asks for UTF8) must not produce a
    # snapshot ID such as "b'00000004-...'" that pg_dump then rejects.
    dbs.source.recreate_database(dbs.source_db, encoding="SQL_ASCII")
    conn = psycopg.connect(
        host="127.0.0.1",
        port=dbs.source.port,
        user=dbs.source.user,
        password=dbs.source.password,
        dbname=dbs.source_db,
    )
    with conn, pytest.raises(TypeError, match="snapshot"):
        SourceSnapshot(conn)


UNLOGGED = """
CREATE UNLOGGED TABLE public.scratch_pad (id int PRIMARY KEY, note text);
CREATE INDEX scratch_pad_note ON public.scratch_pad (note);
INSERT INTO public.scratch_pad SELECT g, 'note ' || g FROM generate_series(1, 50) AS g;
CREATE UNLOGGED SEQUENCE public.scratch_ids;
"""


@pytest.fixture(params=["streamed", "parallel"])
def standby_dbs(
    request: pytest.FixtureRequest,
    replica_pair: tuple[PgServer, PgServer],
    destination_server: PgServer,
) -> Databases:
    """The seed plus an unlogged table on a primary, read from its hot standby."""
    primary, standby = replica_pair
    primary.recreate_database("source_db")
    for script in sorted(SEED_DIR.glob("*.sql")):
        primary.psql("source_db", "-f", str(script))
    primary.execute("source_db", UNLOGGED)
    wait_for_replay(primary, standby)
    destination_server.recreate_database("destination_db")
    return Databases(standby, destination_server, path=request.param)


def test_a_hot_standby_source_copies_unlogged_tables_without_rows(standby_dbs: Databases) -> None:
    dbs = standby_dbs
    assert dbs.source.query("postgres", "SELECT pg_is_in_recovery()") == [(True,)]

    for attempt in (1, 2):
        run = run_elt(dbs.env())

        assert run.returncode == 0, f"run {attempt}: {run.stdout}"
        assert run.stderr == ""
        assert run.logs[-1]["copy_path"] == dbs.path
        (warning,) = [line for line in run.logs if line["level"] == "WARNING"]
        assert warning["message"] == "Unlogged tables copied without their rows"
        assert warning["tables"] == ["public.scratch_pad"]
        assert warning["sequences"] == ["public.scratch_ids"]
        assert "standby" in warning["reason"]
        assert "primary" in warning["reason"]
        (summary,) = run.find("Validation summary")
        assert summary["tables_checked"] == len(SEED_COUNTS)
        assert summary["tables_mismatched"] == 0
        assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS
        # The definition came along, unlogged, with its index, and no rows.
        assert dbs.destination.query(
            "destination_db",
            "SELECT c.relpersistence, (SELECT count(*) FROM public.scratch_pad), "
            "to_regclass('public.scratch_pad_note') IS NOT NULL "
            "FROM pg_class AS c WHERE c.oid = 'public.scratch_pad'::regclass",
        ) == [("u", 0, True)]


# --- passwords that are also names (issue #10, case 11) -------------------------

SHORT_USER = "elt_short_password"


@pytest.fixture
def short_passwords(dbs: Databases) -> Iterator[dict[str, Any]]:
    """A role whose password is "secret" on the source and "app" on the
    destination (the compose default, and a common short one), a table named
    public.secret and a destination database named bench_app."""
    for server, password in ((dbs.source, "secret"), (dbs.destination, "app")):
        server.execute(
            "postgres",
            f"DROP ROLE IF EXISTS {SHORT_USER}; "
            f"CREATE ROLE {SHORT_USER} LOGIN SUPERUSER PASSWORD '{password}'",
        )
    dbs.destination.recreate_database("bench_app")
    dbs.source.execute(
        "source_db", "CREATE TABLE public.secret (id int); INSERT INTO secret VALUES (1)"
    )
    try:
        yield {
            "SOURCE_POSTGRES_USER": SHORT_USER,
            "SOURCE_POSTGRES_PASSWORD": "secret",
            "DESTINATION_POSTGRES_USER": SHORT_USER,
            "DESTINATION_POSTGRES_PASSWORD": "app",
            "DESTINATION_POSTGRES_DB": "bench_app",
        }
    finally:
        with dbs.destination.connect() as conn:
            conn.execute('DROP DATABASE IF EXISTS "bench_app" WITH (FORCE)')
        for server in (dbs.source, dbs.destination):
            server.execute("postgres", f"DROP ROLE IF EXISTS {SHORT_USER}")


def test_names_that_contain_a_password_are_logged_intact(
    dbs: Databases, short_passwords: dict[str, str]
) -> None:
    run = run_elt(dbs.env(**short_passwords), check_secrets=False)

    assert run.returncode == 0, run.stdout
    assert "********" not in run.stdout
    validated = {line["table"] for line in run.find("Table validated")}
    assert '"public"."secret"' in validated
    assert run.logs[-1]["destination"] == "127.0.0.1/bench_app"
