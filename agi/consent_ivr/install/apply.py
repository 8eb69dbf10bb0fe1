"""Bringing the disk to the plan, or taking an install off again: all of it or nothing.

`install_steps` compares each planned item with the disk and the manifest of installed files
(`<settings folder>/installed.json`: each file's SHA-256 as written, each link's target, the
folders and the ``#include`` line it added, the key it made) and returns only the steps that
change something. A file that is not in the manifest is never overwritten (unless it already
holds exactly the planned bytes: then it is adopted), nor one changed since it was written.
`uninstall_steps` removes exactly what the manifest names and is still as it was written — never
the key, never the evidence folder. `run` checks that every folder a step writes in is writable,
then applies the steps in order; when one fails, the ones done are undone in reverse, so a
failed run leaves the box as it found it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable

from consent_ivr.install.plan import (
    INCLUDE_MARK,
    Dir,
    File,
    Include,
    Item,
    Key,
    Link,
    Options,
    Project,
)
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


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _write(path: str, data: bytes, mode: int) -> None:
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


class _Planner:
    """Turns items into the steps that change something, and the manifest after them."""

    def __init__(self, options: Options, old: Manifest, owner: tuple[int, int] | None) -> None:
        self.options = options
        self.old = old
        self.new = Manifest()
        self.new.kept = list(old.kept)
        self.new.key = old.key
        self.new.cache = old.cache
        self.owner = owner
        self.steps: list[Step] = []
        self.will_exist: set[str] = set()

    def add(self, verb: str, path: str, detail: str, do: Callable[[], Undo | None],
            writes_in: str | None = None) -> None:  # fmt: skip
        self.steps.append(Step(verb, path, detail, do, writes_in or os.path.dirname(path)))

    def need_parent(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent not in self.will_exist and not os.path.isdir(parent):
            raise InstallError(f"folder {parent} does not exist; expected it to hold {path}")

    def owner_text(self, owned: bool) -> str:
        return f", {self.options.user}" if owned else ""

    # -- items -----------------------------------------------------------------------------

    def dir(self, item: Dir) -> None:
        path = item.path
        self.will_exist.add(path)
        uid_gid = self.owner if item.owned else None
        if os.path.lexists(path):
            if os.path.islink(path) or not os.path.isdir(path):
                raise InstallError(f"{path} exists and is not a folder; expected a folder there")
            if path in self.old.dirs:
                self.new.dirs.append(path)
            if item.private:
                self._enforce(path, item.mode, uid_gid)
            return
        self.need_parent(path)
        self.new.dirs.append(path)
        if item.keep:
            self.new.kept.append(path)
        if path == self.options.cache_dir:
            self.new.cache = path

        def do() -> Undo:
            os.mkdir(path, item.mode)
            os.chmod(path, item.mode)
            if uid_gid:
                os.chown(path, *uid_gid)
            return lambda: os.rmdir(path)

        self.add("mkdir", path, f"({item.mode:04o}{self.owner_text(item.owned)})", do)

    def _enforce(self, path: str, mode: int, uid_gid: tuple[int, int] | None) -> None:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) != mode:
            old_mode = stat.S_IMODE(st.st_mode)

            def chmod() -> Undo:
                os.chmod(path, mode)
                return lambda: os.chmod(path, old_mode)

            self.add("chmod", path, f"{old_mode:04o} -> {mode:04o}", chmod, path)
        if uid_gid and (st.st_uid, st.st_gid) != uid_gid:
            old = (st.st_uid, st.st_gid)

            def chown() -> Undo:
                os.chown(path, *uid_gid)
                return lambda: os.chown(path, *old)

            self.add("chown", path, f"-> {self.options.user}", chown, path)

    def file(self, item: File) -> None:
        path = item.path
        if item.content is not None:
            want = item.content
        else:
            assert item.source is not None
            try:
                want = _read(item.source)
            except OSError as exc:
                raise InstallError(f"cannot read {item.source}: {exc.strerror}") from None
        digest = sha256(want)
        self.new.files[path] = digest
        if not os.path.lexists(path):
            self.need_parent(path)

            def create() -> Undo:
                _write(path, want, item.mode)
                return lambda: os.unlink(path)

            self.add("create", path, "", create)
            return
        if os.path.islink(path) or not os.path.isfile(path):
            raise InstallError(f"{path} exists and is not a regular file; move it away first")
        have = sha256(_read(path))
        known = self.old.files.get(path)
        if have == digest:
            if known is None:
                self.add("adopt", path, "(already as planned)", lambda: None)
            return
        if known is None:
            raise InstallError(
                f"{path} exists and was not written by consent-ivr install-asterisk; "
                "refusing to overwrite it (move it away, then run again)"
            )
        if known != have:
            raise InstallError(
                f"{path} was changed since consent-ivr install-asterisk wrote it; refusing "
                "to overwrite it (move it away, then run again)"
            )
        before = _read(path)

        def update() -> Undo:
            _write(path, want, item.mode)
            return lambda: _write(path, before, item.mode)

        self.add("update", path, "", update)

    def link(self, item: Link) -> None:
        path, target = item.path, item.target
        self.new.links[path] = target
        if os.path.lexists(path):
            current = os.readlink(path) if os.path.islink(path) else None
            if current == target:
                if path not in self.old.links:
                    self.add("adopt", path, f"-> {target} (already as planned)", lambda: None)
                return
            if current is None or self.old.links.get(path) != current:
                raise InstallError(
                    f"{path} exists and was not written by consent-ivr install-asterisk; "
                    "refusing to overwrite it (move it away, then run again)"
                )

            previous: str = current

            def relink() -> Undo:
                os.unlink(path)
                os.symlink(target, path)

                def undo() -> None:
                    os.unlink(path)
                    os.symlink(previous, path)

                return undo

            self.add("relink", path, f"-> {target}", relink)
            return
        self.need_parent(path)

        def create() -> Undo:
            os.symlink(target, path)
            return lambda: os.unlink(path)

        self.add("link", path, f"-> {target}", create)

    def key(self, item: Key) -> None:
        path = item.path
        if os.path.lexists(path):
            if os.path.islink(path) or not os.path.isfile(path):
                raise InstallError(f"{path} exists and is not a regular file; expected a key")
            return
        self.need_parent(path)
        self.new.key = path
        uid_gid = self.owner

        def make() -> Undo:
            secret = base64.b64encode(secrets.token_bytes(32)) + b"\n"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
                if uid_gid:
                    os.fchown(fd, *uid_gid)
                os.write(fd, secret)
                os.fsync(fd)
            finally:
                os.close(fd)
            return lambda: os.unlink(path)

        self.add("key", path, f"(new, 0600{self.owner_text(True)})", make)

    def include(self, item: Include) -> None:
        conf = item.conf
        try:
            text = _read(conf).decode("utf-8", "replace")
        except FileNotFoundError:
            raise InstallError(
                f"{conf} does not exist: is {os.path.dirname(conf)} Asterisk's configuration "
                "folder? (--asterisk-etc DIR)"
            ) from None
        except OSError as exc:
            raise InstallError(f"cannot read {conf}: {exc.strerror}") from None
        if has_include(text, item.name):
            if conf in self.old.includes:
                self.new.includes[conf] = item.name
            return
        self.new.includes[conf] = item.name
        lines = ("" if text.endswith("\n") or not text else "\n") + include_lines(item.name)

        def append() -> Undo:
            size = os.path.getsize(conf)
            with open(conf, "a", encoding="utf-8") as fh:
                fh.write(lines)
            return lambda: os.truncate(conf, size)

        self.add("include", conf, f'+ #include "{item.name}"', append)

    # -- what is no longer planned -------------------------------------------------------

    def stale(self, planned: set[str]) -> list[str]:
        """Steps removing the manifest's files and links no longer planned; returns notes."""
        notes: list[str] = []
        gone = [p for p in self.old.files if p not in planned]
        gone_links = [p for p in self.old.links if p not in planned]
        notes += remove_files(self, {p: self.old.files[p] for p in gone})
        notes += remove_links(self, {p: self.old.links[p] for p in gone_links})
        old_dirs = [d for d in self.old.dirs if d not in planned]
        remove_empty_dirs(self, old_dirs, {s.path for s in self.steps if s.verb == "remove"})
        return notes


def remove_files(p: _Planner, files: dict[str, str]) -> list[str]:
    notes = []
    for path, digest in sorted(files.items()):
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        data = _read(path)
        if sha256(data) != digest:
            notes.append(f"left {path}: changed since it was installed")
            continue
        mode = stat.S_IMODE(os.stat(path).st_mode)

        def remove(path: str = path, data: bytes = data, mode: int = mode) -> Undo:
            os.unlink(path)
            return lambda: _write(path, data, mode)

        p.add("remove", path, "", remove)
    return notes


def remove_links(p: _Planner, links: dict[str, str]) -> list[str]:
    notes = []
    for path, target in sorted(links.items()):
        if not os.path.islink(path):
            continue
        if os.readlink(path) != target:
            notes.append(f"left {path}: it points elsewhere now")
            continue

        def unlink(path: str = path, target: str = target) -> Undo:
            os.unlink(path)
            return lambda: os.symlink(target, path)

        p.add("remove", path, f"-> {target}", unlink)
    return notes


def remove_empty_dirs(p: _Planner, dirs: Iterable[str], removed: set[str]) -> None:
    """rmdir steps for the folders (deepest first) that hold nothing but what is removed."""
    for path in sorted(dirs, key=lambda d: -d.count("/")):
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        if all(f"{path}/{n}" in removed for n in os.listdir(path)):
            removed.add(path)

            def rmdir(path: str = path, mode: int = stat.S_IMODE(os.stat(path).st_mode)) -> Undo:
                os.rmdir(path)
                return lambda: os.mkdir(path, mode)

            p.add("rmdir", path, "", rmdir)


def install_steps(
    items: list[Item], options: Options, owner: tuple[int, int] | None
) -> tuple[list[Step], list[str]]:
    """The steps that bring the disk to `items` (the manifest written last), and notes."""
    old = read_manifest(options.manifest) or Manifest()
    p = _Planner(options, old, owner)
    for item in items:
        if isinstance(item, Dir):
            p.dir(item)
        elif isinstance(item, File):
            p.file(item)
        elif isinstance(item, Link):
            p.link(item)
        elif isinstance(item, Key):
            p.key(item)
        else:
            p.include(item)
    planned = {i.path for i in items if not isinstance(i, Include)}
    notes = p.stale(planned)
    for conf in old.includes:
        if conf not in p.new.includes:
            p.new.includes[conf] = old.includes[conf]  # still there; --uninstall removes it
    manifest = p.new.to_json()
    if p.steps or manifest != old.to_json():
        p.add("manifest", options.manifest, "", lambda: _replace(options.manifest, manifest))
    return p.steps, notes


def uninstall_steps(options: Options) -> tuple[list[Step], list[str]]:
    """The steps that remove what the manifest in `options.config_dir` names (never the key or
    the evidence); only the settings folder of `options` is used."""
    old = read_manifest(options.manifest)
    if old is None:
        return [], [f"nothing to uninstall: no manifest {options.manifest}"]
    p = _Planner(options, old, None)
    notes = remove_files(p, old.files)
    notes += remove_links(p, old.links)
    for conf, name in sorted(old.includes.items()):
        notes += _remove_include(p, conf, name)
    if old.cache and os.path.isdir(old.cache) and not os.path.islink(old.cache):
        cache = old.cache
        p.add("remove", cache, "(the flow cache)", lambda: shutil.rmtree(cache), cache)
    removed = {s.path for s in p.steps if s.verb == "remove"} | {options.manifest}
    removable = [d for d in old.dirs if d not in old.kept and d != old.cache]
    remove_empty_dirs(p, removable, removed)
    before = _read(options.manifest)

    def forget() -> Undo:
        os.unlink(options.manifest)
        return lambda: _write(options.manifest, before, 0o644)

    # the manifest goes before the folders: its own folder may be one of them
    first_rmdir = next((i for i, s in enumerate(p.steps) if s.verb == "rmdir"), len(p.steps))
    p.steps.insert(first_rmdir, Step("remove", options.manifest, "(the manifest)", forget,
                                     options.config_dir))  # fmt: skip
    kept = [k for k in (old.key or options.key_file, *old.kept) if os.path.exists(k)]
    if kept:
        notes.append(f"kept {', '.join(kept)}: the key and the evidence are never removed")
    return p.steps, notes


def _remove_include(p: _Planner, conf: str, name: str) -> list[str]:
    try:
        text = _read(conf).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return [f"left {conf}: cannot read it"]
    ours = include_lines(name)
    if ours not in text:
        return [f'left {conf}: its #include "{name}" is not the one install-asterisk added']
    cut = text.replace("\n" + ours, "\n", 1) if ("\n" + ours) in text else text.replace(ours, "")
    cut = cut[:-1] if cut.endswith("\n\n") and not text.endswith("\n\n") else cut

    def edit() -> Undo:
        with open(conf, "r+", encoding="utf-8") as fh:  # in place: owner and mode stay
            fh.write(cut)
            fh.truncate()

        def undo() -> None:
            with open(conf, "r+", encoding="utf-8") as fh:
                fh.write(text)
                fh.truncate()

        return undo

    p.add("include", conf, f'- #include "{name}"', edit)
    return []


def _replace(path: str, data: bytes) -> Undo:
    before = _read(path) if os.path.exists(path) else None
    _write(path, data, 0o644)
    return (lambda: _write(path, before, 0o644)) if before is not None else lambda: os.unlink(path)


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
