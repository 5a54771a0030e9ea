"""Docs that cannot drift: README, .env.example, compose and the code agree.

After db-to-sqlite's tests/test_docs.py: the configuration table in README.md,
the variables in .env.example and docker-compose.yaml, and config.py must name
the same settings with the same defaults; the exit-code table must match
errors.py; the test command the README gives must be the one CI runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_static import ENV_EXAMPLE, PUBLISHING, load_yaml, parse_env_file

import config
import errors

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_section(title: str) -> str:
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ )", README, re.M | re.S)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def readme_variables() -> dict[str, str]:
    """Variable -> default column of README's configuration table."""
    rows = re.findall(
        r"^\| `([A-Z0-9_]+)` \|[^|]*\| ([^|]*) \|$", readme_section("Environment Variables"), re.M
    )
    return dict(rows)


def test_readme_documents_exactly_the_settings_the_code_reads() -> None:
    assert sorted(readme_variables()) == sorted(config.ALL_VARIABLES)


def test_readme_defaults_match_the_code() -> None:
    documented = readme_variables()
    for name, default in config.DEFAULTS.items():
        if default is not None:
            assert documented[name] == f"`{default}`", name


def test_env_example_lists_every_setting_with_the_codes_defaults() -> None:
    env = parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))
    assert sorted(env.values) == sorted([*config.DEFAULTS, *PUBLISHING])
    assert sorted(env.commented) == sorted(config.PASSWORD_FILE_VARIABLES)
    for name, default in config.DEFAULTS.items():
        assert env.values[name] == (default if default is not None else "secret"), name


def test_compose_passes_every_setting_to_the_job() -> None:
    compose = load_yaml(REPO / "docker-compose.yaml")
    environment = compose["services"]["elt_script"]["environment"]
    assert sorted(environment) == sorted(config.DEFAULTS)
    for name, value in environment.items():
        assert value.startswith(f"${{{name}:-"), name  # each takes its own variable


@pytest.mark.parametrize(("name", "default"), PUBLISHING.items())
def test_readme_documents_the_published_ports(name: str, default: str) -> None:
    # Compose-only settings are not in the job's table; Quick Start names them.
    assert f"| `{name}` | `{default}` |" in readme_section("2. (Optional) Configure")


def test_exit_code_table_matches_the_code() -> None:
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", readme_section("Exit codes"), re.M))
    codes = {int(code) for code in table}
    expected = set(errors.EXIT_CODES) | {0, 130, 143}
    assert codes == expected
    assert "configuration" in table["2"].lower()
    assert "connect" in table["3"].lower()
    assert "extract" in table["4"].lower()
    assert "load" in table["5"].lower()
    assert "validation" in table["6"].lower()


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (errors.SettingsError, 2),
        (errors.ConnectionFailed, 3),
        (errors.ExtractError, 4),
        (errors.LoadError, 5),
        (errors.ValidationFailed, 6),
    ],
)
def test_each_failure_kind_has_its_own_code(error_class: type[errors.EltError], code: int) -> None:
    assert error_class.exit_code == code
    assert errors.EXIT_CODES[code] is error_class


def test_readme_test_command_is_what_ci_runs() -> None:
    section = readme_section("Development and tests")
    commands = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    assert commands[0].strip() == "bash .ci/run"
    assert (REPO / ".ci" / "run").is_file()
    assert "pytest" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_quick_start_gives_the_run_command() -> None:
    assert "docker compose up --build" in readme_section("3. Start the pipeline")


@pytest.mark.parametrize(
    "message",
    [
        "Starting ELT pipeline",
        "Configuration loaded from environment",
        "Database connection successful",
        "Data extraction completed successfully",
        "ELT pipeline completed successfully",
    ],
)
def test_documented_log_messages_exist_in_the_code(message: str) -> None:
    code = "".join(p.read_text(encoding="utf-8") for p in (REPO / "elt").glob("*.py"))
    assert f'"{message}"' in code


def test_readme_lists_every_test_file() -> None:
    listed = set(re.findall(r"`tests/(test_\w+\.py)`", README))
    present = {p.name for p in (REPO / "tests").glob("test_*.py")}
    assert listed == present
