"""Waiting for the servers (pg_isready), and the run's first processes at once.

HeadStart starts both sides' first pg_isready and `pg_dump --version`
together, as the run begins: they run while the job waits for one of them
and logs in (connect.wait_and_login), instead of one after the other.
`pg_isready` only asks whether the server accepts connections; the real
login is connect.py's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from elt.config import DatabaseSettings, Settings
from elt.errors import ConnectionFailed
from elt.processes import OutputTail, StageResult, child_env, connection_args, tool_not_found

# pg_isready exit codes (see its man page).
_PG_ISREADY_STATUS = {
    0: "accepting connections",
    1: "rejecting connections (starting up or shutting down)",
    2: "no response",
    3: "no attempt made (invalid parameters)",
}


def pg_isready_argv(db: DatabaseSettings, timeout_seconds: int) -> list[str]:
    return ["pg_isready", *connection_args(db), "-t", str(timeout_seconds)]


def pg_isready_env(timeout_seconds: int) -> dict[str, str]:
    """pg_isready's environment: without the password. A server that asks for
    one has answered; given one, pg_isready logs in for nothing (a SCRAM
    exchange and a backend's start, on the run's critical path)."""
    return child_env(None, timeout_seconds)


def pg_dump_version_argv() -> list[str]:
    return ["pg_dump", "--version"]


class StartedTool:
    """A client tool started now, waited for later (`finish`); `close` stops it if
    it never was. A tool missing from PATH is reported by `finish`, where the run
    would otherwise have started it."""

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = argv[0]
        self._started = time.monotonic()
        self._proc: subprocess.Popen[bytes] | None = None
        self._result: tuple[StageResult, str] | None = None
        with contextlib.suppress(FileNotFoundError):  # see finish()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
            )

    def finish(self) -> tuple[StageResult, str]:
        """Wait for the tool: its result (exit code, stderr tail) and its stdout."""
        if self._result is None:
            if self._proc is None:
                raise tool_not_found(self.name)
            # Both outputs are a line or two (pg_isready, pg_dump --version): read whole.
            out, err = self._proc.communicate()
            tail = OutputTail(io.BytesIO(err))
            tail.run()  # the same first-error-and-last-lines tail as every other tool's
            result = StageResult(
                self.name, self._proc.returncode, tail.lines, time.monotonic() - self._started
            )
            self._result = result, out.decode("utf-8", "replace")
        return self._result

    def close(self) -> None:
        if self._proc is not None and self._result is None:
            self._proc.kill()  # a probe or a version query: nothing to shut down cleanly
            self.finish()


def wait_for_postgres(
    db: DatabaseSettings,
    settings: Settings,
    logger: logging.Logger,
    *,
    first: StartedTool | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll with pg_isready until the server accepts connections; return the attempt count.

    `first`: the first attempt, already started (HeadStart). The budget is
    bounded: ELT_WAIT_RETRIES attempts of at most ELT_CONNECT_TIMEOUT_SECONDS
    each, ELT_WAIT_DELAY_SECONDS apart; `sleep` waits between two of them.
    """
    max_retries = settings.wait_retries
    timeout = settings.connect_timeout_seconds
    result = None
    for attempt in range(1, max_retries + 1):
        if attempt > 1 or first is None:
            first = StartedTool(pg_isready_argv(db, timeout), pg_isready_env(timeout))
        try:
            result, _ = first.finish()
        finally:
            first.close()
        if result.returncode == 0:
            return attempt
        status = _PG_ISREADY_STATUS.get(result.returncode, f"exit code {result.returncode}")
        if result.returncode == 3:
            break  # retrying cannot help: the parameters themselves are unusable
        logger.warning(
            "Database not ready, retrying" if attempt < max_retries else "Database not ready",
            extra={
                "database": db.role,
                "host": db.host,
                "port": db.port,
                "attempt": attempt,
                "max_retries": max_retries,
                "status": status,
            },
        )
        if attempt < max_retries:
            sleep(settings.wait_delay_seconds)
    assert result is not None
    prefix = db.env_prefix
    raise ConnectionFailed(
        f"The {db.role} database at {db.host}:{db.port} did not accept connections "
        f"after {max_retries} attempt(s): "
        f"{_PG_ISREADY_STATUS.get(result.returncode, result.returncode)}",
        hint=f"Check {prefix}HOST and {prefix}PORT and that the server is running; "
        "raise ELT_WAIT_RETRIES or ELT_WAIT_DELAY_SECONDS if it needs longer to start.",
        stderr_tail=result.stderr_tail,
        database=db.role,
        host=db.host,
        total_attempts=max_retries,
    )


class HeadStart:
    """Both sides' first pg_isready and `pg_dump --version`, started at once.

    Use as a context manager: leaving the block stops whichever of them the
    run did not wait for, so that none outlives a failed run.
    """

    def __init__(self, settings: Settings) -> None:
        timeout = settings.connect_timeout_seconds
        self._tools: list[StartedTool] = []
        try:
            self.ready = {
                db.role: self._start(pg_isready_argv(db, timeout), pg_isready_env(timeout))
                for db in (settings.source, settings.destination)
            }
            self._pg_dump = self._start(pg_dump_version_argv(), child_env(None, timeout))
        except BaseException:
            self.close()
            raise

    @classmethod
    def start(cls, settings: Settings, logger: logging.Logger) -> HeadStart:
        logger.info("Waiting for databases to be ready")
        return cls(settings)

    def _start(self, argv: list[str], env: Mapping[str, str]) -> StartedTool:
        tool = StartedTool(argv, env)
        self._tools.append(tool)
        return tool

    def pg_dump_version(self) -> str:
        """What `pg_dump --version` printed (its exit code says nothing more)."""
        return self._pg_dump.finish()[1]

    def close(self) -> None:
        for tool in self._tools:
            tool.close()

    def __enter__(self) -> HeadStart:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
