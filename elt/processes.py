"""Running the PostgreSQL client tools: environment, pipelines, stderr, cancellation.

Every child process of the job starts here, but for elt/startup.py's probes
(pg_isready, pg_dump --version): `Pipeline` for streams that must never be
held whole, `start_tool` for a process the caller wires up itself, and
elt/parallel/in_memory.py's `run_in_memory` for tools whose input and output
are small (schema archives, TOC lists). A tool missing from PATH is `tool_not_found` on
each, and a tool's failure `ToolFailed` (elt/failures.py names the culprit).

Three rules learned the hard way:

* Passwords travel in the child's environment (PGPASSWORD), never in argv,
  where any local user can read them from /proc/<pid>/cmdline.
* Nothing a tool prints is kept whole. stdout of the last stage goes to
  /dev/null (`psql -a` + `capture_output=True` would hold every echoed line,
  as much memory as the dump); stderr is read by a
  thread that keeps only the last lines for the error report.
* The parent closes its copy of every pipe it hands on. Otherwise, when a
  downstream stage exits, the upstream one never sees EPIPE and blocks forever
  on a full pipe.
"""

from __future__ import annotations

import collections
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from elt.config import DatabaseSettings
from elt.errors import SettingsError

STDERR_TAIL_LINES = 20
# libpq variables the job sets itself for each side; inherited values would
# silently redirect a tool to another server, user or password.
_LIBPQ_OVERRIDES = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGOPTIONS",
)
APPLICATION_NAME = "elt_pipeline"
_SECRET_SETTING = re.compile(r"[A-Z_]*_PASSWORD(_FILE)?")


def child_env(
    db: DatabaseSettings | None, connect_timeout: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a tool that connects to `db` (None: connects nowhere).

    It carries that side's password and nothing of the other side's.
    """
    env = {
        name: value
        for name, value in (os.environ if base is None else base).items()
        # The job's own settings hold both sides' passwords: no tool needs them.
        if name not in _LIBPQ_OVERRIDES and not _SECRET_SETTING.fullmatch(name)
    }
    # Never fall back to ~/.pgpass of whoever runs the job: the settings are the truth.
    env["PGPASSFILE"] = os.devnull
    if db is not None and db.password is not None:
        env["PGPASSWORD"] = db.password
    env["PGCONNECT_TIMEOUT"] = str(connect_timeout)
    env["PGAPPNAME"] = APPLICATION_NAME
    # Tools' messages in English, so that the hints we attach stay meaningful.
    env["LC_MESSAGES"] = "C"
    return env


def tool_not_found(tool: str) -> SettingsError:
    """The one error for a client tool missing from PATH, whichever path started it."""
    return SettingsError(
        f"{tool} was not found on PATH",
        hint="Install the PostgreSQL client tools (Debian: postgresql-client-17), "
        "of the destination's major version, or put them on PATH.",
        tool=tool,
    )


class ToolFailed(Exception):
    """A client tool exited non-zero. `side` ("source" or "destination"), when the
    one who raises it knows which server the tool was talking to."""

    def __init__(
        self, tool: str, returncode: int, stderr_tail: list[str], *, side: str | None = None
    ) -> None:
        super().__init__(f"{tool} exited with {returncode}")
        self.tool = tool
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.side = side


def connection_args(db: DatabaseSettings) -> list[str]:
    """-h -p -U -d for any libpq tool (never the password)."""
    return ["-h", db.host, "-p", str(db.port), "-U", db.user, "-d", db.dbname]


class OutputTail(threading.Thread):
    """Drains a child's stderr so it never blocks, keeping the first error and the last lines.

    The first error line is kept apart because it is the cause; what follows it
    (psql echoes a long failing statement, say) can push it out of the tail.
    """

    _ERROR_MARKERS = ("ERROR:", "FATAL:", "error:", "PANIC:")

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._first_error: str | None = None
        self._last: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def run(self) -> None:
        with self._stream:
            for raw in self._stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                if self._first_error is None and any(m in line for m in self._ERROR_MARKERS):
                    self._first_error = line
                self._last.append(line)

    @property
    def lines(self) -> list[str]:
        if self._first_error is None or self._first_error in self._last:
            return list(self._last)
        return [self._first_error, "...", *self._last]


@dataclass(frozen=True)
class Stage:
    """One process of a pipeline: `name` is how logs and errors refer to it.

    `observe`, if set, sees every chunk on its way into this stage's stdin
    (the previous stage's output is then relayed by a thread of the job
    instead of a direct pipe). It is for progress only: if it raises, it is
    dropped and the bytes keep flowing.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    observe: Callable[[bytes], None] | None = None


RELAY_CHUNK = 1 << 20


def _relay(source: IO[bytes], sink_fd: int, observe: Callable[[bytes], None] | None) -> None:
    """Copy source to sink_fd until EOF, or until the reader is gone (EPIPE)."""
    try:
        while chunk := os.read(source.fileno(), RELAY_CHUNK):
            if observe is not None:
                try:
                    observe(chunk)
                except Exception:
                    observe = None
            view = memoryview(chunk)
            while view:
                view = view[os.write(sink_fd, view) :]
    except BrokenPipeError:
        pass  # the next stage exited: its exit code says why
    finally:
        source.close()
        os.close(sink_fd)


@dataclass
class StageResult:
    name: str
    returncode: int
    stderr_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Pipeline:
    """Runs stages connected stdout -> stdin; stops them all if any fails (or on terminate()).

    Use as a context manager: leaving the block (normally, by exception or by a
    signal) terminates whatever is still running, so no child outlives the job.
    """

    TERMINATE_GRACE_SECONDS = 5.0
    POLL_SECONDS = 0.05

    def __init__(self, stages: Sequence[Stage], *, held: int = 0) -> None:
        """`held`: the last stages that wait for start_rest(), their input in a pipe."""
        self.stages = list(stages)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._tails: list[OutputTail] = []
        self._relays: list[threading.Thread] = []
        self._started = 0.0
        self._held = held
        self._upstream: IO[bytes] | None = None  # the output of the last stage started

    def __enter__(self) -> Pipeline:
        # __exit__ does not run when __enter__ raises: stop what did start here,
        # or a half-started pipeline could go on (and even commit) on its own.
        self._started = time.monotonic()
        self._start_until(len(self.stages) - self._held)
        return self

    def start_rest(self) -> None:
        """Start the stages held back (see __init__)."""
        self._start_until(len(self.stages))

    def _start_until(self, end: int) -> None:
        try:
            self._start_stages(end)
        except BaseException:
            self.terminate()
            raise

    def _start_stages(self, end: int) -> None:
        upstream, self._upstream = self._upstream, None
        for index in range(len(self._procs), end):
            stage = self.stages[index]
            last = index == len(self.stages) - 1
            relay_from, stdin = None, upstream
            if stage.observe is not None and upstream is not None:
                relay_from = upstream
                read_fd, write_fd = os.pipe()
                stdin = os.fdopen(read_fd, "rb")
            try:
                proc = subprocess.Popen(
                    list(stage.argv),
                    stdin=stdin if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(stage.env),
                )
            except FileNotFoundError:
                if relay_from is not None:
                    assert stdin is not None
                    stdin.close()
                    os.close(write_fd)
                raise tool_not_found(stage.argv[0]) from None
            if relay_from is not None:
                assert stdin is not None
                stdin.close()  # the child has its own copy of the read end
                relay = threading.Thread(
                    target=_relay, args=(relay_from, write_fd, stage.observe), daemon=True
                )
                relay.start()
                self._relays.append(relay)
            elif upstream is not None:
                upstream.close()  # see the module docstring: the parent must not hold it
            upstream = proc.stdout
            assert proc.stderr is not None
            tail = OutputTail(proc.stderr)
            tail.start()
            self._procs.append(proc)
            self._tails.append(tail)
        self._upstream = upstream

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def wait(self, on_exit: Callable[[StageResult], None] | None = None) -> list[StageResult]:
        """Wait for every stage; on the first failure, stop the rest. Returns results in order."""
        assert len(self._procs) == len(self.stages), "start_rest() first"
        results: dict[int, StageResult] = {}
        while len(results) < len(self._procs):
            for index, proc in enumerate(self._procs):
                if index in results or proc.poll() is None:
                    continue
                self._tails[index].join()
                result = StageResult(
                    name=self.stages[index].name,
                    returncode=proc.returncode,
                    stderr_tail=self._tails[index].lines,
                    seconds=time.monotonic() - self._started,
                )
                results[index] = result
                if on_exit is not None:
                    on_exit(result)
                if not result.ok:
                    self.terminate()
            if len(results) < len(self._procs):
                _sleep_until_exit(
                    [p for i, p in enumerate(self._procs) if i not in results], self.POLL_SECONDS
                )
        for relay in self._relays:
            relay.join()
        return [results[i] for i in range(len(self._procs))]

    def terminate(self) -> None:
        """SIGTERM every live stage, then SIGKILL whatever outlives the grace period."""
        live = [p for p in self._procs if p.poll() is None]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + self.TERMINATE_GRACE_SECONDS
        for proc in live:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for relay in self._relays:  # both its ends are gone now: it ends at once
            relay.join()
        if self._upstream is not None:  # the output of stages whose reader never started
            self._upstream.close()
            self._upstream = None


def _sleep_until_exit(procs: list[subprocess.Popen[bytes]], seconds: float) -> None:
    """Sleep `seconds`, or less: until one of `procs` exits (Linux pidfds), so that
    the next stage's exit is seen when it happens, not at the next poll."""
    fds: list[int] = []
    try:
        poller = select.poll()
        for proc in procs:
            fds.append(os.pidfd_open(proc.pid))
            poller.register(fds[-1], select.POLLIN)
        poller.poll(seconds * 1000)
    except OSError:  # no pidfds here (or the process is gone already): poll
        time.sleep(seconds if not fds else 0)
    finally:
        for fd in fds:
            os.close(fd)


def start_tool(
    argv: list[str], env: Mapping[str, str], *, stdin: int | None, stdout: int, stderr: int
) -> subprocess.Popen[bytes]:
    """Popen for a caller that wires the process up itself (the parallel copy's
    COPY pairs); a tool missing from PATH raises tool_not_found."""
    try:
        return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=dict(env))
    except FileNotFoundError:
        raise tool_not_found(argv[0]) from None
