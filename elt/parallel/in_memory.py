"""Running one client tool on input and output held in memory: schema archives, TOC lists.

Nothing touches the disk: the input goes to the tool's stdin, and a TOC list
for pg_restore --use-list through a pipe of its own (LIST_FILE).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading

from elt.processes import STDERR_TAIL_LINES, ToolFailed, tool_not_found

# In an argv given to run_in_memory, stands for the pipe that carries the TOC list.
LIST_FILE = "/dev/fd/{list}"


def run_in_memory(
    argv: list[str],
    env: dict[str, str],
    stdin: bytes,
    listing: str | None = None,
    *,
    side: str | None = None,
) -> bytes:
    """Run one tool on in-memory input and return its stdout; nothing touches the disk.

    `listing`, a TOC list for pg_restore --use-list, goes through a pipe whose
    /dev/fd path replaces LIST_FILE in argv. Raises ToolFailed with the stderr tail,
    and `side` where the caller knows which server the tool worked on.
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
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        raise tool_not_found(argv[0]) from None
    try:
        if listing is not None:
            os.close(read_fd)
            read_fd = -1
            # A TOC list is small (one line per object): it fits the pipe buffer
            # for all but huge schemas, and a writer thread covers those.
            data = listing.encode("utf-8", "surrogateescape")  # see listing_text()
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
        lines = err.decode("utf-8", "replace").splitlines()[-STDERR_TAIL_LINES:]
        raise ToolFailed(argv[0], proc.returncode, lines, side=side)
    return out


def listing_text(out: bytes) -> str:
    """pg_restore --list output as text. Names in it are in the archive's encoding,
    which need not be UTF-8; surrogateescape keeps every byte, so a line goes
    back to pg_restore unchanged (it only reads the leading dump ID anyway)."""
    return out.decode("utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as pipe:
        pipe.write(data)
