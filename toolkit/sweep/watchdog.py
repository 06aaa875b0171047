"""A watchdog that ends what a process started when that process dies without cleaning up.

An executor that starts helper processes it cannot ask the kernel to end with it (a local Ray
instance: its raylet, GCS and workers) starts a `Watchdog`. The watchdog is a small separate
process that notes, twice a second, every descendant of the process it watches; when that
process dies (SIGKILL included) without releasing it first, the watchdog kills the last
descendants it saw. A released watchdog (`release()`, after a normal shutdown) exits and
kills nothing. Linux only (it reads /proc); elsewhere `Watchdog.start()` returns None.

Run as `python -m toolkit.sweep.watchdog PID`, with the watched process holding its stdin:
"done" on stdin releases it; stdin closing without it means the process died.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

PERIOD_S = 0.5


class Watchdog:
    """The watched side: start() it, release() it after a clean shutdown."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @classmethod
    def start(cls) -> Watchdog | None:
        if not sys.platform.startswith("linux"):
            return None
        process = subprocess.Popen(
            [sys.executable, "-m", "toolkit.sweep.watchdog", str(os.getpid())],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to our process group does not reach it
        )
        return cls(process)

    def release(self) -> None:
        """The helpers were shut down properly: the watchdog goes without killing anything."""
        with contextlib.suppress(OSError):  # a watchdog gone already has nothing to release
            assert self.process.stdin is not None
            self.process.stdin.write(b"done\n")
            self.process.stdin.close()
        self.process.wait(timeout=10)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` in the process tree, from /proc."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("PPid:"):
                    children.setdefault(int(line.split()[1]), []).append(int(status.parent.name))
                    break
        except (OSError, ValueError):
            continue
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def watch(pid: int) -> None:
    me = os.getpid()
    seen: set[int] = set()
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], PERIOD_S)
        if ready:
            line = sys.stdin.buffer.readline()
            if line.strip() == b"done":
                return  # released: a clean shutdown
            if not line:  # the watched process is gone and did not release us
                break
        seen = (seen | descendants(pid)) - {me}
        seen = {p for p in seen if Path(f"/proc/{p}").exists()}
    for p in seen | {d for s in list(seen) for d in descendants(s)}:
        with contextlib.suppress(OSError):  # gone already
            os.kill(p, signal.SIGKILL)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
