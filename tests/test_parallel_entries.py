"""The build entries' SQL printed by one pg_restore and cut per entry
(elt/parallel/entries.py), against what pg_restore prints for each entry alone."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import Databases, PgServer, run_elt
from elt.config import DatabaseSettings, Settings
from elt.parallel.entries import entry_sql, printed_entries, runnable_sql, split_printed
from elt.parallel.toc import TocEntry, parse_toc

# Indexes and keys of every form the build tasks restore, one with a partial
# index whose predicate holds comment-like lines, and a foreign key.
SCHEMA = """
CREATE SCHEMA "Odd Name";
CREATE TABLE "Odd Name".t (
    id int CONSTRAINT t_pk PRIMARY KEY WITH (fillfactor = 70),
    code text CONSTRAINT t_code UNIQUE NULLS NOT DISTINCT,
    a int, b int, during tstzrange,
    CONSTRAINT t_a UNIQUE (a) INCLUDE (b) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT t_no_overlap EXCLUDE USING gist (during WITH &&)
);
CREATE INDEX t_partial ON "Odd Name".t (a) WHERE code <> E'\\n--\\n-- Name: x; Type: INDEX\\n--';
CREATE INDEX t_expr ON "Odd Name".t ((a + b));
ALTER INDEX "Odd Name".t_expr ALTER COLUMN 1 SET STATISTICS 100;
ALTER TABLE "Odd Name".t CLUSTER ON t_code;
CREATE TABLE "Odd Name".child (t_id int CONSTRAINT child_t REFERENCES "Odd Name".t (id));
CREATE INDEX child_t_id ON "Odd Name".child USING hash (t_id);
"""
# A predicate holding a line exactly like a --verbose header.
FORGED_HEADER = """
CREATE INDEX forged ON public.users (id) WHERE email <> E'x\\n--\\n-- TOC entry 1 (class 1 OID 1)\\n';
"""
BUILT = ("INDEX", "CONSTRAINT", "FK CONSTRAINT")
# Lines only --verbose writes (comments), and the random key of \restrict.
VERBOSE_ONLY = ("-- TOC entry ", "-- Dependencies: ", "-- Data Pos: ", "-- Started on ")


def settings_for(server: PgServer) -> Settings:
    db = DatabaseSettings("destination", "127.0.0.1", server.port, "x", "postgres", None)
    return Settings(db, db)


def schema_archive(server: PgServer, dbname: str) -> tuple[bytes, list[TocEntry]]:
    dump = [*server.client_argv("pg_dump", dbname), "--format=custom", "--schema-only"]
    archive = subprocess.run(dump, env=server.client_env(), capture_output=True, check=True).stdout
    listing = subprocess.run(
        [str(server.bindir / "pg_restore"), "--list"],
        input=archive,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return archive, [e for e in parse_toc(listing) if e.kind in BUILT]


def normalized(sql: str) -> list[str]:
    return [line for line in sql.splitlines() if line and not line.startswith(VERBOSE_ONLY)]


@pytest.fixture
def tools_on_path(dbs: Databases, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{dbs.source.bindir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.usefixtures("tools_on_path")
def test_each_entry_reads_as_pg_restore_prints_it_alone(dbs: Databases) -> None:
    dbs.source.execute("source_db", SCHEMA)
    archive, entries = schema_archive(dbs.source, "source_db")
    assert {e.kind for e in entries} == set(BUILT)
    settings = settings_for(dbs.source)

    printed = printed_entries(archive, entries, settings)

    assert set(printed) == {e.dump_id for e in entries}
    for entry in entries:
        alone = entry_sql(archive, [entry], settings, "utf-8")
        assert normalized(runnable_sql(printed[entry.dump_id], "utf-8")) == normalized(alone)
    partial = next(e for e in entries if " t_partial " in e.line)
    assert "-- Name: x; Type: INDEX" in runnable_sql(printed[partial.dump_id], "utf-8")


@pytest.mark.usefixtures("tools_on_path")
def test_a_forged_header_line_leaves_the_output_uncut(dbs: Databases) -> None:
    dbs.source.execute("source_db", FORGED_HEADER)
    archive, entries = schema_archive(dbs.source, "source_db")
    forged = [e for e in entries if " forged " in e.line]
    others = [e for e in entries if e.kind != "FK CONSTRAINT"]
    assert forged

    printed = printed_entries(archive, entries, settings_for(dbs.source))

    # The entries printed with it are left to a pg_restore each; the foreign
    # keys, printed apart, are not.
    assert not set(printed) & {e.dump_id for e in others}
    assert {e.dump_id for e in entries if e.kind == "FK CONSTRAINT"} <= set(printed)


def test_a_forged_header_line_copies_correctly(dbs: Databases) -> None:
    dbs.path = "parallel"
    dbs.source.execute("source_db", FORGED_HEADER)
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    assert run.logs[-1]["copy_path"] == "parallel"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


def test_split_needs_exactly_the_expected_headers() -> None:
    def header(n: int) -> bytes:
        return (
            f"--\n-- TOC entry {n} (class 1259 OID {n})\n-- Name: i{n}\n--\n\nSQL {n};\n\n".encode()
        )

    out = b"PRE\n\n" + header(7) + header(9) + b"-- Completed on now\n\nTRAILER\n"
    assert split_printed(out, [7, 9]) == {
        7: b"PRE\n\n" + header(7) + b"\nTRAILER\n",
        9: b"PRE\n\n" + header(9) + b"\nTRAILER\n",
    }
    assert split_printed(out, [9, 7]) == {}
    assert split_printed(out, [7]) == {}
    assert split_printed(out.replace(b"-- Completed on now\n", b""), [7, 9]) == {}
