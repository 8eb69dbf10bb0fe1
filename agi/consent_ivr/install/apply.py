"""Applying steps all or nothing: every folder a step writes in is checked first (one line naming
the first that is not writable, before anything changes), then the steps run in order; when one
fails, those done are undone in reverse, so a failed run leaves the box as it found it.
"""

from __future__ import annotations

import errno
import os

from consent_ivr.install.files import InstallError, Step, Undo


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path) and path not in ("/", ""):
        path = os.path.dirname(path)
    return path or "/"


def check_writable(steps: list[Step]) -> None:
    """InstallError naming the first folder a step must write in and cannot."""
    for step in steps:
        folder = _nearest_existing(step.writes_in)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InstallError(
                f"cannot {step.verb} {step.path}: no permission to write in {folder} "
                "(run as root, or as a user who may write there); nothing was changed"
            )


def run(steps: list[Step]) -> None:
    """Apply `steps` in order; if one fails, undo those done (in reverse) and raise
    InstallError."""
    check_writable(steps)
    undo: list[Undo] = []
    for step in steps:
        try:
            back = step.do()
        except OSError as exc:
            failures = 0
            for u in reversed(undo):
                try:
                    u()
                except OSError:
                    failures += 1
            after = ("nothing was changed (undone)" if not failures
                     else f"{failures} change(s) could not be undone")  # fmt: skip
            cause = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            raise InstallError(f"cannot {step.verb} {step.path}: {cause}; {after}") from None
        if back is not None:
            undo.append(back)
