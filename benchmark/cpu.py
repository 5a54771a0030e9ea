"""CPU seconds (user + system) that a run costs each server, read from /proc.

A server's CPU over a run is the change, between two readings, of:
- the postmaster's own utime + stime;
- its cutime + cstime: the CPU of every child it has reaped (the backends that
  exited, autovacuum and parallel workers), with the children those reaped;
- the utime + stime of each child still running (checkpointer, background
  writer, walwriter, the autovacuum launcher, a backend or worker that
  outlived the run), keyed by pid and start time so that a reused pid is not
  taken for the same process.
A child running at the first reading and reaped by the second is in both the
first reading's sum and the second's cutime; its first figure is subtracted
there, so each process counts once. The pure parts (parsing, the arithmetic)
are separate from the readers of /proc, which the tests cannot fake.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

# A server process's title (its /proc cmdline after "postgres: "), first words,
# and the kind reported for it. Anything else under the postmaster is a backend.
AUXILIARY = {
    "checkpointer": "checkpointer",
    "background writer": "background writer",
    "walwriter": "walwriter",
    "autovacuum launcher": "autovacuum launcher",
    "autovacuum worker": "autovacuum worker",
    "logical replication launcher": "logical replication launcher",
    "parallel worker": "parallel worker",
    "walsender": "walsender",
    "walsummarizer": "walsummarizer",
}
# A reading waits for these to exit: the client's backends of the run just ended.
CLIENT_KINDS = frozenset({"backend", "parallel worker"})
EXITED = "exited during the run (backends, workers)"
POSTMASTER = "postmaster"


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that the readings use (times in clock ticks)."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    starttime: int

    @property
    def own(self) -> int:
        return self.utime + self.stime

    @property
    def reaped(self) -> int:
        return self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line. The command name is in parentheses and may hold
    spaces or parentheses, so the fields are counted from its last ')'."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    # After the name: state (field 3), ppid (4) ... utime (14), stime (15),
    # cutime (16), cstime (17) ... starttime (22); rest[0] is field 3.
    fields = rest.split()
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
        starttime=int(fields[19]),
    )


def process_kind(cmdline: str) -> str:
    """What a postmaster's child is, from its title: `postgres: checkpointer`,
    `postgres: autovacuum worker shop`, `postgres: user db 127.0.0.1(5) idle`."""
    title = cmdline.replace("\0", " ").strip()
    title = title.split(": ", 1)[1] if ": " in title else title
    for prefix, kind in AUXILIARY.items():
        if title == prefix or title.startswith(prefix + " "):
            return kind
    return "backend"


@dataclass(frozen=True)
class Reading:
    """One server's CPU figures at one moment, in clock ticks."""

    postmaster: int  # its own utime + stime
    reaped: int  # its cutime + cstime
    # (pid, starttime) of each child alive: (kind, utime + stime)
    children: Mapping[tuple[int, int], tuple[str, int]] = field(default_factory=dict)


def cpu_delta(before: Reading, after: Reading, ticks: int = TICKS) -> dict[str, float]:
    """CPU seconds between two readings of one server, by kind of process;
    key "total" sums them. See the module docstring for why this counts each
    process once."""
    out: dict[str, float] = {}

    def add(kind: str, value: int) -> None:
        out[kind] = out.get(kind, 0.0) + value / ticks

    add(POSTMASTER, after.postmaster - before.postmaster)
    for key, (kind, used) in after.children.items():
        add(kind, used - before.children.get(key, (kind, 0))[1])
    gone = sum(used for key, (_, used) in before.children.items() if key not in after.children)
    add(EXITED, after.reaped - before.reaped - gone)
    out["total"] = sum(out.values())
    return out


def floor_seconds(cpu_seconds: float, cores: int | None) -> float:
    """The shortest wall time that much CPU can take on `cores` cores, all busy."""
    return cpu_seconds / max(cores or 1, 1)


# --- reading /proc ----------------------------------------------------------


def postmaster_pid(datadir: Path) -> int:
    """The postmaster's pid: the first line of postmaster.pid."""
    return int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])


def _read(path: str) -> str | None:
    try:
        return Path(path).read_bytes().decode("utf-8", "replace")
    except OSError:  # exited meanwhile
        return None


def _children(parent: int) -> Iterable[tuple[ProcStat, str]]:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        text = _read(f"/proc/{entry.name}/stat")
        if text is None:
            continue
        stat = parse_stat(text)
        if stat.ppid == parent:
            yield stat, _read(f"/proc/{entry.name}/cmdline") or ""


def read_server(pid: int) -> Reading:
    """A reading of the server whose postmaster is `pid`: its children first,
    then the postmaster, so that a child reaped in between is counted twice
    (in both) rather than not at all; the caller reads at quiet points, when
    no client backend is left to be reaped."""
    children = {
        (stat.pid, stat.starttime): (process_kind(cmdline), stat.own)
        for stat, cmdline in _children(pid)
    }
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        raise RuntimeError(f"postmaster {pid} is gone")
    own = parse_stat(text)
    return Reading(postmaster=own.own, reaped=own.reaped, children=children)


def clients(pid: int) -> int:
    """How many client backends (and their parallel workers) the server runs now."""
    return sum(1 for _, cmdline in _children(pid) if process_kind(cmdline) in CLIENT_KINDS)


def wait_quiet(
    pids: Iterable[int], timeout: float = 10.0, clock: Callable[[], float] = time.monotonic
) -> bool:
    """Wait until none of the servers has a client backend left (the run's
    backends exit just after their clients do); False if one remains."""
    deadline = clock() + timeout
    pids = list(pids)
    while any(clients(pid) for pid in pids):
        if clock() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- autovacuum, from the server's log ------------------------------------------

# The servers log every automatic vacuum and analyze (log_autovacuum_min_duration
# = 0) with its CPU, at its end, in UTC (log_timezone): AUTOVACUUM_SETTINGS.
AUTOVACUUM_SETTINGS = {"log_autovacuum_min_duration": "0", "log_timezone": "UTC"}
_AUTOVACUUM = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC \[\d+\] LOG:  automatic "
    r"(?P<kind>vacuum|analyze) of table \"(?P<table>[^\"]+)\""
    # the rest of this entry only (not past the next line that starts an entry)
    r"(?:(?!\n\d{4}-\d\d-\d\d ).)*?"
    r"system usage: CPU: user: (?P<user>[\d.]+) s, system: (?P<system>[\d.]+) s",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Autovacuum:
    at: float  # when it ended (logged), seconds since the epoch
    what: str  # "vacuum db.schema.table" or "analyze ..."
    cpu_s: float


def parse_autovacuum(text: str) -> list[Autovacuum]:
    """Every automatic vacuum and analyze in a stretch of server log."""
    return [
        Autovacuum(
            dt.datetime.fromisoformat(m.group("at")).replace(tzinfo=dt.UTC).timestamp(),
            f"{m.group('kind')} {m.group('table')}",
            float(m.group("user")) + float(m.group("system")),
        )
        for m in _AUTOVACUUM.finditer(text)
    ]


def autovacuum_between(found: Iterable[Autovacuum], start: float, end: float) -> float:
    """CPU seconds of the automatic vacuums and analyzes that ended in (start, end]."""
    return sum(a.cpu_s for a in found if start < a.at <= end)


class LogReader:
    """Reads a server log on from where it last stopped (a run's new lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self) -> str:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return ""
        # Up to the last complete line: the rest is read next time.
        keep = data.rfind(b"\n") + 1
        self.offset += keep
        return data[:keep].decode("utf-8", "replace")
