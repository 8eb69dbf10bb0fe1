"""The install's records on disk: the manifest of installed files, one change (`Step`), and the
small file operations every step uses.

The manifest (`<settings folder>/installed.json`) names each file with the SHA-256 it was written
with, each link's target, the folders and the ``#include`` line the install added and the key it
made; nothing else is ever overwritten or removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable

from consent_ivr.install.plan import INCLUDE_MARK, Project
from consent_ivr.paths import is_flow_file
from consent_ivr.records import Record

Undo = Callable[[], None]


class InstallError(Exception):
    """The install cannot go on; the message is one line naming the path and what to do."""


class Step(Record):
    """One change: `verb path detail` is what it prints; `do` makes it and returns its undo."""

    verb: str
    path: str
    detail: str
    do: Callable[[], Undo | None]
    writes_in: str  #: the folder that must be writable

    def line(self) -> str:
        return f"{self.verb:<8} {self.path}{' ' + self.detail if self.detail else ''}"


class Manifest:
    """What an install wrote: the files (SHA-256), links, folders and include lines it made."""

    def __init__(self, data: dict[str, object] | None = None) -> None:
        data = data or {}
        self.files: dict[str, str] = dict(data.get("files", {}))  # type: ignore[call-overload]
        self.links: dict[str, str] = dict(data.get("links", {}))  # type: ignore[call-overload]
        self.dirs: list[str] = list(data.get("dirs", []))  # type: ignore[call-overload]
        self.includes: dict[str, str] = dict(data.get("includes", {}))  # type: ignore[call-overload]
        self.key: str | None = data.get("key")  # type: ignore[assignment]
        self.cache: str | None = data.get("cache")  # type: ignore[assignment]
        self.kept: list[str] = list(data.get("kept", []))  # type: ignore[call-overload]

    def to_json(self) -> bytes:
        data = {
            "format": 1,
            "files": dict(sorted(self.files.items())),
            "links": dict(sorted(self.links.items())),
            "dirs": self.dirs,
            "includes": dict(sorted(self.includes.items())),
            "key": self.key,
            "cache": self.cache,
            "kept": self.kept,
        }
        return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def read_manifest(path: str) -> Manifest | None:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InstallError(f"cannot read the install manifest {path}: {exc.strerror}") from None
    except ValueError:
        raise InstallError(f"{path}: not an install manifest (not JSON); expected the file "
                           "consent-ivr install-asterisk writes") from None  # fmt: skip
    if not isinstance(data, dict) or data.get("format") != 1:
        raise InstallError(f"{path}: not an install manifest of format 1")
    return Manifest(data)


def scan_project(root: str) -> Project:
    """The flows, prompt files and unit template the project holds (OSError if unreadable)."""
    flows = tuple(sorted(n for n in os.listdir(f"{root}/flows") if is_flow_file(n)))
    sounds: list[str] = []
    for here, dirs, files in os.walk(f"{root}/sounds"):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(here, f"{root}/sounds")
        sounds += [os.path.normpath(f"{rel}/{f}") for f in files if not f.startswith(".")]
    with open(f"{root}/asterisk-config/consent-ivr.service", encoding="utf-8") as fh:
        unit = fh.read()
    return Project(root, flows, tuple(sorted(sounds)), unit)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def write(path: str, data: bytes, mode: int) -> None:
    """Write through a temporary file and a rename: a reader sees the old bytes or the new."""
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.consent-ivr-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def has_include(text: str, name: str) -> bool:
    """Whether a config text already has an `#include`/`#tryinclude` line of `name`."""
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        target = words[1].split(";", 1)[0].strip().strip('"<>') if len(words) == 2 else None
        if words and words[0] in ("#include", "#tryinclude") and target == name:
            return True
    return False


def include_lines(name: str) -> str:
    return f'{INCLUDE_MARK}\n#include "{name}"\n'


def replace(path: str, data: bytes) -> Undo:
    before = read(path) if os.path.exists(path) else None
    write(path, data, 0o644)
    return (lambda: write(path, before, 0o644)) if before is not None else lambda: os.unlink(path)
