"""Tier 2: the real docker-compose.yaml, built and run end to end.

Needs a Docker engine with the compose plugin. Where none answers, the tests
are skipped with the reason (pytest runs with -ra, so it is printed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import SEED_COUNTS
from pgserver import free_port

if TYPE_CHECKING:
    from testcontainers.compose import ComposeContainer, DockerCompose

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = "docker-compose.yaml"
# The stack is run with .env.example, not with whatever .env a developer keeps,
# so the outcome does not depend on local settings.
ENV_FILE = ".env.example"
PROJECT_NAME = "elt-pipeline-tier2-tests"
CONTAINER_NAMES = ("source_postgres", "destination_postgres", "elt_script")
JOB_SERVICE = "elt_script"
DESTINATION_SERVICE = "destination_postgres"
DBT_SERVICE = "dbt"

SUCCESS_MESSAGE = "ELT pipeline completed successfully"

PROBE_TIMEOUT_SECONDS = 30
# Counted from the moment `up` returns, i.e. after both databases are healthy
# and the job has started; the job's own retries take at most about a minute.
JOB_TIMEOUT_SECONDS = 300
RERUN_TIMEOUT_SECONDS = 300


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "(no output)"


def docker_unavailable_reason() -> str | None:
    """Why tier 2 cannot run here, or None when a Docker engine and compose answer."""
    docker = shutil.which("docker")
    if docker is None:
        return "no `docker` executable on PATH (looked for it with shutil.which)"
    probes = [
        ([docker, "info"], "no Docker daemon answers `docker info`"),
        (
            [docker, "compose", "version"],
            "the compose plugin is missing: `docker compose version` failed",
        ),
    ]
    for argv, meaning in probes:
        command = " ".join(["docker", *argv[1:]])
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=PROBE_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            return f"`{command}` did not answer within {PROBE_TIMEOUT_SECONDS}s"
        if result.returncode != 0:
            # `docker info` prints the client section on stdout even when the
            # daemon is down; the reason is on stderr.
            detail = first_line(result.stderr or result.stdout)
            return f"{meaning} (exit {result.returncode}): {detail}"
    return None


@dataclass(frozen=True)
class Stack:
    compose: DockerCompose
    job: ComposeContainer  # the elt_script container of `up`, after it exited


def compose_command(compose: DockerCompose, *args: str) -> list[str]:
    # testcontainers builds `docker compose -f <file> --env-file <file>`; reused
    # for the subcommands it has no method for.
    return [*compose.docker_compose_command(), *args]


def wait_for_exit(compose: DockerCompose, service: str, timeout: float) -> ComposeContainer:
    deadline = time.monotonic() + timeout
    while True:
        # include_all: `docker compose ps -a`, or an exited container is not listed.
        container = compose.get_container(service, include_all=True)
        if container.State in {"exited", "dead"}:
            return container
        if time.monotonic() > deadline:
            pytest.fail(f"{service} is still {container.State!r} after {timeout}s")
        time.sleep(2)


def exit_code(container: ComposeContainer) -> int | None:
    if container.ExitCode is not None:
        return container.ExitCode
    # Compose versions before 2.21 leave ExitCode out of `ps --format json`.
    assert container.ID is not None
    result = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.ExitCode}}", container.ID],
        capture_output=True,
        text=True,
        check=True,
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    return int(result.stdout.strip())


def container_logs(container: ComposeContainer) -> str:
    # `docker logs` rather than `docker compose logs`: no service-name prefix
    # and no compose warnings mixed into the job's own output.
    assert container.ID is not None
    result = subprocess.run(
        ["docker", "logs", container.ID],
        capture_output=True,
        # The job logs UTF-8 JSON (ensure_ascii off), whatever the local locale.
        encoding="utf-8",
        errors="replace",
        check=True,
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    return result.stdout + result.stderr


def destination_counts(compose: DockerCompose) -> dict[str, int]:
    sql = " UNION ALL ".join(
        # The table names are the constants above, never input: no injection.
        f"SELECT '{table}', count(*) FROM {table}"
        for table in SEED_COUNTS
    )
    # psql inside the container connects over its unix socket as the image's
    # own POSTGRES_USER/POSTGRES_DB; the SQL is passed as $1 so no shell quoting
    # gets in its way.
    stdout, _, _ = compose.exec_in_container(
        [
            "sh",
            "-c",
            'exec psql -X -v ON_ERROR_STOP=1 -A -t -F "|"'
            ' -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "$1"',
            "sh",
            sql,
        ],
        service_name=DESTINATION_SERVICE,
    )
    counts = {}
    for line in stdout.splitlines():
        if line.strip():
            table, _, count = line.partition("|")
            counts[table] = int(count)
    return counts


def containers_in_the_way() -> list[str]:
    """The compose file's fixed container names that already exist (a user's own stack)."""
    result = subprocess.run(
        ["docker", "ps", "--all", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    return sorted(set(result.stdout.split()) & set(CONTAINER_NAMES))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"tier 2 needs a Docker engine: {reason}")
    taken = containers_in_the_way()
    if taken:
        # Never stop or remove a stack of the user's: its names would collide.
        pytest.skip(f"containers {', '.join(taken)} exist (your own stack?); tier 2 leaves them be")
    with pytest.MonkeyPatch.context() as env:
        # Its own project (so `down` only ever removes the test's containers
        # and volumes) and free host ports, over .env.example's values.
        env.setenv("COMPOSE_PROJECT_NAME", PROJECT_NAME)
        env.setenv("SOURCE_PUBLISH_PORT", str(free_port()))
        env.setenv("DESTINATION_PUBLISH_PORT", str(free_port()))
        yield from run_stack()


def run_stack() -> Iterator[Stack]:
    # Imported only here, once an engine is known to answer, so that a machine
    # without Docker never loads testcontainers (or the docker SDK below it).
    from testcontainers.compose import DockerCompose  # noqa: PLC0415

    compose = DockerCompose(
        context=REPO_ROOT,
        compose_file_name=COMPOSE_FILE,
        env_file=ENV_FILE,
        build=True,
        # Not `up --wait`: it counts a one-shot service that has exited, even
        # with 0, as a failure. `up --detach` still holds elt_script back until
        # both databases are healthy (depends_on: service_healthy).
        wait=False,
    )
    # Start cold: leftovers of an interrupted run (containers, and the
    # anonymous data volumes that `up` would reuse) would hide a seeding or
    # copying problem.
    compose.stop()
    try:
        compose.start()
        job = wait_for_exit(compose, JOB_SERVICE, JOB_TIMEOUT_SECONDS)
        yield Stack(compose, job)
    finally:
        compose.stop()  # `down --volumes`


def test_first_run_copies_everything(stack: Stack) -> None:
    logs = container_logs(stack.job)
    assert exit_code(stack.job) == 0, logs

    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines, "the job logged nothing"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
        assert isinstance(record, dict), f"not a JSON object: {line!r}"
        records.append(record)
    assert any(
        SUCCESS_MESSAGE in value
        for record in records
        for value in record.values()
        if isinstance(value, str)
    ), logs

    assert destination_counts(stack.compose) == SEED_COUNTS


def test_dbt_service_builds_the_marts(stack: Stack) -> None:
    # Before the rerun below, so that no load runs while dbt builds.
    dbt = wait_for_exit(stack.compose, DBT_SERVICE, JOB_TIMEOUT_SECONDS)
    logs = container_logs(dbt)
    assert exit_code(dbt) == 0, logs
    messages = [json.loads(line)["info"]["msg"] for line in logs.splitlines() if line.strip()]
    assert "Completed successfully" in messages, logs
    stdout, _, _ = stack.compose.exec_in_container(
        [
            "sh",
            "-c",
            'exec psql -X -v ON_ERROR_STOP=1 -A -t -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "$1"',
            "sh",
            "SELECT count(*) FROM marts.fct_film_cast",
        ],
        service_name=DESTINATION_SERVICE,
    )
    assert stdout.strip() == str(SEED_COUNTS["film_actors"])


def test_rerun_is_safe(stack: Stack) -> None:
    # A second run into the already filled destination must succeed and leave
    # the same data, not duplicate it. `run` names its own container, so the
    # fixed container_name of the first run does not collide.
    result = subprocess.run(
        compose_command(stack.compose, "run", "--rm", "-T", JOB_SERVICE),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
        cwd=REPO_ROOT,
        timeout=RERUN_TIMEOUT_SECONDS,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert SUCCESS_MESSAGE in output
    assert destination_counts(stack.compose) == SEED_COUNTS
