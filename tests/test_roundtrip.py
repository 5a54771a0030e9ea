"""Tier 1: the real script against two real PostgreSQL servers.

Each test gets a freshly seeded source_db and an empty destination_db
(conftest.py). `run_elt` also checks, on every run, that stdout is JSON lines
only and that no password appears in stdout or stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgserver
from conftest import (
    REFUSAL,
    REFUSE_FILM_ACTORS_KEYS,
    SEED_COUNTS,
    Databases,
    PgServer,
    both_paths,
    refused_load,
    run_elt,
    the_error,
)
from elt.config import DatabaseSettings
from elt.load import psql_load_argv
from elt.replace import STAGING_MARKER


@pytest.fixture(params=["streamed", "parallel"])
def dbs(request: pytest.FixtureRequest, dbs: Databases) -> Databases:
    """Every test here runs on both copy paths (issue #4)."""
    return both_paths(request, dbs)


DOCUMENTED_MESSAGES = [
    "Starting ELT pipeline",
    "Configuration loaded from environment",
    "Database connection successful",
    "Data extraction completed successfully",
    "ELT pipeline completed successfully",
]

CONSTRAINTS_SQL = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE connamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


def test_first_run_copies_the_seed_exactly(dbs: Databases) -> None:
    run = run_elt(dbs.env())

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == ""
    for message in DOCUMENTED_MESSAGES:
        assert message in run.messages()
    assert run.errors() == []
    assert [line["level"] for line in run.logs if line["level"] != "INFO"] == []
    final = run.logs[-1]
    assert final["message"] == "ELT pipeline completed successfully"
    assert final["source"] == "127.0.0.1/source_db"
    assert final["destination"] == "127.0.0.1/destination_db"
    assert final["rows"] == sum(SEED_COUNTS.values()) == 113
    assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS
    # Primary keys, foreign keys and the CHECK on films.user_rating came along.
    source_constraints = dbs.source.query("source_db", CONSTRAINTS_SQL)
    assert len(source_constraints) >= 9
    assert dbs.destination.query("destination_db", CONSTRAINTS_SQL) == source_constraints
    # Schema, data and sequence values: the destination is the source.
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


def test_each_step_logs_its_duration(dbs: Databases) -> None:
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    for message in (
        "Data extraction completed successfully",
        "Data load completed successfully",
        "ELT pipeline completed successfully",
    ):
        (line,) = run.find(message)
        assert isinstance(line["duration_seconds"], float | int)
        assert line["duration_seconds"] >= 0


def test_second_and_third_runs_leave_the_same_destination(dbs: Databases) -> None:
    first = run_elt(dbs.env())
    assert first.returncode == 0, first.stdout
    after_first = dbs.destination.fingerprint("destination_db")
    for _ in range(2):
        again = run_elt(dbs.env())
        assert again.returncode == 0, again.stdout
        assert again.stderr == ""
        assert dbs.destination.fingerprint("destination_db") == after_first
    assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS


# Kinds of objects that break naive re-runs, each loaded into the source on
# top of the seed. Every case must copy exactly and re-run cleanly.
OBJECT_CASES = {
    "partitioned table": """
        CREATE TABLE measurements (id int NOT NULL, taken date NOT NULL, value numeric)
            PARTITION BY RANGE (taken);
        CREATE TABLE measurements_2025 PARTITION OF measurements
            FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE measurements_2026 PARTITION OF measurements
            FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE INDEX ON measurements (taken);
        INSERT INTO measurements
            SELECT g, date '2025-06-01' + g, g * 1.5 FROM generate_series(1, 400) AS g;
    """,
    "table without a primary key, with duplicate rows": """
        CREATE TABLE events (kind text, payload jsonb);
        INSERT INTO events SELECT 'click', '{"x": 1}' FROM generate_series(1, 5);
        INSERT INTO events VALUES (NULL, NULL), (NULL, NULL);
    """,
    "large objects": """
        SELECT lo_from_bytea(0, convert_to('first large object', 'UTF8'));
        SELECT lo_from_bytea(0, decode(repeat('00ff', 5000), 'hex'));
    """,
    "second schema with enum, view, function and materialized view": """
        CREATE SCHEMA sales;
        CREATE TYPE sales.status AS ENUM ('new', 'paid', 'shipped');
        CREATE TABLE sales.orders (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id int REFERENCES public.users (id),
            status sales.status NOT NULL DEFAULT 'new');
        INSERT INTO sales.orders (user_id, status)
            SELECT 1 + g % 14, (ARRAY['new','paid','shipped'])[1 + g % 3]::sales.status
            FROM generate_series(1, 50) AS g;
        CREATE FUNCTION sales.paid_count() RETURNS bigint LANGUAGE sql
            AS $$ SELECT count(*) FROM sales.orders WHERE status = 'paid' $$;
        CREATE VIEW sales.user_orders AS
            SELECT u.email, o.status
            FROM public.users AS u JOIN sales.orders AS o ON o.user_id = u.id;
        CREATE MATERIALIZED VIEW sales.status_totals AS
            SELECT status, count(*) AS n FROM sales.orders GROUP BY status;
    """,
    "quoted identifiers and unicode": """
        CREATE SCHEMA "Mixed Case";
        CREATE TABLE "Mixed Case"."Order Items" ("Qty" int, "naïve ☃" text, "t" text);
        INSERT INTO "Mixed Case"."Order Items" VALUES (1, 'snow ☃', 'x'), (2, E'tab\\there', NULL);
    """,
    "objects owned by a role the destination does not have": """
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'elt_test_owner') THEN
                CREATE ROLE elt_test_owner;
            END IF;
        END $$;
        CREATE TABLE owned_elsewhere (id int PRIMARY KEY);
        INSERT INTO owned_elsewhere SELECT generate_series(1, 3);
        ALTER TABLE owned_elsewhere OWNER TO elt_test_owner;
        GRANT SELECT ON owned_elsewhere TO PUBLIC;
    """,
    "extension in the public schema": """
        CREATE EXTENSION citext;
        CREATE TABLE tags (name citext PRIMARY KEY);
        INSERT INTO tags VALUES ('Drama'), ('Comedy');
    """,
    # Issue #10, case 1: quoted schema names were compared unquoted, so every
    # re-run refused the keys between them and public.
    "schemas whose names need quoting, with keys across schemas": """
        CREATE SCHEMA "My Schema";
        CREATE TABLE "My Schema".fkchild (
            id int PRIMARY KEY, user_id int REFERENCES public.users (id));
        INSERT INTO "My Schema".fkchild SELECT g, 1 + g % 14 FROM generate_series(1, 30) AS g;
        CREATE SCHEMA "ünïcødé_схема";
        CREATE TABLE "ünïcødé_схема"."Ref" (
            child_id int REFERENCES "My Schema".fkchild (id),
            film_id int REFERENCES public.films (film_id));
        INSERT INTO "ünïcødé_схема"."Ref" SELECT g, 1 + g % 20 FROM generate_series(1, 30) AS g;
        CREATE VIEW public.children AS SELECT id FROM "My Schema".fkchild;
    """,
    # Database-wide objects of the source's own that call its functions: the
    # load re-creates them, so they never block a re-run.
    "event trigger and cast whose functions live in a copied schema": """
        CREATE SCHEMA "Hooks";
        CREATE FUNCTION "Hooks".noop() RETURNS event_trigger LANGUAGE plpgsql
            AS $$ BEGIN END $$;
        CREATE EVENT TRIGGER elt_test_noop ON sql_drop EXECUTE FUNCTION "Hooks".noop();
        CREATE TYPE "Hooks".pair AS (a int, b int);
        CREATE FUNCTION "Hooks".pair_text("Hooks".pair) RETURNS text LANGUAGE sql IMMUTABLE
            AS 'SELECT ''pair''';
        CREATE CAST ("Hooks".pair AS text) WITH FUNCTION "Hooks".pair_text("Hooks".pair);
    """,
}


@pytest.mark.parametrize("sql", OBJECT_CASES.values(), ids=OBJECT_CASES.keys())
def test_object_kinds_copy_exactly_and_rerun_cleanly(dbs: Databases, sql: str) -> None:
    dbs.source.execute("source_db", sql)
    expected = dbs.source.fingerprint("source_db")

    for attempt in range(1, 4):
        run = run_elt(dbs.env())
        assert run.returncode == 0, f"run {attempt}: {run.stdout}"
        assert run.stderr == ""
        assert dbs.destination.fingerprint("destination_db") == expected, f"run {attempt}"


def test_destination_schemas_the_source_lacks_are_left_alone(dbs: Databases) -> None:
    dbs.destination.execute(
        "destination_db",
        """
        CREATE SCHEMA reports;
        CREATE TABLE reports.daily (day date PRIMARY KEY, total int);
        INSERT INTO reports.daily VALUES ('2026-01-01', 3), ('2026-01-02', 5);
        CREATE FUNCTION reports.answer() RETURNS int LANGUAGE sql AS 'SELECT 42';
        """,
    )
    for _ in range(2):
        run = run_elt(dbs.env())
        assert run.returncode == 0, run.stdout
    rows = dbs.destination.query("destination_db", "SELECT * FROM reports.daily ORDER BY day")
    assert [(str(day), total) for day, total in rows] == [("2026-01-01", 3), ("2026-01-02", 5)]
    assert dbs.destination.query("destination_db", "SELECT reports.answer()") == [(42,)]


def test_stale_objects_in_a_copied_schema_are_replaced(dbs: Databases) -> None:
    # The destination mirrors each schema the source has: a table the source
    # no longer has does not linger in the destination's copy of that schema.
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    dbs.destination.execute("destination_db", "CREATE TABLE public.stale (id int)")
    dbs.source.execute("source_db", "DROP TABLE film_actors")
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


# The comment on public: the source's and the destination's before the run
# (None: no comment), and the one it has after. As pg_dump writes it, public
# takes the source's, unless that is initdb's stock one (pg_dump writes none):
# then it keeps the destination's; the same on both paths.
PUBLIC_COMMENTS = {
    "both": ("the source's public", "the destination's", "the source's public"),
    "the source's only": ("the source's public", None, "the source's public"),
    "the destination's only": (None, "the destination's", None),
    "initdb's": ("standard public schema", "the destination's", "the destination's"),
}


@pytest.mark.parametrize(
    ("source", "destination", "expected"), PUBLIC_COMMENTS.values(), ids=PUBLIC_COMMENTS
)
def test_public_takes_the_comment_pg_dump_writes(
    dbs: Databases, source: str | None, destination: str | None, expected: str | None
) -> None:
    assert run_elt(dbs.env()).returncode == 0
    for server, db, comment in (
        (dbs.source, "source_db", source),
        (dbs.destination, "destination_db", destination),
    ):
        literal = "NULL" if comment is None else "'" + comment.replace("'", "''") + "'"
        server.execute(db, f"COMMENT ON SCHEMA public IS {literal}")
    comment = "SELECT obj_description('public'::regnamespace, 'pg_namespace')"

    for _ in range(2):
        run = run_elt(dbs.env())

        assert run.returncode == 0, run.stdout
        assert dbs.destination.query("destination_db", comment) == [(expected,)]


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Objects in the copied schema {s}, which the destination's own objects below use.
DEPENDED_ON = """
CREATE TABLE {s}."My Table" (id int PRIMARY KEY);
CREATE SEQUENCE {s}.myseq;
CREATE FUNCTION {s}.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE FUNCTION {s}.evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE TYPE {s}.pair AS (a int, b int);
CREATE FUNCTION {s}.pair_text({s}.pair) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT ''pair''';
"""
# (the destination's own object, what the refusal must call it)
DEPENDENTS = {
    "foreign key": (
        'CREATE TABLE reports.r (id int REFERENCES {s}."My Table")',
        "table constraint r_id_fkey on reports.r",
    ),
    "sequence default": (
        "ALTER TABLE reports.r ADD n bigint DEFAULT nextval('{s}.myseq')",
        "default value for reports.r.n",
    ),
    "trigger": (
        "CREATE TRIGGER r_trg BEFORE INSERT ON reports.r FOR EACH ROW EXECUTE FUNCTION {s}.trg()",
        "trigger r_trg on reports.r",
    ),
    "function of a row type": (
        'CREATE FUNCTION reports.rows() RETURNS SETOF {s}."My Table" LANGUAGE sql '
        'AS $$ SELECT * FROM {s}."My Table" $$',
        "function reports.rows()",
    ),
    # issue #10, case 2: database-wide objects
    "event trigger": (
        "CREATE EVENT TRIGGER elt_test_evt ON sql_drop EXECUTE FUNCTION {s}.evt()",
        "event trigger elt_test_evt",
    ),
    "cast": (
        "CREATE CAST ({s}.pair AS text) WITH FUNCTION {s}.pair_text({s}.pair)",
        "cast ({s}.pair AS pg_catalog.text)",
    ),
}


@pytest.mark.parametrize("schema", ["public", "My Schema", "ünïcødé_схема"])
def test_dependent_objects_elsewhere_make_the_load_refuse_before_copying(
    dbs: Databases, schema: str
) -> None:
    s = "public" if schema == "public" else quoted(schema)
    create = "" if schema == "public" else f"CREATE SCHEMA {s};"
    dbs.source.execute("source_db", create + DEPENDED_ON.format(s=s))
    assert run_elt(dbs.env()).returncode == 0
    dbs.destination.execute(
        "destination_db",
        "CREATE SCHEMA reports;" + ";".join(sql.format(s=s) for sql, _ in DEPENDENTS.values()),
    )
    dbs.source.execute("source_db", "INSERT INTO users (first_name) VALUES ('New')")

    run, error = refused_load(dbs)

    for _, name in DEPENDENTS.values():
        assert name.format(s=s) in error["error"]
    assert "re-create" in error["hint"]
    # Refused before copying anything, on both paths (issue #10, case 9).
    for message in ("Parallel copy planned", "Table copied", "Starting data extraction"):
        assert not any(m.startswith(message) for m in run.messages()), message


# The one-stream load checks again in its own transaction (prepare_destination.sql),
# where the source's own database-wide objects, which its restore script
# re-creates, do not count. (objects on the destination, recreated, names expected)
IN_TRANSACTION = {
    "event trigger": (["event trigger"], [], ["event trigger elt_test_evt"]),
    "event trigger the load re-creates": (["event trigger"], ["event trigger elt_test_evt"], []),
    "function, and an event trigger the load re-creates": (
        ["event trigger", "function of a row type"],
        ["event trigger elt_test_evt"],
        ["function reports.rows()"],
    ),
}


@pytest.mark.parametrize(
    ("objects", "recreated", "named"), IN_TRANSACTION.values(), ids=IN_TRANSACTION
)
def test_the_load_transaction_checks_the_dependents_again(
    destination_server: PgServer, objects: list[str], recreated: list[str], named: list[str]
) -> None:
    destination_server.recreate_database("check_db")
    destination_server.execute(
        "check_db",
        DEPENDED_ON.format(s="public")
        + "CREATE SCHEMA reports;"
        + ";".join(DEPENDENTS[o][0].format(s="public") for o in objects),
    )
    before = destination_server.fingerprint("check_db")
    db = DatabaseSettings(
        "destination", "127.0.0.1", destination_server.port, "check_db",
        destination_server.user, destination_server.password,
    )  # fmt: skip
    # An empty restore script: the transaction ends without COMMIT, so it rolls back.
    load = subprocess.run(
        psql_load_argv(db, ["public"], recreated),
        env=destination_server.client_env(),
        input="",
        capture_output=True,
        text=True,
        check=False,
    )

    assert load.returncode == (3 if named else 0), load.stderr
    for name in named:
        assert name in load.stderr
    for name in recreated:
        assert name not in load.stderr
    assert destination_server.fingerprint("check_db") == before


# Issue #13: an analyst's views and materialized views in a schema of their
# own, on the copied tables and on each other, with what a dump keeps of them.
ANALYST_VIEWS = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'elt_test_analyst') THEN
        CREATE ROLE elt_test_analyst;
    END IF;
END $$;
CREATE SCHEMA analytics;
CREATE VIEW analytics.adults WITH (security_barrier) AS
    SELECT id, first_name, date_of_birth FROM public.users
    WHERE date_of_birth < '2008-01-01' WITH LOCAL CHECK OPTION;
COMMENT ON VIEW analytics.adults IS 'users born before 2008';
COMMENT ON COLUMN analytics.adults.first_name IS 'as entered';
GRANT SELECT ON analytics.adults TO elt_test_analyst;
CREATE VIEW analytics.adult_names AS SELECT upper(first_name) AS name FROM analytics.adults;
ALTER VIEW analytics.adult_names OWNER TO elt_test_analyst;
CREATE MATERIALIZED VIEW analytics.films_per_rating WITH (fillfactor = 90) AS
    SELECT f.rating, count(*) AS films, count(a.actor_id) AS roles
    FROM public.films AS f LEFT JOIN public.film_actors AS a USING (film_id)
    GROUP BY f.rating;
CREATE UNIQUE INDEX films_per_rating_key ON analytics.films_per_rating (rating) NULLS NOT DISTINCT;
COMMENT ON INDEX analytics.films_per_rating_key IS 'one row per rating';
GRANT SELECT (rating, films) ON analytics.films_per_rating TO elt_test_analyst;
CREATE MATERIALIZED VIEW analytics.later AS SELECT count(*) AS n FROM analytics.adults WITH NO DATA;
"""
ANALYST_FIGURES = """
SELECT (SELECT count(*) FROM analytics.adults),
       (SELECT count(*) FROM analytics.adult_names),
       (SELECT sum(films) FROM analytics.films_per_rating)
"""


def analytics_schema(server: PgServer) -> str:
    """The analytics schema as pg_dump writes it, owners and grants included."""
    proc = subprocess.run(
        [*server.client_argv("pg_dump", "destination_db"), "--schema-only", "--schema=analytics"],
        env=server.client_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("\\"))


def test_views_in_other_schemas_are_recreated_against_the_new_copy(dbs: Databases) -> None:
    assert run_elt(dbs.env()).returncode == 0
    dbs.destination.execute("destination_db", ANALYST_VIEWS)
    definitions = analytics_schema(dbs.destination)
    assert dbs.destination.query("destination_db", ANALYST_FIGURES) == [(13, 13, 26)]
    dbs.source.execute(
        "source_db",
        """
        INSERT INTO users (first_name, date_of_birth) VALUES ('New', '1990-01-01');
        INSERT INTO films (title, rating) VALUES ('New film', 'PG');
        """,
    )

    for _ in range(2):
        run = run_elt(dbs.env())

        assert run.returncode == 0, run.stdout
        (line,) = run.find(
            "Views in other schemas use the copied schemas; the load re-creates them"
        )
        assert sorted(line["views"]) == sorted(
            f"analytics.{v}" for v in ("adults", "adult_names", "films_per_rating", "later")
        )
        assert analytics_schema(dbs.destination) == definitions
        assert dbs.destination.query("destination_db", ANALYST_FIGURES) == [(14, 14, 27)]
        populated = dbs.destination.query(
            "destination_db",
            "SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm' ORDER BY 1",
        )
        assert populated == [("films_per_rating", True), ("later", False)]


@pytest.fixture
def tablespace(dbs: Databases) -> Iterator[str]:
    """A tablespace on the destination server, in a directory of its own."""
    location = dbs.destination.base / "ts_analytics"
    location.mkdir()
    if os.geteuid() == 0:  # the server runs as the unprivileged user
        shutil.chown(location, pgserver.SERVER_USER, pgserver.SERVER_USER)
    dbs.destination.execute("postgres", f"CREATE TABLESPACE ts_analytics LOCATION '{location}'")
    yield "ts_analytics"
    dbs.destination.execute("destination_db", "DROP SCHEMA IF EXISTS analytics CASCADE")
    dbs.destination.execute("postgres", "DROP TABLESPACE ts_analytics")
    location.rmdir()


def test_a_materialized_view_keeps_its_tablespace_and_toast_parameters(
    dbs: Databases, tablespace: str
) -> None:
    assert run_elt(dbs.env()).returncode == 0
    dbs.destination.execute(
        "destination_db",
        f"""
        CREATE SCHEMA analytics;
        CREATE MATERIALIZED VIEW analytics.titles
            WITH (toast.autovacuum_enabled = false) TABLESPACE {tablespace} AS
            SELECT film_id, title::text AS title FROM public.films;  -- text: a TOAST table
        CREATE INDEX titles_title ON analytics.titles (title) TABLESPACE {tablespace};
        CREATE INDEX titles_id ON analytics.titles (film_id);
        """,
    )
    kept = """
        SELECT c.relname, ts.spcname, t.reloptions
        FROM pg_class AS c
        LEFT JOIN pg_tablespace AS ts ON ts.oid = c.reltablespace
        LEFT JOIN pg_class AS t ON t.oid = c.reltoastrelid
        WHERE c.relnamespace = 'analytics'::regnamespace ORDER BY 1
    """
    before = dbs.destination.query("destination_db", kept)
    assert before == [
        ("titles", tablespace, ["autovacuum_enabled=false"]),
        ("titles_id", None, None),
        ("titles_title", tablespace, None),
    ]
    oid = "SELECT 'analytics.titles'::regclass::oid::int"
    (old,) = dbs.destination.query("destination_db", oid)

    run = run_elt(dbs.env())

    assert run.returncode == 0, run.stdout
    assert dbs.destination.query("destination_db", oid) != [old]  # re-created
    assert dbs.destination.query("destination_db", kept) == before


def test_a_view_whose_definition_no_longer_applies_makes_the_load_refuse(
    dbs: Databases,
) -> None:
    assert run_elt(dbs.env()).returncode == 0
    dbs.destination.execute("destination_db", ANALYST_VIEWS)
    dbs.source.execute("source_db", "ALTER TABLE users DROP COLUMN date_of_birth")

    _, error = refused_load(dbs)

    stderr = " ".join(error["stderr_tail"])
    assert "view analytics.adults no longer applies to the new copy" in stderr
    assert "date_of_birth" in stderr


LOADER = "elt_test_view_loader"
LOADER_PASSWORD = "view loader ' pw"


@pytest.fixture
def loader(dbs: Databases) -> Iterator[dict[str, str]]:
    """A non-superuser loader (CREATEDB, for the parallel path's scratch
    database) with CREATE and CONNECT on destination_db, owning its public,
    where TEMPORARY is revoked from PUBLIC; yields the job's settings for it."""
    quoted_pw = LOADER_PASSWORD.replace("'", "''")
    dbs.destination.execute(
        "postgres", f"CREATE ROLE {LOADER} LOGIN CREATEDB PASSWORD '{quoted_pw}'"
    )
    try:
        dbs.destination.execute(
            "destination_db",
            f"""
            GRANT CREATE, CONNECT ON DATABASE destination_db TO {LOADER};
            REVOKE TEMPORARY ON DATABASE destination_db FROM PUBLIC;
            ALTER SCHEMA public OWNER TO {LOADER};
            """,
        )
        yield {
            "DESTINATION_POSTGRES_USER": LOADER,
            "DESTINATION_POSTGRES_PASSWORD": LOADER_PASSWORD,
        }
    finally:
        dbs.destination.execute(
            "destination_db", f"REASSIGN OWNED BY {LOADER} TO postgres; DROP OWNED BY {LOADER}"
        )
        dbs.destination.execute("postgres", f"DROP ROLE {LOADER}")


# The view to re-create, its owner, and what the loader lacks for it.
VIEW = "VIEW analytics.v"
MATVIEW = "MATERIALIZED VIEW analytics.v TABLESPACE ts_analytics"
VIEW_OWNERS = {
    "the loader's": (
        VIEW,
        LOADER,
        ["TEMPORARY on database destination_db", "USAGE and CREATE on schema analytics"],
    ),
    "another role's": (
        VIEW,
        "elt_test_analyst",
        [
            "CREATE on schema analytics for the owner elt_test_analyst",
            "TEMPORARY on database destination_db",
            "USAGE and CREATE on schema analytics",
            "membership in role elt_test_analyst, the owner",
        ],
    ),
    "in a tablespace": (
        MATVIEW,
        LOADER,
        [
            "CREATE on tablespace ts_analytics",
            "TEMPORARY on database destination_db",
            "USAGE and CREATE on schema analytics",
        ],
    ),
}


@pytest.mark.parametrize(("view", "owner", "missing"), VIEW_OWNERS.values(), ids=VIEW_OWNERS)
def test_views_the_loader_may_not_recreate_make_the_load_refuse_before_copying(
    dbs: Databases,
    loader: dict[str, str],
    request: pytest.FixtureRequest,
    view: str,
    owner: str,
    missing: list[str],
) -> None:
    if "TABLESPACE" in view:
        request.getfixturevalue("tablespace")
    env = dbs.env(**loader)
    run = run_elt(env)
    assert run.returncode == 0, run.stdout
    dbs.destination.execute(
        "destination_db",
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'elt_test_analyst') THEN
                CREATE ROLE elt_test_analyst;
            END IF;
        END $$;
        CREATE SCHEMA analytics;
        CREATE {view} AS SELECT count(*) AS n FROM public.users;
        ALTER {view.removesuffix(" TABLESPACE ts_analytics")} OWNER TO {owner};
        """,
    )
    dbs.source.execute("source_db", "INSERT INTO users (first_name) VALUES ('New')")
    before = dbs.destination.fingerprint("destination_db")

    run = run_elt(env)

    assert run.returncode == 5, run.stdout
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert "analytics.v" in error["error"]
    for privilege in missing:
        assert f"{privilege} (for analytics.v)" in error["error"]
    assert error["error"].count(" (for analytics.v)") == len(missing)
    for message in ("Parallel copy planned", "Table copied", "Starting data extraction"):
        assert not any(m.startswith(message) for m in run.messages()), message
    assert dbs.destination.fingerprint("destination_db") == before
    # The GRANTs the hint names are enough: the view is re-created, its owner kept.
    grants = re.fullmatch(r"Grant it \((.*)\), or drop .*", error["hint"])
    assert grants is not None, error["hint"]
    dbs.destination.execute("destination_db", grants[1])
    view = "SELECT oid::int, pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'analytics.v'::regclass"
    ((old_oid, _),) = dbs.destination.query("destination_db", view)

    run = run_elt(env)

    assert run.returncode == 0, run.stdout
    ((new_oid, new_owner),) = dbs.destination.query("destination_db", view)
    assert (new_oid != old_oid, new_owner) == (True, owner)


def test_only_staging_schemas_the_job_created_are_removed(dbs: Databases) -> None:
    dbs.destination.execute(
        "destination_db",
        f"""
        CREATE SCHEMA elt_staging_mine;
        CREATE TABLE elt_staging_mine.notes (id int PRIMARY KEY, body text);
        INSERT INTO elt_staging_mine.notes VALUES (1, 'keep me');
        -- what a parallel run killed outright leaves behind
        CREATE SCHEMA elt_staging_0;
        CREATE TABLE elt_staging_0.film_actors (film_id int);
        COMMENT ON SCHEMA elt_staging_0 IS '{STAGING_MARKER}';
        """,
    )
    for attempt in range(2):
        run = run_elt(dbs.env())
        assert run.returncode == 0, run.stdout
        warnings = run.find("Removing staging schemas left by an interrupted run")
        assert [(w["level"], w["schemas"]) for w in warnings] == (
            [("WARNING", ["elt_staging_0"])] if attempt == 0 else []
        )
    schemas = dbs.destination.query(
        "destination_db",
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'elt%' ORDER BY 1",
    )
    assert schemas == [("elt_staging_mine",)]
    rows = dbs.destination.query("destination_db", "SELECT * FROM elt_staging_mine.notes")
    assert rows == [(1, "keep me")]


def test_wrong_password_fails_cleanly_and_changes_nothing(dbs: Databases) -> None:
    assert run_elt(dbs.env()).returncode == 0
    before = dbs.destination.fingerprint("destination_db")
    dbs.source.execute("source_db", "DELETE FROM film_actors")

    run = run_elt(dbs.env(DESTINATION_POSTGRES_PASSWORD="not-the-password"))

    assert run.returncode == 3
    (error,) = run.errors()
    assert error["message"] == "Failed to connect to database"
    assert "DESTINATION_POSTGRES_PASSWORD" in error["hint"]
    assert "password authentication failed" in " ".join(error["stderr_tail"])
    assert dbs.destination.fingerprint("destination_db") == before


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections but never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A loopback port with no server on it (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("port_fixture", ["closed_port", "silent_port"])
def test_unreachable_source_exits_after_the_retry_budget(
    dbs: Databases, port_fixture: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(port_fixture)
    run = run_elt(
        dbs.env(
            SOURCE_POSTGRES_PORT=str(port),
            ELT_WAIT_RETRIES="2",
            ELT_WAIT_DELAY_SECONDS="0",
            ELT_CONNECT_TIMEOUT_SECONDS="2",
        )
    )
    assert run.returncode == 3
    waits = [line for line in run.logs if line["message"].startswith("Database not ready")]
    attempts = [line["attempt"] for line in waits]
    assert attempts == [1, 2]  # exactly the budget: no more, no fewer
    (error,) = run.errors()
    assert "SOURCE_POSTGRES_HOST" in error["hint"]
    assert error["total_attempts"] == 2
    assert "Data extraction completed successfully" not in run.messages()


def test_a_load_that_fails_halfway_leaves_the_destination_as_it_was(dbs: Databases) -> None:
    assert run_elt(dbs.env()).returncode == 0
    # Run 2 would change data; an event trigger fails it late: constraints on
    # film_actors are added after all the data.
    dbs.source.execute("source_db", "DELETE FROM film_actors; UPDATE users SET email = NULL")
    dbs.destination.execute("destination_db", REFUSE_FILM_ACTORS_KEYS)
    before = dbs.destination.fingerprint("destination_db")

    run = run_elt(dbs.env())

    assert run.returncode == 5
    (error,) = run.errors()
    assert REFUSAL in " ".join(error["stderr_tail"])
    # It was halfway: the rows were in (on the parallel path, film_actors' rows:
    # its keys are built as soon as they are, while other tables may still copy).
    assert "Data extraction completed successfully" in run.messages() or any(
        line["table"].endswith("film_actors") for line in run.find("Table copied")
    )
    assert dbs.destination.fingerprint("destination_db") == before
    assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS


def test_no_dump_or_other_file_is_left_behind(dbs: Databases, tmp_path: Path) -> None:
    workdir, tmpdir = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    tmpdir.mkdir()
    ok = run_elt(dbs.env(TMPDIR=str(tmpdir)), cwd=workdir)
    failed = run_elt(dbs.env(TMPDIR=str(tmpdir), DESTINATION_POSTGRES_DB="missing"), cwd=workdir)
    assert (ok.returncode, failed.returncode) == (0, 3)
    assert list(workdir.iterdir()) == []
    assert list(tmpdir.iterdir()) == []


def test_password_file_is_accepted(dbs: Databases, tmp_path: Path) -> None:
    secret = tmp_path / "source_password"
    secret.write_text(dbs.source.password + "\n", encoding="utf-8")
    env = dbs.env(SOURCE_POSTGRES_PASSWORD_FILE=str(secret))
    del env["SOURCE_POSTGRES_PASSWORD"]
    run = run_elt(env)
    assert run.returncode == 0, run.stdout
    assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS
