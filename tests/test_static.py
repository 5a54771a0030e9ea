"""Fast checks of the container setup: no database and no Docker engine needed.

They cover what tier 2 (tests/test_docker.py) can only find out by running the
stack: the compose file against the compose-spec schema and against the
decisions it encodes, the Dockerfile against hadolint, and .env.example against
the compose file's defaults.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# ruamel.yaml is not a dependency of its own: it comes with check-jsonschema
# (requirements-dev.txt), which parses YAML with it. PyYAML is not installed.
from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "elt" / "Dockerfile"
# Every image the compose file builds: the ELT job's and the dbt service's.
DOCKERFILES = [DOCKERFILE, REPO_ROOT / "transform" / "Dockerfile"]
INIT_DIR = REPO_ROOT / "source_db_init"

# The tools are pinned in requirements-dev.txt and installed into the same venv
# as pytest, so they live next to the interpreter (not necessarily on PATH).
# sys.executable is deliberately not resolved: in a venv it is a symlink whose
# target lies outside the venv's bin directory.
VENV_BIN = Path(sys.executable).parent

INIT_TARGET = "/docker-entrypoint-initdb.d"
TOOL_TIMEOUT_SECONDS = 120


def tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.is_file():
        pytest.fail(f"{name} not found next to {sys.executable}: install requirements-dev.txt")
    return path


def load_yaml(path: Path) -> Any:
    # The safe loader builds plain dicts and lists (and YAML 1.2 scalars, as
    # compose does: an unquoted `no` stays a string).
    return YAML(typ="safe", pure=True).load(path)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = load_yaml(COMPOSE_FILE)
    assert isinstance(document, dict), f"{COMPOSE_FILE.name} is not a mapping"
    return document


def dig(tree: Any, path: tuple[str, ...]) -> Any:
    node = tree
    for depth, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            pytest.fail(f"{'.'.join(path[: depth + 1])} is missing from {COMPOSE_FILE.name}")
        node = node[key]
    return node


# --- compose-spec schema ----------------------------------------------------


def run_compose_schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    # The compose-spec schema is vendored inside check-jsonschema: no network.
    return subprocess.run(
        [str(tool("check-jsonschema")), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=TOOL_TIMEOUT_SECONDS,
    )


def test_compose_file_matches_compose_spec_schema() -> None:
    result = run_compose_schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_an_invalid_file(tmp_path: Path) -> None:
    # Guards the test above against passing vacuously (wrong schema name, a
    # check that reads nothing): a misspelt service key must be refused.
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text("services:\n  db:\n    imagee: postgres:17\n", encoding="utf-8")
    result = run_compose_schema_check(bad)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "imagee" in result.stdout + result.stderr


# --- hadolint ---------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    code: str
    level: str
    line: int
    message: str


def run_hadolint(dockerfile: Path) -> tuple[int, list[Finding]]:
    # Run from the repository root so that a .hadolint.yaml there applies, but
    # without HADOLINT_* variables, through which a developer's environment
    # could silence rules.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    result = subprocess.run(
        [str(tool("hadolint")), "--no-color", "-f", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        env=env,
        timeout=TOOL_TIMEOUT_SECONDS,
    )
    try:
        raw = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"hadolint gave no JSON report (exit {result.returncode}): {result.stderr}")
    findings = [Finding(f["code"], f["level"], f["line"], f["message"]) for f in raw]
    return result.returncode, findings


def describe(findings: list[Finding]) -> str:
    return "\n".join(f"line {f.line}: {f.code} {f.level}: {f.message}" for f in findings)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_has_no_hadolint_errors_or_warnings(dockerfile: Path) -> None:
    _, findings = run_hadolint(dockerfile)
    serious = [f for f in findings if f.level in {"error", "warning"}]
    assert serious == [], describe(serious)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_has_no_unexplained_hadolint_findings(dockerfile: Path) -> None:
    # Infos and style notes are acceptable only when ignored with a reason,
    # in .hadolint.yaml or an inline `# hadolint ignore=` pragma; an ignored
    # rule does not appear in the report, so anything reported is unexplained.
    returncode, findings = run_hadolint(dockerfile)
    assert findings == [], describe(findings)
    assert returncode == 0


def test_hadolint_flags_an_unpinned_apt_install(tmp_path: Path) -> None:
    # Proves the checks above can fail: same binary, same configuration, and
    # the rule that the real Dockerfile satisfies with `=17.*` must fire.
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:3.12-slim-trixie\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends"
        " postgresql-client-17 && rm -rf /var/lib/apt/lists/*\n",
        encoding="utf-8",
    )
    returncode, findings = run_hadolint(bad)
    assert returncode != 0
    assert ("DL3008", "warning", 2) in [(f.code, f.level, f.line) for f in findings], describe(
        findings
    )


# --- the decisions encoded in docker-compose.yaml ---------------------------

DATABASES = ("source_postgres", "destination_postgres")

COMPOSE_EXPECTATIONS: list[tuple[tuple[str, ...], Any]] = [
    (("services", "source_postgres", "image"), "postgres:17"),
    (("services", "source_postgres", "container_name"), "source_postgres"),
    # Published on 127.0.0.1 unless PUBLISH_ADDRESS says otherwise.
    (
        ("services", "source_postgres", "ports"),
        ["${PUBLISH_ADDRESS:-127.0.0.1}:${SOURCE_PUBLISH_PORT:-5437}:5432"],
    ),
    (
        ("services", "source_postgres", "environment", "POSTGRES_DB"),
        "${SOURCE_POSTGRES_DB:-source_db}",
    ),
    (
        ("services", "source_postgres", "environment", "POSTGRES_USER"),
        "${SOURCE_POSTGRES_USER:-postgres}",
    ),
    (
        ("services", "source_postgres", "environment", "POSTGRES_PASSWORD"),
        "${SOURCE_POSTGRES_PASSWORD:-secret}",
    ),
    (("services", "destination_postgres", "image"), "postgres:17"),
    (("services", "destination_postgres", "container_name"), "destination_postgres"),
    (
        ("services", "destination_postgres", "ports"),
        ["${PUBLISH_ADDRESS:-127.0.0.1}:${DESTINATION_PUBLISH_PORT:-5438}:5432"],
    ),
    (
        ("services", "destination_postgres", "environment", "POSTGRES_DB"),
        "${DESTINATION_POSTGRES_DB:-destination_db}",
    ),
    (
        ("services", "destination_postgres", "environment", "POSTGRES_USER"),
        "${DESTINATION_POSTGRES_USER:-postgres}",
    ),
    (
        ("services", "destination_postgres", "environment", "POSTGRES_PASSWORD"),
        "${DESTINATION_POSTGRES_PASSWORD:-secret}",
    ),
    *(
        (("services", db, "healthcheck", key), value)
        for db in DATABASES
        for key, value in [
            ("interval", "10s"),
            ("timeout", "5s"),
            ("retries", 5),
            ("start_period", "60s"),
        ]
    ),
    (("services", "elt_script", "build"), "./elt"),
    (("services", "elt_script", "container_name"), "elt_script"),
    (("services", "elt_script", "restart"), "no"),
    (("services", "elt_script", "depends_on", "source_postgres", "condition"), "service_healthy"),
    (
        ("services", "elt_script", "depends_on", "destination_postgres", "condition"),
        "service_healthy",
    ),
    (("services", "dbt", "build"), "./transform"),
    (("services", "dbt", "restart"), "no"),
    # Only after a load that exited 0: never transform a failed load's leftovers.
    (
        ("services", "dbt", "depends_on"),
        {"elt_script": {"condition": "service_completed_successfully"}},
    ),
    *(
        (("services", "dbt", "environment", f"DESTINATION_POSTGRES_{key}"), value)
        for key, value in [
            ("HOST", "${DESTINATION_POSTGRES_HOST:-destination_postgres}"),
            ("PORT", "${DESTINATION_POSTGRES_PORT:-5432}"),
            ("DB", "${DESTINATION_POSTGRES_DB:-destination_db}"),
            ("USER", "${DESTINATION_POSTGRES_USER:-postgres}"),
            ("PASSWORD", "${DESTINATION_POSTGRES_PASSWORD:-secret}"),
        ]
    ),
]


@pytest.mark.parametrize(
    ("path", "expected"), COMPOSE_EXPECTATIONS, ids=[".".join(p) for p, _ in COMPOSE_EXPECTATIONS]
)
def test_compose_setting(compose: dict[str, Any], path: tuple[str, ...], expected: Any) -> None:
    assert dig(compose, path) == expected


def test_compose_file_has_no_version_key(compose: dict[str, Any]) -> None:
    # Obsolete in the compose spec (compose warns about it), yet the schema
    # still accepts it, so only this test catches it.
    assert "version" not in compose


def test_compose_services_are_exactly_the_four(compose: dict[str, Any]) -> None:
    assert sorted(dig(compose, ("services",))) == [
        "dbt",
        "destination_postgres",
        "elt_script",
        "source_postgres",
    ]


def test_dbt_service_gets_only_the_destination_settings(compose: dict[str, Any]) -> None:
    # transform/profiles.yml reads exactly these; the source's password has no
    # business in the dbt container.
    assert sorted(dig(compose, ("services", "dbt", "environment"))) == [
        f"DESTINATION_POSTGRES_{key}" for key in ("DB", "HOST", "PASSWORD", "PORT", "USER")
    ]


def test_dbt_image_runs_as_a_numeric_non_root_user_and_logs_json() -> None:
    # What the compose service relies on without restating it: `dbt build` by
    # default, JSON log lines, and an unprivileged user.
    text = (REPO_ROOT / "transform" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.12-slim-trixie$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["10001:10001"]
    assert re.search(r"^\s*DBT_LOG_FORMAT=json\b", text, re.M)
    assert re.search(r'^ENTRYPOINT \["dbt"\]$', text, re.M)
    assert re.search(r'^CMD \["build"\]$', text, re.M)


@pytest.mark.parametrize("db", DATABASES)
def test_healthcheck_probes_over_tcp(compose: dict[str, Any], db: str) -> None:
    # Over TCP because the image runs the init scripts on a temporary server
    # that listens on the unix socket only: a socket probe says "ready" while
    # the seed data is still loading. `$$` keeps compose from interpolating,
    # so the container's shell expands the image's own variables.
    test = dig(compose, ("services", db, "healthcheck", "test"))
    assert isinstance(test, list)
    assert len(test) == 2
    assert test[0] == "CMD-SHELL"
    assert shlex.split(test[1].replace("$$", "$")) == [
        "pg_isready",
        *("-h", "127.0.0.1"),
        *("-p", "5432"),
        *("-U", "${POSTGRES_USER}"),
        *("-d", "${POSTGRES_DB}"),
    ]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def parse_mount(volume: Any) -> Mount:
    """A compose volume entry, in short (`src:dst[:opts]`) or long syntax."""
    if isinstance(volume, str):
        source, _, rest = volume.partition(":")
        target, _, options = rest.partition(":")
        return Mount(source, target, "ro" in options.split(","))
    if isinstance(volume, dict):
        return Mount(
            str(volume.get("source", "")),
            str(volume.get("target", "")),
            volume.get("read_only") is True,
        )
    pytest.fail(f"unexpected volume entry {volume!r}")


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        ("./a:/b:ro", Mount("./a", "/b", read_only=True)),
        ("./a:/b:z,ro", Mount("./a", "/b", read_only=True)),
        ("./a:/b", Mount("./a", "/b", read_only=False)),
        ("./a:/b:rw", Mount("./a", "/b", read_only=False)),
        (
            {"type": "bind", "source": "./a", "target": "/b", "read_only": True},
            Mount("./a", "/b", True),
        ),
        ({"type": "bind", "source": "./a", "target": "/b"}, Mount("./a", "/b", read_only=False)),
    ],
)
def test_parse_mount(volume: Any, expected: Mount) -> None:
    assert parse_mount(volume) == expected


def init_mounts(compose: dict[str, Any], service: str) -> list[Mount]:
    volumes = dig(compose, ("services", service)).get("volumes", [])
    return [m for m in map(parse_mount, volumes) if m.target.rstrip("/") == INIT_TARGET]


def test_source_init_scripts_are_mounted_read_only(compose: dict[str, Any]) -> None:
    assert init_mounts(compose, "source_postgres") == [
        Mount(source="./source_db_init", target=INIT_TARGET, read_only=True)
    ]
    # The entrypoint runs *.sql files from there; an empty folder would seed nothing.
    assert (INIT_DIR / "init.sql").is_file()


def test_destination_has_no_init_scripts(compose: dict[str, Any]) -> None:
    assert init_mounts(compose, "destination_postgres") == []


# --- ${VAR:-default} in docker-compose.yaml against .env.example ------------


@dataclass(frozen=True)
class Reference:
    """One `${...}` or `$NAME` that compose interpolates."""

    text: str
    name: str
    default: str | None  # None unless written as ${NAME:-default}


# `$$` is compose's escape for a literal `$` and must be consumed first, so
# that `$${X}` is not read as `$` followed by `${X}`.
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def find_references(text: str) -> list[Reference]:
    references = []
    for match in INTERPOLATION.finditer(text):
        if match["bare"] is not None:
            references.append(Reference(match[0], match["bare"], None))
        elif match["braced"] is not None:
            braced = BRACED.fullmatch(match["braced"])
            if braced is None:  # ${X-y}, ${X:?err}, ${X:+alt}: no usable default
                name = re.match(r"[A-Za-z0-9_]*", match["braced"])
                references.append(Reference(match[0], name[0] if name else "", None))
            else:
                references.append(Reference(match[0], braced["name"], braced["default"]))
    return references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A:-x}", [Reference("${A:-x}", "A", "x")]),
        ("${A:-}", [Reference("${A:-}", "A", "")]),
        ("$${A} and $$A are escaped", []),
        ("$$$${A}", []),
        ("${A}", [Reference("${A}", "A", None)]),
        ("$A", [Reference("$A", "A", None)]),
        ("${A-x}", [Reference("${A-x}", "A", None)]),
        ("${A:?unset}", [Reference("${A:?unset}", "A", None)]),
        (
            "-U $${U} ${B:-b} $C",
            [Reference("${B:-b}", "B", "b"), Reference("$C", "C", None)],
        ),
    ],
)
def test_find_references(text: str, expected: list[Reference]) -> None:
    assert find_references(text) == expected


def strings_in(node: Any) -> list[str]:
    """Every string value in a parsed YAML document (compose interpolates values, not comments)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return []


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


def test_parse_env_file_reports_what_is_wrong() -> None:
    env = parse_env_file(
        "# documented\n"
        "GOOD=1\n"
        "UNDOCUMENTED=2\n"
        "\n"
        "# the blank line above ends the comment's reach\n"
        "\n"
        "ALSO_UNDOCUMENTED=3\n"
        "# documented, commented out\n"
        "# OPTIONAL=/run/secrets/x\n"
        "# quoted\n"
        'QUOTED="4"\n'
        "export EXPORTED=5\n"
        "# duplicate\n"
        "GOOD=6\n"
    )
    assert env.values == {
        "GOOD": "6",
        "UNDOCUMENTED": "2",
        "ALSO_UNDOCUMENTED": "3",
        "QUOTED": '"4"',
    }
    assert env.commented == {"OPTIONAL": "/run/secrets/x"}
    assert env.undocumented == ["UNDOCUMENTED", "ALSO_UNDOCUMENTED"]
    assert env.problems == [
        "line 11: value of QUOTED is not a plain value: '\"4\"'",
        "line 12: not a NAME=value line: 'export EXPORTED=5'",
        "line 14: GOOD is defined twice",
    ]


@pytest.fixture(scope="module")
def env_example() -> EnvFile:
    return parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))


def test_env_example_is_plain_and_fully_documented(env_example: EnvFile) -> None:
    assert env_example.problems == []
    assert env_example.undocumented == []


# Compose-only settings (the job never reads them): where the databases are
# published on the host. dev/stack listens on the same two ports.
PUBLISHING = {
    "PUBLISH_ADDRESS": "127.0.0.1",
    "SOURCE_PUBLISH_PORT": "5437",
    "DESTINATION_PUBLISH_PORT": "5438",
}

ENV_EXAMPLE_EXPECTED = {
    "SOURCE_POSTGRES_HOST": "source_postgres",
    "SOURCE_POSTGRES_PORT": "5432",
    "SOURCE_POSTGRES_DB": "source_db",
    "SOURCE_POSTGRES_USER": "postgres",
    "SOURCE_POSTGRES_PASSWORD": "secret",
    "DESTINATION_POSTGRES_HOST": "destination_postgres",
    "DESTINATION_POSTGRES_PORT": "5432",
    "DESTINATION_POSTGRES_DB": "destination_db",
    "DESTINATION_POSTGRES_USER": "postgres",
    "DESTINATION_POSTGRES_PASSWORD": "secret",
    "ELT_WAIT_RETRIES": "10",
    "ELT_WAIT_DELAY_SECONDS": "3",
    "ELT_CONNECT_TIMEOUT_SECONDS": "5",
    "ELT_VALIDATION": "full",
    "ELT_COPY_OWNERSHIP": "false",
    "ELT_LOG_LEVEL": "INFO",
    "ELT_JOBS": "auto",
    "ELT_PARALLEL_MIN_MB": "64",
    "ELT_PROGRESS_SECONDS": "5",
    **PUBLISHING,
}


@pytest.mark.parametrize(("name", "expected"), ENV_EXAMPLE_EXPECTED.items())
def test_env_example_default(env_example: EnvFile, name: str, expected: str) -> None:
    assert env_example.values.get(name) == expected


def test_env_example_has_no_other_active_variables(env_example: EnvFile) -> None:
    assert sorted(env_example.values) == sorted(ENV_EXAMPLE_EXPECTED)


def test_env_example_offers_password_files_for_docker_secrets(env_example: EnvFile) -> None:
    # Commented out: setting one replaces the password, so neither may be on by default.
    assert env_example.commented == {
        "SOURCE_POSTGRES_PASSWORD_FILE": "/run/secrets/source_password",
        "DESTINATION_POSTGRES_PASSWORD_FILE": "/run/secrets/destination_password",
    }


def test_every_compose_variable_defaults_to_the_env_example_value(
    compose: dict[str, Any], env_example: EnvFile
) -> None:
    # With every default equal to .env.example, a .env file is optional: the
    # stack behaves the same with or without `cp .env.example .env`.
    references = [ref for text in strings_in(compose) for ref in find_references(text)]
    problems = []
    for ref in references:
        if ref.default is None:
            problems.append(f"{ref.text}: write it as ${{{ref.name}:-default}}")
        elif ref.name not in env_example.values:
            problems.append(f"{ref.text}: {ref.name} is not in {ENV_EXAMPLE.name}")
        elif ref.default != env_example.values[ref.name]:
            problems.append(
                f"{ref.text}: default differs from {ENV_EXAMPLE.name}'s"
                f" {ref.name}={env_example.values[ref.name]}"
            )
    assert problems == []
    # And the other way round: a variable in .env.example that compose never
    # reads would be a setting that silently does nothing.
    assert sorted({ref.name for ref in references}) == sorted(env_example.values)


# --- the image's files are readable by its unprivileged user ----------------


def copy_instructions(dockerfile: str) -> list[str]:
    return [line for line in dockerfile.splitlines() if line.startswith("COPY ")]


def unreadable_copies(dockerfile: str) -> list[str]:
    """COPY lines that leave the files' modes to the build host's umask and checkout."""
    bad = []
    for line in copy_instructions(dockerfile):
        mode = re.search(r"--chmod=([0-7]{3,4})\b", line)
        if mode is None or not int(mode.group(1), 8) & 0o004:
            bad.append(line)
    return bad


def test_every_copy_sets_modes_that_uid_10001_can_read() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert copy_instructions(dockerfile), "the Dockerfile copies nothing?"
    assert unreadable_copies(dockerfile) == []


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        ("COPY *.py ./", True),
        ("COPY --chmod=0600 *.py ./", True),
        ("COPY --chmod=0644 *.py ./", False),
        ("COPY --chown=1:1 --chmod=755 sql/ ./sql/", False),
    ],
)
def test_unreadable_copies(line: str, bad: bool) -> None:
    assert unreadable_copies(line) == ([line] if bad else [])
