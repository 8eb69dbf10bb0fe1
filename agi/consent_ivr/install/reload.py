"""Telling a running Asterisk to read its dialplan again, so an installed (or removed) include
takes effect without a restart: ``asterisk -rx "dialplan reload"``, which live calls survive.

Asterisk counts as running when the `asterisk` command is on PATH and its control socket
(``<astrundir>/asterisk.ctl``; astrundir from asterisk.conf, else ``/var/run/asterisk``) is a
socket. Process AGI needs no reload: Asterisk starts its agi-bin entry afresh for each call.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from enum import Enum

from consent_ivr.records import Record

#: The CLI command, and what Asterisk (pbx_config) answers when it has read the dialplan.
COMMAND = "dialplan reload"
DONE = "Dialplan reloaded."
#: The control socket's name in astrundir (asterisk.conf's [files] astctl can rename it).
CONTROL_SOCKET = "asterisk.ctl"
#: How long Asterisk may take to answer.
TIMEOUT = 30.0


class Outcome(Enum):
    RELOADED = "reloaded"
    NOT_RUNNING = "not running"
    FAILED = "failed"


class Reload(Record):
    outcome: Outcome
    message: str  #: one line for the operator


def control_socket(run_dir: str) -> str | None:
    """The control socket of a running Asterisk in `run_dir`, or None (none there)."""
    path = os.path.join(run_dir, CONTROL_SOCKET)
    try:
        return path if stat.S_ISSOCK(os.stat(path).st_mode) else None
    except OSError:
        return None


def reload_dialplan(
    run_dir: str,
    asterisk_conf: str | None,
    which: Callable[[str], str | None] = shutil.which,
    removed: bool = False,
) -> Reload:
    """Run ``asterisk [-C asterisk.conf] -rx "dialplan reload"`` if Asterisk is running
    (`removed`: the include was taken out, which the message says)."""
    binary = which("asterisk")
    socket = control_socket(run_dir)
    if binary is None or socket is None:
        why = "no `asterisk` command on PATH" if binary is None else f"no control socket {run_dir}"
        if binary is not None:
            why += f"/{CONTROL_SOCKET}"
        then = "no longer reads" if removed else "reads"
        return Reload(
            Outcome.NOT_RUNNING,
            f"dialplan: Asterisk is not running ({why}); it {then} the include when it starts",
        )
    argv = [binary, *(["-C", asterisk_conf] if asterisk_conf else []), "-rx", COMMAND]
    shown = f'asterisk -rx "{COMMAND}"'
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return Reload(Outcome.FAILED, f"`{shown}` gave no answer within {TIMEOUT:.0f} s")
    except OSError as exc:
        return Reload(Outcome.FAILED, f"cannot run {binary}: {exc.strerror}")
    said = " ".join((done.stdout + done.stderr).split())
    if done.returncode == 0 and DONE in said:
        return Reload(Outcome.RELOADED, f"dialplan: reloaded (`{shown}`: {DONE})")
    answer = said[:200] or "no answer"
    return Reload(Outcome.FAILED, f"`{shown}` failed (exit status {done.returncode}): {answer}")
