"""The compared methods, each run once inside a fresh measuring worker process.

The orchestrator (benchmark/runner.py) starts `python -m benchmark.methods`,
writes one run's spec (JSON) to its stdin and reads one JSON line back: whether
the method succeeded, its seconds and the peak memory of its processes.
This module imports nothing but the standard library, so that the worker's own
memory, part of the `documented` figures, is not inflated by psycopg.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

METHODS = ("job", "job_stream", "documented", "fd_j2", "fc_pipe", "pgcopydb", "job_noval")
# What runs when --methods does not say: all but job_noval, which only serves to
# measure what validation costs beside the job.
DEFAULT_METHODS = METHODS[:-1]
# The methods that run elt/elt_script.py, and the settings each adds to the
# job's environment (on top of the tests' job environment, see Bench.worker_env).
JOB_METHODS: dict[str, dict[str, str]] = {
    "job": {},  # the job's defaults: it picks the copy path itself
    "job_stream": {"ELT_JOBS": "1"},  # always the streamed path
    # the job without validation, whatever --validation says: its cost, by difference
    "job_noval": {"ELT_VALIDATION": "off"},
}

# Each run of each method happens inside a fresh worker process: this module,
# run with `python -m benchmark.methods`. Peak memory of the largest single process comes from the
# worker's resource.getrusage(RUSAGE_CHILDREN).ru_maxrss. Why that and not
# wait4()'s rusage of each child:
#   * RUSAGE_CHILDREN covers the whole tree: when a process is reaped, the
#     kernel folds the largest maxrss of its own reaped descendants into what
#     its parent sees, so the job's pg_dump/pg_restore/psql and pgcopydb's
#     helpers count, not only the processes started here;
#   * it is a high-water mark per process that only ever grows for the lifetime
#     of the asking process, so one long-lived process timing every method would
#     report the maximum over all earlier methods; a fresh worker per run keeps
#     the methods (and the runs) apart;
#   * the `documented` method's memory hog would be the Python parent itself,
#     which holds psql's captured output: the worker is that parent, so its own
#     peak (VmHWM, see _own_peak_kb) is counted for that method, and only there.
# One caveat of ru_maxrss: a child's figure is at least what its parent had
# when it forked it (exec folds the pre-exec memory in), so a small tool started
# by a Python process reads as at least that process's size (~13 MB for the
# worker, ~40 MB for the job's own Python). It only matters where every
# process of a method is that small.


def _tool_env(password_var: str) -> dict[str, str]:
    """The worker's environment for one client tool: that side's password in PGPASSWORD."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_POSTGRES_PASSWORD")}
    env["PGPASSWORD"] = os.environ[password_var]
    return env


def _conn_args(side: dict[str, Any]) -> list[str]:
    return ["-h", side["host"], "-p", str(side["port"]), "-U", side["user"], "-d", side["db"]]


def tail(data: bytes | str, lines: int = 8) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return "\n".join(text.strip().splitlines()[-lines:])


def _failed(step: str, returncode: int, stderr: bytes | str) -> dict[str, Any]:
    return {"ok": False, "error": f"{step} exited {returncode}: {tail(stderr)}"}


def _run(
    spec: dict[str, Any], argv: list[str], password_var: str, *, keep_stdout: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run one client tool with one side's password; stderr (and stdout if asked) kept."""
    return subprocess.run(
        argv,
        env=_tool_env(password_var),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
        timeout=spec["timeout"],  # a safety net against a hung run, not a measurement
    )


def wait_exactly(proc: subprocess.Popen[Any], timeout: float) -> int:
    """proc.wait() that returns when the process exits (Popen.wait(timeout) polls,
    its sleeps growing to 50 ms). After `timeout`, a safety net, the process is
    killed and TimeoutExpired raised."""
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        returncode = proc.wait()  # no timeout: waitpid() itself, not a poll
    finally:
        timer.cancel()
    # The timer may fire as the process ends by itself: only a kill is a timeout.
    if expired.is_set() and returncode == -signal.SIGKILL:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return returncode


def _method_job(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    # The worker's environment is the job's (Databases.env()); stdout is the JSON
    # log, kept in a file and parsed by the orchestrator.
    out_path, err_path = work / "job.stdout", work / "job.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        # Wall-clock times, to set against the log lines' timestamps (benchmark/phases.py).
        started_at = time.time()
        proc = subprocess.Popen(
            [spec["python"], spec["script"]], cwd=spec["repo"], stdout=out, stderr=err
        )
        try:
            wait_exactly(proc, spec["timeout"])  # a safety net, not a measurement
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        ended_at = time.time()
    logs = []
    for line in out_path.read_text().splitlines():
        try:
            logs.append(json.loads(line))
        except ValueError:  # every line should be JSON; report one that is not, do not die
            logs.append({"level": "NOT-JSON", "message": line})
    result: dict[str, Any] = {
        "ok": proc.returncode == 0,
        "logs": logs,
        "started_at": started_at,
        "ended_at": ended_at,
    }
    if proc.returncode != 0:
        errors = [f"{x.get('message')}: {x.get('error')}" for x in logs if x["level"] == "ERROR"]
        detail = errors[-1] if errors else tail(err_path.read_text())
        result["error"] = f"elt_script.py exited {proc.returncode}: {detail}"
    return result


def _method_documented(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    # As originally documented: dump to a plain SQL file, then psql -a (echo every
    # input line) with the output captured by this Python process. Measured, not
    # assumed: psql does not echo the rows of COPY ... FROM stdin (they bypass its
    # line reader), so with pg_dump's default COPY output the capture holds the
    # DDL only; it grows with the data only for INSERT-style dumps (--inserts).
    dump_file = work / "data_dump.sql"
    dump = _run(
        spec,
        ["pg_dump", *_conn_args(spec["source"]), "-f", str(dump_file), "-w"],
        "SOURCE_POSTGRES_PASSWORD",
    )
    if dump.returncode != 0:
        return _failed("pg_dump", dump.returncode, dump.stderr)
    load = _run(
        spec,
        ["psql", *_conn_args(spec["destination"]), "-a", "-f", str(dump_file)],
        "DESTINATION_POSTGRES_PASSWORD",
        keep_stdout=True,  # the documented capture_output=True is what is measured
    )
    result: dict[str, Any] = {
        "ok": load.returncode == 0,
        "captured_bytes": len(load.stdout) + len(load.stderr),
        "dump_file_bytes": dump_file.stat().st_size,
        # Without ON_ERROR_STOP psql carries on after an error and exits 0.
        "sql_errors": load.stderr.count(b"ERROR:"),
    }
    if load.returncode != 0:
        result.update(_failed("psql", load.returncode, load.stderr))
    return result


def _method_fd_j2(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    dump_dir = work / "dump.dir"  # pg_dump -Fd creates it and refuses an existing one
    jobs = ["-j", str(spec["jobs"])]
    dump = _run(
        spec,
        ["pg_dump", *_conn_args(spec["source"]), "-w", "-Fd", "-Z0", *jobs, "-f", str(dump_dir)],
        "SOURCE_POSTGRES_PASSWORD",
    )
    if dump.returncode != 0:
        return _failed("pg_dump", dump.returncode, dump.stderr)
    restore = _run(
        spec,
        ["pg_restore", *_conn_args(spec["destination"]), "-w", *jobs, str(dump_dir)],
        "DESTINATION_POSTGRES_PASSWORD",
    )
    if restore.returncode != 0:
        return _failed("pg_restore", restore.returncode, restore.stderr)
    return {"ok": True}


def _method_fc_pipe(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    # No shell: two processes joined by a pipe. stderr goes to files, so neither
    # tool can block on a full stderr pipe that nobody reads.
    with (
        (work / "dump.err").open("w+b") as dump_err,
        (work / "restore.err").open("w+b") as rest_err,
    ):
        dump = subprocess.Popen(
            ["pg_dump", *_conn_args(spec["source"]), "-w", "-Fc", "-Z0"],
            env=_tool_env("SOURCE_POSTGRES_PASSWORD"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=dump_err,
        )
        restore = subprocess.Popen(
            ["pg_restore", *_conn_args(spec["destination"]), "-w"],
            env=_tool_env("DESTINATION_POSTGRES_PASSWORD"),
            stdin=dump.stdout,
            stdout=subprocess.DEVNULL,
            stderr=rest_err,
        )
        # The parent must not keep its copy of the pipe: otherwise, if pg_restore
        # dies, pg_dump never gets EPIPE and blocks forever on a full pipe.
        assert dump.stdout is not None
        dump.stdout.close()
        try:
            wait_exactly(restore, spec["timeout"])  # safety nets, not measurements
            wait_exactly(dump, spec["timeout"])
        finally:
            for proc in (dump, restore):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for name, proc, err in (("pg_dump", dump, dump_err), ("pg_restore", restore, rest_err)):
            if proc.returncode != 0:
                err.seek(0)
                return _failed(name, proc.returncode, err.read())
    return {"ok": True}


def _pg_uri(side: dict[str, Any]) -> str:
    # No password in the URI (it would be in argv): pgcopydb's libpq reads PGPASSWORD.
    return f"postgres://{side['user']}@{side['host']}:{side['port']}/{side['db']}"


def _method_pgcopydb(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    if os.environ["SOURCE_POSTGRES_PASSWORD"] != os.environ["DESTINATION_POSTGRES_PASSWORD"]:
        # One PGPASSWORD serves both sides only when they share the password.
        return {"ok": False, "error": "source and destination passwords differ"}
    argv = ["pgcopydb", "clone", "--source", _pg_uri(spec["source"])]
    argv += ["--target", _pg_uri(spec["destination"]), "--dir", str(work / "pgcopydb")]
    # pgcopydb logs to stderr, which _run keeps for the error report.
    proc = _run(spec, argv, "SOURCE_POSTGRES_PASSWORD")
    if proc.returncode != 0:
        return _failed("pgcopydb", proc.returncode, proc.stderr)
    return {"ok": True}


WORKER_METHODS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "job": _method_job,
    "job_stream": _method_job,  # the same, in an environment with ELT_JOBS=1
    "job_noval": _method_job,  # the same, with ELT_VALIDATION=off
    "documented": _method_documented,
    "fd_j2": _method_fd_j2,
    "fc_pipe": _method_fc_pipe,
    "pgcopydb": _method_pgcopydb,
}


def _own_peak_kb() -> int:
    """This process's peak RSS since it was exec'd: VmHWM, in kB.

    Not RUSAGE_SELF: at exec, Linux folds the peak of the memory the process had
    before it (a copy of, or with vfork shared with, its parent's) into
    ru_maxrss, so the worker would report the orchestrator's ~50 MB.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_worker() -> int:
    """The worker: run one method once, print one JSON line with time and peak memory."""
    spec = json.loads(sys.stdin.read())
    work = Path(spec["work_dir"])
    started = time.monotonic()
    try:
        result = WORKER_METHODS[spec["method"]](spec, work)
    except subprocess.TimeoutExpired as exc:
        result = {"ok": False, "error": f"timed out after {exc.timeout:.0f} s: {exc.cmd}"}
    result["seconds"] = time.monotonic() - started
    result["self_maxrss_kb"] = _own_peak_kb()
    children, own = (
        resource.getrusage(who) for who in (resource.RUSAGE_CHILDREN, resource.RUSAGE_SELF)
    )
    # ru_maxrss is in kilobytes on Linux.
    result["children_maxrss_kb"] = children.ru_maxrss
    # CPU of every process the method started and waited for (their own reaped
    # children included), and of this worker itself.
    result["children_cpu_s"] = children.ru_utime + children.ru_stime
    result["self_cpu_s"] = own.ru_utime + own.ru_stime
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_worker())
