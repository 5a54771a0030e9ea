"""Shared fixtures: two real PostgreSQL servers, seeded like the Compose stack.

The servers are started by the tests themselves (initdb + pg_ctl on free
loopback ports, in temporary directories that are removed afterwards). When
the tests run as root, as CI does, the servers run as the unprivileged
`postgres` user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "elt" / "elt_script.py"
SEED_DIR = REPO / "source_db_init"
# The seed's row counts (source_db_init/), the figures README.md promises.
SEED_COUNTS = {"users": 14, "films": 20, "film_category": 39, "actors": 20, "film_actors": 20}
# A password with every character class that breaks naive quoting. The servers
# use it, so every test also proves it never leaks into a log line.
PASSWORD = "p'a\"s s:w@o/r\\d-ü-" + secrets.token_hex(4)
SEEDED_TEMPLATE = "elt_seeded_template"
_RESTRICT = ("\\restrict", "\\unrestrict")


def pg_bindir() -> Path:
    """The PostgreSQL server binaries: $PG_BINDIR, or the newest Debian install."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    pytest.exit("No PostgreSQL server binaries found: run `bash .ci/run`, or set PG_BINDIR.", 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    """One throwaway PostgreSQL server on 127.0.0.1 with password authentication."""

    name: str
    bindir: Path
    base: Path = field(init=False)
    port: int = field(init=False, default=0)
    user: str = "postgres"
    password: str = PASSWORD
    options: str = ""  # more server options (-c name=value ...), for start() and restart()

    def __post_init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"elt-test-{self.name}-"))
        self.base.chmod(0o755)
        self.datadir = self.base / "data"
        self.sockdir = self.base / "sock"
        self.sockdir.mkdir()
        self.logfile = self.base / "server.log"

    # -- running server programs as an unprivileged user -------------------
    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def init(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        for path in (self.base, self.sockdir, pwfile):
            self._chown(path)
        try:
            subprocess.run(
                self._as_owner(
                    [
                        str(self.bindir / "initdb"),
                        "-D",
                        str(self.datadir),
                        "-U",
                        self.user,
                        f"--pwfile={pwfile}",
                        "--auth-host=scram-sha-256",
                        "--auth-local=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-sync",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        finally:
            pwfile.unlink()  # secrets never stay behind in files

    # Test servers only: durability does not matter to throwaway data.
    SPEED_OPTIONS = "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"

    def start(self, port: int | None = None) -> None:
        """Start the server on `port`, or on a free port (retrying if one is taken meanwhile)."""
        for _ in range(1 if port else 5):
            self.port = port or _free_port()
            options = (
                f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                f"-c max_connections=50 {self.SPEED_OPTIONS} {self.options}"
            )
            proc = subprocess.run(
                self._as_owner(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "120",
                        "start",
                    ]
                ),
                capture_output=True,
                check=False,
            )
            if proc.returncode == 0:
                return
        raise RuntimeError(f"{self.name} server did not start: {self.logfile.read_text()}")

    def restart(self) -> None:
        """Start again on the same port after a stop (a crash, in fault tests)."""
        self.start(port=self.port)

    def is_running(self) -> bool:
        status = subprocess.run(
            self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"]),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            self._as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]
            ),
            capture_output=True,
            check=False,
        )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # -- client helpers ------------------------------------------------------
    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            **{"autocommit": True, **kwargs},
        )

    def execute(self, dbname: str, sql: str) -> None:
        with self.connect(dbname) as conn:
            conn.execute(sql)

    def query(self, dbname: str, sql: str) -> list[tuple[Any, ...]]:
        with self.connect(dbname) as conn:
            return conn.execute(sql).fetchall()

    def client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PGPASSWORD"] = self.password
        env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def client_argv(self, tool: str, dbname: str) -> list[str]:
        """A client tool of this server's version, pointed at `dbname` over TCP."""
        return [
            str(self.bindir / tool),
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", dbname),
        ]

    def psql(self, dbname: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """psql the way the postgres image's entrypoint runs init scripts."""
        return subprocess.run(
            [*self.client_argv("psql", dbname), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", *args],
            env=self.client_env(),
            capture_output=True,
            text=True,
            check=check,
        )

    def recreate_database(self, dbname: str, template: str = "template0") -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE "{template}"')

    def fingerprint(self, dbname: str) -> str:
        """Everything in a database, schema and data, as pg_dump prints it (deterministic)."""
        proc = subprocess.run(
            [*self.client_argv("pg_dump", dbname), "--no-owner", "--no-privileges"],
            env=self.client_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        # pg_dump >= 15.14 brackets its output with a random \restrict key.
        keep = (line for line in proc.stdout.splitlines() if not line.startswith(_RESTRICT))
        return "\n".join(keep)


@pytest.fixture(scope="session")
def bindir() -> Path:
    return pg_bindir()


@pytest.fixture(scope="session")
def source_server(bindir: Path) -> Iterator[PgServer]:
    server = PgServer("source", bindir)
    try:
        server.init()
        server.start()
        # Seed a template once, exactly as the image does: every *.sql in
        # source_db_init/, in sorted order, with ON_ERROR_STOP and no psqlrc.
        server.recreate_database(SEEDED_TEMPLATE)
        for script in sorted(SEED_DIR.glob("*.sql")):
            server.psql(SEEDED_TEMPLATE, "-f", str(script))
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def destination_server(bindir: Path) -> Iterator[PgServer]:
    server = PgServer("destination", bindir, password=PASSWORD + "-destination")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


# The two copy paths (issue #4), as settings. The seed is far below the
# parallel path's size threshold, so "parallel" lowers it to 0; the default
# (no setting) is what a user gets: streamed for a database this small.
COPY_PATHS: dict[str, dict[str, str]] = {
    "default": {},
    "streamed": {"ELT_JOBS": "1"},
    "parallel": {"ELT_JOBS": "2", "ELT_PARALLEL_MIN_MB": "0"},
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
        env = {
            "PATH": f"{self.source.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "LANG": "C.UTF-8",
            "SOURCE_POSTGRES_HOST": "127.0.0.1",
            "SOURCE_POSTGRES_PORT": str(self.source.port),
            "SOURCE_POSTGRES_DB": self.source_db,
            "SOURCE_POSTGRES_USER": self.source.user,
            "SOURCE_POSTGRES_PASSWORD": self.source.password,
            "DESTINATION_POSTGRES_HOST": "127.0.0.1",
            "DESTINATION_POSTGRES_PORT": str(self.destination.port),
            "DESTINATION_POSTGRES_DB": self.destination_db,
            "DESTINATION_POSTGRES_USER": self.destination.user,
            "DESTINATION_POSTGRES_PASSWORD": self.destination.password,
            "ELT_WAIT_RETRIES": "3",
            "ELT_WAIT_DELAY_SECONDS": "0.2",
            "ELT_CONNECT_TIMEOUT_SECONDS": "2",
            **COPY_PATHS[self.path],
        }
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


def run_elt(env: Mapping[str, str], *, cwd: Path | None = None, timeout: float = 600) -> EltRun:
    """Run the real script as a subprocess and check what every run must satisfy."""
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
        if secret:
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


# --- helpers for tests that hold a run at a known point (test_faults, test_parallel) ---

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


def start_job(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT)],
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
