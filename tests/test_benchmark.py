"""The benchmark (benchmark/): its command line, the ratios it reports, what it reads
from the job's log and the phases it splits a run into; its source builders and one
run of each kind against real servers (tiny sources). Nothing here times anything:
the benchmark itself is run by hand (docs/performance.md), never timed by the suite."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmark.cli import parse_args
from benchmark.cpu import (
    EXITED,
    POSTMASTER,
    LogReader,
    Reading,
    autovacuum_between,
    cpu_delta,
    floor_seconds,
    parse_autovacuum,
    parse_stat,
    process_kind,
)
from benchmark.cpu_report import cpu_summary, print_cpu
from benchmark.critical import (
    Span,
    build_tables,
    copy_tasks,
    critical_path,
    describe_build,
)
from benchmark.many_tables import MANY_SCHEMA, PARTITIONED, build_many_tables, lock_setting
from benchmark.methods import JOB_METHODS, wait_exactly
from benchmark.phases import job_phases, median_run, when
from benchmark.report import (
    headline_ratios,
    machine_header,
    print_report,
    print_sizes_summary,
    sizes_row,
    summarize,
)
from benchmark.runner import Bench, RunResult
from benchmark.sampling import job_breakdown
from benchmark.source import (
    MB,
    SOURCE_DB,
    SourceInfo,
    build_seed,
    build_source,
    check_disk,
    disk_needed_bytes,
    row_plan,
)
from conftest import SEED_COUNTS
from pgserver import PgServer

ALL_METHODS = ["job", "job_stream", "documented", "fd_j2", "fc_pipe", "pgcopydb"]
SIZES = ["job", "fd_j2", "fc_pipe"]


@pytest.mark.parametrize(
    ("argv", "methods"),
    [
        ([], ALL_METHODS),
        (["--methods", "fc_pipe, job,fc_pipe"], ["fc_pipe", "job"]),
        (["--methods", "job", "--runs", "1", "--size-mb", "0.5", "--warmup", "0"], ["job"]),
        (["--sizes"], ["job", "fd_j2", "fc_pipe"]),
        (
            ["--sizes", "5,10", "--methods", "fc_pipe,fd_j2,job,documented"],
            ["fc_pipe", "fd_j2", "job", "documented"],
        ),
        (["--many-tables", "3000"], ALL_METHODS),
        (["--seed", "--runs", "1"], ALL_METHODS),
        (["--methods", "job,job_noval"], ["job", "job_noval"]),  # only when named
        (["--sizes", "--methods", "job,fd_j2,fc_pipe,job_noval"], [*SIZES, "job_noval"]),
    ],
)
def test_the_command_line_accepts(argv: list[str], methods: list[str]) -> None:
    assert parse_args(argv).methods == methods


@pytest.mark.parametrize(
    ("argv", "size_mb", "sizes", "many_tables", "partitions", "seed"),
    [
        ([], 100.0, None, None, 300, False),
        (["--size-mb", "5000"], 5000.0, None, None, 300, False),
        (["--sizes"], None, [100.0, 250.0, 1000.0], None, 300, False),
        (["--sizes", "1000,250, 100,250"], None, [1000.0, 250.0, 100.0], None, 300, False),
        (["--many-tables", "3000"], None, None, 3000, 300, False),
        (["--many-tables", "10", "--partitions", "4"], None, None, 10, 4, False),
        (["--seed"], None, None, None, 300, True),
    ],
)
def test_the_command_line_chooses_one_source(
    argv: list[str],
    size_mb: float | None,
    sizes: list[float] | None,
    many_tables: int | None,
    partitions: int,
    seed: bool,
) -> None:
    args = parse_args(argv)
    assert (args.size_mb, args.sizes, args.many_tables, args.partitions, args.seed) == (
        size_mb,
        sizes,
        many_tables,
        partitions,
        seed,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--methods", "job,rsync"],
        ["--methods", " , "],
        ["--runs", "0"],
        ["--size-mb", "0"],
        ["--warmup", "-1"],
        ["--validation", "some"],
        ["--worker"],  # the worker is benchmark/methods.py, not an option
        ["--sizes", "100", "--size-mb", "5"],  # one source at a time
        ["--seed", "--many-tables", "3"],
        ["--sizes", "0"],
        ["--sizes", "100,abc"],
        ["--sizes", ","],
        ["--sizes", "100", "--methods", "job,fc_pipe"],  # job / best needs both tools
        ["--many-tables", "0"],
        ["--many-tables", "5", "--partitions", "0"],
    ],
)
def test_the_command_line_refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "usage: python -m benchmark" in capsys.readouterr().err


def result(method: str, run: int, wall: float, *, ok: bool = True) -> RunResult:
    return RunResult(method, run, ok, wall, 20.0, 30.0, 19.0, 10, rows_match=True)


@pytest.mark.parametrize(
    ("walls", "expected"),
    [
        (
            {"job": 2.0, "fd_j2": 4.0, "fc_pipe": 1.0, "documented": 8.0, "job_stream": 2.5},
            {
                "best_of_fd_j2_fc_pipe": "fc_pipe",
                "job_over_best_of_fd_j2_fc_pipe": 2.0,
                "job_over_documented": 0.25,
                "job_over_job_stream": 0.8,
            },
        ),
        # A tool with no successful run: no best, no ratio.
        (
            {"job": 2.0, "fd_j2": None, "fc_pipe": 1.0},
            {"best_of_fd_j2_fc_pipe": None, "job_over_best_of_fd_j2_fc_pipe": None},
        ),
        ({"job": None, "documented": 8.0}, {"job_over_documented": None}),
        ({"fc_pipe": 1.0, "documented": 8.0}, {}),  # no job: nothing to compare
    ],
)
def test_headline_ratios(walls: dict[str, float | None], expected: dict[str, Any]) -> None:
    rows = [{"method": method, "wall_s": wall} for method, wall in walls.items()]
    assert headline_ratios(rows) == pytest.approx(expected)


def test_summarize_takes_medians_of_good_runs_and_the_job_ratio() -> None:
    results = [
        result("job", 1, 3.0),
        result("job", 2, 1.0),
        result("job", 3, 2.0),
        result("fc_pipe", 1, 4.0),
        result("fc_pipe", 2, 99.0, ok=False),
    ]
    rows = {row["method"]: row for row in summarize(results, ["job", "fc_pipe"], 100 * MB)}
    assert rows["job"]["wall_s"] == 2.0
    assert rows["job"]["runs_ok"] == "3/3"
    assert rows["job"]["mb_per_s"] == 50.0
    assert rows["fc_pipe"]["wall_s"] == 4.0
    assert rows["fc_pipe"]["runs_ok"] == "1/2"
    assert rows["fc_pipe"]["walls"] == [4.0, 99.0]
    assert rows["fc_pipe"]["job_ratio"] == 0.5
    assert rows["job"]["job_ratio"] == 1.0


def line(second: float, message: str, **fields: Any) -> dict[str, Any]:
    return {"timestamp": f"2026-01-01T00:00:{second:06.3f}Z", "message": message, **fields}


def test_job_breakdown_reads_the_copy_validation_and_the_longest_progress_gap() -> None:
    logs = [
        line(0.0, "Configuration loaded from environment", jobs=2),
        line(1.0, "Starting data extraction from source database"),
        line(2.0, "Copy progress"),
        line(3.0, "Copy progress"),
        line(6.0, "Table copied"),
        line(7.0, "Data load completed successfully", duration_seconds=6.0),
        line(7.5, "Table validated", duration_ms=300),
        line(8.0, "Validation summary"),
        line(
            8.5, "ELT pipeline completed successfully", copy_path="streamed", duration_seconds=8.5
        ),
    ]
    found = job_breakdown(logs)
    assert found["elt_jobs"] == 2
    assert found["copy_path"] == "streamed"
    assert found["copy_s"] == 6.0
    assert found["validation_s"] == 1.0
    assert found["table_digest_s"] == 0.3
    assert found["progress_lines"] == 2
    assert found["table_copied_lines"] == 1
    assert found["progress_max_gap_s"] == 4.0
    assert found["progress_max_gap_at"] == "progress line 2 -> data load completed"
    assert found["extraction_to_load_s"] == 6.0


# --- the phases of one job run (benchmark/phases.py) ---------------------------
# The marks of two real runs of the job on the seed (PostgreSQL 17, 2026-11-29):
# the default settings (one stream), and the parallel path forced.
STREAMED_LOG = [
    ("12:30:15.467584", "Starting ELT pipeline"),
    ("12:30:15.467905", "Configuration loaded from environment"),
    ("12:30:15.468105", "Waiting for databases to be ready"),
    ("12:30:15.537484", "Database connection successful"),
    ("12:30:15.612164", "Database connection successful"),
    ("12:30:15.775167", "Parallel copy not used"),
    ("12:30:15.781744", "Starting data extraction from source database"),
    ("12:30:15.991754", "Table copied"),
    ("12:30:16.033871", "Data extraction completed successfully"),
    ("12:30:16.084638", "Copy progress"),
    ("12:30:16.084920", "Data load completed successfully"),
    ("12:30:16.131252", "Table validated"),
    ("12:30:16.132015", "Validation summary"),
    ("12:30:16.132165", "ELT pipeline completed successfully"),
]
PARALLEL_LOG = [
    ("12:30:16.816669", "Starting ELT pipeline"),
    ("12:30:16.817157", "Configuration loaded from environment"),
    ("12:30:16.817432", "Waiting for databases to be ready"),
    ("12:30:16.891614", "Database connection successful"),
    ("12:30:16.960253", "Database connection successful"),
    ("12:30:17.102918", "Parallel copy workers sized"),
    ("12:30:17.751989", "Parallel copy planned"),
    ("12:30:17.817139", "Starting data extraction from source database"),
    ("12:30:17.872046", "Table copied"),
    ("12:30:18.318698", "Copy progress"),
    ("12:30:18.319039", "Data extraction completed successfully"),
    ("12:30:18.386588", "Data load completed successfully"),
    ("12:30:18.428749", "Table validated"),
    ("12:30:18.429555", "Validation summary"),
    ("12:30:18.429734", "ELT pipeline completed successfully"),
]


def log_of(marks: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"timestamp": f"2026-11-29T{at}+00:00", "level": "INFO", "message": message}
        for at, message in marks
    ]


def phases_of(logs: list[dict[str, Any]]) -> dict[str, float]:
    """The phases of a run that started 0.1 s before its first line and exited 0.05 s
    after its last, keyed by the first words of each phase."""
    started, ended = when(logs[0]) - 0.1, when(logs[-1]) + 0.05
    found = job_phases(logs, started, ended)
    assert sum(s for _, s in found) == pytest.approx(ended - started)
    return {what.split(":")[0].split(",")[0]: round(s, 6) for what, s in found}


def test_the_phases_of_a_streamed_run() -> None:
    assert phases_of(log_of(STREAMED_LOG)) == {
        "start-up": 0.1,
        "settings read": 0.000521,
        "waits and logins": 0.144059,
        "snapshot": 0.163003,
        "lock check": 0.006577,
        "copy": 0.252127,
        "the restore's tail": 0.051049,
        "validation after the copy": 0.047095,
        "snapshot and sessions closed": 0.00015,
        "exit": 0.05,
    }


def test_the_phases_of_a_parallel_run() -> None:
    assert phases_of(log_of(PARALLEL_LOG)) == {
        "start-up": 0.1,
        "settings read": 0.000763,
        "waits and logins": 0.142821,
        "snapshot": 0.142665,
        "planning (the schema through the scratch database)": 0.649071,
        "staging schemas created (pre-data)": 0.06515,
        "copy": 0.501900,
        "staging finished": 0.067549,
        "validation after the copy": 0.042967,
        "snapshot and sessions closed": 0.000179,
        "exit": 0.05,
    }


def test_a_mark_not_logged_merges_its_phase_into_the_next() -> None:
    # ELT_JOBS=1 never considers the parallel copy, so never says it is not used.
    logs = log_of([m for m in STREAMED_LOG if m[1] != "Parallel copy not used"])
    found = job_phases(logs, when(logs[0]) - 0.1, when(logs[-1]) + 0.05)
    merged = [what for what, _ in found if "+" in what]
    assert merged == [
        "snapshot, pg_dump --version, catalog reads, run lock, checks; size (the path's "
        "choice) + lock check, table sizes"
    ]
    assert dict(found)[merged[0]] == pytest.approx(0.169580)


def test_no_phases_without_the_process_times() -> None:
    assert job_phases(log_of(STREAMED_LOG), None, None) == []


def test_the_median_run_is_the_middle_one_by_wall_time() -> None:
    runs = [result("job", 1, 3.0), result("job", 2, 1.0), result("job", 3, 2.0)]
    assert median_run(runs) is runs[2]
    assert median_run(runs[:2]) is runs[1]  # of two, the faster
    assert median_run([]) is None


def test_the_sizes_summary_has_one_line_a_size(capsys: pytest.CaptureFixture[str]) -> None:
    def rows(job: float, fd: float, fc: float) -> list[dict[str, Any]]:
        return [
            {
                "method": "job",
                "wall_s": job,
                "peak_proc_mb": 38.5,
                "copy_path": "parallel",
                "cpu": {"total_s": 7.5, "floor_s": 3.75},
            },
            {"method": "fd_j2", "wall_s": fd, "cpu": {"total_s": 3.0, "floor_s": 1.5}},
            {"method": "fc_pipe", "wall_s": fc},  # CPU not measured: "-"
        ]

    info = SourceInfo(101 * MB, 7 * MB, 1, 1.0, {}, {})
    entries = [sizes_row(100, info, rows(2.0, 1.6, 1.8)), sizes_row(1000, info, rows(9.0, 10, 12))]
    assert [(e["best"], e["job_over_best"]) for e in entries] == [
        ("fd_j2", pytest.approx(1.25)),
        ("fd_j2", pytest.approx(0.9)),
    ]
    print_sizes_summary(entries, 3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].split() == [
        "100",
        "101.0",
        "parallel",
        "2.00",
        "1.60",
        "fd_j2",
        "1.25",
        "38.5",
        "7.50",
        "3.00",
        "3.75",
        "1.50",
    ]
    assert lines[-1].split()[0] == "1000"
    assert "job CPU s" in lines[-4]
    assert "best floor s" in lines[-4]


# --- CPU seconds and the floor ----------------------------------------------------

# /proc/PID/stat of a process whose name holds a space and a ')': utime 1500,
# stime 250, cutime 4000, cstime 600, starttime 777 (fields 14 to 17, and 22).
STAT = (
    "4242 (postgres: a) b) S 4200 4242 4242 0 -1 4194560 100 0 0 0 "
    "1500 250 4000 600 20 0 1 0 777 1000000 300 18446744073709551615"
)


def test_a_proc_stat_line_is_read_from_the_last_parenthesis() -> None:
    stat = parse_stat(STAT)
    assert (stat.pid, stat.ppid, stat.own, stat.reaped, stat.starttime) == (
        4242,
        4200,
        1750,
        4600,
        777,
    )


@pytest.mark.parametrize(
    ("cmdline", "kind"),
    [
        ("postgres: checkpointer ", "checkpointer"),
        ("postgres: background writer ", "background writer"),
        ("postgres: walwriter ", "walwriter"),
        ("postgres: autovacuum launcher ", "autovacuum launcher"),
        ("postgres: autovacuum worker destination_db", "autovacuum worker"),
        ("postgres: parallel worker for PID 77 ", "parallel worker"),
        ("postgres: postgres source_db 127.0.0.1(5000) COPY", "backend"),
        # a user or database named like an auxiliary process is still a backend
        ("postgres: walwriter source_db 127.0.0.1(5000) idle", "walwriter"),
        ("postgres: checkpointers source_db 127.0.0.1(5000) idle", "backend"),
        ("/usr/lib/postgresql/17/bin/postgres\0-D\0/data", "backend"),  # before its title
    ],
)
def test_a_server_process_kind_comes_from_its_title(cmdline: str, kind: str) -> None:
    assert process_kind(cmdline.replace("\\0", "\0")) == kind


def test_cpu_between_two_readings_counts_each_process_once() -> None:
    before = Reading(
        postmaster=10,
        reaped=1000,
        children={
            (1, 5): ("checkpointer", 50),  # runs on: its delta
            (2, 5): ("backend", 300),  # reaped during the run: the rest of it
            (3, 5): ("walwriter", 40),  # its pid reused by (3, 9) below
        },
    )
    after = Reading(
        postmaster=12,
        # (2, 5) ended at 420 ticks, (3, 5) at 45, and a backend that started and
        # ended within the run used 500
        reaped=1000 + 420 + 45 + 500,
        children={
            (1, 5): ("checkpointer", 80),
            (3, 9): ("autovacuum worker", 25),  # started during the run
        },
    )
    delta = cpu_delta(before, after, ticks=100)
    assert delta == pytest.approx(
        {
            POSTMASTER: 0.02,
            "checkpointer": 0.30,
            "autovacuum worker": 0.25,
            EXITED: (420 - 300 + 45 - 40 + 500) / 100,
            "total": 0.02 + 0.30 + 0.25 + 6.25,
        }
    )
    assert cpu_delta(after, after, ticks=100)["total"] == 0


def test_the_floor_is_the_cpu_over_the_cores() -> None:
    assert floor_seconds(7.4, 2) == pytest.approx(3.7)
    assert floor_seconds(3.0, None) == 3.0  # os.cpu_count() may not know


def cpu_of(source: float, destination: float, method: float, after: float) -> dict[str, Any]:
    return {
        "source": {"total": source, EXITED: source},
        "destination": {"total": destination, "checkpointer": 0.5, EXITED: destination - 0.5},
        "method": method,
        "total": source + destination + method,
        "cores": 2,
        "after": {"source": 0.0, "destination": after},
    }


def test_the_cpu_summary_takes_medians_and_sets_the_floor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = [result("job", n, wall) for n, wall in ((1, 4.0), (2, 3.0), (3, 5.0))]
    for run, figures in zip(
        runs, ((2.0, 3.0, 1.0, 0.2), (1.0, 2.0, 1.0, 0.4), (3.0, 4.0, 2.0, 0.3)), strict=True
    ):
        run.cpu = cpu_of(*figures)
    summary = cpu_summary([*runs, result("job", 4, 1.0)])  # a run without CPU: left out
    by_kind = {side: summary.pop(f"{side}_by_kind") for side in ("source", "destination")}
    assert summary == pytest.approx(
        {
            "source_s": 2.0,
            "destination_s": 3.0,
            "method_s": 1.0,
            "total_s": 6.0,
            "runs": 3,
            "cores": 2,
            "floor_s": 3.0,
            "wall_s": 4.0,
            "checkpoint_after_s": 0.3,
        }
    )
    assert by_kind == {
        "source": {EXITED: 2.0},
        "destination": {"checkpointer": 0.5, EXITED: 2.5},
    }
    summary.update({f"{side}_by_kind": kinds for side, kinds in by_kind.items()})
    assert cpu_summary([result("job", 1, 1.0)]) == {}
    print_cpu([{"method": "job", "cpu": summary}, {"method": "fc_pipe", "cpu": {}}])
    out = capsys.readouterr().out.splitlines()
    assert out[4].split() == ["job", "2.00", "3.00", "1.00", "6.00", "3.00", "4.00", "75%", "0.30"]
    assert "fc_pipe" not in "\n".join(out)


# A server log as PostgreSQL 17 writes it at log_autovacuum_min_duration = 0, in UTC.
SERVER_LOG = """\
2026-11-29 15:40:01.100 UTC [901] LOG:  checkpoint starting: immediate force wait
2026-11-29 15:40:02.500 UTC [950] LOG:  automatic vacuum of table "destination_db.shop.events": index scans: 0
\tpages: 0 removed, 9000 remain, 9000 scanned (100.00% of total)
\tavg read rate: 0.000 MB/s, avg write rate: 10.000 MB/s
\tsystem usage: CPU: user: 0.21 s, system: 0.04 s, elapsed: 0.40 s
2026-11-29 15:40:03.000 UTC [950] LOG:  automatic analyze of table "destination_db.shop.orders"
\tavg read rate: 0.000 MB/s, avg write rate: 0.000 MB/s
\tsystem usage: CPU: user: 0.10 s, system: 0.00 s, elapsed: 0.12 s
2026-11-29 15:40:04.000 UTC [951] LOG:  automatic analyze of table "destination_db.shop.x"
2026-11-29 15:40:05.000 UTC [952] LOG:  connection received: host=127.0.0.1 port=5000
\tsystem usage: CPU: user: 9.00 s, system: 0.00 s, elapsed: 9.00 s
"""


def test_the_automatic_vacuums_and_their_cpu_come_from_the_server_log() -> None:
    found = parse_autovacuum(SERVER_LOG)
    # the third entry has no CPU line of its own: the next entry's is not taken for it
    assert [a.what for a in found] == [
        "vacuum destination_db.shop.events",
        "analyze destination_db.shop.orders",
    ]
    assert [a.cpu_s for a in found] == pytest.approx([0.25, 0.10])
    at = found[0].at
    assert at == pytest.approx(1795966802.5)  # 2026-11-29 15:40:02.5 UTC
    assert autovacuum_between(found, at - 1, at + 0.5) == pytest.approx(0.35)
    assert autovacuum_between(found, at, at + 0.5) == pytest.approx(0.10)  # (start, end]


def test_the_log_reader_returns_each_complete_line_once(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("before the run\n")
    reader = LogReader(log)
    assert reader.new() == ""
    with log.open("a") as handle:
        handle.write("one\ntwo, half")
    assert reader.new() == "one\n"
    with log.open("a") as handle:
        handle.write(" written\n")
    assert reader.new() == "two, half written\n"
    assert LogReader(tmp_path / "none.log").new() == ""


@pytest.mark.parametrize(
    ("method", "critical", "validation", "log_level"),
    [
        ("job", False, "full", None),
        ("job_noval", False, "off", None),  # whatever --validation says
        ("job_noval", True, "off", "DEBUG"),
        ("job", True, "full", "DEBUG"),
        ("fc_pipe", True, "full", None),
    ],
)
def test_each_method_gets_its_validation_and_log_level(
    tmp_path: Path, method: str, critical: bool, validation: str, log_level: str | None
) -> None:
    args = argparse.Namespace(validation="full", critical_path=critical)
    # Servers never started: only their ports, users and passwords are read.
    servers = [PgServer(name, tmp_path, "pw", home=tmp_path / name) for name in ("s", "d")]
    info = SourceInfo(MB, MB, 1, 1.0, {}, {})
    env = Bench(args, servers[0], servers[1], info, tmp_path).worker_env(method)
    assert env["ELT_VALIDATION"] == validation
    assert env.get("ELT_LOG_LEVEL") == log_level


# --- the critical path --------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "name"),
    [
        ("215; 1259 16450 INDEX shop events_payload_gin postgres", "INDEX shop events_payload_gin"),
        (
            "230; 2606 16460 FK CONSTRAINT shop events events_customer_fk postgres",
            "FK CONSTRAINT shop events events_customer_fk",
        ),
        (
            'CREATE UNIQUE INDEX events_pkey ON "elt_staging_1"."events" USING btree (id)',
            'key events_pkey, step 1: its unique index on "elt_staging_1"."events"',
        ),
        (
            'ALTER TABLE ONLY "elt_staging_1"."events" ADD CONSTRAINT "events_pkey" '
            'PRIMARY KEY USING INDEX "events_pkey"',
            "key events_pkey, step 2: ADD CONSTRAINT PRIMARY KEY USING INDEX",
        ),
        ("CREATE STATISTICS " + "x" * 100, "CREATE STATISTICS " + "x" * 59 + "..."),
    ],
)
def test_a_built_task_is_named_by_what_it_built(entry: str, name: str) -> None:
    assert describe_build(entry) == name


# A parallel run's copy phase: two workers; events' rows, then its GIN index, then
# its foreign key set the length; the small tables and the figures fit beside.
TASK_LOG = [
    line(9.9, "Parallel copy workers sized", jobs=2, workers=2),
    line(10.0, "Parallel copy planned"),
    line(10.1, "Starting data extraction from source database"),
    line(10.5, "Table copied", table="shop.orders", duration_seconds=0.38),
    line(10.9, "Built", entry="301; 1259 1 INDEX shop orders_idx postgres", duration_seconds=0.39),
    line(12.1, "Table copied", table="shop.events", duration_seconds=1.99),
    line(11.4, "Measured", task="check_source:shop.orders", duration_seconds=0.45),
    line(15.2, "Built", entry="302; 1259 2 INDEX shop events_gin postgres", duration_seconds=3.09),
    line(12.6, "Measured", task="check_destination:shop.events", duration_seconds=0.48),
    line(
        15.5,
        "Built",
        entry="303; 2606 3 FK CONSTRAINT shop events events_fk postgres",
        duration_seconds=0.29,
    ),
    # the last to end, but on a chain lighter than events'
    line(15.55, "Measured", task="check_source:shop.products", duration_seconds=0.05),
    line(15.6, "Data extraction completed successfully"),
]
# The source's indexes and constraints: the tables each is on.
OBJECTS = {"orders_idx": {"orders"}, "events_gin": {"events"}, "events_fk": {"events", "customers"}}


def test_the_tasks_of_a_parallel_run_come_from_its_debug_lines() -> None:
    tasks = copy_tasks(TASK_LOG, OBJECTS)
    assert [t.task for t in tasks][:3] == [
        "rows of shop.orders",
        "INDEX shop orders_idx",
        "rows of shop.events",
    ]
    assert "validation figures of shop.events, destination" in [t.task for t in tasks]
    assert tasks[2].start == pytest.approx(when(TASK_LOG[5]) - 1.99)
    assert [sorted(t.tables) for t in tasks][-2:] == [["customers", "events"], ["products"]]
    # at INFO (no "Built" or "Measured" line) there is nothing to go by
    assert (
        copy_tasks([x for x in TASK_LOG if x["message"] != "Built" and x["message"] != "Measured"])
        == []
    )


def test_the_critical_path_steps_back_from_the_last_task() -> None:
    found = critical_path(copy_tasks(TASK_LOG, OBJECTS), TASK_LOG)
    assert [link["task"] for link in found["chain"]] == [
        "rows of shop.events",
        "INDEX shop events_gin",
        "FK CONSTRAINT shop events events_fk",
    ]
    assert [round(link["start_s"], 3) for link in found["chain"]] == [0.01, 2.01, 5.11]
    assert [round(link["wait_s"], 3) for link in found["chain"]] == [0.01, 0.01, 0.01]
    assert found["copy_s"] == pytest.approx(5.5)
    assert found["tail_s"] == pytest.approx(0.1)
    assert found["chain_s"] == pytest.approx(1.99 + 3.09 + 0.29)
    # the last task, on no chain as heavy, ended after the chain
    assert [(a["task"], round(a["end_s"], 3)) for a in found["after"]] == [
        ("validation figures of shop.products, source", 5.45)
    ]
    assert (found["work_s"], found["workers"]) == (pytest.approx(7.12), 2)


def test_a_built_task_is_on_the_tables_of_its_index_or_key() -> None:
    objects = {"events_gin": {"events"}, "events_pkey": {"events"}}
    assert build_tables("302; 1259 2 INDEX shop events_gin postgres", objects) == {"events"}
    assert build_tables(
        "303; 2606 3 FK CONSTRAINT shop events events_fk postgres", {"events_fk": {"orders"}}
    ) == {"events", "orders"}
    key = 'CREATE UNIQUE INDEX events_pkey ON "elt_staging_1"."events" USING btree (id)'
    assert build_tables(key, {}) == {"events"}
    attach = 'ALTER TABLE ONLY x ADD CONSTRAINT "events_pkey" PRIMARY KEY USING INDEX "events_pkey"'
    assert build_tables(attach, objects) == {"events"}
    assert build_tables("CREATE STATISTICS s ON a, b FROM t", objects) == frozenset()


def test_a_task_is_never_its_own_predecessor() -> None:
    # Two tasks that end within the tolerance of each other's start: no loop.
    t = frozenset({"t"})
    spans = [Span("a", 1.0, 1.005, t), Span("b", 1.0, 1.01, t), Span("c", 1.01, 2.0, t)]
    found = critical_path(spans, [])
    assert [link["task"] for link in found["chain"]] == ["b", "c"]


# --- the sources -----------------------------------------------------------------


def test_the_row_plan_scales_with_the_size_and_stays_linear_up_to_5_gb() -> None:
    empty = 7 * MB
    units_100, rows_100 = row_plan(100, empty)
    units_5000, rows_5000 = row_plan(5000, empty)
    assert units_5000 / units_100 == pytest.approx((5000 * MB - empty) / (100 * MB - empty), 1e-4)
    assert rows_5000["events"] / rows_100["events"] == pytest.approx(units_5000 / units_100, 1e-4)
    assert row_plan(0.001, empty) == (100, row_plan(0.002, empty)[1])  # the smallest scale


def test_the_disk_check_refuses_a_size_the_disk_cannot_hold(tmp_path: Path) -> None:
    check_disk(1, tmp_path)  # 2 GiB and a few MB: there is that much here
    with pytest.raises(SystemExit, match=r"needs about .* GiB of disk under"):
        check_disk(10**9, tmp_path)  # a petabyte
    assert disk_needed_bytes(5000) > 3 * 5000 * MB


def test_the_lock_table_grows_with_the_tables() -> None:
    assert lock_setting(7, 3) == 64  # PostgreSQL's default is enough
    assert lock_setting(3000, 300) == 256


def test_the_shop_at_a_small_size(source_server: PgServer) -> None:
    info = build_source(source_server, 12)
    units, planned = row_plan(12, info.empty_bytes)
    assert info.units == units
    for table, rows in planned.items():
        assert info.rows[table] == rows, table
    assert planned["orders"] <= info.rows["order_items"] <= 4 * planned["orders"]
    assert list(info.rows) == ["customers", "products", "orders", "order_items", "events"]
    assert info.size_bytes > info.empty_bytes


def test_the_seed_source(source_server: PgServer) -> None:
    info = build_seed(source_server)
    assert info.rows == SEED_COUNTS
    assert (info.kind, info.schema) == ("seed", "public")


def test_the_many_tables_source(source_server: PgServer) -> None:
    info = build_many_tables(source_server, 7, 3)
    assert (info.kind, info.schema, info.units) == ("many-tables", MANY_SCHEMA, 7)
    partitions = [f"{PARTITIONED}_p{i:04d}" for i in (1, 2, 3)]
    assert info.rows == {
        **{f"t{i:05d}": 20 for i in range(1, 8)},
        **dict.fromkeys(partitions, 140),
    }
    catalog = source_server.query(
        SOURCE_DB,
        f"""SELECT (SELECT count(*) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
                    WHERE c.relnamespace = '{MANY_SCHEMA}'::regnamespace AND i.indisprimary),
                   (SELECT count(*) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
                    WHERE c.relnamespace = '{MANY_SCHEMA}'::regnamespace),
                   (SELECT count(*) FROM pg_inherits
                    WHERE inhparent = '{MANY_SCHEMA}.{PARTITIONED}'::regclass)""",
    )
    # A primary key and an index on each of 7 tables, 3 partitions and their parent.
    assert catalog == [(11, 22, 3)]


def test_a_run_of_each_kind_on_the_many_tables_source(
    source_server: PgServer,
    destination_server: PgServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The job on both copy paths and a client tool, through the benchmark's own
    runner and report: rows checked, and the phases of a real run."""
    info = build_many_tables(source_server, 5, 2)
    # A copy path of its own for this test: the parallel one, on a tiny source.
    monkeypatch.setitem(
        JOB_METHODS,
        "job_stream",
        {
            "ELT_PARALLEL_MIN_MB": "0",
            "ELT_PARALLEL_MIN_TABLE_MB": "0",
            "ELT_JOBS": "2",
            "ELT_LOG_LEVEL": "DEBUG",  # what --critical-path sets
        },
    )
    args = argparse.Namespace(
        size_mb=None, many_tables=5, runs=1, warmup=0, validation="full", methods=[]
    )
    bench = Bench(args, source_server, destination_server, info, tmp_path)
    for method in ("job", "job_stream", "fc_pipe"):
        run = bench.run_once(method, 1)
        assert run.ok, run.error
        assert run.rows_match, run.row_diffs
    job, parallel = bench.results[0], bench.results[1]
    assert (job.details["copy_path"], parallel.details["copy_path"]) == ("streamed", "parallel")
    for run in (job, parallel):
        phases = run.details["phases"]
        assert phases[0][0].startswith("start-up")
        assert phases[-1][0].startswith("exit")
        total = run.details["ended_at"] - run.details["started_at"]
        assert sum(s for _, s in phases) == pytest.approx(total)
        assert all(s >= 0 for _, s in phases)
    assert any(what.startswith("planning") for what, _ in parallel.details["phases"])
    # CPU: every part read, each server's by kind of process, the floor from the total.
    for run in bench.results:
        cpu = run.cpu
        assert cpu["method"] > 0  # the job's Python alone takes tenths of a second
        assert cpu["destination"]["total"] > 0  # it loaded rows
        parts = cpu["source"]["total"] + cpu["destination"]["total"] + cpu["method"]
        assert cpu["total"] == pytest.approx(parts)
        assert cpu["floor_s"] == pytest.approx(cpu["total"] / cpu["cores"])
        assert set(cpu["after"]) == {"source", "destination"}
    # The critical path of the parallel run, from its DEBUG lines; none at INFO.
    assert "critical_path" not in job.details
    chain = parallel.details["critical_path"]["chain"]
    assert chain[0]["task"].startswith("rows of many.")
    ends = [link["end_s"] for link in chain]
    assert ends == sorted(ends)
    assert json.dumps(bench.results[0].details)  # --json can write it
    rows = summarize(bench.results, ["job", "job_stream", "fc_pipe"], info.size_bytes)
    print_report(
        header=machine_header(source_server),
        settings="",
        args=args,
        source=info,
        results=bench.results,
        ratios=headline_ratios(rows),
        rows=rows,
    )
    out = capsys.readouterr().out
    assert "5 small tables" in out
    assert "7 tables in schema many: 380 rows" in out
    assert out.count("where the wall time went, run 1 (the median run)") == 2


# --- waiting for a method's processes (benchmark/methods.py) ---


def test_wait_exactly_returns_the_exit_code() -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    assert wait_exactly(proc, 60.0) == 3
    assert proc.returncode == 3


def test_wait_exactly_kills_a_process_past_its_safety_net() -> None:
    proc = subprocess.Popen(["sleep", "600"])
    with pytest.raises(subprocess.TimeoutExpired):
        wait_exactly(proc, 0.1)
    assert proc.returncode == -9  # killed, and reaped
