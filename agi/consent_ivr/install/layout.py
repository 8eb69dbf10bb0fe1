"""Where Asterisk keeps its configuration, AGI scripts and sounds on this box (sans I/O).

Asterisk reads its folders from ``asterisk.conf``'s ``[directories]`` section (``astetcdir``,
``astagidir``, ``astdatadir`` — sounds are ``<astdatadir>/sounds`` —, and ``astrundir``, where
a running Asterisk has its control socket); a section written
``[directories](!)`` is a template, which Asterisk ignores, and so do we. A folder neither given
on the command line nor set there is Asterisk's compiled-in default, which differs between
distributions: Debian and Ubuntu use ``/usr/share/asterisk``, a source build and the RHEL
packages ``/var/lib/asterisk``; the first of those that exists is taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from consent_ivr.records import Record

#: Where a running Asterisk keeps its control socket unless astrundir says otherwise.
DEFAULT_RUN_DIR = "/var/run/asterisk"
#: Asterisk's data folder as Debian/Ubuntu and as a source build or RHEL install it.
DATA_DIR_CANDIDATES = ("/usr/share/asterisk", "/var/lib/asterisk")

_SECTION = re.compile(r"^\[([^\]]+)\]\s*(\([^)]*\))?\s*$")
_SETTING = re.compile(r"^([A-Za-z0-9_]+)\s*=>?\s*(.*)$")


class LayoutError(Exception):
    """A folder cannot be found or asterisk.conf cannot be read; the message says which."""


class Directories(Record):
    """The ``[directories]`` settings of asterisk.conf that the install uses (None: not set)."""

    etc: str | None = None
    agi: str | None = None
    data: str | None = None
    run: str | None = None


class Layout(Record):
    """Asterisk's folders on this box, as absolute paths."""

    etc: str  #: configuration: extensions.conf and the include go here
    agi_bin: str  #: AGI scripts: process AGI's entry consent-ivr.agi
    sounds: str  #: sounds: the prompts go into <sounds>/consent-ivr
    asterisk_conf: str | None  #: the asterisk.conf read, if any
    run_dir: str = DEFAULT_RUN_DIR  #: astrundir: the control socket of a running Asterisk


def strip_comment(line: str) -> str:
    """The line without its `;` comment (Asterisk's `\\;` is a literal semicolon)."""
    out = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if ch == ";":
            break
        out.append(ch)
        i += 1
    return "".join(out).strip()


def parse_directories(text: str, label: str = "asterisk.conf") -> Directories:
    """The ``[directories]`` section of asterisk.conf's text (a template section is ignored).

    A later setting of the same name wins, as in Asterisk; a value must be an absolute path
    (LayoutError naming the line otherwise)."""
    found: dict[str, str] = {}
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        if not line or line.startswith("#"):
            continue
        head = _SECTION.match(line)
        if head:
            is_template = head.group(2) is not None and "!" in head.group(2)
            section = None if is_template else head.group(1).strip()
            continue
        if section != "directories":
            continue
        setting = _SETTING.match(line)
        if setting is None:
            continue
        name, value = setting.group(1), setting.group(2).strip()
        if name in ("astetcdir", "astagidir", "astdatadir", "astrundir"):
            if not value.startswith("/"):
                raise LayoutError(
                    f"{label}:{number}: {name} is {value!r}; expected an absolute path"
                )
            found[name] = value.rstrip("/") or "/"
    return Directories(
        etc=found.get("astetcdir"),
        agi=found.get("astagidir"),
        data=found.get("astdatadir"),
        run=found.get("astrundir"),
    )


def resolve(
    asterisk_etc: str,
    directories: Directories,
    exists: Callable[[str], bool],
    agi_bin: str | None = None,
    sounds: str | None = None,
    asterisk_conf: str | None = None,
) -> Layout:
    """The folders to install into: the command line's, else asterisk.conf's, else the first
    usual data folder that `exists` (LayoutError naming the option to give when there is none)."""
    etc = directories.etc or asterisk_etc
    need_agi = agi_bin is None and directories.agi is None
    need_data = sounds is None and directories.data is None
    found = None
    if need_agi or need_data:
        found = next((d for d in DATA_DIR_CANDIDATES if exists(d)), None)
        if found is None:
            where = f"{asterisk_conf} does not set them" if asterisk_conf else "no asterisk.conf"
            wanted = (("--agi-bin DIR", need_agi), ("--sounds-dir DIR", need_data))
            give = " and ".join(opt for opt, needed in wanted if needed)
            raise LayoutError(
                f"cannot find Asterisk's folders ({where}, and neither "
                f"{' nor '.join(DATA_DIR_CANDIDATES)} exists): is Asterisk installed? give {give}"
            )
    return Layout(
        etc=etc,
        agi_bin=agi_bin or directories.agi or f"{found}/agi-bin",
        sounds=sounds or f"{directories.data or found}/sounds",
        asterisk_conf=asterisk_conf,
        run_dir=directories.run or DEFAULT_RUN_DIR,
    )
