"""The parallel copy's exact argument lists and session options (elt/parallel/commands.py).
No database.
"""

from __future__ import annotations

import pytest

from elt.config import DatabaseSettings
from elt.parallel.commands import (
    copy_in_argv,
    copy_out_argv,
    copy_session_options,
    entry_sql_argv,
    restore_env,
    schema_dump_argv,
    schema_restore_argv,
)
from elt.parallel.tables import CopyTable

SECRET = "s3cr'et pw-" + "x" * 8
SOURCE = DatabaseSettings("source", "src.example", 5433, "shop", "reader", SECRET)
DESTINATION = DatabaseSettings("destination", "dst.example", 6432, "warehouse", "loader", SECRET)
QUOTED = CopyTable("Sales", 'Order "Items"', 1, ("id", "naïve col"), binary=False)
PLAIN = CopyTable("public", "users", 1, ("id",), binary=True)
PSQL = ["psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1"]
SRC = ["-h", "src.example", "-p", "5433", "-U", "reader", "-d", "shop"]
DST = ["-h", "dst.example", "-p", "6432", "-U", "loader", "-d", "warehouse"]
SNAPSHOT = "00000003-0000001A-1"

ARGVS: dict[str, tuple[list[str], list[str]]] = {
    "copy out, text": (
        copy_out_argv(SOURCE, SNAPSHOT, QUOTED),
        [
            *PSQL,
            *SRC,
            "-c",
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            "-c",
            "SET TRANSACTION SNAPSHOT '00000003-0000001A-1'",
            "-c",
            'COPY "Sales"."Order ""Items""" ("id", "naïve col") TO STDOUT (FORMAT text)',
            "-c",
            "COMMIT",
        ],
    ),
    "copy in, binary": (
        copy_in_argv(DESTINATION, "elt_staging_0", PLAIN),
        [
            *PSQL,
            *DST,
            "-c",
            "BEGIN",
            "-c",
            'TRUNCATE "elt_staging_0"."users"',
            "-c",
            'COPY "elt_staging_0"."users" ("id") FROM STDIN (FORMAT binary, FREEZE)',
            "-c",
            "\\echo elt_rows=:ROW_COUNT",
            "-c",
            "COMMIT",
        ],
    ),
    "copy in, text": (
        copy_in_argv(DESTINATION, "elt_staging_1", QUOTED),
        [
            *PSQL,
            *DST,
            "-c",
            "BEGIN",
            "-c",
            'TRUNCATE "elt_staging_1"."Order ""Items"""',
            "-c",
            'COPY "elt_staging_1"."Order ""Items""" ("id", "naïve col") '
            "FROM STDIN (FORMAT text, FREEZE)",
            "-c",
            "\\echo elt_rows=:ROW_COUNT",
            "-c",
            "COMMIT",
        ],
    ),
    "schema dump in the snapshot": (
        schema_dump_argv(SOURCE, SNAPSHOT, []),
        [
            "pg_dump",
            *SRC,
            "--no-password",
            "--format=custom",
            "--schema-only",
            "--no-subscriptions",
            "--no-security-labels",
            "--snapshot=00000003-0000001A-1",
        ],
    ),
    "schema dump of exact schemas": (
        schema_dump_argv(DESTINATION, None, ["elt_staging_0", 'we"ird']),
        [
            "pg_dump",
            *DST,
            "--no-password",
            "--format=custom",
            "--schema-only",
            "--no-subscriptions",
            "--no-security-labels",
            "--schema",
            '"elt_staging_0"',
            "--schema",
            '"we""ird"',
        ],
    ),
    "schema restore into the scratch database": (
        schema_restore_argv(DESTINATION, "elt_scratch_16384", copy_ownership=False),
        [
            "pg_restore",
            *DST[:-1],
            "elt_scratch_16384",
            "--no-password",
            "--format=custom",
            "--single-transaction",
            "--exit-on-error",
            "--no-tablespaces",
            "--no-owner",
            "--no-privileges",
        ],
    ),
    "schema restore of pre-data, keeping owners": (
        schema_restore_argv(DESTINATION, "warehouse", copy_ownership=True, section="pre-data"),
        [
            "pg_restore",
            *DST,
            "--no-password",
            "--format=custom",
            "--single-transaction",
            "--exit-on-error",
            "--no-tablespaces",
            "--section=pre-data",
        ],
    ),
    "schema restore of a list": (
        schema_restore_argv(DESTINATION, "warehouse", copy_ownership=False, use_list=True),
        [
            "pg_restore",
            *DST,
            "--no-password",
            "--format=custom",
            "--single-transaction",
            "--exit-on-error",
            "--no-tablespaces",
            "--use-list=/dev/fd/{list}",
            "--no-owner",
            "--no-privileges",
        ],
    ),
    "entry SQL": (
        entry_sql_argv(copy_ownership=False),
        [
            "pg_restore",
            "--format=custom",
            "--use-list=/dev/fd/{list}",
            "--file=-",
            "--no-owner",
            "--no-privileges",
        ],
    ),
    "entry SQL, keeping owners": (
        entry_sql_argv(copy_ownership=True),
        ["pg_restore", "--format=custom", "--use-list=/dev/fd/{list}", "--file=-"],
    ),
}


@pytest.mark.parametrize(("argv", "expected"), ARGVS.values(), ids=ARGVS)
def test_tool_argv_is_exact_and_carries_no_password(argv: list[str], expected: list[str]) -> None:
    assert argv == expected
    assert not any(SECRET in arg for arg in argv)


SESSION_BASE = (
    "-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c row_security=off "
    "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
)


@pytest.mark.parametrize(
    ("version", "destination", "expected"),
    [
        (150000, False, SESSION_BASE),
        (150000, True, SESSION_BASE + " -c synchronous_commit=off"),
        (170000, False, SESSION_BASE + " -c transaction_timeout=0"),
        (170000, True, SESSION_BASE + " -c transaction_timeout=0 -c synchronous_commit=off"),
    ],
)
def test_copy_session_options(version: int, destination: bool, expected: str) -> None:
    assert copy_session_options(version, destination=destination) == expected


def test_restores_before_the_swap_commit_without_waiting_for_the_disk() -> None:
    env = restore_env(DESTINATION, 7)
    assert env["PGOPTIONS"] == "-c synchronous_commit=off"
    assert env["PGPASSWORD"] == SECRET  # the environment, never the argv
    assert env["PGCONNECT_TIMEOUT"] == "7"
