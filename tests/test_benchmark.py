"""The benchmark's pure parts (benchmark/): its command line, the ratios it reports,
and what it reads from the job's log. No database: the benchmark itself is run by
hand (README, Performance), never timed by the suite."""

from __future__ import annotations

from typing import Any

import pytest

from benchmark.cli import parse_args
from benchmark.report import headline_ratios, summarize
from benchmark.runner import RunResult
from benchmark.sampling import job_breakdown
from benchmark.source import MB


@pytest.mark.parametrize(
    ("argv", "methods"),
    [
        ([], ["job", "job_stream", "documented", "fd_j2", "fc_pipe", "pgcopydb"]),
        (["--methods", "fc_pipe, job,fc_pipe"], ["fc_pipe", "job"]),
        (["--methods", "job", "--runs", "1", "--size-mb", "0.5", "--warmup", "0"], ["job"]),
    ],
)
def test_the_command_line_accepts(argv: list[str], methods: list[str]) -> None:
    assert parse_args(argv).methods == methods


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
