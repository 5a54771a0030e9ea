"""Docs that cannot drift: README, docs/, .env.example, compose and the code agree.

After db-to-sqlite's tests/test_docs.py: the configuration table in README.md,
the variables in .env.example and docker-compose.yaml, and config.py must name
the same settings with the same defaults; the exit-code table must match
errors.py; the test command the README gives must be the one CI runs. The
tables that live in docs/ are checked where they live (the test tiers against
tests/, the validation levels against config.py, the dbt models against
transform/models/), and every relative link and #anchor in README.md and
docs/*.md must resolve.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import COLLECTED_MARKERS, PUBLISHING, EnvFile
from elt import config, errors

REPO = Path(__file__).resolve().parent.parent
README_PATH = REPO / "README.md"
DOCS = REPO / "docs"
README = README_PATH.read_text(encoding="utf-8")
PAGES = [README_PATH, *sorted(DOCS.glob("*.md"))]


@dataclass(frozen=True)
class Heading:
    line: int  # index into the page's lines
    level: int
    title: str


def headings(text: str) -> list[Heading]:
    """Markdown ATX headings, outside fenced code blocks (a `# comment` in bash is none)."""
    found = []
    fenced = False
    for number, line in enumerate(text.split("\n")):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^(#{1,6}) (.+?)\s*$", line)):
            found.append(Heading(number, len(match.group(1)), match.group(2)))
    return found


def section(text: str, title: str, *, subsections: bool = False) -> str:
    """The body under heading `title`: up to the next heading, or with `subsections`
    up to the next heading of the same or a higher level."""
    lines = text.split("\n")
    marks = headings(text)
    for index, heading in enumerate(marks):
        if heading.title == title:
            end = len(lines)
            for later in marks[index + 1 :]:
                if not subsections or later.level <= heading.level:
                    end = later.line
                    break
            return "\n".join(lines[heading.line + 1 : end])
    raise AssertionError(f"no section {title!r}")


def readme_section(title: str, *, subsections: bool = False) -> str:
    return section(README, title, subsections=subsections)


def page_section(page: str, title: str, *, subsections: bool = False) -> str:
    return section((DOCS / page).read_text(encoding="utf-8"), title, subsections=subsections)


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", title).lower()
    kept = "".join(
        c
        for c in text
        if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"
    )
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(text):
        base = slug(heading.title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(text: str) -> list[str]:
    """Targets of inline links outside code blocks and code spans."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def broken_links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in links(text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto: are not checked offline
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and anchor not in anchors(destination.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    return broken


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Transformations (dbt)", "transformations-dbt"),
        (
            "Sources in other encodings, and hot standbys",
            "sources-in-other-encodings-and-hot-standbys",
        ),
        ("Server limits: locks and connections", "server-limits-locks-and-connections"),
        ("Phase 0: Repository Hygiene ✅", "phase-0-repository-hygiene-"),
        ("2. (Optional) Configure", "2-optional-configure"),
        ("The `ELT_JOBS` setting", "the-elt_jobs-setting"),
    ],
)
def test_anchor_slugs_follow_github(title: str, expected: str) -> None:
    assert slug(title) == expected


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```bash\n# not a heading\n```\n\n"
        "[ok](other.md#a-part) [ok](#page) [web](https://example.org/x#y) `[code](missing.md)`\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [not here](#not-a-heading)\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "missing.md: no file missing.md",
        "other.md#nowhere: no heading #nowhere in other.md",
        "#not-a-heading: no heading #not-a-heading in page.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_links_every_docs_page() -> None:
    linked = {target.partition("#")[0] for target in links(README)}
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    assert pages <= linked, sorted(pages - linked)


def test_project_structure_lists_docs_and_every_page() -> None:
    tree = page_section("development.md", "Project structure")
    assert "├── docs/" in tree
    listed = set(re.findall(r"│   [├└]── ([a-z-]+\.md)", tree))
    assert listed == {p.name for p in DOCS.glob("*.md")}


def test_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 260


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


def test_env_example_lists_every_setting_with_the_codes_defaults(env_example: EnvFile) -> None:
    assert sorted(env_example.values) == sorted([*config.DEFAULTS, *PUBLISHING])
    for name, default in config.DEFAULTS.items():
        assert env_example.values[name] == (default if default is not None else "secret"), name


def test_env_example_offers_password_files_for_docker_secrets(env_example: EnvFile) -> None:
    # Commented out: setting one replaces the password, so neither may be on by default.
    assert sorted(env_example.commented) == sorted(config.PASSWORD_FILE_VARIABLES)
    for name, path in env_example.commented.items():
        assert path.startswith("/run/secrets/"), name  # where compose mounts secrets


def test_compose_passes_every_setting_to_the_job(compose: dict[str, Any]) -> None:
    environment = compose["services"]["elt_script"]["environment"]
    assert sorted(environment) == sorted(config.DEFAULTS)
    for name, value in environment.items():
        assert value.startswith(f"${{{name}:-"), name  # each takes its own variable


@pytest.mark.parametrize("name", PUBLISHING)
def test_readme_documents_the_published_ports(env_example: EnvFile, name: str) -> None:
    # Compose-only settings are not in the job's table; Quick Start names them.
    default = env_example.values[name]
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


def test_failure_table_gives_only_documented_exit_codes() -> None:
    body = page_section("failures.md", "What happens when things go wrong")
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in body.split("\n") if line.startswith("|")]
    assert [cell.strip() for cell in rows[0]] == ["What went wrong", "What the job does", "Exit"]
    cells = [row[-1].strip() for row in rows[2:]]
    assert len(cells) >= 10
    documented = {str(code) for code in errors.EXIT_CODES} | {"130", "143"}
    for cell in cells:
        codes = set(re.findall(r"\d+", cell))
        assert codes <= documented, cell
        assert codes or cell == "—", cell


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


@pytest.mark.parametrize(
    "text", [README, (DOCS / "development.md").read_text(encoding="utf-8")], ids=["README", "docs"]
)
def test_the_test_command_is_what_ci_runs(text: str) -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", section(text, "Tests"), re.S)
    assert commands[0].strip() == "bash .ci/run"
    assert (REPO / ".ci" / "run").is_file()
    assert "pytest" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_quick_start_gives_the_run_command() -> None:
    assert "docker compose up --build" in readme_section("3. Start the pipeline")


@pytest.mark.parametrize(
    "command",
    [
        "docker compose up --build",
        "docker compose wait elt_script",
        "bash dev/stack up",
        "docker compose logs --no-log-prefix elt_script",
        "| jq -cR 'fromjson?",
        "psql -h 127.0.0.1 -p 5438 -U postgres -d destination_db",
        "docker compose logs dbt",
        "docker compose run --rm --no-deps dbt",
        "docker compose down -v",
    ],
)
def test_readme_quick_start_is_complete(command: str) -> None:
    assert command in readme_section("Quick Start", subsections=True)


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
    code = "".join(p.read_text(encoding="utf-8") for p in (REPO / "elt").rglob("*.py"))
    assert f'"{message}"' in code


TIERS = {"no database", "real servers", "both", "Docker"}


def tier_rows() -> dict[str, str]:
    """File name -> tier column of the test table in docs/development.md."""
    rows = re.findall(
        r"^\| `tests/(test_\w+\.py)` \| ([^|]+) \|", page_section("development.md", "Tests"), re.M
    )
    return {name: tier.strip() for name, tier in rows}


def tier_of(markers: set[str]) -> str:
    """The table's word for a file whose tests carry these markers."""
    if markers == {"docker"}:
        return "Docker"
    if markers <= {"nodb", "dbt"}:  # dbt alone (`dbt parse`) needs no database
        return "no database"
    if markers - {"dbt"} == {"server"}:
        return "real servers"
    return "both"


def test_tier_table_lists_every_test_file() -> None:
    rows = tier_rows()
    present = {p.name for p in (REPO / "tests").glob("test_*.py")}
    assert sorted(rows) == sorted(present)
    assert set(rows.values()) <= TIERS


@pytest.mark.parametrize(
    ("markers", "tier"),
    [
        ({"nodb"}, "no database"),
        ({"nodb", "dbt"}, "no database"),
        ({"server"}, "real servers"),
        ({"server", "dbt"}, "real servers"),
        ({"nodb", "server"}, "both"),
        ({"nodb", "dbt", "server"}, "both"),
        ({"docker"}, "Docker"),
    ],
)
def test_tier_of(markers: set[str], tier: str) -> None:
    assert tier_of(markers) == tier


def test_tier_table_says_what_the_markers_say() -> None:
    # Every file this session collected (all of them in a whole run or `-m nodb`;
    # this file alone when run alone), by the markers conftest gave its tests.
    assert "test_docs.py" in COLLECTED_MARKERS
    rows = tier_rows()
    wrong = {
        name: (rows.get(name), tier_of(markers))
        for name, markers in COLLECTED_MARKERS.items()
        if rows.get(name) != tier_of(markers)
    }
    assert wrong == {}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_test_file_named_exists(page: Path) -> None:
    named = set(re.findall(r"`tests/(test_\w+\.py)`", page.read_text(encoding="utf-8")))
    assert {name for name in named if not (REPO / "tests" / name).is_file()} == set()


def test_validation_levels_table_matches_the_code() -> None:
    levels = re.findall(r"^\| `(\w+)`", page_section("validation.md", "Validation"), re.M)
    assert sorted(levels) == sorted(level.value for level in config.ValidationLevel)
    assert f"`{config.DEFAULTS['ELT_VALIDATION']}` (default)" in (DOCS / "validation.md").read_text(
        encoding="utf-8"
    )


def test_dbt_models_table_matches_the_project() -> None:
    table = page_section("transformations.md", "Models")
    for layer in ("staging", "marts"):
        (row,) = re.findall(rf"^\| {layer} \|.*$", table, re.M)
        documented = set(re.findall(r"`(\w+)`", row.split("|")[4]))
        models = {p.stem for p in (REPO / "transform" / "models" / layer).glob("*.sql")}
        assert documented == models, layer


def test_doc_pages_named_in_the_code_exist() -> None:
    roots = ["elt", "dev", "tests", "transform", ".ci"]
    files = [p for root in roots for p in (REPO / root).rglob("*") if p.is_file()]
    named = {
        (path.relative_to(REPO).as_posix(), page)
        for path in files
        if path.suffix in {".py", ".sql", ".yml", ".yaml", ""} or path.name == "Dockerfile"
        for page in re.findall(
            r"\bdocs/([a-z-]+\.md)", path.read_text(encoding="utf-8", errors="replace")
        )
    }
    assert len({page for _, page in named}) >= 4
    assert {(where, page) for where, page in named if not (DOCS / page).is_file()} == set()
