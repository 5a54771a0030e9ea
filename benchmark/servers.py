"""The benchmark's two servers: dev/pgserver.py's, with PostgreSQL's default durability.

PgServer turns fsync, full_page_writes and synchronous_commit off unless it is
`durable`: right for throwaway test data, wrong for a benchmark, whose figures
must mean something on a real server. check_durability() proves the result.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pgserver import PgServer, default_bindir, usable_problem

# One password for both servers: pgcopydb's single PGPASSWORD serves both sides.
PASSWORD = secrets.token_urlsafe(18)
DURABILITY_DEFAULTS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
REPORTED_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "maintenance_work_mem",
)


def server_bindir() -> Path:
    """The binaries the tests run ($PG_BINDIR, else the bundled build), checked."""
    found = default_bindir()
    if found is None:
        raise SystemExit(
            "No PostgreSQL server binaries found: run `bash .ci/install`, or set PG_BINDIR."
        )
    problem = usable_problem(found)
    if problem is not None:
        raise SystemExit(problem)
    return found


def make_server(name: str, bindir: Path, settings: dict[str, str] | None = None) -> PgServer:
    """A durable server; `settings`: server settings other than the defaults."""
    options = " ".join(f"-c {k}={v}" for k, v in (settings or {}).items())
    return PgServer(name, bindir, PASSWORD, durable=True, extra_options=options)


def check_durability(server: PgServer) -> None:
    for name, expected in DURABILITY_DEFAULTS.items():
        value = str(server.query("postgres", f"SHOW {name}")[0][0])
        if value != expected:
            raise RuntimeError(f"{server.name}: {name}={value}, the benchmark needs {expected}")


def server_settings(server: PgServer, more: tuple[str, ...] = ()) -> str:
    names = REPORTED_SETTINGS + more
    values = [f"{n}={server.query('postgres', f'SHOW {n}')[0][0]}" for n in names]
    return " ".join(values)


def write_pgpass(server: PgServer) -> Path:
    """A pgpass file (mode 600) for --keep-servers: the password never goes to stdout."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    path = server.base / "pgpass"
    path.touch(mode=0o600)
    path.write_text(f"127.0.0.1:{server.port}:*:{esc(server.user)}:{esc(server.password)}\n")
    return path


def kept_message(server: PgServer) -> str:
    """How to reach a server left running by --keep-servers, and how to remove it."""
    as_owner = "runuser -u postgres -- " if os.geteuid() == 0 else ""
    return (
        f"kept {server.name}: 127.0.0.1:{server.port} user {server.user}, "
        f"PGPASSFILE={write_pgpass(server)}; data {server.datadir}; stop with: "
        f"{as_owner}{server.bindir}/pg_ctl -D {server.datadir} stop && rm -rf {server.base}"
    )
