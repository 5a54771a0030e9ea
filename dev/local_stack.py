"""The two databases of docker-compose.yaml without Docker, and the job run against them.

    bash dev/stack up     # start (or reuse) both databases, seed the source, run the job
    bash dev/stack down   # stop both databases and remove their data

Like compose: PostgreSQL 17; the source seeded from source_db_init/ the way the
postgres image does it, on its first start only; the users, passwords and
database names of .env (else .env.example), with environment variables winning
over the file; reachable on 127.0.0.1 at SOURCE_PUBLISH_PORT (5437) and
DESTINATION_PUBLISH_PORT (5438). The data lives in .local-stack/ (or
$LOCAL_STACK_DIR); a database still running is reused, restarted if its port
changed. Unlike the image, the servers use the C locale, and they listen on
127.0.0.1 only, whatever PUBLISH_ADDRESS says.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pgserver import PgServer, default_bindir, run_init_scripts, usable_problem, version_of

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "elt" / "elt_script.py"
SEED_DIR = REPO / "source_db_init"
ADDRESS = "127.0.0.1"
# `up` exits with the job's own exit code (README, "Exit codes"); this one means
# the stack itself could not be started, so the job did not run.
STACK_FAILED = 10

_LINE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)")


class StackError(Exception):
    """Something the user must fix; the message says what."""


def compose_value(name: str, raw: str) -> str:
    """A .env value as compose reads it: `$$` is a literal `$`; any other `$`
    would be a variable compose substitutes, which this stack refuses rather
    than guess at."""
    parts = raw.split("$$")
    if any("$" in part for part in parts):
        raise StackError(
            f"{name} in .env contains `$`: docker compose would substitute a variable "
            "there (pa$word becomes pa). Write `$$` for a literal `$`."
        )
    return "$".join(parts)


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines (the format .env.example documents); comments and blanks skipped."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _LINE.fullmatch(line.strip())
        if match is not None:
            values[match["name"]] = compose_value(match["name"], match["value"])
    return values


def settings(environ: Mapping[str, str], repo: Path = REPO) -> dict[str, str]:
    """What compose would use: .env.example, overridden by .env, then by the environment."""
    values = read_env_file(repo / ".env.example")
    if (repo / ".env").is_file():
        values.update(read_env_file(repo / ".env"))
    values.update({name: environ[name] for name in values if name in environ})
    return values


@dataclass(frozen=True)
class Side:
    role: str  # "source" or "destination"
    prefix: str  # "SOURCE_POSTGRES_"
    port_variable: str  # "SOURCE_PUBLISH_PORT"


SIDES = (
    Side("source", "SOURCE_POSTGRES_", "SOURCE_PUBLISH_PORT"),
    Side("destination", "DESTINATION_POSTGRES_", "DESTINATION_PUBLISH_PORT"),
)


def state_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("LOCAL_STACK_DIR") or REPO / ".local-stack")


def server(side: Side, values: Mapping[str, str], bindir: Path, state: Path) -> PgServer:
    return PgServer(
        side.role,
        bindir,
        values[side.prefix + "PASSWORD"],
        user=values[side.prefix + "USER"],
        home=state / side.role,
        durable=True,
    )


def port_of(side: Side, values: Mapping[str, str]) -> int:
    text = values[side.port_variable]
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StackError(f"{side.port_variable}={text!r} is not a port number")
    return int(text)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((ADDRESS, port))
        except OSError:
            return False
    return True


def listening_port(datadir: Path) -> int | None:
    """The port a running server listens on: the fourth line of its postmaster.pid.
    None when the file is gone or not yet whole (a server stopping or starting)."""
    try:
        lines = (datadir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        return int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def start(side: Side, values: Mapping[str, str], bindir: Path, state: Path) -> PgServer:
    """Start one database; on its first start create it (and seed the source), as the image does."""
    db = server(side, values, bindir, state)
    port = port_of(side, values)
    first = not (db.datadir / "PG_VERSION").is_file()
    running = None if first or not db.is_running() else listening_port(db.datadir)
    if running == port:
        db.port = port
        return db
    if not port_free(port):
        raise StackError(
            f"Port {port} on {ADDRESS} is taken (a compose stack?): stop what uses it, "
            f"or set {side.port_variable} to another port."
        )
    if running is not None:  # compose too recreates a container whose port changed
        print(
            f"{side.port_variable} is now {port}, the {side.role} database listens on "
            f"{running}: restarting it on {port}",
            file=sys.stderr,
        )
        db.stop("fast")
    try:
        if first:
            shutil.rmtree(db.datadir, ignore_errors=True)
            db.init()
        db.start(port=port)
        if first:
            dbname = values[side.prefix + "DB"]
            if dbname != "postgres":  # the image creates POSTGRES_DB unless it is that one
                db.recreate_database(dbname)
            if side.role == "source":
                run_init_scripts(db, dbname, SEED_DIR)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        if first:  # a half-made database would be reused as is: start clean next time
            db.remove("fast")
        detail = getattr(exc, "stderr", None) or str(exc)
        raise StackError(f"The {side.role} database did not start: {detail}") from None
    return db


def job_env(values: Mapping[str, str], bindir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The job's environment: compose's settings, the servers as seen from this host."""
    env = dict(environ)
    env.update(values)
    for side in SIDES:
        env[side.prefix + "HOST"] = ADDRESS
        env[side.prefix + "PORT"] = values[side.port_variable]
    env["PATH"] = f"{bindir}{os.pathsep}{environ.get('PATH', '')}"  # 17's client tools
    return env


def up(environ: Mapping[str, str]) -> int:
    values = settings(environ)
    bindir = default_bindir()
    if bindir is None:
        raise StackError("No PostgreSQL binaries: run `bash dev/stack up` (it installs them).")
    problem = usable_problem(bindir)
    if problem is not None:
        raise StackError(problem)
    state = state_dir(environ)
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # the server user must reach the data directories below
    print(f"PostgreSQL {version_of(bindir / 'postgres')} from {bindir}", file=sys.stderr)
    for side in SIDES:
        start(side, values, bindir, state)
    env = job_env(values, bindir, environ)
    returncode = run_job([sys.executable, str(SCRIPT)], env)
    psql = bindir / "psql"
    for side in SIDES:
        print(
            f"{side.role}: {psql} -h {ADDRESS} -p {values[side.port_variable]} "
            f"-U {values[side.prefix + 'USER']} -d {values[side.prefix + 'DB']}",
            file=sys.stderr,
        )
    print(
        f"{job_outcome(returncode)}; both databases keep running. "
        "Stop and remove them with: bash dev/stack down",
        file=sys.stderr,
    )
    return exit_status(returncode)


def run_job(argv: list[str], env: Mapping[str, str]) -> int:
    """Run the job to its end, however it is stopped.

    Ctrl-C reaches the job from the terminal (it is in the same process group),
    and the job rolls back and logs its own line; so here SIGINT does nothing
    until the job has exited (subprocess.run() would kill the job when
    interrupted). SIGTERM, sent to this process alone, is passed on to the job.
    """
    job: subprocess.Popen[bytes] | None = None
    pending: list[int] = []  # a SIGTERM that came before the job started

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if job is None:
            pending.append(signum)
        else:
            job.send_signal(signum)

    # Handlers, not SIG_IGN: the job starts with their default actions (exec
    # resets handled signals, not ignored ones), so that a Ctrl-C reaches it
    # even before it has set its own handlers.
    previous_int = signal.signal(signal.SIGINT, lambda signum, frame: None)
    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        job = subprocess.Popen(argv, env=dict(env))
        if pending:
            job.send_signal(signal.SIGTERM)
        return job.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def exit_status(returncode: int) -> int:
    """The job's return code as `up`'s exit status: a job killed by signal N
    (returncode -N) gives 128 + N, as a shell reports it, not -N (which the
    shell would see as 256 - N)."""
    return 128 - returncode if returncode < 0 else returncode


def job_outcome(returncode: int) -> str:
    """How the job ended, for the line `up` prints after it."""
    if returncode >= 0:
        return f"The job exited with {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"The job was killed by {name} (exit {exit_status(returncode)})"


def down(environ: Mapping[str, str]) -> int:
    state = state_dir(environ)
    bindir = default_bindir()
    for side in SIDES:
        datadir = state / side.role / "data"
        if bindir is not None and (datadir / "PG_VERSION").is_file():
            PgServer(side.role, bindir, "", home=state / side.role).stop("fast")
    shutil.rmtree(state, ignore_errors=True)
    print(f"Stopped both databases and removed {state}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: bash dev/stack up|down", file=sys.stderr)
        return STACK_FAILED
    try:
        return commands[argv[0]](os.environ)
    except StackError as exc:
        print(f"dev/stack {argv[0]}: {exc}", file=sys.stderr)
        return STACK_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
