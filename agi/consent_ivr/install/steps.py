"""The steps that bring the disk to the plan: each planned item compared with the disk and the
manifest, and only what changes something becomes a `Step` (with its undo).

A file that is not in the manifest is never overwritten (unless it already holds exactly the
planned bytes: then it is adopted, or is a link the plan says it replaces: an older install's
agi-bin link), nor one changed since it was written. What the manifest names and the plan no
longer holds (a flow removed from the project, a moved sounds folder, an older install's systemd
drop-in for asterisk.service) is removed if it is still as written. The manifest is the last step.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from collections.abc import Callable, Iterable

from consent_ivr.install.files import (
    InstallError,
    Manifest,
    Step,
    Undo,
    has_include,
    include_lines,
    read,
    read_manifest,
    replace,
    sha256,
    write,
)
from consent_ivr.install.plan import Dir, File, Include, Item, Key, Options


class Changes:
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
        self.notes: list[str] = []

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
                want = read(item.source)
            except OSError as exc:
                raise InstallError(f"cannot read {item.source}: {exc.strerror}") from None
        digest = sha256(want)
        self.new.files[path] = digest
        if not os.path.lexists(path):
            self.need_parent(path)

            def create() -> Undo:
                write(path, want, item.mode)
                return lambda: os.unlink(path)

            self.add("create", path, "", create)
            return
        if item.replaces_link is not None and os.path.islink(path):
            target = os.readlink(path)
            if target == item.replaces_link:
                self._replace_link(path, target, want, item.mode)
                return
        if os.path.islink(path) or not os.path.isfile(path):
            raise InstallError(f"{path} exists and is not a regular file; move it away first")
        have = sha256(read(path))
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
        before = read(path)

        def update() -> Undo:
            write(path, want, item.mode)
            return lambda: write(path, before, item.mode)

        self.add("update", path, "", update)

    def _replace_link(self, path: str, target: str, want: bytes, mode: int) -> None:
        def swap() -> Undo:
            write(path, want, mode)  # a rename over the link: agi-bin never lacks the entry

            def undo() -> None:
                os.unlink(path)
                os.symlink(target, path)

            return undo

        self.add("replace", path, f"(was a link -> {target})", swap)

    def key(self, item: Key) -> None:
        path = item.path
        if os.path.lexists(path):
            if os.path.islink(path) or not os.path.isfile(path):
                raise InstallError(f"{path} exists and is not a regular file; expected a key")
            if self.owner and os.stat(path).st_uid != self.owner[0]:
                self.notes.append(
                    f"note: {path} (kept as it is) does not belong to {self.options.user}: "
                    f"unless {self.options.user} may read it, every call ends as error "
                    f"(chown {self.options.user} {path})"
                )
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
            text = read(conf).decode("utf-8", "replace")
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


def remove_files(p: Changes, files: dict[str, str]) -> list[str]:
    notes = []
    for path, digest in sorted(files.items()):
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        data = read(path)
        if sha256(data) != digest:
            notes.append(f"left {path}: changed since it was installed")
            continue
        mode = stat.S_IMODE(os.stat(path).st_mode)

        def remove(path: str = path, data: bytes = data, mode: int = mode) -> Undo:
            os.unlink(path)
            return lambda: write(path, data, mode)

        p.add("remove", path, "", remove)
    return notes


def remove_links(p: Changes, links: dict[str, str]) -> list[str]:
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


def remove_empty_dirs(p: Changes, dirs: Iterable[str], removed: set[str]) -> None:
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
    p = Changes(options, old, owner)
    for item in items:
        if isinstance(item, Dir):
            p.dir(item)
        elif isinstance(item, File):
            p.file(item)
        elif isinstance(item, Key):
            p.key(item)
        else:
            p.include(item)
    planned = {i.path for i in items if not isinstance(i, Include)}
    notes = p.notes + p.stale(planned)
    for conf in old.includes:
        if conf not in p.new.includes:
            p.new.includes[conf] = old.includes[conf]  # still there; --uninstall removes it
    manifest = p.new.to_json()
    if p.steps or manifest != old.to_json():
        p.add("manifest", options.manifest, "", lambda: replace(options.manifest, manifest))
    return p.steps, notes
