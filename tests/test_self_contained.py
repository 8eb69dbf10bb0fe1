"""Nothing in the repository points outside its own tree: a fresh clone passes on its own.

Every tracked (or new, not ignored) text file is scanned for the ways a path can escape the
checkout: ``Path(__file__)`` walked up past the repository root (``parents[N]``, ``.parent``
chains, nested ``os.path.dirname``), a relative ``../`` path that resolves outside the root, and
the reference folders that sit next to the checkout on the development machine.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Folders next to the checkout that only the development machine has (spelled in parts, so
#: this file does not name them itself).
OUTSIDE_NAMES = (
    "/".join(("..", "shared")),
    "/".join(("", "work", "")),
    "asterisk-" + "transcripts",
)

#: Folders of the operating system: a relative path into one of them (the flow-argument tests'
#: "../../etc/passwd") is an attack being refused, not a folder a checkout could depend on.
SYSTEM_FOLDERS = frozenset({"etc", "dev", "proc", "sys", "usr", "bin", "root", "var", "tmp"})

_PARENTS_RE = re.compile(r"__file__\)?(?:\.resolve\(\))?\.parents\[(\d+)\]")
_PARENT_CHAIN_RE = re.compile(r"__file__\)(?:\.resolve\(\))?((?:\.parent(?![s\w]))+)")
_DIRNAME_RE = re.compile(r"((?:os\.path\.dirname\()+)(?:os\.path\.(?:realpath|abspath)\()?__file__")
_RELATIVE_RE = re.compile(r"(?<![.\w])((?:\.\./)+)([\w.-]*)")


def repository_files() -> list[Path]:
    """Tracked files plus new ones git does not ignore; a plain walk without git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"}
        found = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip and d != "__pycache__"]
            found += [Path(folder, f) for f in files]
        return sorted(found)
    return sorted(ROOT / name for name in out.decode("utf-8").split("\0") if name)


def text_of(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:  # listed by git but deleted in the working tree
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def escapes(path: Path, text: str) -> list[str]:
    """Every place in `text` (the content of `path`) that reaches outside the repository."""
    rel = path.relative_to(ROOT)
    # Path(rel).parents[len(rel.parts) - 1] is the root itself; one more is outside.
    depth = len(rel.parts)
    found: list[str] = []
    for name in OUTSIDE_NAMES:
        if name in text:
            found.append(f"{rel}: names {name!r}, a folder outside the repository")
    if path.suffix == ".py" or text.startswith("#!/usr/bin/env python"):
        levels = [int(m.group(1)) for m in _PARENTS_RE.finditer(text)]
        levels += [m.group(1).count(".parent") - 1 for m in _PARENT_CHAIN_RE.finditer(text)]
        levels += [m.group(1).count("dirname") - 1 for m in _DIRNAME_RE.finditer(text)]
        found += [
            f"{rel}: walks {level + 1} folders up from itself, past the repository root"
            for level in levels
            if level >= depth
        ]
    for m in _RELATIVE_RE.finditer(text):
        if not m.group(2) or m.group(2) in SYSTEM_FOLDERS:
            continue  # a bare "../" names nothing; "../../etc/passwd" is an attack example
        target = os.path.normpath(os.path.join(os.path.dirname(rel), m.group(1), m.group(2)))
        if target == ".." or target.startswith("../"):
            found.append(f"{rel}: {m.group(0)!r} resolves outside the repository")
    return found


def test_no_file_in_the_repository_points_outside_it() -> None:
    this = Path(__file__).resolve()  # its examples below escape on purpose
    files = repository_files()
    assert this in files and len(files) > 100
    files.remove(this)
    problems = [p for path in files if (text := text_of(path)) for p in escapes(path, text)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("rel", "text"),
    [
        # the escapes are assembled so that this file does not itself read as one
        ("tests/test_x.py", "Path(__file__).resolve().parents[2] / " + '"' + "sha" + 'red"'),
        ("tests/test_x.py", "Path(__file__).parent.parent.parent"),
        (
            "agi/consent_ivr/x.py",
            "os.path.dirname(os.path.dirname(os.path.dirname("
            "os.path.dirname(os.path.realpath(__file__)))))",
        ),
        ("tests/test_x.py", 'open("' + "../" * 2 + 'shared-data/hosts")'),
        ("README.md", "see `" + OUTSIDE_NAMES[0] + "/x`"),
    ],
)
def test_each_kind_of_escape_is_caught(rel: str, text: str) -> None:
    assert escapes(ROOT / rel, text)


@pytest.mark.parametrize(
    ("rel", "text"),
    [
        ("tests/test_x.py", "Path(__file__).resolve().parents[1]"),
        ("tests/bench/x.py", "Path(__file__).resolve().parents[2]"),
        ("tests/test_x.py", "Path(__file__).resolve().parent / 'data'"),
        (
            "agi/consent_ivr/paths.py",
            "os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))",
        ),
        ("agi/consent-ivr.agi", "venv_python=${self%/*}/../.venv/bin/python"),
        ("README.md", "AGI(agi://127.0.0.1:4573/call-tracking) ; or .../call-tracking?lang=en"),
        ("README.md", "an injected `../../etc/passwd` is refused"),
        ("README.md", "(`../`, an absolute path, a symlink) is refused"),
    ],
)
def test_paths_inside_the_repository_pass(rel: str, text: str) -> None:
    assert escapes(ROOT / rel, text) == []
