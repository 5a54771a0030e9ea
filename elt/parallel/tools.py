"""Running one client tool (pg_dump, pg_restore) on in-memory input."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading

from elt.errors import LoadError
from elt.parallel.commands import LIST_FILE


def tool_output(
    argv: list[str], env: dict[str, str], stdin: bytes, listing: str | None = None
) -> bytes:
    """Run one tool on in-memory input; the TOC list, if any, goes through a pipe on fd 3.

    Nothing touches the disk. Raises ToolFailed with the stderr tail.
    """
    read_fd = write_fd = -1
    if listing is not None:
        read_fd, write_fd = os.pipe()
        argv = [a.replace(LIST_FILE, f"/dev/fd/{read_fd}") for a in argv]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            pass_fds=(read_fd,) if listing is not None else (),
        )
    except FileNotFoundError:
        raise LoadError(
            f"{argv[0]} was not found on PATH",
            hint="Install the PostgreSQL client tools of the destination's major version.",
        ) from None
    try:
        if listing is not None:
            os.close(read_fd)
            read_fd = -1
            # A TOC list is small (one line per object): it fits the pipe buffer
            # for all but huge schemas, and a writer thread covers those.
            data = listing.encode("utf-8", "surrogateescape")  # see toc_listing()
            writer = threading.Thread(target=_write_all, args=(write_fd, data))
            writer.start()
            write_fd = -1
        out, err = proc.communicate(stdin)
        if listing is not None:
            writer.join()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    if proc.returncode != 0:
        raise ToolFailed(
            argv[0], proc.returncode, err.decode("utf-8", "replace").splitlines()[-20:]
        )
    return out


def toc_listing(out: bytes) -> str:
    """pg_restore --list output as text. Names in it are in the archive's encoding,
    which need not be UTF-8; surrogateescape keeps every byte, so a line goes
    back to pg_restore unchanged (it only reads the leading dump ID anyway)."""
    return out.decode("utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as pipe:
        pipe.write(data)


class ToolFailed(Exception):
    def __init__(self, tool: str, returncode: int, stderr_tail: list[str]) -> None:
        super().__init__(f"{tool} exited with {returncode}")
        self.tool = tool
        self.returncode = returncode
        self.stderr_tail = stderr_tail
