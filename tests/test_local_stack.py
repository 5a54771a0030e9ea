"""The local stack (dev/stack): compose's two databases without Docker.

`bash dev/stack up` is run as the README gives it, on free ports and in a
state directory of its own (so a developer's own local stack is left alone),
then `bash dev/stack down`, which must leave nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import REPO, SEED_COUNTS
from local_stack import (
    StackError,
    compose_value,
    exit_status,
    job_outcome,
    read_env_file,
    settings,
)
from pgserver import free_port

STACK = REPO / "dev" / "stack"
# Settings the stack reads; the test sets every one of them itself.
OWN = ("SOURCE_", "DESTINATION_", "ELT_", "PUBLISH_", "LOCAL_STACK_")
SUCCESS = "ELT pipeline completed successfully"


@pytest.fixture
def stack_env() -> Iterator[dict[str, str]]:
    """.env.example's settings with other passwords and free ports, in a directory of its own."""
    state = Path(tempfile.mkdtemp(prefix="elt-local-stack-"))
    state.chmod(0o755)  # the server user must reach the data directories below
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN)}
    env.update(read_env_file(REPO / ".env.example"))
    env.update(
        {
            # From the environment compose takes values as they are: `$` too.
            "SOURCE_POSTGRES_PASSWORD": "s0urce p$ss'\"\\:@-ü",
            "DESTINATION_POSTGRES_PASSWORD": "dest p$ss'\"\\:@-ü",
            "SOURCE_PUBLISH_PORT": str(free_port()),
            "DESTINATION_PUBLISH_PORT": str(free_port()),
            "LOCAL_STACK_DIR": str(state / "stack"),
        }
    )
    try:
        yield env
    finally:
        subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)


def stack(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK), command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,  # a safety net (the first run installs), not a measurement
    )


def counts(env: dict[str, str], side: str) -> dict[str, int]:
    prefix = side.upper()
    with psycopg.connect(
        host="127.0.0.1",
        port=int(env[f"{prefix}_PUBLISH_PORT"]),
        user=env[f"{prefix}_POSTGRES_USER"],
        password=env[f"{prefix}_POSTGRES_PASSWORD"],
        dbname=env[f"{prefix}_POSTGRES_DB"],
    ) as conn:
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in SEED_COUNTS)
        return {str(t): int(n) for t, n in conn.execute(sql).fetchall()}


@pytest.mark.server  # dev/stack starts its own two servers
def test_up_runs_the_job_and_leaves_the_databases_running_down_removes_them(
    stack_env: dict[str, str],
) -> None:
    up = stack(stack_env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    final = json.loads(up.stdout.splitlines()[-1])  # the job's own JSON lines
    assert final["message"] == SUCCESS
    assert final["source"] == "127.0.0.1/source_db"
    # Still running afterwards, as the README promises: the seed on both sides.
    assert counts(stack_env, "source") == SEED_COUNTS
    assert counts(stack_env, "destination") == SEED_COUNTS
    assert "bash dev/stack down" in up.stderr

    again = stack(stack_env, "up")  # reuses both databases: no second seed
    assert again.returncode == 0, again.stdout + again.stderr
    assert counts(stack_env, "source") == SEED_COUNTS

    state = Path(stack_env["LOCAL_STACK_DIR"])
    for password in (
        stack_env["SOURCE_POSTGRES_PASSWORD"],
        stack_env["DESTINATION_POSTGRES_PASSWORD"],
    ):
        for output in (up.stdout, up.stderr, again.stdout, again.stderr):
            assert password not in output
        leaked = [
            p for p in state.rglob("*") if p.is_file() and password.encode() in p.read_bytes()
        ]
        assert leaked == [], "a password was left in a file"

    down = stack(stack_env, "down")
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    with pytest.raises(psycopg.OperationalError):
        counts(stack_env, "destination")


@pytest.mark.server  # dev/stack starts its own two servers
def test_up_after_a_port_changed_restarts_that_database_on_the_new_port(
    stack_env: dict[str, str],
) -> None:
    first = stack(stack_env, "up")
    assert first.returncode == 0, first.stdout + first.stderr
    old_port = stack_env["DESTINATION_PUBLISH_PORT"]
    new_port = str(free_port())
    moved = {**stack_env, "DESTINATION_PUBLISH_PORT": new_port}

    again = stack(moved, "up")

    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["message"] == SUCCESS
    restarts = [line for line in again.stderr.splitlines() if "restarting" in line]
    assert restarts == [
        f"DESTINATION_PUBLISH_PORT is now {new_port}, the destination database listens "
        f"on {old_port}: restarting it on {new_port}"
    ]
    # The same data on the new port (no second seed on the source, which stayed).
    assert counts(moved, "destination") == SEED_COUNTS
    assert counts(moved, "source") == SEED_COUNTS
    with pytest.raises(psycopg.OperationalError):
        counts(stack_env, "destination")  # nothing on the old port any more


@pytest.mark.parametrize(
    ("returncode", "status", "outcome"),
    [
        (0, 0, "The job exited with 0"),
        (5, 5, "The job exited with 5"),
        (143, 143, "The job exited with 143"),  # the job's own exit after a SIGTERM
        (-15, 143, "The job was killed by SIGTERM (exit 143)"),
        (-2, 130, "The job was killed by SIGINT (exit 130)"),
        (-9, 137, "The job was killed by SIGKILL (exit 137)"),
        (-99, 227, "The job was killed by signal 99 (exit 227)"),
    ],
)
def test_a_job_killed_by_a_signal_gives_128_plus_its_number(
    returncode: int, status: int, outcome: str
) -> None:
    assert exit_status(returncode) == status
    assert job_outcome(returncode) == outcome


# Stands for the job: says how it found SIGINT and when its handlers are in
# place; on SIGINT it "rolls back" until the test lets it finish (a line on
# stdin), then exits 130; on SIGTERM it exits 143.
FAKE_JOB = """
import signal, sys
# What the job inherits: a Ctrl-C must reach it before it sets its own handler.
inherited = signal.getsignal(signal.SIGINT)
print("sigint ignored" if inherited is signal.SIG_IGN else "sigint default", flush=True)
def on_int(signum, frame):
    print("interrupted", flush=True)
    sys.stdin.readline()
    print("rolled back", flush=True)
    sys.exit(130)
def on_term(signum, frame):
    print("terminated", flush=True)
    sys.exit(143)
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
signal.pause()
"""
RUN_JOB = f"""
import os, sys
sys.path.insert(0, {str(REPO / "dev")!r})
from local_stack import run_job
sys.exit(run_job([sys.executable, "-c", {FAKE_JOB!r}], os.environ))
"""


@pytest.mark.parametrize(
    ("signum", "to_group", "lines", "status"),
    [
        # Ctrl-C: the terminal signals the whole foreground group, the job included.
        (signal.SIGINT, True, ["ready", "interrupted", "rolled back"], 130),
        # `kill <pid>` of dev/stack alone: passed on to the job.
        (signal.SIGTERM, False, ["ready", "terminated"], 143),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_up_waits_for_a_stopped_job_to_finish_its_rollback(
    signum: signal.Signals, to_group: bool, lines: list[str], status: int
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_JOB],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "sigint default\n"
        assert proc.stdout.readline() == "ready\n"  # both processes' handlers are set
        if to_group:
            os.killpg(proc.pid, signum)
            assert proc.stdout.readline() == "interrupted\n"
        else:
            os.kill(proc.pid, signum)
        out, err = proc.communicate("done\n", timeout=60)  # a safety net, not a measurement
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert ["ready", *(["interrupted"] if to_group else []), *out.splitlines()] == lines
    assert err == ""
    assert proc.returncode == status


@pytest.mark.parametrize(
    ("raw", "value"),
    [("secret", "secret"), ("pa$$word", "pa$word"), ("$$$$", "$$"), ("", "")],
)
def test_env_values_are_read_as_compose_reads_them(raw: str, value: str) -> None:
    assert compose_value("X", raw) == value


@pytest.mark.parametrize("raw", ["pa$word", "${HOME}", "end$", "$$$x"])
def test_a_dollar_compose_would_substitute_is_refused(raw: str) -> None:
    with pytest.raises(StackError, match=r"write `\$\$` for a literal|Write `\$\$`"):
        compose_value("SOURCE_POSTGRES_PASSWORD", raw)


def test_the_environment_wins_over_env_which_wins_over_the_example(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text("# comment\nA=example\nB=example\nC=example\n")
    (tmp_path / ".env").write_text("B=dotenv\nC=dotenv\n")
    assert settings({"C": "environ", "D": "ignored"}, tmp_path) == {
        "A": "example",
        "B": "dotenv",
        "C": "environ",
    }
