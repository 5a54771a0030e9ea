"""Tier 1: faults and hostile input against real servers.

Every failure case must end with the documented exit code, exactly one JSON
error line that names the cause and the fix, and a destination exactly as it
was before the run; a plain re-run afterwards must succeed.

No test waits on the clock. Runs are held at a known point with locks the test
owns, and the test proceeds when pg_stat_activity shows the job waiting there.
Deadlines in `wait_until` are safety nets against a hang, never the signal.
"""

from __future__ import annotations

import signal
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import (
    RELEASE_HOLD,
    SEED_COUNTS,
    Databases,
    descendants,
    elt_sessions,
    finish,
    gated_matview,
    load_held,
    load_is_waiting,
    loaded_then_changed,
    rerun_succeeds,
    run_elt,
    start_job,
    the_error,
    the_interruption,
    wait_until,
)


@contextmanager
def dump_held(dbs: Databases) -> Iterator[psycopg.Connection[Any]]:
    """Make pg_dump stop right after taking its snapshot, until the context ends."""
    dbs.source.execute("source_db", "CREATE TABLE gate (id int)")
    holder = dbs.source.connect("source_db", autocommit=False)
    holder.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
    try:
        yield holder
    finally:
        with suppress(psycopg.Error):
            holder.close()


def dump_is_waiting(dbs: Databases) -> bool:
    return elt_sessions(dbs.source, "wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'") == 1


# --- 1. the destination goes away in the middle of the load ----------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_destination_stopped_mid_load(dbs: Databases, mode: str) -> None:
    loaded_then_changed(dbs)
    with load_held(dbs):
        before = dbs.destination.fingerprint("destination_db")
        job = start_job(dbs.env())
        wait_until(lambda: load_is_waiting(dbs), "the load to reach the held point")
        dbs.destination.stop(mode)
        run = finish(job, dbs.env())
    dbs.destination.restart()

    assert run.returncode == 5
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert error["tool"] == "psql"
    assert dbs.destination.fingerprint("destination_db") == before
    dbs.destination.execute("destination_db", RELEASE_HOLD)
    rerun_succeeds(dbs)


# --- 2. the source goes away in the middle of the dump --------------------


# With validation on, the job itself holds ACCESS SHARE locks on every source
# table from the snapshot on, so the held table stops the job there, before
# pg_dump starts; with it off, pg_dump is the one that waits.
@pytest.mark.parametrize("validation", ["off", "full"])
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_source_stopped_mid_dump(dbs: Databases, mode: str, validation: str) -> None:
    before = loaded_then_changed(dbs)
    env = dbs.env(ELT_VALIDATION=validation)
    with dump_held(dbs):
        job = start_job(env)
        wait_until(lambda: dump_is_waiting(dbs), "the job to wait on the held table")
        dbs.source.stop(mode)
        run = finish(job, env)
    dbs.source.restart()

    assert run.returncode == 4
    error = the_error(run)
    assert error["message"] == "Data extraction failed"
    if validation == "off":
        assert error["tool"] == "pg_dump"
    assert "SOURCE_POSTGRES_USER" in error["hint"]
    assert dbs.destination.fingerprint("destination_db") == before
    rerun_succeeds(dbs)


# --- 3. SIGTERM (docker stop) and SIGINT (Ctrl-C) mid-copy ----------------


@pytest.mark.parametrize(
    ("signum", "code", "sigint_ignored"),
    [
        pytest.param(signal.SIGTERM, 143, False, id="SIGTERM"),
        pytest.param(signal.SIGINT, 130, False, id="SIGINT"),
        # Started with SIGINT ignored, as a shell's background job is.
        pytest.param(signal.SIGINT, 130, True, id="SIGINT-inherited-ignored"),
    ],
)
def test_signal_mid_copy_stops_everything_and_rolls_back(
    dbs: Databases, tmp_path: Path, signum: int, code: int, sigint_ignored: bool
) -> None:
    loaded_then_changed(dbs)
    env = dbs.env(TMPDIR=str(tmp_path))
    with load_held(dbs):
        before = dbs.destination.fingerprint("destination_db")
        job = start_job(env, sigint_ignored=sigint_ignored)
        wait_until(lambda: load_is_waiting(dbs), "the load to reach the held point")
        children = descendants(job.pid)
        # The load's psql is running (pg_dump may be done already), and no
        # password is in any argv.
        tools = {cmd.split()[0].rsplit("/", 1)[-1] for cmd in children.values()}
        assert "psql" in tools, children
        for cmdline in children.values():
            assert dbs.source.password not in cmdline
            assert dbs.destination.password not in cmdline
        job.send_signal(signum)
        run = finish(job, env)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the job"
        # No session or open transaction of the job is left on the source.
        wait_until(lambda: elt_sessions(dbs.source) == 0, "the job's source sessions to end")
    # The held destination backend notices its client is gone once it wakes.
    wait_until(lambda: elt_sessions(dbs.destination) == 0, "the job's destination session to end")

    the_interruption(run, signum, code)
    assert list(tmp_path.iterdir()) == []
    assert dbs.destination.fingerprint("destination_db") == before
    dbs.destination.execute("destination_db", RELEASE_HOLD)
    rerun_succeeds(dbs)


# On the one-stream path the source's figures start once pg_dump has exited,
# while psql still loads: a signal then stops them as well as the children.
@pytest.mark.parametrize(
    ("signum", "code"),
    [
        pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
        pytest.param(signal.SIGINT, 130, id="SIGINT"),
    ],
)
def test_signal_while_the_source_figures_run_stops_them_and_rolls_back(
    dbs: Databases, signum: int, code: int
) -> None:
    dbs.path = "streamed"
    loaded_then_changed(dbs)
    dbs.source.execute("source_db", GATED_MATVIEW)
    env = dbs.env()
    with dbs.source.connect("source_db") as gate, load_held(dbs):
        gate.execute("SELECT pg_advisory_lock(4242)")  # on the source
        before = dbs.destination.fingerprint("destination_db")
        job = start_job(env)
        wait_until(lambda: load_is_waiting(dbs), "the load to reach the held point")
        at_gate = "wait_event_type = 'Lock' AND wait_event = 'advisory'"
        wait_until(lambda: elt_sessions(dbs.source, at_gate) == 1, "the figures at the gate")
        children = descendants(job.pid)
        job.send_signal(signum)
        # With the gate still held: the job must stop its source figures itself.
        run = finish(job, env)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the job"
        wait_until(lambda: elt_sessions(dbs.source) == 0, "the job's source sessions to end")
    wait_until(lambda: elt_sessions(dbs.destination) == 0, "the job's destination session to end")

    the_interruption(run, signum, code)
    assert dbs.destination.fingerprint("destination_db") == before
    dbs.destination.execute("destination_db", RELEASE_HOLD)
    rerun_succeeds(dbs)


# --- 4. two runs at once --------------------------------------------------


def test_a_second_concurrent_run_refuses_and_the_first_completes(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    with load_held(dbs):
        first = start_job(dbs.env())
        wait_until(lambda: load_is_waiting(dbs), "the first load to reach the held point")
        second = run_elt(dbs.env())
        assert second.returncode == 5
        error = the_error(second)
        assert "Another ELT run is loading this destination" in error["error"]
        assert "Wait for the other run" in error["hint"]
    finished = finish(first, dbs.env())
    assert finished.returncode == 0, finished.stdout
    assert dbs.counts(dbs.destination, "destination_db")["film_actors"] == 0  # the first run's copy
    dbs.destination.execute("destination_db", RELEASE_HOLD)
    rerun_succeeds(dbs)


# A run's lock lasts until its validation has finished. The source gets a
# materialized view whose query waits for an advisory lock that the test holds
# on the source: validation runs that query in the snapshot after the load, so
# the first run is held there (the destination's REFRESH runs the same function
# against the destination's own, free, lock).
GATED_MATVIEW = gated_matview(4242)


def has_gated(dbs: Databases) -> bool:
    found = dbs.destination.query("destination_db", "SELECT to_regclass('public.gated')")
    return found[0][0] is not None


@pytest.mark.parametrize("path", ["streamed", "parallel"])
def test_a_second_run_refuses_while_the_first_still_validates(dbs: Databases, path: str) -> None:
    dbs.path = path
    dbs.source.execute("source_db", GATED_MATVIEW)
    with dbs.source.connect("source_db") as gate:
        gate.execute("SELECT pg_advisory_lock(4242)")
        first = start_job(dbs.env())
        wait_until(
            lambda: (
                elt_sessions(dbs.source, "wait_event_type = 'Lock' AND wait_event = 'advisory'")
                == 1
            ),
            "the first run's validation to wait at the gate",
        )
        # The one-stream copy starts the source's figures before its commit: wait for that too.
        wait_until(lambda: has_gated(dbs), "the first run's load to commit")
        loaded = dbs.destination.fingerprint("destination_db")
        # Without validation, the second run would not wait at the gate too.
        second = run_elt(dbs.env(ELT_VALIDATION="off"))
        assert second.returncode == 5
        error = the_error(second)
        assert "Another ELT run is loading this destination" in error["error"]
        assert "Wait for the other run" in error["hint"]
        assert dbs.destination.fingerprint("destination_db") == loaded
    finished = finish(first, dbs.env())
    assert finished.returncode == 0, finished.stdout
    assert finished.logs[-1]["copy_path"] == path
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


# --- 5. the destination runs out of room ----------------------------------


def test_destination_out_of_temp_space_fails_cleanly(dbs: Databases) -> None:
    before = loaded_then_changed(dbs)
    dbs.source.execute(
        "source_db",
        "CREATE TABLE notes (id int PRIMARY KEY, body text);"
        "INSERT INTO notes SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 200000) g;"
        "CREATE INDEX notes_body ON notes (body);",
    )
    # Index builds sort; with little memory they spill to temporary files, which
    # a tiny temp_file_limit refuses, as a full disk would.
    dbs.destination.execute(
        "postgres",
        "ALTER DATABASE destination_db SET temp_file_limit = '256kB';"
        "ALTER DATABASE destination_db SET maintenance_work_mem = '1MB';",
    )
    try:
        run = run_elt(dbs.env())
    finally:
        dbs.destination.execute(
            "postgres",
            "ALTER DATABASE destination_db RESET temp_file_limit;"
            "ALTER DATABASE destination_db RESET maintenance_work_mem;",
        )
    assert run.returncode == 5
    error = the_error(run)
    assert "temp_file_limit" in " ".join(error["stderr_tail"])
    assert dbs.destination.fingerprint("destination_db") == before
    rerun_succeeds(dbs)


# --- 6. network trouble -----------------------------------------------------


class StartingUpServer(socketserver.ThreadingTCPServer):
    """A loopback port that answers like a PostgreSQL server still starting up.

    The first `reject` connections get SQLSTATE 57P03 ("the database system is
    starting up"), which pg_isready reports as "rejecting connections"; later
    ones are forwarded to the real server.
    """

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler: no socket outlives the test

    def __init__(self, target_port: int, reject: int) -> None:
        super().__init__(("127.0.0.1", 0), _StartingUpHandler)
        self.target_port = target_port
        self.reject = reject
        self.accepted = 0
        self.port = int(self.server_address[1])
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self._thread.join()
        self.server_close()


class _StartingUpHandler(socketserver.BaseRequestHandler):
    server: StartingUpServer
    request: socket.socket

    def handle(self) -> None:
        self.server.accepted += 1  # handlers start in accept order, one at a time
        if self.server.accepted <= self.server.reject:
            self._refuse()
        else:
            self._forward()

    def _read_packet(self) -> bytes:
        header = self.request.recv(4, socket.MSG_WAITALL)
        (length,) = struct.unpack("!I", header)
        return header + self.request.recv(length - 4, socket.MSG_WAITALL)

    def _refuse(self) -> None:
        with suppress(OSError, struct.error):
            packet = self._read_packet()
            while struct.unpack("!I", packet[4:8])[0] in (80877103, 80877104):  # SSL/GSS request
                self.request.sendall(b"N")
                packet = self._read_packet()
            fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
            self.request.sendall(b"E" + struct.pack("!I", 4 + len(fields)) + fields)

    def _forward(self) -> None:
        with socket.create_connection(("127.0.0.1", self.server.target_port)) as upstream:
            back = threading.Thread(target=_pump, args=(upstream, self.request))
            back.start()
            _pump(self.request, upstream)
            back.join()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize(("reject", "retries", "code"), [(2, 4, 0), (10, 3, 3)])
def test_a_server_still_starting_up_is_waited_for(
    dbs: Databases, reject: int, retries: int, code: int
) -> None:
    starting = StartingUpServer(dbs.destination.port, reject)
    try:
        run = run_elt(
            dbs.env(
                DESTINATION_POSTGRES_PORT=str(starting.port),
                ELT_WAIT_RETRIES=str(retries),
                ELT_WAIT_DELAY_SECONDS="0",
            )
        )
    finally:
        starting.close()
    waits = [line for line in run.logs if line["message"].startswith("Database not ready")]
    assert all("rejecting connections" in line["status"] for line in waits)
    assert run.returncode == code, run.stdout
    if code == 0:
        assert [line["attempt"] for line in waits] == [1, 2]
        (dest_ok,) = [
            line
            for line in run.find("Database connection successful")
            if line["database"] == "destination"
        ]
        assert dest_ok["attempt"] == 3
        assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS
    else:
        assert [line["attempt"] for line in waits] == list(range(1, retries + 1))
        assert "DESTINATION_POSTGRES_HOST" in the_error(run)["hint"]


# --- bad input ----------------------------------------------------------------

# (variable, value, exit code, text in the error, text in the hint)
BAD_INPUT = [
    ("DESTINATION_POSTGRES_DB", "no_such_db", 3, "destination", "DESTINATION_POSTGRES_DB"),
    ("SOURCE_POSTGRES_USER", "no_such_user", 3, "source", "SOURCE_POSTGRES_USER"),
    (
        "SOURCE_POSTGRES_PASSWORD",
        "wrong 'quoted' pässword",
        3,
        "source",
        "SOURCE_POSTGRES_PASSWORD",
    ),
    ("SOURCE_POSTGRES_PORT", "", 2, "SOURCE_POSTGRES_PORT", "SOURCE_POSTGRES_PORT"),
    (
        "DESTINATION_POSTGRES_PORT",
        "54x2",
        2,
        "DESTINATION_POSTGRES_PORT",
        "DESTINATION_POSTGRES_PORT",
    ),
    ("SOURCE_POSTGRES_PASSWORD_FILE", "/nonexistent/secret", 2, "/nonexistent/secret", "Mount"),
]


@pytest.mark.parametrize(("variable", "value", "code", "in_error", "in_hint"), BAD_INPUT)
def test_bad_input_is_answered_clearly(
    dbs: Databases, variable: str, value: str, code: int, in_error: str, in_hint: str
) -> None:
    before = loaded_then_changed(dbs)
    env = dbs.env(**{variable: value})
    if variable.endswith("_FILE"):
        del env["SOURCE_POSTGRES_PASSWORD"]
    run = run_elt(env)
    assert run.returncode == code
    error = the_error(run)
    assert in_error in error["error"]
    assert in_hint in error["hint"]
    if variable.endswith("PASSWORD"):
        assert value not in run.stdout
    assert dbs.destination.fingerprint("destination_db") == before
    rerun_succeeds(dbs)


def test_objects_the_destination_cannot_create_fail_the_run(dbs: Databases) -> None:
    # The owner role exists on the source only; asked to keep owners, the load
    # must fail rather than report success with the object missing.
    before = loaded_then_changed(dbs)
    dbs.source.execute(
        "source_db",
        """
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'elt_source_only_role') THEN
                CREATE ROLE elt_source_only_role;
            END IF;
        END $$;
        CREATE TABLE owned (id int);
        ALTER TABLE owned OWNER TO elt_source_only_role;
        """,
    )
    run = run_elt(dbs.env(ELT_COPY_OWNERSHIP="true"))
    assert run.returncode == 5
    error = the_error(run)
    assert 'role "elt_source_only_role" does not exist' in " ".join(error["stderr_tail"])
    assert dbs.destination.fingerprint("destination_db") == before
    rerun_succeeds(dbs)  # ELT_COPY_OWNERSHIP=false (the default) loads it


LOADER_PASSWORD = "loader pw ' with quote"


@pytest.fixture
def loader_role(dbs: Databases) -> Iterator[str]:
    """A non-superuser role on the destination that owns destination_db."""
    quoted = LOADER_PASSWORD.replace("'", "''")
    dbs.destination.execute("postgres", f"CREATE ROLE loader LOGIN PASSWORD '{quoted}'")
    dbs.destination.execute("postgres", "ALTER DATABASE destination_db OWNER TO loader")
    yield "loader"
    dbs.destination.execute("destination_db", "REASSIGN OWNED BY loader TO postgres")
    dbs.destination.execute("postgres", "ALTER DATABASE destination_db OWNER TO postgres")
    dbs.destination.execute("postgres", "DROP ROLE loader")


def test_non_superuser_destination_owner_copies_and_reruns(
    dbs: Databases, loader_role: str
) -> None:
    env = dbs.env(
        DESTINATION_POSTGRES_USER=loader_role, DESTINATION_POSTGRES_PASSWORD=LOADER_PASSWORD
    )
    for _ in range(2):
        run = run_elt(env)
        assert run.returncode == 0, run.stdout
    assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS
    # An extension only a superuser may create fails the load, loudly.
    dbs.source.execute("source_db", "CREATE EXTENSION file_fdw")
    run = run_elt(env)
    assert run.returncode == 5
    assert "permission denied to create extension" in " ".join(the_error(run)["stderr_tail"])
    assert dbs.counts(dbs.destination, "destination_db") == SEED_COUNTS


def test_no_password_in_process_arguments_or_environment_of_other_side(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    with load_held(dbs):
        job = start_job(dbs.env())
        wait_until(lambda: load_is_waiting(dbs), "the load to reach the held point")
        children = descendants(job.pid)
        environ = {}
        for pid in children:
            with suppress(OSError):
                environ[pid] = (Path("/proc") / str(pid) / "environ").read_bytes()
        job.send_signal(signal.SIGTERM)
        finish(job, dbs.env())
    assert children
    for cmdline in children.values():
        assert dbs.source.password not in cmdline
        assert dbs.destination.password not in cmdline
    # Each tool gets only the password of the side it connects to, and none of
    # the job's own *_PASSWORD settings.
    sides = {"pg_dump": dbs.source.password, "psql": dbs.destination.password}
    for pid, cmdline in children.items():
        if pid not in environ:
            continue
        tool = cmdline.split()[0].rsplit("/", 1)[-1]
        variables = dict(item.split(b"=", 1) for item in environ[pid].split(b"\0") if b"=" in item)
        passwords = {v.decode() for k, v in variables.items() if k.endswith(b"PASSWORD")}
        assert passwords == ({sides[tool]} if tool in sides else set()), tool
        assert not any(k.endswith((b"_PASSWORD", b"_PASSWORD_FILE")) for k in variables), tool
    wait_until(lambda: elt_sessions(dbs.destination) == 0, "the destination session to end")
    dbs.destination.execute("destination_db", RELEASE_HOLD)
