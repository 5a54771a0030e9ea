"""The run's start (elt/startup.py, connect.wait_and_login, elt_script's exit).

The run starts both sides' first pg_isready and `pg_dump --version` at once,
waits for them later, and logs in to both sides at once. What must hold: a
tool started early reports like one started late (exit code, stderr tail, a
tool missing from PATH), nothing started early outlives the run, the wait's
budget and failures stay what they were, and the exit code survives the exit
without teardown.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SCRIPT, EltRun, run_elt, wait_until
from elt.config import DatabaseSettings, Settings
from elt.errors import ConnectionFailed, SettingsError
from elt.processes import Pipeline, Stage
from elt.startup import StartedTool, pg_isready_argv, wait_for_postgres
from pgserver import PgServer, coverage_env


def test_a_run_that_streams_never_imports_the_parallel_copy() -> None:
    probe = (
        "import sys; import elt.pipeline; "
        "print(sorted(m for m in sys.modules if m.startswith('elt.parallel')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_started_tool_reports_its_exit_code_stderr_tail_and_stdout() -> None:
    tool = StartedTool(
        ["sh", "-c", "echo out; echo 'ERROR: the cause' >&2; echo last >&2; exit 3"], os.environ
    )
    result, out = tool.finish()
    assert (result.name, result.returncode, result.stderr_tail, out) == (
        "sh",
        3,
        ["ERROR: the cause", "last"],
        "out\n",
    )
    assert tool.finish() == (result, out)  # waited for once, asked again


def test_a_tool_missing_from_path_is_reported_when_waited_for() -> None:
    tool = StartedTool(["no-such-tool-for-the-elt-tests"], os.environ)  # no error here
    tool.close()
    with pytest.raises(SettingsError, match=r"^no-such-tool-for-the-elt-tests was not found"):
        tool.finish()


def test_closing_stops_a_tool_never_waited_for() -> None:
    tool = StartedTool(["sleep", "600"], os.environ)
    tool.close()
    result, _ = tool.finish()
    assert result.returncode == -signal.SIGKILL


@pytest.fixture
def closed_port() -> int:
    """A loopback port with no server on it (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tools_on_path(bindir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")


def database(role: str, port: int) -> DatabaseSettings:
    return DatabaseSettings(role, "127.0.0.1", port, f"{role}_db", "elt", "pw")


@pytest.mark.usefixtures("tools_on_path")
def test_the_wait_spends_its_budget_with_the_first_attempt_started_early(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    source = database("source", closed_port)
    settings = Settings(source, database("destination", closed_port), wait_retries=3)
    first = StartedTool(pg_isready_argv(source, 2), os.environ)
    pauses: list[float] = []
    logger = logging.getLogger("test_startup")

    with caplog.at_level(logging.WARNING, "test_startup"), pytest.raises(ConnectionFailed) as err:
        wait_for_postgres(source, settings, logger, first=first, sleep=pauses.append)

    assert first.finish()[0].returncode == 2  # the first attempt was this one
    assert [(r.getMessage(), r.attempt, r.status) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("Database not ready, retrying", 1, "no response"),
        ("Database not ready, retrying", 2, "no response"),
        ("Database not ready", 3, "no response"),
    ]
    assert pauses == [settings.wait_delay_seconds] * 2
    assert err.value.context["total_attempts"] == 3
    assert err.value.message == (
        f"The source database at 127.0.0.1:{closed_port} did not accept connections "
        "after 3 attempt(s): no response"
    )


@pytest.mark.usefixtures("tools_on_path")
def test_the_wait_asks_without_logging_in(source_server: PgServer) -> None:
    # pg_isready gets no password: the server's request for one is its answer.
    # Given one (here a wrong one), it would log in, and the server would log
    # the failed authentication of this role.
    role = "elt_isready_probe"
    db = DatabaseSettings("source", "127.0.0.1", source_server.port, "postgres", role, "wrong")
    logged_before = source_server.logfile.stat().st_size

    assert wait_for_postgres(db, Settings(db, db, wait_retries=1), logging.getLogger()) == 1

    with source_server.logfile.open("rb") as log:
        log.seek(logged_before)
        assert role.encode() not in log.read()


def run_against_closed_ports(bindir: Path, source_port: int, destination_port: int) -> EltRun:
    return run_elt(
        {
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "LANG": "C.UTF-8",
            "SOURCE_POSTGRES_HOST": "127.0.0.1",
            "SOURCE_POSTGRES_PORT": str(source_port),
            "SOURCE_POSTGRES_DB": "source_db",
            "SOURCE_POSTGRES_USER": "elt",
            "SOURCE_POSTGRES_PASSWORD": "source password for the startup tests",
            "DESTINATION_POSTGRES_HOST": "127.0.0.1",
            "DESTINATION_POSTGRES_PORT": str(destination_port),
            "DESTINATION_POSTGRES_DB": "destination_db",
            "DESTINATION_POSTGRES_USER": "elt",
            "DESTINATION_POSTGRES_PASSWORD": "destination password for the startup tests",
            "ELT_WAIT_RETRIES": "2",
            "ELT_WAIT_DELAY_SECONDS": "0",
            "ELT_CONNECT_TIMEOUT_SECONDS": "2",
            **coverage_env(),
        }
    )


def test_when_both_sides_are_down_the_source_is_the_one_reported(
    bindir: Path, closed_port: int
) -> None:
    # Both sides are waited for at once; as when they were waited for one after
    # the other, the source's failure is the run's.
    run = run_against_closed_ports(bindir, closed_port, closed_port)

    assert run.returncode == 3, run.stdout
    (error,) = run.errors()
    assert error["database"] == "source"
    assert error["total_attempts"] == 2
    assert "SOURCE_POSTGRES_HOST" in error["hint"]
    source_waits = [
        line["attempt"]
        for line in run.logs
        if line["message"].startswith("Database not ready") and line["database"] == "source"
    ]
    assert source_waits == [1, 2]
    assert run.logs[-1] == error  # nothing of the other side's after the error line
    assert run.stderr == ""


def test_the_exit_code_survives_the_exit_without_teardown() -> None:
    # elt_script ends with os._exit(): the code main() returns must still be the
    # process's, and the last line must be out. A bad setting exits 2.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"PATH": os.environ.get("PATH", ""), "SOURCE_POSTGRES_PORT": "x", **coverage_env()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert '"exit_code": 2' in proc.stdout.splitlines()[-1]
    assert proc.stderr == ""


def test_a_held_stage_starts_only_at_start_rest_and_gets_all_its_input(tmp_path: Path) -> None:
    # The one-stream copy starts pg_dump and pg_restore ahead of psql
    # (stream_copy.StreamCopy): the held stage's input waits in a pipe.
    received = tmp_path / "received"
    stages = [
        Stage("first", ["sh", "-c", "printf 'all of it'"], os.environ),
        Stage("held", ["sh", "-c", f"cat > {received}"], os.environ),
    ]
    with Pipeline(stages, held=1) as pipeline:
        assert not received.exists()
        pipeline.start_rest()
        results = pipeline.wait()
    assert [(r.name, r.returncode) for r in results] == [("first", 0), ("held", 0)]
    assert received.read_text() == "all of it"


def test_leaving_before_start_rest_stops_the_started_and_never_starts_the_held(
    tmp_path: Path,
) -> None:
    pid_file, marker = tmp_path / "pid", tmp_path / "marker"
    stages = [
        Stage("first", ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 600"], os.environ),
        Stage("held", ["sh", "-c", f"touch {marker}"], os.environ),
    ]
    with Pipeline(stages, held=1):
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "the pid")
        pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
    assert not marker.exists()
