"""Tier 1: data-quality validation against real servers (issue: validation).

The job proves each copy exact: row counts, order-independent digests of every
row and sequence values, with the source side read from the very snapshot
pg_dump used.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from conftest import (
    REPO,
    SCRIPT,
    SEED_COUNTS,
    SEEDED_TEMPLATE,
    Databases,
    PgServer,
    both_paths,
    elt_sessions,
    run_elt,
    wait_until,
)
from elt.config import ValidationLevel, load_settings
from elt.connect import Connection, connect, fetch_one
from elt.digests import (
    BATCH_LOCKS,
    BATCH_MAX_BYTES,
    Hashing,
    ListedRelation,
    Part,
    batches,
    statement,
)
from elt.figures import DestinationFigures, Measuring
from elt.validate import (
    Stopped,
    collect,
    compare_tables,
    list_relations,
    measure,
    prepare_session,
    table_key,
)


@pytest.fixture(params=["streamed", "parallel"])
def dbs(request: pytest.FixtureRequest, dbs: Databases) -> Databases:
    """Every test here runs on both copy paths (issue #4)."""
    return both_paths(request, dbs)


# A destination "saboteur": an event trigger (which survives DROP SCHEMA of the
# copied schemas) that attaches a row trigger to public.users whenever the
# load creates it. {body} decides what the row trigger does.
SABOTEUR = """
CREATE SCHEMA saboteur;
CREATE FUNCTION saboteur.tamper() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {body} RETURN NEW; END $$;
CREATE FUNCTION saboteur.attach() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
               WHERE command_tag = 'CREATE TABLE' AND object_identity = 'public.users') THEN
        CREATE TRIGGER tamper BEFORE INSERT ON public.users
            FOR EACH ROW EXECUTE FUNCTION saboteur.tamper();
    END IF;
END $$;
CREATE EVENT TRIGGER attach_saboteur ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION saboteur.attach();
"""
DROP_ONE_ROW = "IF NEW.id = 3 THEN RETURN NULL; END IF;"
CHANGE_ONE_VALUE = "IF NEW.id = 3 THEN NEW.email := upper(NEW.email); END IF;"
# The parallel copy creates its tables under staging names, so the saboteur
# above never fires there. This one acts where the parallel path is most
# exposed instead: inside the swap, after the tables were measured (ALTER
# SCHEMA ... RENAME runs it). Same effect on the same row.
SWAP_SABOTEUR = """
CREATE SCHEMA saboteur;
CREATE FUNCTION saboteur.tamper() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.to_regclass('public.users') IS NOT NULL THEN {body} END IF;
END $$;
CREATE EVENT TRIGGER tamper_on_swap ON ddl_command_end WHEN TAG IN ('ALTER SCHEMA')
    EXECUTE FUNCTION saboteur.tamper();
"""
SWAP_BODIES = {
    DROP_ONE_ROW: "DELETE FROM public.users WHERE id = 3;",
    CHANGE_ONE_VALUE: "UPDATE public.users SET email = upper(email) WHERE id = 3;",
}


def test_clean_round_trip_validates_every_table(dbs: Databases) -> None:
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    validated = run.find("Table validated")
    assert sorted(line["table"] for line in validated) == sorted(
        f'"public"."{table}"' for table in SEED_COUNTS
    )
    for line in validated:
        table = line["table"].split(".")[1].strip('"')
        assert line["source_rows"] == line["destination_rows"] == SEED_COUNTS[table]
        assert line["match"] is True
        assert isinstance(line["duration_ms"], int)
    (summary,) = run.find("Validation summary")
    assert summary["tables_checked"] == 5
    assert summary["tables_mismatched"] == 0
    assert summary["rows_checked"] == 113
    assert summary["validation_level"] == "full"


# (what the saboteur does, validation level, expected exit code)
SABOTAGE = [
    (DROP_ONE_ROW, "full", 6),
    (DROP_ONE_ROW, "counts", 6),
    (CHANGE_ONE_VALUE, "full", 6),
    (CHANGE_ONE_VALUE, "counts", 0),  # counts alone cannot see a changed value
    (DROP_ONE_ROW, "off", 0),
]


@pytest.mark.parametrize(("body", "level", "exit_code"), SABOTAGE)
def test_silent_changes_on_load_are_caught(
    dbs: Databases, body: str, level: str, exit_code: int
) -> None:
    if dbs.path == "parallel":
        dbs.destination.execute("destination_db", SWAP_SABOTEUR.format(body=SWAP_BODIES[body]))
    else:
        dbs.destination.execute("destination_db", SABOTEUR.format(body=body))

    run = run_elt(dbs.env(ELT_VALIDATION=level))

    assert run.returncode == exit_code, run.stdout
    if exit_code == 0:
        return
    (error,) = run.errors()
    assert error["message"] == "Data validation failed"
    assert error["mismatched_tables"] == ['"public"."users"']
    assert "users" in error["error"]
    assert "inspect" in error["hint"]
    (mismatch,) = run.find("Table mismatch")
    assert mismatch["table"] == '"public"."users"'
    assert mismatch["match"] is False
    # The destination is left as loaded, for inspection.
    users = dbs.destination.query("destination_db", "SELECT count(*) FROM public.users")[0][0]
    assert users == (13 if body == DROP_ONE_ROW else 14)


def test_level_off_skips_and_says_so(dbs: Databases) -> None:
    run = run_elt(dbs.env(ELT_VALIDATION="off"))
    assert run.returncode == 0, run.stdout
    (skipped,) = run.find("Validation skipped")
    assert skipped["validation_level"] == "off"
    assert run.find("Table validated") == []
    assert run.find("Validation summary") == []


def test_concurrent_writes_neither_break_validation_nor_leak_in(dbs: Databases) -> None:
    """A writer commits inserts and updates while the job copies.

    No sleeps: the test holds a lock that makes pg_dump wait right after it
    took its snapshot, waits until pg_stat_activity shows pg_dump waiting,
    lets the writer commit, and only then releases the lock.
    """
    dbs.source.execute("source_db", "CREATE TABLE gate (id int)")
    expected = {
        table: dbs.source.query("source_db", f"SELECT * FROM public.{table} ORDER BY 1, 2")
        for table in SEED_COUNTS
    }
    stop = threading.Event()
    commits_while_blocked = threading.Semaphore(0)

    def writer() -> None:
        with dbs.source.connect("source_db") as conn:
            n = 0
            while not stop.is_set():
                n += 1
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO users (first_name, email) VALUES (%s, %s)",
                        (f"w{n}", f"w{n}@example.com"),
                    )
                    conn.execute(
                        "UPDATE films SET price = price + 1 WHERE film_id = %s", (1 + n % 20,)
                    )
                    conn.execute("DELETE FROM film_actors WHERE film_id = %s", (1 + n % 20,))
                commits_while_blocked.release()

    with dbs.source.connect("source_db") as gate, dbs.source.connect("source_db") as watch:
        gate.autocommit = False
        gate.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        job = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            env=dbs.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Sync point: pg_dump is blocked on our lock, so its snapshot exists.
        waiting = 0
        while waiting == 0:
            assert job.poll() is None, job.communicate()
            # (From another connection: inside a transaction pg_stat_activity stays frozen.)
            waiting = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'elt_pipeline'"
                " AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'"
            ).fetchone()[0]  # type: ignore[index]
        thread = threading.Thread(target=writer)
        thread.start()
        for _ in range(20):  # twenty committed writer transactions, during the copy
            assert commits_while_blocked.acquire(timeout=120)
        gate.rollback()  # release the lock: the copy goes on while the writer still writes
        stdout, stderr = job.communicate(timeout=600)
        stop.set()
        thread.join()

    assert job.returncode == 0, stdout + stderr
    assert '"tables_mismatched": 0' in stdout
    # The destination holds the snapshot: none of the writer's rows or changes.
    for table, rows in expected.items():
        got = dbs.destination.query("destination_db", f"SELECT * FROM public.{table} ORDER BY 1, 2")
        assert got == rows, table
    assert dbs.source.query("source_db", "SELECT count(*) FROM users")[0][0] >= 14 + 20


EVERY_TYPE_SQL = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (label text, amount numeric);
CREATE TABLE "Every Type" (
    id int PRIMARY KEY,
    f8 float8, f4 float4, num numeric, big bigint, small smallint,
    d date, ts timestamp, tstz timestamptz, tm time, ttz timetz, iv interval,
    b bytea, ok boolean, txt text, vc varchar(20), ch char(5),
    ints int[], texts text[], js json, jsb jsonb, m mood, dom positive_int, comp pair,
    u uuid, ip inet, net cidr, mac macaddr, bits bit(4), vbits varbit, cash money,
    doc xml, tsv tsvector, rng int4range, pt point, "select" text, "t" int
);
INSERT INTO "Every Type" VALUES
 (1, 'NaN', 'Infinity', 'NaN', 9223372036854775807, -32768,
  'infinity', '-infinity', 'infinity', '24:00', '23:59:59.999999+14', '-1 year 2 mons 3 days 04:05:06.7',
  '\x00ff00', true, E'tab\there\nnewline "quoted" \\ back', 'ünïcødé ☃', 'ab',
  '{1,NULL,3}', '{"a,b",NULL,"c\"d",""}', '{"a": 1,  "a": 2}', '{"z": [1, 2.50, null], "a": {}}',
  'happy', 7, ROW('x, "y"', 1.50), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '::1', '10.0.0.0/8',
  '08:00:2b:01:02:03', B'1010', B'101', 12.34, '<a b="1">x</a>', 'fat cats ate rats', '[1,5)',
  '(1.5,-2)', 'reserved', 1),
 (2, '-Infinity', '-0', 'Infinity', -9223372036854775808, 0,
  '-infinity', 'infinity', '-infinity', '00:00', '00:00+00', '0',
  '\x', false, '', '', '', '{}', '{}', '[]', 'null', 'sad', 1, ROW(NULL, NULL), NULL, NULL, NULL,
  NULL, B'0000', B'', 0, '', '', 'empty', NULL, '', 2),
 (3, 1e-300, 3.4028235e38, '-Infinity', 0, 1,
  '2000-02-29', '1999-12-31 23:59:59.999999', '2026-11-25 12:00:00+05:30', '12:34:56.789', '12:00-08', '1 microsecond',
  decode(repeat('ab', 3000), 'hex'), NULL, repeat('long ', 5000), NULL, NULL,
  '{{1,2},{3,NULL}}', '{NULL}', '"just a string"', '{"deep": {"er": [true, false]}}', 'ok', 2147483647,
  ROW('', 0), 'ffffffff-ffff-ffff-ffff-ffffffffffff', '2001:db8::ff00:42:8329/64', '2001:db8::/32',
  'ff:ff:ff:ff:ff:ff', B'1111', B'1', -92233720368547758.08, NULL, NULL, '(,)', '(0,0)', NULL, NULL),
 (4, 0.1, 0.1, 0.1, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL);
"""


def test_every_type_round_trips_with_matching_digests(dbs: Databases) -> None:
    dbs.source.execute("source_db", EVERY_TYPE_SQL)
    for _ in range(2):
        run = run_elt(dbs.env())
        assert run.returncode == 0, run.stdout
        (line,) = [x for x in run.find("Table validated") if "Every Type" in x["table"]]
        assert line["source_rows"] == line["destination_rows"] == 4
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


def _digests(server: PgServer, dbname: str, *, record_hash: bool = True) -> dict[str, str | None]:
    with server.connect(dbname, autocommit=False) as conn:
        prepare_session(conn)
        figures = collect(conn, ["public"], ValidationLevel.FULL, record_hash=record_hash)
        return {table: f.digest for table, f in figures.tables.items()}


# Only types whose hash tells values apart as their text does: such a table's
# rows are hashed directly (hash_record_extended) instead of through text.
HASHABLE_SQL = r"""
CREATE DOMAIN short_text AS varchar(40);
CREATE TABLE hashable (
    id bigint PRIMARY KEY, small smallint, n int, ok boolean, d date, ts timestamp,
    tstz timestamptz, u uuid, b bytea, txt text, vc short_text, o oid, "t" int
);
INSERT INTO hashable VALUES
 (1, 1, 2, true, '2026-01-01', '2026-01-01 10:00', '2026-01-01 10:00+01', gen_random_uuid(),
  '\x00ff', 'Ab', 'x', 42, 7),
 (2, -1, 0, false, 'infinity', '-infinity', 'infinity', gen_random_uuid(), '\x', '', '', 0, 0);
"""
HASHABLE_COLUMNS = ["small", "n", "ok", "d", "ts", "tstz", "u", "b", "txt", "vc", "o", "t"]


def _hashed_directly(server: PgServer, sql: str) -> dict[str, dict[str, bool]]:
    """validation_tables.sql's verdict, per table and column: hashed directly or not."""
    server.recreate_database("digest_kind")
    server.execute("digest_kind", sql)
    listed = server.query(
        "digest_kind",
        (REPO / "elt" / "sql" / "validation_tables.sql")
        .read_text()
        .replace("%(schemas)s", "'{public}'"),
    )
    return {
        name: dict(zip(columns, flags, strict=True)) for _, name, _, _, columns, flags, *_ in listed
    }


def test_a_nondeterministic_collation_is_hashed_through_text(icu_server: PgServer) -> None:
    # Needs ICU: on a server without it (the bundled 17), icu_server is Debian's 15.
    exact = _hashed_directly(
        icu_server,
        'CREATE COLLATION nocase (provider = icu, locale = "und-u-ks-level2", deterministic = false);'
        "CREATE TABLE caseless (name text COLLATE nocase, plain text, j jsonb)",
    )
    assert exact["caseless"] == {"j": False, "name": False, "plain": True}


def test_which_columns_are_hashed_directly(source_server: PgServer) -> None:
    exact = _hashed_directly(source_server, HASHABLE_SQL + EVERY_TYPE_SQL)
    assert all(exact["hashable"].values())
    assert list(exact["hashable"]) == sorted(exact["hashable"])  # by name, not position
    every = exact["Every Type"]
    assert {c for c, ok in every.items() if ok} == {
        "id", "big", "small", "d", "ts", "tstz", "b", "ok", "txt", "vc", "dom", "u", "select", "t",
    }  # fmt: skip


COLUMNS = [
    "f8", "f4", "num", "big", "d", "ts", "tstz", "tm", "ttz", "iv", "b", "txt", "vc", "ch",
    "ints", "texts", "js", "jsb", "m", "dom", "comp", "u", "ip", "mac", "bits", "cash", "doc",
    "tsv", "rng", "pt", "select", "t",
]  # fmt: skip
# (table's SQL, table, column): every column of both test tables.
CHANGES = [(EVERY_TYPE_SQL, "Every Type", column) for column in COLUMNS] + [
    (HASHABLE_SQL, "hashable", column) for column in HASHABLE_COLUMNS
]


@pytest.mark.parametrize("record_hash", [True, False], ids=["record hash", "text hash"])
@pytest.mark.parametrize(
    ("setup", "table", "column"), CHANGES, ids=[f"{t}.{c}" for _, t, c in CHANGES]
)
def test_the_digest_sees_a_change_in_any_column(
    source_server: PgServer, setup: str, table: str, column: str, record_hash: bool
) -> None:
    source_server.recreate_database("digest_check")
    source_server.execute("digest_check", setup)
    before = _digests(source_server, "digest_check", record_hash=record_hash)
    source_server.execute("digest_check", f'UPDATE "{table}" SET "{column}" = NULL WHERE id = 1')
    after = _digests(source_server, "digest_check", record_hash=record_hash)
    assert after[f'"public"."{table}"'] != before[f'"public"."{table}"']


def test_the_digest_does_not_depend_on_row_order(source_server: PgServer) -> None:
    source_server.recreate_database("digest_order")
    source_server.execute(
        "digest_order",
        "CREATE TABLE t (v text); INSERT INTO t SELECT g::text FROM generate_series(1, 1000) g",
    )
    before = _digests(source_server, "digest_order")
    # Rewrites every row in another physical order, same content.
    source_server.execute(
        "digest_order",
        "CREATE TABLE t2 AS SELECT * FROM t ORDER BY random(); DROP TABLE t; ALTER TABLE t2 RENAME TO t",
    )
    assert _digests(source_server, "digest_order") == before


def test_a_stale_materialized_view_is_not_a_false_alarm(dbs: Databases) -> None:
    # The destination refreshes materialized views from the copied data, so a
    # source view older than its tables must be compared with its query's
    # result in the snapshot, not with its stale rows.
    dbs.source.execute(
        "source_db",
        """
        CREATE MATERIALIZED VIEW rating_counts AS
            SELECT rating, count(*) AS films FROM films GROUP BY rating;
        INSERT INTO films (title, rating, user_rating) VALUES ('Added after refresh', 'PG', 3.0);
        """,
    )
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    (line,) = [x for x in run.find("Table validated") if "rating_counts" in x["table"]]
    assert line["match"] is True
    stale = dbs.source.query("source_db", "SELECT sum(films) FROM rating_counts")[0][0]
    fresh = dbs.destination.query("destination_db", "SELECT sum(films) FROM rating_counts")[0][0]
    assert (stale, fresh) == (20, 21)


@pytest.mark.parametrize(
    ("old", "new"),
    [("'{}'", "NULL"), ("'[]'", "'{}'"), ("'[[1],2]'", "'[[1,2]]'"), ("'1.0'", "'1.00'")],
)
def test_jsonb_changes_that_its_hash_would_miss_are_seen(
    source_server: PgServer, old: str, new: str
) -> None:
    source_server.recreate_database("digest_jsonb")
    source_server.execute(
        "digest_jsonb", f"CREATE TABLE j (id int, doc jsonb); INSERT INTO j VALUES (1, {old})"
    )
    before = _digests(source_server, "digest_jsonb")
    source_server.execute("digest_jsonb", f"UPDATE j SET doc = {new}")
    assert _digests(source_server, "digest_jsonb") != before


MEASURER_PASSWORD = "measurer pw ' for one session"


@pytest.mark.parametrize("limit", [-1, 1], ids=["two sessions", "one session allowed"])
def test_the_destination_figures_in_two_sessions_are_one_sessions(
    source_server: PgServer, limit: int
) -> None:
    """The destination's figures are taken by two sessions at once (elt/figures.py),
    each table by one of them, the first being the run's own destination session;
    a role that may open only that one session still gets every figure. Either
    way, the same figures as one session's, and the run's session comes out as
    it went in: open, idle, its settings and its advisory lock as before."""
    source_server.recreate_database("source_db", template=SEEDED_TEMPLATE)
    quoted = MEASURER_PASSWORD.replace("'", "''")
    source_server.execute(
        "postgres", f"CREATE ROLE measurer LOGIN CONNECTION LIMIT {limit} PASSWORD '{quoted}'"
    )
    try:
        source_server.execute(
            "source_db",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO measurer;"
            "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO measurer",
        )
        env = Databases(source_server, source_server, destination_db="source_db").env(
            # Another host name for the same server: the settings refuse one database twice.
            DESTINATION_POSTGRES_HOST="localhost",
            DESTINATION_POSTGRES_USER="measurer",
            DESTINATION_POSTGRES_PASSWORD=MEASURER_PASSWORD,
        )
        how = Measuring(["public"], ValidationLevel.FULL, True, None, frozenset())
        settings = load_settings(env)
        with connect(settings.destination, settings, autocommit=True) as run_session:
            run_session.execute("SELECT pg_advisory_lock(42)")
            before = _session_state(run_session)

            figures = DestinationFigures(settings, how, run_session, {}).take()

            assert not run_session.closed
            assert run_session.info.transaction_status == TransactionStatus.IDLE
            assert _session_state(run_session) == before

        with source_server.connect("source_db", autocommit=False) as conn:
            prepare_session(conn)
            alone = collect(conn, ["public"], ValidationLevel.FULL, record_hash=True)
        assert len(figures.tables) == len(SEED_COUNTS)
        assert {k: (f.rows, f.digest) for k, f in figures.tables.items()} == {
            k: (f.rows, f.digest) for k, f in alone.tables.items()
        }
        assert figures.sequences == alone.sequences
    finally:
        source_server.execute("source_db", "DROP OWNED BY measurer")
        source_server.execute("postgres", "DROP ROLE measurer")


def test_a_signal_during_the_destination_figures_leaves_the_run_session_as_it_was(
    source_server: PgServer,
) -> None:
    """Ctrl-C (or SIGTERM, which the job turns into it) while the run's destination
    session measures a table another session has locked: the query is cancelled,
    the interrupt goes on up, and the session, which the run closes later, is
    open, idle, its settings and the run's advisory lock as before."""
    source_server.recreate_database("source_db", template=SEEDED_TEMPLATE)
    env = Databases(source_server, source_server, destination_db="source_db").env(
        DESTINATION_POSTGRES_HOST="localhost"
    )
    settings = load_settings(env)
    how = Measuring(["public"], ValidationLevel.FULL, True, None, frozenset())
    main = threading.get_ident()
    with (
        connect(settings.destination, settings, autocommit=True) as run_session,
        source_server.connect("source_db", autocommit=False) as holder,
    ):
        run_session.execute("SELECT pg_advisory_lock(42)")
        before = _session_state(run_session)
        holder.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
        waiting = f"pid = {run_session.info.backend_pid} AND wait_event_type = 'Lock'"

        failed: list[BaseException] = []

        def interrupt_when_waiting() -> None:
            try:
                wait_until(lambda: elt_sessions(source_server, waiting) == 1, "it to wait")
                signal.pthread_kill(main, signal.SIGINT)
                wait_until(lambda: elt_sessions(source_server, waiting) == 0, "the cancel")
            except BaseException as exc:  # pytest.fail() here: told by the test below
                failed.append(exc)
            finally:
                holder.rollback()  # never left waiting, cancelled or not

        interrupter = threading.Thread(target=interrupt_when_waiting)
        interrupter.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                DestinationFigures(settings, how, run_session, {}, sessions=1).take()
        finally:
            interrupter.join()

        assert failed == []
        assert not run_session.closed
        assert run_session.info.transaction_status == TransactionStatus.IDLE
        assert _session_state(run_session) == before


def _session_state(conn: Connection) -> tuple[Any, ...]:
    """Settings validation_session.sql changes, and the session's advisory locks."""
    return fetch_one(
        conn,
        "SELECT current_setting('TimeZone'), current_setting('search_path'),"
        " current_setting('DateStyle'), (SELECT count(*) FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
        tuple_row,
    )


# --- small relations measured several to a statement (elt/digests.py) ---


def _part(name: str, *, locks: int = 1, size: int = 0, populated: bool = True) -> Part:
    listed = ListedRelation("public", name, populated, None, ["id"], [True], size, locks)
    return Part(table_key("public", name), sql.Identifier("public", name), listed)


def _matview_part(name: str) -> Part:
    listed = ListedRelation("public", name, True, "SELECT 1 AS id", ["id"], [True], 0, 1)
    return Part(table_key("public", name), sql.SQL("(SELECT 1 AS id)"), listed)


def _names(batches_: list[list[Part]]) -> list[list[str]]:
    return [[part.listed.name for part in batch] for batch in batches_]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([], []),
        ([_part("a")], [["a"]]),
        ([_part(f"t{i}") for i in range(BATCH_LOCKS)], [[f"t{i}" for i in range(BATCH_LOCKS)]]),
        (
            [_part(f"t{i}") for i in range(BATCH_LOCKS + 1)],
            [[f"t{i}" for i in range(BATCH_LOCKS)], [f"t{BATCH_LOCKS}"]],
        ),
        # Locks, not tables, bound a statement.
        ([_part("a", locks=BATCH_LOCKS - 1), _part("b", locks=2)], [["a"], ["b"]]),
        ([_part("a", locks=BATCH_LOCKS - 2), _part("b", locks=2)], [["a", "b"]]),
        # A relation locking more than a statement may still gets one of its own.
        ([_part("a", locks=BATCH_LOCKS + 1), _part("b")], [["a"], ["b"]]),
        # Large ones alone, in their place; the small ones around them still together.
        (
            [_part("a"), _part("big", size=BATCH_MAX_BYTES + 1), _part("b"), _part("c")],
            [["big"], ["a", "b", "c"]],
        ),
        ([_part("a", size=BATCH_MAX_BYTES), _part("b")], [["a", "b"]]),
        # Unpopulated materialized views need no statement.
        ([_part("a"), _part("unpopulated", populated=False)], [["a"]]),
    ],
    ids=[
        "none",
        "one",
        "exactly a statement",
        "a statement and one",
        "locks over",
        "locks up to",
        "one over the locks",
        "large alone",
        "at the size",
        "unpopulated",
    ],
)
def test_which_relations_share_a_statement(parts: list[Part], expected: list[list[str]]) -> None:
    assert _names(list(batches(parts, recompute_matviews=False))) == expected


def test_the_source_measures_each_materialized_view_query_alone() -> None:
    parts = [_part("a"), _matview_part("mv"), _part("b")]
    assert _names(list(batches(parts, recompute_matviews=True))) == [["mv"], ["a", "b"]]
    assert _names(list(batches(parts, recompute_matviews=False))) == [["a", "mv", "b"]]


@pytest.mark.parametrize("level", [ValidationLevel.FULL, ValidationLevel.COUNTS])
def test_a_statement_numbers_each_relation(level: ValidationLevel) -> None:
    parts = [_part("a"), _part('we"ird'), _matview_part("mv")]
    text = statement(parts, Hashing(level, record_hash=True)).as_string(None)
    selects = text.split("\nUNION ALL\n")
    assert len(selects) == 3
    for position, (select, relation) in enumerate(
        zip(selects, ['"public"."a"', '"public"."we""ird"', "(SELECT 1 AS id)"], strict=True)
    ):
        assert f"SELECT {position} AS position" in select
        assert select.rstrip().endswith(f"FROM {relation} AS t")
        assert ('hash_record_extended(ROW(t."id"), 0)' in select) is (level is ValidationLevel.FULL)
    assert ";" not in text


def _tables_sql(count: int, columns: str = "id int, v int") -> str:
    """`count` tables t000.. of (id, v), table i holding i + 1 rows."""
    return "".join(
        f"CREATE TABLE t{i:03d} ({columns});"
        f"INSERT INTO t{i:03d} (id) SELECT g FROM generate_series(1, {i + 1}) AS g;"
        for i in range(count)
    )


def _figures(
    server: PgServer, dbname: str, **options: Any
) -> dict[str, tuple[int | None, str | None]]:
    with server.connect(dbname, autocommit=False) as conn:
        prepare_session(conn)
        figures = collect(conn, ["public"], ValidationLevel.FULL, **options)
        return {table: (f.rows, f.digest) for table, f in figures.tables.items()}


def _alone(
    server: PgServer, dbname: str, **options: Any
) -> dict[str, tuple[int | None, str | None]]:
    """Each relation measured in a statement of its own (validate.measure)."""
    with server.connect(dbname, autocommit=False) as conn:
        prepare_session(conn)
        result = {}
        for listed in list_relations(conn, ["public"]):
            relation = sql.Identifier(listed.schema, listed.name)
            one = measure(conn, relation, listed, ValidationLevel.FULL, **options)
            result[table_key(listed.schema, listed.name)] = (one.rows, one.digest)
        return result


def _statements(server: PgServer, dbname: str) -> list[list[str]]:
    with server.connect(dbname) as conn:
        parts = [
            Part(table_key(r.schema, r.name), sql.Identifier(r.schema, r.name), r)
            for r in list_relations(conn, ["public"])
        ]
    return _names(list(batches(parts, recompute_matviews=False)))


@pytest.mark.parametrize(
    ("tables", "statements"),
    [(0, 0), (1, 1), (BATCH_LOCKS, 1), (BATCH_LOCKS + 1, 2)],
    ids=["no table", "one table", "exactly a statement", "a statement and one"],
)
def test_every_table_gets_its_own_figures_at_the_batch_boundaries(
    source_server: PgServer, tables: int, statements: int
) -> None:
    source_server.recreate_database("digest_batches")
    if tables:
        source_server.execute("digest_batches", _tables_sql(tables))
    assert len(_statements(source_server, "digest_batches")) == statements
    figures = _figures(source_server, "digest_batches", record_hash=False)
    # The text hash, computed here independently, table by table.
    expected = {}
    for i in range(tables):
        ((rows, digest),) = source_server.query(
            "digest_batches",
            f"SELECT count(*), sum(hashtextextended(t::text, 0))::text FROM t{i:03d} AS t",
        )
        assert rows == i + 1
        expected[f'"public"."t{i:03d}"'] = (rows, digest)
    assert figures == expected


CHANGES_IN_A_BATCH = {
    "changed row": ("UPDATE t005 SET v = 1 WHERE id = 3", "content differs", 6),
    "missing row": ("DELETE FROM t005 WHERE id = 3", "row count differs", 5),
    "extra row": ("INSERT INTO t005 (id) VALUES (100)", "row count differs", 7),
}


@pytest.mark.parametrize("change", list(CHANGES_IN_A_BATCH))
def test_a_mismatch_inside_a_batch_names_that_table_only(
    source_server: PgServer, change: str
) -> None:
    update, reason, destination_rows = CHANGES_IN_A_BATCH[change]
    source_server.recreate_database("batch_source")
    source_server.execute("batch_source", _tables_sql(12))
    source_server.recreate_database("batch_destination", template="batch_source")
    source_server.execute("batch_destination", update)
    (statement_,) = _statements(source_server, "batch_destination")
    assert len(statement_) == 12  # t005 measured among others

    with source_server.connect("batch_source", autocommit=False) as conn:
        prepare_session(conn)
        source = collect(conn, ["public"], ValidationLevel.FULL, record_hash=True)
    with source_server.connect("batch_destination", autocommit=False) as conn:
        prepare_session(conn)
        destination = collect(conn, ["public"], ValidationLevel.FULL, record_hash=True)

    checks = compare_tables(source, destination)
    assert len(checks) == 12
    (bad,) = [c for c in checks if not c.match]
    assert (bad.table, bad.reason) == ('"public"."t005"', reason)
    assert (bad.source_rows, bad.destination_rows) == (6, destination_rows)


# Tables hashed through their text form, and one with no column at all, among
# tables hashed directly; column names that are not plain ASCII identifiers.
MIXED_HASHES_SQL = """
CREATE TABLE a_direct (id int, "vé" text);
CREATE TABLE b_text (id int, n numeric, j jsonb);
CREATE TABLE c_no_columns ();
CREATE TABLE d_direct (id bigint, "d{0}%s" date);
INSERT INTO a_direct VALUES (1, 'é'), (2, NULL);
INSERT INTO b_text VALUES (1, 1.50, '{"a": [1, null]}'), (2, NULL, '{}');
INSERT INTO c_no_columns DEFAULT VALUES;
INSERT INTO c_no_columns DEFAULT VALUES;
INSERT INTO d_direct VALUES (1, 'infinity'), (2, '2026-01-01');
"""


@pytest.mark.parametrize("encoding", ["UTF8", "LATIN1"])
@pytest.mark.parametrize("convert_to", [None, "LATIN1"], ids=["same encoding", "converted"])
@pytest.mark.parametrize("record_hash", [True, False], ids=["record hash", "text hash"])
def test_text_hashes_and_conversions_inside_a_batch(
    source_server: PgServer, record_hash: bool, convert_to: str | None, encoding: str
) -> None:
    source_server.recreate_database("batch_hashes", encoding=encoding)
    source_server.execute("batch_hashes", MIXED_HASHES_SQL)
    assert len(_statements(source_server, "batch_hashes")) == 1
    options: dict[str, Any] = {"record_hash": record_hash, "convert_to": convert_to}

    before = _figures(source_server, "batch_hashes", **options)
    assert before == _alone(source_server, "batch_hashes", **options)
    assert [rows for rows, _ in before.values()] == [2, 2, 2, 2]

    source_server.execute("batch_hashes", """UPDATE b_text SET j = '{"a": [1, 0]}' WHERE id = 1""")
    after = _figures(source_server, "batch_hashes", **options)
    assert {t for t in before if before[t] != after[t]} == {'"public"."b_text"'}


MATVIEWS_SQL = """
CREATE TABLE base (id int);
INSERT INTO base SELECT generate_series(1, 3);
CREATE MATERIALIZED VIEW populated AS SELECT id FROM base;
CREATE MATERIALIZED VIEW unpopulated AS SELECT id FROM base WITH NO DATA;
INSERT INTO base VALUES (4);  -- populated is stale now: 3 rows stored, 4 in its query
"""


@pytest.mark.parametrize("recompute", [True, False], ids=["source side", "destination side"])
def test_materialized_views_among_batched_tables(source_server: PgServer, recompute: bool) -> None:
    source_server.recreate_database("batch_matviews")
    source_server.execute("batch_matviews", MATVIEWS_SQL)
    figures = _figures(source_server, "batch_matviews", recompute_matviews=recompute)
    rows = {table: rows for table, (rows, _) in figures.items()}
    assert rows == {
        '"public"."base"': 4,
        '"public"."populated"': 4 if recompute else 3,
        '"public"."unpopulated"': None,
    }
    assert figures['"public"."unpopulated"'] == (None, None)
    if recompute:  # the view's query, in the snapshot, hashes as the table it reads
        assert figures['"public"."populated"'][1] == figures['"public"."base"'][1]


def test_stop_is_honoured_between_batches(source_server: PgServer) -> None:
    source_server.recreate_database("batch_stop")
    source_server.execute("batch_stop", _tables_sql(BATCH_LOCKS + 1))
    first, second = _statements(source_server, "batch_stop")
    stop = threading.Event()
    claimed: list[str] = []

    def claim(key: str) -> bool:
        claimed.append(key)
        stop.set()  # asked to stop while the first statement is being prepared
        return True

    with source_server.connect("batch_stop", autocommit=False) as conn:
        prepare_session(conn)
        with pytest.raises(Stopped):
            collect(conn, ["public"], ValidationLevel.FULL, stop, claim=claim)
        # This transaction's own scans: the first statement ran, the second did not.
        scanned = dict(
            conn.execute("SELECT relname, seq_scan FROM pg_stat_xact_user_tables").fetchall()
        )
    assert claimed == [f'"public"."{name}"' for name in first]
    assert {name for name, scans in scanned.items() if scans} == set(first)
    assert all(not scanned.get(name) for name in second)


def test_measuring_leaves_no_index_or_toast_lock_behind(source_server: PgServer) -> None:
    """In the source snapshot's transaction, which holds the tables' locks as
    pg_dump does, each statement's locks end with its savepoint."""
    source_server.recreate_database("batch_locks")
    source_server.execute(
        "batch_locks", _tables_sql(30, "id int PRIMARY KEY, v text, w int UNIQUE")
    )
    with source_server.connect("batch_locks", autocommit=False) as conn:
        prepare_session(conn)
        conn.execute(
            "LOCK TABLE "
            + ", ".join(f"public.t{i:03d}" for i in range(30))
            + " IN ACCESS SHARE MODE"
        )
        # Locks on the tables, their indexes and TOAST tables (not the catalogs' locks).
        held = (
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND locktype = 'relation' AND relation >= 16384"
        )
        before = conn.execute(held).fetchone()
        assert before == (30,)
        collect(conn, ["public"], ValidationLevel.FULL, record_hash=True)
        assert conn.execute(held).fetchone() == before
