"""Tier 0: the exact argv and environment of every tool, and the pure decisions.

No database here: these pin down what the job asks of pg_isready, pg_dump,
pg_restore and psql, so that a change to a flag is a visible, reviewed change.
"""

from __future__ import annotations

import pytest

from elt.config import DatabaseSettings, load_settings
from elt.errors import ExtractError, LoadError
from elt.extract import copy_encoding, pg_dump_argv
from elt.failures import stream_failure
from elt.load import PREPARE_SQL, pg_restore_argv, psql_load_argv, schemas_literal
from elt.processes import StageResult, child_env
from elt.startup import pg_isready_argv
from elt.validate import compare_sequences, digest_encoding

SOURCE = DatabaseSettings("source", "src.example", 5437, "source_db", "reader", "pw-src")
DESTINATION = DatabaseSettings("destination", "dst.example", 5438, "dest db", "writer", "pw-dst")


def test_pg_isready_argv() -> None:
    assert pg_isready_argv(SOURCE, 5) == [
        "pg_isready", "-h", "src.example", "-p", "5437", "-U", "reader", "-d", "source_db", "-t", "5",
    ]  # fmt: skip


def test_pg_dump_argv() -> None:
    assert pg_dump_argv(SOURCE, "00000003-0000000E-1") == [
        "pg_dump", "-h", "src.example", "-p", "5437", "-U", "reader", "-d", "source_db",
        "--no-password", "--format=custom", "--compress=0", "--snapshot=00000003-0000000E-1",
        "--no-subscriptions", "--no-security-labels",
    ]  # fmt: skip


def test_pg_dump_argv_with_an_encoding() -> None:
    assert pg_dump_argv(SOURCE, "00000003-0000000E-1", "UTF8")[-1] == "--encoding=UTF8"


# (source, destination server encoding) -> the copy's client encoding, and the
# encoding both sides' digests convert text to (None: as stored)
ENCODING_PAIRS = [
    ("UTF8", "UTF8", "UTF8", None),
    ("LATIN1", "UTF8", "LATIN1", "UTF8"),
    ("UTF8", "LATIN1", "UTF8", "LATIN1"),
    ("SQL_ASCII", "UTF8", "UTF8", None),
    ("SQL_ASCII", "SQL_ASCII", "SQL_ASCII", None),
    ("LATIN1", "SQL_ASCII", "LATIN1", None),
]


@pytest.mark.parametrize(("source", "destination", "copy", "digest"), ENCODING_PAIRS)
def test_encodings_of_the_copy_and_the_digests(
    source: str, destination: str, copy: str, digest: str | None
) -> None:
    assert copy_encoding(source, destination) == copy
    assert digest_encoding(source, destination) == digest


@pytest.mark.parametrize(
    ("copy_ownership", "tail"),
    [(False, ["--no-owner", "--no-privileges"]), (True, [])],
)
def test_pg_restore_argv(copy_ownership: bool, tail: list[str]) -> None:
    assert pg_restore_argv(copy_ownership=copy_ownership) == [
        "pg_restore", "--format=custom", "--single-transaction", "--clean", "--if-exists",
        "--no-tablespaces", "--file=-", *tail,
    ]  # fmt: skip


def test_psql_load_argv_always_stops_on_error_and_ignores_psqlrc() -> None:
    argv = psql_load_argv(DESTINATION, ["public", "sales"], ['event trigger "a b"'])
    assert argv == [
        "psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
        "-h", "dst.example", "-p", "5438", "-U", "writer", "-d", "dest db",
        "-v", 'schemas={"public","sales"}',
        "-v", r'recreated={"event trigger \"a b\""}',
        "-v", "lock_key=4541524",
        "-f", str(PREPARE_SQL), "-f", "-",
    ]  # fmt: skip
    assert PREPARE_SQL.is_file()


@pytest.mark.parametrize(
    ("schemas", "literal"),
    [
        ([], "{}"),
        (["public"], '{"public"}'),
        (
            ['we"ird', "back\\slash", "Mixed Case", "ü,{x}"],
            r'{"we\"ird","back\\slash","Mixed Case","ü,{x}"}',
        ),
    ],
)
def test_schemas_literal_quotes_every_element(schemas: list[str], literal: str) -> None:
    assert schemas_literal(schemas) == literal


def test_no_password_in_any_argv() -> None:
    argvs = [
        pg_isready_argv(SOURCE, 5),
        pg_dump_argv(SOURCE, "snap"),
        pg_restore_argv(copy_ownership=True),
        psql_load_argv(DESTINATION, ["public"]),
    ]
    for argv in argvs:
        assert not any("pw-" in arg for arg in argv)


def test_child_env_carries_only_its_own_sides_password() -> None:
    inherited = {
        "PATH": "/bin",
        "PGPASSWORD": "leaked",
        "PGHOST": "elsewhere",
        "PGSERVICE": "svc",
        "PGSSLMODE": "require",
        "SOURCE_POSTGRES_PASSWORD": "pw-src",
    }
    env = child_env(DESTINATION, 7, base=inherited)
    assert env["PGPASSWORD"] == "pw-dst"
    assert "PGHOST" not in env
    assert "PGSERVICE" not in env
    assert env["PGSSLMODE"] == "require"  # the user's TLS choice is kept
    assert env["PGCONNECT_TIMEOUT"] == "7"
    assert env["PGPASSFILE"] == "/dev/null"
    assert env["PATH"] == "/bin"
    assert "PGPASSWORD" not in child_env(None, 7, base=inherited)


def test_child_env_without_password() -> None:
    nopw = DatabaseSettings("source", "h", 1, "d", "u", None)
    assert "PGPASSWORD" not in child_env(nopw, 5, base={"PGPASSWORD": "leaked"})


def _results(dump: int, restore: int, psql: int) -> list[StageResult]:
    return [
        StageResult("pg_dump", dump, ["pg_dump: error: dump"]),
        StageResult("pg_restore", restore, ["pg_restore: error: restore"]),
        StageResult("psql", psql, ["psql: error: psql"]),
    ]


# (pg_dump, pg_restore, psql) exit codes -> failure class and the blamed tool.
# Negative codes are signals; -15 is the SIGTERM the pipeline sends the
# survivors after the first failure, so it never decides the blame.
FAILURES = [
    ((0, 0, 0), None, None),
    ((1, 1, 0), ExtractError, "pg_dump"),  # source died: psql saw EOF, rolled back
    ((1, -15, -15), ExtractError, "pg_dump"),
    ((-13, 1, 3), LoadError, "psql"),  # destination error: upstream got EPIPE
    ((1, 1, 2), LoadError, "psql"),  # destination died mid-load
    ((-15, -15, 3), LoadError, "psql"),
    ((0, 1, 0), LoadError, "pg_restore"),
    ((0, 0, -9), LoadError, "psql"),
]


@pytest.mark.parametrize(("codes", "kind", "tool"), FAILURES)
def test_failures_are_blamed_on_the_right_step(
    codes: tuple[int, int, int], kind: type | None, tool: str | None
) -> None:
    failure = stream_failure(_results(*codes))
    if kind is None:
        assert failure is None
        return
    assert isinstance(failure, kind)
    assert failure is not None
    assert tool is not None
    assert failure.context["tool"] == tool
    assert failure.stderr_tail == [f"{tool}: error: {tool.removeprefix('pg_')}"]


SEQUENCES = [
    # before, after, destination, mismatches
    ({"s": 5}, {"s": 5}, {"s": 5}, []),
    ({"s": 5}, {"s": 5}, {"s": 4}, ["s"]),
    ({"s": 5}, {"s": 9}, {"s": 7}, []),  # advanced during the dump
    ({"s": 5}, {"s": 9}, {"s": 10}, ["s"]),
    ({"s": None}, {"s": None}, {"s": None}, []),  # never used
    ({"s": None}, {"s": 3}, {"s": None}, []),
    ({"s": None}, {"s": None}, {"s": 1}, ["s"]),
    ({"s": 1}, {"s": 1}, {}, ["s"]),  # missing in the destination
]


@pytest.mark.parametrize(("before", "after", "destination", "bad"), SEQUENCES)
def test_sequence_comparison(
    before: dict[str, int | None],
    after: dict[str, int | None],
    destination: dict[str, int | None],
    bad: list[str],
) -> None:
    assert compare_sequences(before, after, destination) == bad


def test_settings_feed_the_builders() -> None:
    settings = load_settings(
        {"SOURCE_POSTGRES_PASSWORD": "a", "DESTINATION_POSTGRES_PASSWORD": "b"}
    )
    assert pg_dump_argv(settings.source, "x")[1:9] == [
        "-h", "source_postgres", "-p", "5432", "-U", "postgres", "-d", "source_db",
    ]  # fmt: skip
