"""Naming the running thread for the operating system, so `top -H`, `ps -L` and `/proc/PID/task`
show which of the server's threads (the event loop, the evidence writer, the checkpointer, the
log writer) spends the time.

Python (before 3.14) does not pass a thread's name to the kernel; on Linux a thread may write its
own `/proc/self/task/TID/comm` (at most 15 bytes). Elsewhere, or if `/proc` is not mounted, the
name is simply not set: it is for people and benchmarks, never for the program's behaviour.
"""

from __future__ import annotations

import contextlib
import threading


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` (cut to 15 bytes) in the kernel's view; never fails."""
    path = f"/proc/self/task/{threading.get_native_id()}/comm"
    with contextlib.suppress(OSError), open(path, "w") as fh:
        fh.write(name.encode()[:15].decode(errors="ignore"))
