"""The dbt project (transform/): parsed without a database, then built on a real load.

No-database tier: `dbt parse` and what the manifest promises (models, schemas,
descriptions, the tests on keys, facts and the film rating). Real-server tier:
the ELT job loads the seed into a real destination, `dbt build` runs against
it, and the marts are compared with SQL computed on the source. dbt's artifacts
and logs go to temporary directories (conftest.dbt_argv), never into the tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    DBT_PROFILE_VARIABLES,
    SEEDED_TEMPLATE,
    TRANSFORM,
    Databases,
    DbtRun,
    PgServer,
    dbt_argv,
    dbt_env,
    run_dbt,
    run_elt,
)

PROJECT = "elt_pipeline"
STAGING = {
    "stg_source_db__users",
    "stg_source_db__films",
    "stg_source_db__film_categories",
    "stg_source_db__actors",
    "stg_source_db__film_actors",
}
MARTS = {
    "dim_films",
    "dim_actors",
    "dim_categories",
    "dim_users",
    "fct_film_cast",
    "fct_film_categories",
}

# The key of every model and source table: each must have unique and not_null.
KEYS = {
    ("source", "users"): "id",
    ("source", "films"): "film_id",
    ("source", "film_category"): "category_id",
    ("source", "actors"): "actor_id",
    ("model", "stg_source_db__users"): "user_id",
    ("model", "stg_source_db__films"): "film_id",
    ("model", "stg_source_db__film_categories"): "film_category_id",
    ("model", "stg_source_db__actors"): "actor_id",
    ("model", "stg_source_db__film_actors"): "film_actor_id",
    ("model", "dim_films"): "film_id",
    ("model", "dim_actors"): "actor_id",
    ("model", "dim_categories"): "category_key",
    ("model", "dim_users"): "user_id",
    ("model", "fct_film_cast"): "film_actor_id",
    ("model", "fct_film_categories"): "film_category_id",
}
# Every foreign key of every fact, and the dimension it points to.
FACT_KEYS = {
    ("fct_film_cast", "film_id"): "dim_films",
    ("fct_film_cast", "actor_id"): "dim_actors",
    ("fct_film_categories", "film_id"): "dim_films",
    ("fct_film_categories", "category_key"): "dim_categories",
}
RATINGS = ["G", "PG", "PG-13", "R", "NC-17"]
RATING_TEST = "accepted_values_stg_source_db__films_rating__G__PG__PG_13__R__NC_17"


def parse_env() -> dict[str, str]:
    # `dbt parse` renders the profile but never connects: any values will do.
    env = {name: f"parse-{name.lower()}" for name in DBT_PROFILE_VARIABLES}
    env["DESTINATION_POSTGRES_PORT"] = "5432"
    return env


@pytest.fixture(scope="module")
def manifest(dbt_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = run_dbt(dbt_bin, "parse", parse_env(), tmp_path_factory.mktemp("dbt-parse"))
    assert run.returncode == 0, run.stdout + run.stderr
    return run.artifact("manifest.json")


def nodes(manifest: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [n for n in manifest["nodes"].values() if n["resource_type"] == resource_type]


def generic_tests(manifest: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [n for n in nodes(manifest, "test") if n.get("test_metadata", {}).get("name") == name]


def columns_with(manifest: dict[str, Any], test: str) -> set[tuple[str, str, str]]:
    """(kind, table, column) of every `test` (unique, not_null) in the project."""
    found = set()
    for node in generic_tests(manifest, test):
        (parent,) = node["depends_on"]["nodes"]
        kind, _, rest = parent.partition(".")
        # A test on an expression (a composite key) has its column only in kwargs.
        column = node["column_name"] or node["test_metadata"]["kwargs"]["column_name"]
        found.add((kind, rest.rsplit(".", 1)[-1], column))
    return found


# --- no database ---------------------------------------------------------------


def test_dbt_argv_keeps_artifacts_out_of_the_tree(tmp_path: Path) -> None:
    argv = dbt_argv(Path("/venv/bin/dbt"), "docs generate", tmp_path, "--select", "x")
    assert argv == [
        "/venv/bin/dbt",
        *("docs", "generate"),
        *("--project-dir", str(TRANSFORM)),
        *("--profiles-dir", str(TRANSFORM)),
        *("--target-path", str(tmp_path / "target")),
        *("--log-path", str(tmp_path / "logs")),
        *("--log-format", "json"),
        *("--select", "x"),
    ]


def test_dbt_env_passes_only_the_destination(tmp_path: Path) -> None:
    job_env = {name: f"value of {name}" for name in DBT_PROFILE_VARIABLES}
    job_env["SOURCE_POSTGRES_PASSWORD"] = "source secret"
    env = dbt_env(job_env, tmp_path)
    assert "SOURCE_POSTGRES_PASSWORD" not in env
    assert {name: env[name] for name in DBT_PROFILE_VARIABLES} == {
        name: f"value of {name}" for name in DBT_PROFILE_VARIABLES
    }


def test_profile_reads_the_destination_variables() -> None:
    profile = (TRANSFORM / "profiles.yml").read_text(encoding="utf-8")
    for name in DBT_PROFILE_VARIABLES:
        assert f"env_var('{name}')" in profile


def test_parse_finds_every_model_in_its_schema(manifest: dict[str, Any]) -> None:
    models = {n["name"]: n for n in nodes(manifest, "model")}
    assert set(models) == STAGING | MARTS
    # generate_schema_name: exactly `staging` and `marts`, not `<target>_staging`.
    assert {name: models[name]["schema"] for name in STAGING} == dict.fromkeys(STAGING, "staging")
    assert {name: models[name]["schema"] for name in MARTS} == dict.fromkeys(MARTS, "marts")
    assert {models[name]["config"]["materialized"] for name in STAGING} == {"view"}
    assert {models[name]["config"]["materialized"] for name in MARTS} == {"table"}


def test_every_model_source_and_column_is_described(manifest: dict[str, Any]) -> None:
    described = [*nodes(manifest, "model"), *manifest["sources"].values()]
    assert len(described) == 16
    for node in described:
        assert node["description"].strip(), node["unique_id"]
        assert node["columns"], node["unique_id"]
        for column in node["columns"].values():
            assert column["description"].strip(), f"{node['unique_id']}.{column['name']}"


@pytest.mark.parametrize("test", ["unique", "not_null"])
@pytest.mark.parametrize(("kind", "table"), KEYS.keys(), ids=[t for _, t in KEYS])
def test_every_key_is_unique_and_not_null(
    manifest: dict[str, Any], kind: str, table: str, test: str
) -> None:
    assert (kind, table, KEYS[kind, table]) in columns_with(manifest, test)


def test_the_composite_source_key_is_unique(manifest: dict[str, Any]) -> None:
    # film_actors' primary key is (film_id, actor_id): one unique test on both.
    assert ("source", "film_actors", "(film_id || '-' || actor_id)") in columns_with(
        manifest, "unique"
    )


@pytest.mark.parametrize(("fact", "column"), FACT_KEYS.keys(), ids="-".join)
def test_every_fact_key_has_a_relationships_test(
    manifest: dict[str, Any], fact: str, column: str
) -> None:
    targets = [
        node["test_metadata"]["kwargs"]["to"]
        for node in generic_tests(manifest, "relationships")
        if node["column_name"] == column and node["attached_node"] == f"model.{PROJECT}.{fact}"
    ]
    assert targets == [f"ref('{FACT_KEYS[fact, column]}')"]


def test_every_fact_column_to_a_dimension_is_listed(manifest: dict[str, Any]) -> None:
    # A new key column on a fact must be added to FACT_KEYS (and so get a test).
    for node in nodes(manifest, "model"):
        if node["name"].startswith("fct_"):
            keys = {c for c in node["columns"] if c.endswith(("_id", "_key"))}
            own_key = KEYS["model", node["name"]]
            assert keys - {own_key} == {c for f, c in FACT_KEYS if f == node["name"]}


def test_the_staged_rating_accepts_exactly_the_mpaa_ratings(manifest: dict[str, Any]) -> None:
    (test,) = [
        n
        for n in generic_tests(manifest, "accepted_values")
        if n["attached_node"] == f"model.{PROJECT}.stg_source_db__films"
    ]
    assert test["column_name"] == "rating"
    assert test["test_metadata"]["kwargs"]["values"] == RATINGS
    assert test["name"] == RATING_TEST


def test_there_are_singular_tests(manifest: dict[str, Any]) -> None:
    singular = [n for n in nodes(manifest, "test") if "test_metadata" not in n]
    assert len(singular) >= 1
    for test in singular:
        assert test["description"].strip(), test["name"]


# --- real servers: the ELT job, then dbt -----------------------------------------


@dataclass
class Built:
    dbs: Databases
    build: DbtRun
    docs: DbtRun
    tree_before: list[str]
    tree_after: list[str]


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def load(dbs: Databases) -> None:
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def built(
    source_server: PgServer,
    destination_server: PgServer,
    dbt_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Built]:
    """The seed loaded and `dbt build` run once, for the read-only checks below."""
    dbs = Databases(
        source_server,
        destination_server,
        source_db="transform_source",
        destination_db="transform_destination",
    )
    source_server.recreate_database(dbs.source_db, template=SEEDED_TEMPLATE)
    destination_server.recreate_database(dbs.destination_db)
    before = tree(TRANSFORM)
    load(dbs)
    workdir = tmp_path_factory.mktemp("dbt-build")
    build = run_dbt(dbt_bin, "build", dbs.env(), workdir)
    docs = run_dbt(dbt_bin, "docs generate", dbs.env(), tmp_path_factory.mktemp("dbt-docs"))
    yield Built(dbs, build, docs, before, tree(TRANSFORM))
    for server, name in ((source_server, dbs.source_db), (destination_server, dbs.destination_db)):
        server.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_build_passes_every_model_and_test(built: Built) -> None:
    assert built.build.returncode == 0, built.build.stdout + built.build.stderr
    statuses = built.build.statuses()
    models = {uid.rsplit(".", 1)[-1] for uid in statuses if uid.startswith("model.")}
    assert models == STAGING | MARTS
    tests = {uid: s for uid, s in statuses.items() if uid.startswith("test.")}
    assert len(tests) >= 60
    assert set(tests.values()) == {"pass"}, tests
    assert {s for uid, s in statuses.items() if uid.startswith("model.")} == {"success"}
    assert built.build.messages("error") == []


def test_build_logs_json_lines(built: Built) -> None:
    assert built.build.logs
    for line in built.build.logs:
        assert {"info", "data"} <= line.keys()
        assert {"level", "msg", "ts", "name"} <= line["info"].keys()
    assert "Completed successfully" in built.build.messages()


def test_models_are_built_in_their_own_schemas(built: Built) -> None:
    rows = built.dbs.destination.query(
        built.dbs.destination_db,
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'public')",
    )
    assert sorted(rows) == sorted(
        [("staging", name, "VIEW") for name in STAGING]
        + [("marts", name, "BASE TABLE") for name in MARTS]
    )


# Each mart's row count, computed on the SOURCE, and what that gives on the seed.
ROW_COUNTS = {
    "dim_films": ("SELECT count(*) FROM films", 20),
    "dim_actors": ("SELECT count(*) FROM actors", 20),
    "dim_categories": ("SELECT count(DISTINCT category_name) FROM film_category", 15),
    "dim_users": ("SELECT count(*) FROM users", 14),
    "fct_film_cast": ("SELECT count(*) FROM film_actors", 20),
    "fct_film_categories": ("SELECT count(*) FROM film_category", 39),
}


@pytest.mark.parametrize("mart", ROW_COUNTS)
def test_mart_row_counts_match_the_source(built: Built, mart: str) -> None:
    source_sql, seed_count = ROW_COUNTS[mart]
    dbs = built.dbs
    (source_count,) = dbs.source.query(dbs.source_db, source_sql)[0]
    (mart_count,) = dbs.destination.query(dbs.destination_db, f"SELECT count(*) FROM marts.{mart}")[
        0
    ]
    assert mart_count == source_count == seed_count


# Contents of a mart (left) against the same figures computed on the SOURCE's
# raw tables (right), both ordered.
CONTENTS = {
    "dim_films": (
        "SELECT film_id, title, release_year, price, rating, user_rating, category_count,"
        " categories, cast_size FROM marts.dim_films ORDER BY film_id",
        """
        SELECT f.film_id, f.title, extract(year FROM f.release_date)::int, f.price, f.rating,
               f.user_rating,
               (SELECT count(*) FROM film_category c WHERE c.film_id = f.film_id)::int,
               (SELECT string_agg(c.category_name, ', ' ORDER BY c.category_name)
                  FROM film_category c WHERE c.film_id = f.film_id),
               (SELECT count(*) FROM film_actors a WHERE a.film_id = f.film_id)::int
        FROM films f ORDER BY f.film_id
        """,
    ),
    "dim_actors": (
        "SELECT actor_id, actor_name, film_count FROM marts.dim_actors ORDER BY actor_id",
        """
        SELECT a.actor_id, a.actor_name,
               (SELECT count(*) FROM film_actors fa WHERE fa.actor_id = a.actor_id)::int
        FROM actors a ORDER BY a.actor_id
        """,
    ),
    "dim_categories": (
        "SELECT category_key, category_name, film_count FROM marts.dim_categories"
        " ORDER BY category_name",
        "SELECT md5(category_name), category_name, count(DISTINCT film_id)::int"
        " FROM film_category GROUP BY category_name ORDER BY category_name",
    ),
    "dim_users": (
        "SELECT user_id, full_name, email, email_domain, birth_year FROM marts.dim_users"
        " ORDER BY user_id",
        "SELECT id, first_name || ' ' || last_name, lower(email),"
        " substring(email FROM '@(.*)$'), extract(year FROM date_of_birth)::int"
        " FROM users ORDER BY id",
    ),
    "fct_film_cast": (
        "SELECT film_id, actor_id, cast_size FROM marts.fct_film_cast ORDER BY film_id, actor_id",
        "SELECT film_id, actor_id, (count(*) OVER (PARTITION BY film_id))::int"
        " FROM film_actors ORDER BY film_id, actor_id",
    ),
    "fct_film_categories": (
        "SELECT film_category_id, film_id, category_key FROM marts.fct_film_categories"
        " ORDER BY film_category_id",
        "SELECT category_id, film_id, md5(category_name) FROM film_category ORDER BY category_id",
    ),
}


@pytest.mark.parametrize("mart", CONTENTS)
def test_mart_contents_match_sql_on_the_source(built: Built, mart: str) -> None:
    mart_sql, source_sql = CONTENTS[mart]
    dbs = built.dbs
    expected = dbs.source.query(dbs.source_db, source_sql)
    assert expected, "the source query found nothing to compare"
    assert dbs.destination.query(dbs.destination_db, mart_sql) == expected


# A few values read off the seed (source_db_init/init.sql) by hand.
SPOT_VALUES = [
    (
        "SELECT categories FROM marts.dim_films WHERE title = 'Inception'",
        "Action, Sci-Fi, Thriller",
    ),
    ("SELECT cast_size FROM marts.dim_films WHERE title = 'The Dark Knight'", 3),
    ("SELECT category_count FROM marts.dim_films WHERE title = 'Dune: Part Three'", 0),
    ("SELECT rating FROM marts.dim_films WHERE title = 'Nosferatu'", None),
    ("SELECT film_count FROM marts.dim_actors WHERE actor_name = 'Morgan Freeman'", 2),
    ("SELECT film_count FROM marts.dim_actors WHERE actor_name = 'Penélope Cruz'", 0),
    ("SELECT film_count FROM marts.dim_categories WHERE category_name = 'Drama'", 6),
    ("SELECT birth_year FROM marts.dim_users WHERE email = 'olumide.adebayo@example.com'", 2000),
    ("SELECT count(*) FROM marts.dim_users WHERE birth_date IS NULL", 1),
]


@pytest.mark.parametrize(("sql", "expected"), SPOT_VALUES)
def test_spot_values(built: Built, sql: str, expected: Any) -> None:
    assert built.dbs.destination.query(built.dbs.destination_db, sql) == [(expected,)]


def test_docs_generate_finds_every_column_described(built: Built) -> None:
    assert built.docs.returncode == 0, built.docs.stdout + built.docs.stderr
    catalog = built.docs.artifact("catalog.json")
    manifest = built.docs.artifact("manifest.json")
    assert len(catalog["nodes"]) == len(STAGING | MARTS)
    assert len(catalog["sources"]) == 5
    for section in ("nodes", "sources"):
        for unique_id, entry in catalog[section].items():
            documented = manifest[section][unique_id]["columns"]
            # The columns the database has, not only those the YAML lists.
            for column in entry["columns"]:
                assert documented.get(column, {}).get("description"), f"{unique_id}.{column}"


def test_runs_leave_no_secret_and_nothing_in_the_tree(built: Built) -> None:
    assert built.tree_after == built.tree_before
    password = built.dbs.destination.password
    for run in (built.build, built.docs):
        files = [p for p in run.workdir.rglob("*") if p.is_file()]
        assert any(p.name == "run_results.json" for p in files)
        for path in files:
            assert password not in path.read_text(encoding="utf-8", errors="replace"), path


# --- real servers: a row that breaks a test --------------------------------------

# A row inserted on the source, the one test it must fail, and the models that
# must then not be built (everything downstream of the failed test).
BREAKING_ROWS = {
    "film rated XYZ": (
        "INSERT INTO films (title, rating) VALUES ('Bad Rating', 'XYZ')",
        RATING_TEST,
        {"dim_films"},
    ),
    "category without a film": (
        "INSERT INTO film_category (film_id, category_name) VALUES (NULL, 'Drama')",
        "source_not_null_source_db_film_category_film_id",
        {"stg_source_db__film_categories", "dim_films", "dim_categories", "fct_film_categories"},
    ),
}


@pytest.mark.parametrize(
    ("sql", "failing", "skipped"), BREAKING_ROWS.values(), ids=BREAKING_ROWS.keys()
)
def test_a_row_that_breaks_a_test_fails_the_build(
    dbs: Databases, dbt_bin: Path, tmp_path: Path, sql: str, failing: str, skipped: set[str]
) -> None:
    dbs.source.execute(dbs.source_db, sql)
    load(dbs)

    run = run_dbt(dbt_bin, "build", dbs.env(), tmp_path)

    assert run.returncode == 1, run.stdout + run.stderr
    statuses = run.statuses()
    failed = [uid for uid, status in statuses.items() if status in {"fail", "error"}]
    assert [uid.split(".")[2] for uid in failed] == [failing]
    # The failure is named where people look: in the error lines of the log.
    assert any(failing in message for message in run.messages("error")), run.stdout
    # Nothing downstream of the failed test is built on the bad data.
    models = {uid.split(".")[2]: s for uid, s in statuses.items() if uid.startswith("model.")}
    assert {name for name, status in models.items() if status == "skipped"} == skipped
    assert {name for name, status in models.items() if status != "skipped"} == (
        STAGING | MARTS
    ) - skipped


# --- real servers: the whole stack twice -------------------------------------------


def marts_contents(dbs: Databases) -> dict[str, list[tuple[Any, ...]]]:
    return {
        mart: dbs.destination.query(dbs.destination_db, f"SELECT * FROM marts.{mart} ORDER BY 1")
        for mart in sorted(MARTS)
    }


def test_reload_keeps_dbt_views_and_gives_the_same_marts(
    dbs: Databases, dbt_bin: Path, tmp_path: Path
) -> None:
    load(dbs)
    first = run_dbt(dbt_bin, "build", dbs.env(), tmp_path / "first")
    assert first.returncode == 0, first.stdout
    after_first = marts_contents(dbs)

    # The staging views depend on the copied tables; the reload keeps them.
    load(dbs)
    second = run_dbt(dbt_bin, "build", dbs.env(), tmp_path / "second")
    assert second.returncode == 0, second.stdout
    assert marts_contents(dbs) == after_first

    # And the kept views read the new tables, before dbt runs again.
    dbs.source.execute(dbs.source_db, "INSERT INTO actors (actor_name) VALUES ('New Actor')")
    load(dbs)
    assert dbs.destination.query(
        dbs.destination_db,
        "SELECT count(*) FROM staging.stg_source_db__actors WHERE actor_name = 'New Actor'",
    ) == [(1,)]


def test_reload_after_a_source_column_no_model_uses_is_dropped(
    dbs: Databases, dbt_bin: Path, tmp_path: Path
) -> None:
    # A staging view keeps the column list its query had when it was created:
    # a `select *` would make this reload refuse the view ("no longer applies").
    dbs.source.execute(dbs.source_db, "ALTER TABLE films ADD COLUMN notes text")
    load(dbs)
    first = run_dbt(dbt_bin, "build", dbs.env(), tmp_path / "first")
    assert first.returncode == 0, first.stdout
    dbs.source.execute(dbs.source_db, "ALTER TABLE films DROP COLUMN notes")
    load(dbs)
    assert dbs.destination.query(
        dbs.destination_db, "SELECT count(*) FROM staging.stg_source_db__films"
    ) == [(20,)]
