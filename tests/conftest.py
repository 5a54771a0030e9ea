"""Shared fixtures: two real PostgreSQL servers, seeded like the Compose stack.

The servers are started by the tests themselves (initdb + pg_ctl on free
loopback ports, in temporary directories that are removed afterwards), with
dev/pgserver.py, which the local stack (dev/local_stack.py) uses too. When the
tests run as root, as CI does, the servers run as the unprivileged `postgres`
user, because PostgreSQL refuses to run as root.

The binaries are PostgreSQL 17 (what compose ships) unless PG_BINDIR says
otherwise; Debian's PostgreSQL 15 serves the cross-version tier.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

# ruamel.yaml is not a dependency of its own: it comes with check-jsonschema
# (requirements-dev.txt), which parses YAML with it. PyYAML is not installed.
from ruamel.yaml import YAML

import pgserver
from pgserver import (
    debian_bindir,
    default_bindir,
    job_env,
    run_init_scripts,
    usable_problem,
    version_of,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "elt" / "elt_script.py"
SEED_DIR = REPO / "source_db_init"
# The seed's row counts (source_db_init/), the figures README.md promises.
SEED_COUNTS = {"users": 14, "films": 20, "film_category": 39, "actors": 20, "film_actors": 20}
# A password with every character class that breaks naive quoting. The servers
# use it, so every test also proves it never leaks into a log line.
PASSWORD = "p'a\"s s:w@o/r\\d-ü-" + secrets.token_hex(4)
SEEDED_TEMPLATE = "elt_seeded_template"
PgServer = pgserver.PgServer


def pg_bindir() -> Path:
    """The PostgreSQL binaries the tests run: $PG_BINDIR, else the bundled 17 (dev/pgserver.py)."""
    found = default_bindir()
    if found is None:
        pytest.exit("No PostgreSQL server binaries found: run `bash .ci/run`, or set PG_BINDIR.", 2)
    problem = usable_problem(found)
    if problem is not None:
        pytest.exit(problem, 2)
    return found


@pytest.fixture(scope="session")
def bindir() -> Path:
    return pg_bindir()


@contextlib.contextmanager
def running(server: PgServer, *, seeded: bool = False) -> Iterator[PgServer]:
    """Initialize and start `server`, and remove it afterwards. `seeded`: the seed
    goes into SEEDED_TEMPLATE once, exactly as the image loads it."""
    try:
        server.init()
        server.start()
        if seeded:
            server.recreate_database(SEEDED_TEMPLATE)
            run_init_scripts(server, SEEDED_TEMPLATE, SEED_DIR)
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def source_server(bindir: Path) -> Iterator[PgServer]:
    with running(PgServer("source", bindir, PASSWORD), seeded=True) as server:
        yield server


@pytest.fixture(scope="session")
def destination_server(bindir: Path) -> Iterator[PgServer]:
    with running(PgServer("destination", bindir, PASSWORD + "-destination")) as server:
        yield server


# --- other versions: the cross-version tier (tests/test_versions.py) and ICU ---

OLD_MAJOR = 15  # Debian bookworm's PostgreSQL, the version users upgrade from


@pytest.fixture(scope="session")
def old_bindir() -> Path:
    found = debian_bindir(OLD_MAJOR)
    if found is None:
        pytest.skip(
            f"needs Debian's PostgreSQL {OLD_MAJOR} in /usr/lib/postgresql/{OLD_MAJOR}/bin "
            "(bash .ci/run installs it as root)"
        )
    return found


@pytest.fixture(scope="session")
def old_source_server(old_bindir: Path) -> Iterator[PgServer]:
    """A PostgreSQL 15 server with the seed in SEEDED_TEMPLATE, like source_server."""
    old = PgServer(f"source{OLD_MAJOR}", old_bindir, PASSWORD + "-old")
    with running(old, seeded=True) as server:
        yield server


def has_icu(server: PgServer) -> bool:
    # initdb imports ICU's locales (und-x-icu, ...) only into a build with ICU;
    # 16+ lists a `unicode` ICU collation even without it.
    rows = server.query(
        "postgres", "SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'"
    )
    return int(rows[0][0]) > 0


@pytest.fixture(scope="session")
def icu_server(source_server: PgServer, request: pytest.FixtureRequest) -> PgServer:
    """A server built with ICU: the default one if it has ICU (the postgres:17
    image does; the bundled 17 does not), else Debian's PostgreSQL 15."""
    if has_icu(source_server):
        return source_server
    server = request.getfixturevalue("old_source_server")
    assert isinstance(server, PgServer)
    if not has_icu(server):
        pytest.skip(f"neither {source_server.bindir} nor {server.bindir} is built with ICU")
    return server


# --- tiers: the markers of pyproject.toml, given by what a test needs ------------

# Every fixture that starts a PostgreSQL server takes its binaries from one of
# these, so a test whose fixtures reach one needs real servers.
SERVER_BINARIES = frozenset({"bindir", "old_bindir"})
# dbt (.venv-dbt) takes seconds to start, with or without a database.
DBT = frozenset({"dbt_bin"})
NEEDS = ("server", "dbt", "docker")
# The markers of every test file collected, before `-m` deselects any:
# tests/test_docs.py checks the tier table of docs/development.md against them.
COLLECTED_MARKERS: dict[str, set[str]] = {}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `server` every test whose fixtures start a server, `dbt` every test
    whose fixtures run dbt, and `nodb` every test that needs none of server, dbt
    or docker. Tests that start servers on their own (dev/stack's) are marked
    `server` where they are written, and test_docker.py is marked `docker`."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_BINARIES:
            item.add_marker(pytest.mark.server)
        if fixtures & DBT:
            item.add_marker(pytest.mark.dbt)
        needs = [name for name in NEEDS if item.get_closest_marker(name)]
        if needs and item.get_closest_marker("nodb"):
            raise pytest.UsageError(f"{item.nodeid} is marked nodb but needs {needs[0]}")
        if not needs:
            item.add_marker(pytest.mark.nodb)
        tiers = COLLECTED_MARKERS.setdefault(item.path.name, set())
        tiers.update(name for name in (*NEEDS, "nodb") if item.get_closest_marker(name))


# --- the stack's settings files: docker-compose.yaml, .env.example ---------------

COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
# Compose-only settings (the job never reads them): where the databases are
# published on the host.
PUBLISHING = ("PUBLISH_ADDRESS", "SOURCE_PUBLISH_PORT", "DESTINATION_PUBLISH_PORT")


def load_yaml(path: Path) -> Any:
    # The safe loader builds plain dicts and lists (and YAML 1.2 scalars, as
    # compose does: an unquoted `no` stays a string).
    return YAML(typ="safe", pure=True).load(path)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    document = load_yaml(COMPOSE_FILE)
    assert isinstance(document, dict), f"{COMPOSE_FILE.name} is not a mapping"
    return document


@dataclass
class EnvFile:
    values: dict[str, str] = field(default_factory=dict)  # NAME=value lines
    commented: dict[str, str] = field(default_factory=dict)  # `# NAME=value` lines
    undocumented: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


ASSIGNMENT = re.compile(r"(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)")
COMMENTED_ASSIGNMENT = re.compile(r"#\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)")
# What compose and a naive `name, _, value = line.partition("=")` read alike.
PLAIN_VALUE = re.compile(r"[^\s'\"#$\\]*")


def parse_env_file(text: str) -> EnvFile:
    """Read .env.example the strict way: each variable documented by the comment line above it."""
    env = EnvFile()
    previous_is_prose = False
    for number, line in enumerate(text.splitlines(), start=1):
        active, commented = ASSIGNMENT.fullmatch(line), COMMENTED_ASSIGNMENT.fullmatch(line)
        match = active or commented
        if match is not None:
            name, value = match["name"], match["value"]
            target = env.values if active else env.commented
            if name in env.values or name in env.commented:
                env.problems.append(f"line {number}: {name} is defined twice")
            if not PLAIN_VALUE.fullmatch(value):
                env.problems.append(
                    f"line {number}: value of {name} is not a plain value: {value!r}"
                )
            if not previous_is_prose:
                env.undocumented.append(name)
            target[name] = value
        elif line.strip() and not line.startswith("#"):
            env.problems.append(f"line {number}: not a NAME=value line: {line!r}")
        previous_is_prose = line.startswith("#") and match is None
    return env


@pytest.fixture(scope="session")
def env_example() -> EnvFile:
    return parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What a CI log must show: the versions this run tested."""
    found = default_bindir()
    if found is None:
        return ["PostgreSQL: none found"]
    old = debian_bindir(OLD_MAJOR)
    return [
        f"PostgreSQL server: {version_of(found / 'postgres')} ({found})",
        f"PostgreSQL client tools (the job's pg_dump/pg_restore/psql/pg_isready): "
        f"{version_of(found / 'pg_dump')} ({found})",
        f"PostgreSQL {OLD_MAJOR} (cross-version tier, ICU): "
        + (f"{version_of(old / 'postgres')} ({old})" if old else "not installed"),
        f"Python: {platform.python_version()} ({sys.executable})",
    ]


@pytest.fixture(scope="session")
def replica_pair(bindir: Path) -> Iterator[tuple[PgServer, PgServer]]:
    """A primary and its hot standby (streaming replication, `pg_basebackup -R`).
    Both have the same password; initdb's pg_hba.conf already allows
    replication connections from 127.0.0.1."""
    standby = PgServer("standby", bindir, PASSWORD)
    with running(PgServer("primary", bindir, PASSWORD)) as primary:
        try:
            standby.replicate(primary)
            standby.start()
            yield primary, standby
        finally:
            standby.remove()


def wait_for_replay(primary: PgServer, standby: PgServer) -> None:
    """Wait until the standby has replayed everything the primary has committed so far."""
    with primary.connect() as conn:
        # A synchronous commit that wrote WAL flushes all WAL before it (the
        # servers commit asynchronously), and only flushed WAL is sent.
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT pg_catalog.pg_logical_emit_message(true, 'elt_test', 'replay')")
        row = conn.execute("SELECT pg_catalog.pg_current_wal_flush_lsn()::text").fetchone()
    assert row is not None
    lsn = row[0]
    for _ in range(6000):  # a generous bound (minutes), not a measurement
        ((done,),) = standby.query(
            "postgres", f"SELECT pg_catalog.pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        )
        if done:
            return
        time.sleep(0.05)
    pytest.fail(f"the standby never replayed the primary's WAL up to {lsn}")


# The two copy paths (issue #4), as settings. The seed is far below the
# parallel path's size threshold, so "parallel" lowers it to 0; the default
# (no setting) is what a user gets: streamed for a database this small.
COPY_PATHS: dict[str, dict[str, str]] = {
    "default": {},
    "streamed": {"ELT_JOBS": "1"},
    "parallel": {"ELT_JOBS": "2", "ELT_PARALLEL_MIN_MB": "0", "ELT_PARALLEL_MIN_TABLE_MB": "0"},
}


@dataclass
class Databases:
    """A freshly seeded source_db and an empty destination_db for one test."""

    source: PgServer
    destination: PgServer
    source_db: str = "source_db"
    destination_db: str = "destination_db"
    path: str = "default"  # a key of COPY_PATHS

    def env(self, **overrides: str) -> dict[str, str]:
        """The job's environment: every setting explicit, small wait budget."""
        env = job_env(self.source, self.destination, self.source_db, self.destination_db)
        env.update(COPY_PATHS[self.path])
        env.update(overrides)
        return {k: v for k, v in env.items() if v is not None}

    def counts(self, server: PgServer, dbname: str) -> dict[str, int]:
        return {
            table: int(server.query(dbname, f"SELECT count(*) FROM public.{table}")[0][0])
            for table in SEED_COUNTS
        }


@pytest.fixture
def dbs(source_server: PgServer, destination_server: PgServer) -> Databases:
    for server in (source_server, destination_server):
        if not server.is_running():  # a fault test that failed before restarting it
            server.restart()
    source_server.recreate_database("source_db", template=SEEDED_TEMPLATE)
    destination_server.recreate_database("destination_db")
    return Databases(source_server, destination_server)


@dataclass
class EltRun:
    returncode: int
    stdout: str
    stderr: str
    logs: list[dict[str, Any]]

    def messages(self) -> list[str]:
        return [str(line["message"]) for line in self.logs]

    def find(self, message: str) -> list[dict[str, Any]]:
        return [line for line in self.logs if line["message"] == message]

    def errors(self) -> list[dict[str, Any]]:
        return [line for line in self.logs if line["level"] == "ERROR"]


def both_paths(request: pytest.FixtureRequest, dbs: Databases) -> Databases:
    """For a module's own `dbs` fixture, parametrized over "streamed" and "parallel"."""
    dbs.path = request.param
    return dbs


def run_elt(
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    timeout: float = 600,
    check_secrets: bool = True,
) -> EltRun:
    """Run the real script as a subprocess and check what every run must satisfy.

    `check_secrets=False` is for passwords that are also names in the logs
    (a table named like the password): those tests check the names instead."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=dict(env),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,  # a safety net against a hung job, not a measurement
        check=False,
    )
    logs = []
    for line in proc.stdout.splitlines():
        record = json.loads(line)  # every stdout line is one JSON object
        assert isinstance(record, dict), line
        assert {"timestamp", "level", "message"} <= record.keys(), line
        logs.append(record)
    for secret in {env.get("SOURCE_POSTGRES_PASSWORD"), env.get("DESTINATION_POSTGRES_PASSWORD")}:
        if secret and check_secrets:
            assert secret not in proc.stdout, "a password leaked into the logs"
            assert secret not in proc.stderr, "a password leaked into stderr"
    run = EltRun(proc.returncode, proc.stdout, proc.stderr, logs)
    paths = [line["copy_path"] for line in run.find("ELT pipeline completed successfully")]
    if paths and env.get("ELT_JOBS") == "1":
        assert paths == ["streamed"], "ELT_JOBS=1 must always stream"
    if paths and env.get("ELT_PARALLEL_MIN_MB") == "0" and env.get("ELT_JOBS") != "1":
        # the parallel path, unless the job said why not
        assert paths == ["parallel"] or run.find("Parallel copy not used"), run.stdout
    return run


# --- helpers for tests that hold a run at a known point (test_faults, test_parallel_copy) ---

SAFETY_NET_SECONDS = 180.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds; fail (never pass) if it has not after a long safety net."""
    deadline = time.monotonic() + SAFETY_NET_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for: {what}")
        time.sleep(0.02)


def elt_sessions(server: PgServer, condition: str = "true") -> int:
    with server.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE application_name = 'elt_pipeline' AND {condition}"
        ).fetchone()
    assert row is not None
    return int(row[0])


def start_job(env: dict[str, str], *, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    argv = [sys.executable, str(SCRIPT)]
    if sigint_ignored:  # as a shell starts a background job (`job &`)
        argv = ["sh", "-c", 'trap "" INT; exec "$0" "$1"', *argv]
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(job: subprocess.Popen[str], env: dict[str, str]) -> EltRun:
    """Collect a started job's output with the same checks run_elt applies."""
    stdout, stderr = job.communicate(timeout=SAFETY_NET_SECONDS)
    logs = [json.loads(line) for line in stdout.splitlines()]
    for secret in (env["SOURCE_POSTGRES_PASSWORD"], env["DESTINATION_POSTGRES_PASSWORD"]):
        assert secret not in stdout
        assert secret not in stderr
    return EltRun(job.returncode, stdout, stderr, logs)


# A load that fails late, on either path: an event trigger (in a schema the load
# does not touch) refuses the keys of film_actors, which both paths add after
# that table's rows (the parallel copy in a staging schema).
REFUSE_FILM_ACTORS_KEYS = """
CREATE SCHEMA guard;
CREATE FUNCTION guard.refuse() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
               WHERE object_identity LIKE '%.film_actors') THEN
        RAISE EXCEPTION 'injected failure in the keys of film_actors';
    END IF;
END $$;
CREATE EVENT TRIGGER refuse_keys ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION guard.refuse();
"""
RELEASE_REFUSAL = "DROP EVENT TRIGGER refuse_keys; DROP SCHEMA guard CASCADE"
REFUSAL = "injected failure in the keys of film_actors"

# A load that stops halfway, inside its transaction, on either path: the same
# event trigger waits at film_actors' keys for an advisory lock the test holds
# on the destination (test_faults, test_failures).
HOLD_LOAD = """
CREATE SCHEMA guard;
CREATE FUNCTION guard.hold() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
               WHERE object_identity LIKE '%.film_actors') THEN
        PERFORM pg_advisory_lock(4242);
        PERFORM pg_advisory_unlock(4242);
    END IF;
END $$;
CREATE EVENT TRIGGER hold_load ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION guard.hold();
"""
RELEASE_HOLD = "DROP EVENT TRIGGER hold_load; DROP SCHEMA guard CASCADE"


@contextlib.contextmanager
def load_held(dbs: Databases) -> Iterator[psycopg.Connection[Any]]:
    """Make the next load stop halfway until the context ends (or the session it
    gives is closed). The trigger stays: the caller drops it with RELEASE_HOLD."""
    dbs.destination.execute("destination_db", HOLD_LOAD)
    holder = dbs.destination.connect("destination_db")
    try:
        holder.execute("SELECT pg_advisory_lock(4242)")
        yield holder
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()  # releases the lock (or the server is already gone)


def load_is_waiting(dbs: Databases) -> bool:
    return elt_sessions(dbs.destination, "wait_event = 'advisory'") == 1


def gated_matview(key: int) -> str:
    """A materialized view whose query waits for the advisory lock `key` (taken
    shared): held by the test on the source, it stops the source's figures there;
    the destination's REFRESH takes the destination's own lock, which is free."""
    return f"""
CREATE FUNCTION public.gate() RETURNS integer LANGUAGE sql VOLATILE
    AS $$ SELECT 1 FROM (SELECT pg_catalog.pg_advisory_lock_shared({key})) AS held $$;
CREATE MATERIALIZED VIEW public.gated AS SELECT public.gate() AS x;
"""


def the_interruption(run: EltRun, signum: int, code: int) -> None:
    """A run stopped by `signum`: exit `code` and one "interrupted" error line naming it."""
    assert run.returncode == code
    error = the_error(run)
    assert error["message"] == "ELT pipeline interrupted"
    assert error["signal"] == signal.Signals(signum).name


def the_error(run: EltRun) -> dict[str, Any]:
    """The one ERROR line of a failed run; it must say what to do."""
    errors = run.errors()
    assert len(errors) == 1, run.stdout
    assert errors[0]["hint"]
    assert errors[0]["exit_code"] == run.returncode
    return errors[0]


def refused_load(dbs: Databases) -> tuple[EltRun, dict[str, Any]]:
    """Run the job, which must refuse the load (exit 5) and leave the destination as it was."""
    before = dbs.destination.fingerprint("destination_db")
    run = run_elt(dbs.env())
    assert run.returncode == 5, run.stdout
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert dbs.destination.fingerprint("destination_db") == before
    return run, error


# --- helpers of test_faults, test_parallel_copy and test_limits: a re-run, child
# processes, the parallel copy's leftovers ---


def loaded_then_changed(dbs: Databases) -> str:
    """A destination with a first copy in it, and a source a re-run would change."""
    first = run_elt(dbs.env())
    assert first.returncode == 0, first.stdout
    dbs.source.execute("source_db", "DELETE FROM film_actors; UPDATE users SET email = NULL")
    return dbs.destination.fingerprint("destination_db")


def rerun_succeeds(dbs: Databases) -> None:
    again = run_elt(dbs.env())
    assert again.returncode == 0, again.stdout
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


def descendants(pid: int) -> dict[int, str]:
    """Child processes of `pid` (recursively) and their command lines."""
    children: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                children[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in children.items():
            if ppid == parent and child not in found:
                with contextlib.suppress(OSError):
                    cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes()
                    if cmdline:  # empty for a child that has exited but is not yet reaped
                        found[child] = cmdline.replace(b"\0", b" ").decode("utf-8", "replace")
                        frontier.append(child)
    return found


def leftovers(dbs: Databases) -> tuple[list[str], list[str]]:
    """Staging schemas in destination_db and scratch databases on the destination server."""
    schemas = dbs.destination.query(
        "destination_db",
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'elt_staging_') ORDER BY 1",
    )
    databases = dbs.destination.query(
        "postgres",
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'elt_scratch_') ORDER BY 1",
    )
    return [str(r[0]) for r in schemas], [str(r[0]) for r in databases]


# --- dbt (transform/, tests/test_transform.py) ---------------------------------

TRANSFORM = REPO / "transform"
# .ci/run installs dbt into a virtualenv of its own (transform/requirements.txt).
DBT_VENV = REPO / ".venv-dbt"
DBT_PROFILE_VARIABLES = tuple(
    f"DESTINATION_POSTGRES_{key}" for key in ("HOST", "PORT", "DB", "USER", "PASSWORD")
)


@pytest.fixture(scope="session")
def dbt_bin() -> Path:
    path = DBT_VENV / "bin" / "dbt"
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run `bash .ci/run`, which installs transform/requirements.txt"
        )
    return path


def dbt_argv(dbt: Path, command: str, workdir: Path, *args: str) -> list[str]:
    """`dbt <command>` on transform/, its artifacts and logs in `workdir`, never in the tree."""
    return [
        str(dbt),
        *command.split(),
        *("--project-dir", str(TRANSFORM)),
        *("--profiles-dir", str(TRANSFORM)),
        *("--target-path", str(workdir / "target")),
        *("--log-path", str(workdir / "logs")),
        *("--log-format", "json"),
        *args,
    ]


def dbt_env(job_env: Mapping[str, str], home: Path) -> dict[str, str]:
    """dbt's environment: the destination's settings from the job's, nothing of the source's."""
    env = {name: job_env[name] for name in DBT_PROFILE_VARIABLES}
    env.update(PATH=os.environ.get("PATH", ""), LANG="C.UTF-8", HOME=str(home))
    return env


@dataclass
class DbtRun:
    returncode: int
    stdout: str
    stderr: str
    logs: list[dict[str, Any]]
    workdir: Path

    def artifact(self, name: str) -> dict[str, Any]:
        data = json.loads((self.workdir / "target" / name).read_text(encoding="utf-8"))
        assert isinstance(data, dict)
        return data

    def statuses(self) -> dict[str, str]:
        """unique_id -> status of every node the command ran (run_results.json)."""
        return {r["unique_id"]: r["status"] for r in self.artifact("run_results.json")["results"]}

    def messages(self, level: str | None = None) -> list[str]:
        return [
            str(line["info"]["msg"])
            for line in self.logs
            if level is None or line["info"]["level"] == level
        ]


def run_dbt(
    dbt: Path, command: str, job_env: Mapping[str, str], workdir: Path, *args: str
) -> DbtRun:
    """Run dbt on transform/; every stdout line must be JSON and no password may leak."""
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    proc = subprocess.run(
        dbt_argv(dbt, command, workdir, *args),
        env=dbt_env(job_env, home),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=SAFETY_NET_SECONDS,  # a safety net against a hung run, not a measurement
        check=False,
    )
    logs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    password = job_env["DESTINATION_POSTGRES_PASSWORD"]
    assert password not in proc.stdout, "the password leaked into dbt's logs"
    assert password not in proc.stderr, "the password leaked into dbt's stderr"
    return DbtRun(proc.returncode, proc.stdout, proc.stderr, logs, workdir)
