"""Cross-version tier: the upgrade path users take, and the README's version rule.

The default servers are PostgreSQL 17, what compose ships. Here a PostgreSQL
15 source (Debian's) is copied into a 17 destination with 17's client tools,
and client tools older than the source are refused before the destination is
touched. Skipped, with the reason printed, where Debian's 15 is not installed
(`bash .ci/run` installs it as root).
"""

from __future__ import annotations

import os
import platform
import sys

import pytest

from conftest import (
    SEED_COUNTS,
    SEEDED_TEMPLATE,
    Databases,
    PgServer,
    pytest_report_header,
    run_elt,
    the_error,
)
from elt.extract import tool_major


def tools_path(server: PgServer) -> str:
    """PATH with `server`'s client tools first: the job runs whatever pg_dump PATH finds."""
    return f"{server.bindir}{os.pathsep}{os.environ.get('PATH', '')}"


def rows(server: PgServer, dbname: str) -> dict[str, list[str]]:
    """Every row of every seed table, as text, in a stable order."""
    return {
        table: [
            str(r[0])
            for r in server.query(dbname, f"SELECT t::text FROM public.{table} t ORDER BY 1")
        ]
        for table in SEED_COUNTS
    }


def dump_with(tools: PgServer, server: PgServer, dbname: str) -> str:
    """`server`'s database as `tools`'s pg_dump prints it, less the server's version line."""
    dump = server.fingerprint(dbname, tools=tools.bindir)
    return "\n".join(x for x in dump.splitlines() if not x.startswith("-- Dumped from"))


@pytest.mark.parametrize("path", ["streamed", "parallel"])
def test_a_15_source_copies_into_a_17_destination_with_17s_tools(
    old_source_server: PgServer, destination_server: PgServer, path: str
) -> None:
    old_source_server.recreate_database("source_db", template=SEEDED_TEMPLATE)
    destination_server.recreate_database("destination_db")
    dbs = Databases(old_source_server, destination_server, path=path)

    run = run_elt(dbs.env(PATH=tools_path(destination_server)))

    assert run.returncode == 0, run.stdout + run.stderr
    (final,) = run.find("ELT pipeline completed successfully")
    assert final["copy_path"] == path
    assert final["rows"] == sum(SEED_COUNTS.values())
    assert rows(destination_server, "destination_db") == rows(old_source_server, "source_db")
    assert dump_with(destination_server, destination_server, "destination_db") == dump_with(
        destination_server, old_source_server, "source_db"
    )


@pytest.mark.parametrize("path", ["streamed", "parallel"])
def test_tools_older_than_the_source_are_refused_before_the_destination_is_touched(
    source_server: PgServer, destination_server: PgServer, old_source_server: PgServer, path: str
) -> None:
    source_server.recreate_database("source_db", template=SEEDED_TEMPLATE)
    destination_server.recreate_database("destination_db")
    destination_server.execute(
        "destination_db", "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)"
    )
    before = destination_server.fingerprint("destination_db")
    dbs = Databases(source_server, destination_server, path=path)

    run = run_elt(dbs.env(PATH=tools_path(old_source_server)))  # 15's tools, a 17 source

    assert run.returncode == 4, run.stdout + run.stderr
    error = the_error(run)
    assert error["message"] == "Data extraction failed"
    assert error["error"] == (
        "The client tools are older than the source server: pg_dump 15 cannot dump "
        "PostgreSQL 17; nothing was changed"
    )
    assert "PostgreSQL 17 or newer" in error["hint"]
    assert error["pg_dump_version"].startswith("pg_dump (PostgreSQL) 15.")
    # Refused before any copying: nothing started, nothing staged, nothing changed.
    assert "Starting data extraction from source database" not in run.messages()
    assert destination_server.fingerprint("destination_db") == before


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ("pg_dump (PostgreSQL) 17.11\n", 17),
        ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", 15),
        ("pg_dump (PostgreSQL) 18beta1\n", 18),
        ("something else\n", None),
    ],
)
def test_tool_major(output: str, major: int | None) -> None:
    assert tool_major(output) == major


def test_the_header_names_the_server_the_tests_run(
    pytestconfig: pytest.Config, source_server: PgServer
) -> None:
    header = pytest_report_header(pytestconfig)
    running = str(source_server.query("postgres", "SHOW server_version")[0][0]).split()[0]
    assert f"PostgreSQL server: {running} ({source_server.bindir})" in header
    assert f"Python: {platform.python_version()} ({sys.executable})" in header
