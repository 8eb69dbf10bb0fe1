"""A cache of validated flows for process AGI, so a call does not re-parse YAML and re-hash audio.

A cache entry holds the `Flow` as plain data (`marshal`: built into the interpreter, nothing to
import; rebuilt here into the model's record classes and nothing else) plus the (mtime, size,
inode) of every file it was built from (the YAML, the sound manifest, every audio file). It is
used only if all of them are unchanged (and the model, loader and cache code too: an entry is
rebuilt by position, so a changed record layout must never meet an old entry), and only from a
private folder (owned by this user, not writable by others), opened without following symlinks
and used through its file descriptor, so no other user can plant or swap an entry. Any doubt
means: load and validate normally.
``CONSENT_IVR_CACHE`` names the folder (``off`` disables); default ``<tmp>/consent-ivr-<uid>``.

This module runs before the first prompt of every process-AGI call: it uses `os.path` and
a 64-bit FNV-1a hash (for the entry's file name) rather than pathlib and hashlib.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import stat
import sys

from consent_ivr import __version__
from consent_ivr.flow import model
from consent_ivr.flow.audiofiles import PathStamp, path_stamp
from consent_ivr.flow.model import Flow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Signature = tuple[PathStamp, ...]

#: Bump when the entry layout changes; entries of other formats are ignored.
FORMAT = 4

#: The only classes an entry can rebuild.
_RECORDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        model.Prompt,
        model.Purpose,
        model.Question,
        model.Keys,
        model.Caps,
        model.Choice,
        model.Controller,
        model.Flow,
    )
}


def cache_dir() -> str | None:
    """The cache folder if it is usable (private, ours, not a symlink), else None."""
    path = _cache_path()
    fd = _open_private_dir(path) if path else None
    if fd is None:
        return None
    os.close(fd)
    return path


def _cache_path() -> str | None:
    setting = os.environ.get("CONSENT_IVR_CACHE", "")
    if setting.lower() == "off":
        return None
    tmp = os.environ.get("TMPDIR") or "/tmp"  # not tempfile: it costs ms at every AGI start
    return setting or os.path.join(tmp, f"consent-ivr-{os.getuid()}")


def _open_private_dir(path: str) -> int | None:
    """An fd of the folder (created 0700 if missing), or None unless it is a real directory
    owned by this user that nobody else can write to."""
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    st = os.fstat(fd)
    private = st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if private and stat.S_ISDIR(st.st_mode):
        return fd
    os.close(fd)
    return None


def _signature(paths: list[str]) -> Signature | None:
    stamps = [path_stamp(p) for p in paths]
    return None if None in stamps else tuple(s for s in stamps if s is not None)


def _ident(flow_path: str) -> str:
    from consent_ivr.paths import sounds_path

    return "|".join(
        (
            os.path.realpath(flow_path),
            os.path.realpath(sounds_path()),
            __version__,
            sys.version,
            str(FORMAT),
            _LAYOUT,
        )
    )


def _entry_name(ident: str) -> str:
    # The name only spreads entries; the entry stores its full ident and is checked against it.
    h = 0xCBF29CE484222325
    for byte in ident.encode("utf-8", "surrogateescape"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}.flow"


#: The code an entry depends on besides the flow's files: a changed model, loader, cache or
#: audio rules invalidate every entry (records are rebuilt by position).
_CODE_FILES = tuple(
    os.path.join(os.path.dirname(model.__file__), name)
    for name in ("model.py", "loader.py", "cache.py", "diagnostics.py", "audiofiles.py")
)
#: The field layout of every record an entry can hold, part of its ident.
_LAYOUT = repr(
    [
        (name, getattr(cls, "_fields", None), sorted(getattr(cls, "_field_defaults", {})))
        for name, cls in sorted(_RECORDS.items())
    ]
)


def _dependencies(flow: Flow, flow_path: str) -> list[str]:
    from consent_ivr.paths import sounds_path

    deps = [*_CODE_FILES, os.path.realpath(flow_path)]
    deps.append(os.path.join(sounds_path(), f"{flow.id}.manifest.json"))
    # the linter reads the other flows of the folder (R17: a withdrawal flow for each purpose):
    # the folder (a file added or removed) and each flow file in it
    folder = os.path.dirname(os.path.realpath(flow_path))
    deps.append(folder)
    with contextlib.suppress(OSError):
        deps += sorted(
            os.path.join(folder, n) for n in os.listdir(folder) if n.endswith((".yaml", ".yml"))
        )
    folders: set[str] = set()
    for prompt in flow.all_prompts():
        deps += [prompt.audio[lang] for lang in flow.languages]
        folders.update(os.path.dirname(prompt.audio[lang]) for lang in flow.languages)
    # a folder's mtime changes when a file is added to it: another format of a prompt, which
    # Asterisk would play instead of the WAV, makes the flow validate again (and be refused)
    return deps + sorted(folders)


def _as_loaded(flow: Flow, flow_path: str, deps: Signature) -> bool:
    """Whether the flow file, the audio files and their folders are still what `load_flow` read
    and listed: one changed while it ran must not pair its new signature with the old content
    in an entry (a stale flow, or every call failing on audio it did not hash). Only on a miss."""
    import hashlib

    hashed = {
        prompt.audio[lang]: ident
        for prompt in flow.all_prompts()
        for lang, ident in prompt.audio_file.items()
    }
    folders = {
        os.path.dirname(prompt.audio[lang]): ident
        for prompt in flow.all_prompts()
        for lang, ident in prompt.audio_dir.items()
    }
    for p, mtime, size, ino in deps:
        if (p in hashed and (ino, size, mtime) != hashed[p]) or (
            p in folders and (ino, mtime) != folders[p]
        ):
            return False
    try:
        with open(flow_path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest() == flow.source_sha256
    except OSError:
        return False


def dump_value(value: Any) -> Any:
    """A model value as marshal-able data: records and the basis enum tagged, tuples tagged."""
    if isinstance(value, model.Basis):
        return ("B", value.value)
    name = type(value).__name__
    if isinstance(value, tuple) and _RECORDS.get(name) is type(value):
        return ("R", name, tuple(dump_value(v) for v in value))
    if isinstance(value, tuple):
        return ("T", tuple(dump_value(v) for v in value))
    if isinstance(value, dict):
        return {k: dump_value(v) for k, v in value.items()}
    if value is None or type(value) in (str, int, bool, frozenset):
        return value  # exact types only: an enum or other subclass must not come back as str
    raise TypeError(f"cannot cache a {type(value).__name__}")


def load_value(data: Any) -> Any:
    """The inverse of `dump_value`; raises ValueError on anything it did not make."""
    if isinstance(data, tuple):
        tag = data[0] if data else None
        if tag == "B" and len(data) == 2:
            return model.Basis(data[1])
        if tag == "R" and len(data) == 3 and data[1] in _RECORDS:
            return _RECORDS[data[1]](*(load_value(v) for v in data[2]))
        if tag == "T" and len(data) == 2 and isinstance(data[1], tuple):
            return tuple(load_value(v) for v in data[1])
        raise ValueError("not a cache value")
    if isinstance(data, dict):
        return {k: load_value(v) for k, v in data.items()}
    if data is None or isinstance(data, (str, int, frozenset)):
        return data
    raise ValueError(f"unexpected {type(data).__name__} in a cache entry")


def _read(folder: int, name: str, ident: str) -> Flow | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
        with os.fdopen(fd, "rb") as fh:
            stored_ident, deps, data = marshal.load(fh)
        if stored_ident != ident or _signature([d[0] for d in deps]) != deps:
            return None
        flow = load_value(data)
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
        return None
    return flow if isinstance(flow, Flow) else None


def _write(folder: int, name: str, ident: str, deps: Signature, flow: Flow) -> None:
    tmp = f"{name}.{os.getpid()}.tmp"
    try:
        data = marshal.dumps((ident, deps, dump_value(flow)))
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder
        )
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except (OSError, ValueError, TypeError):  # not cacheable or not writable: no cache, same flow
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)


def _load_checked(path: str) -> Flow:
    """A cache miss: load the flow with every lint rule (`consent_ivr.lint.check.load_checked`),
    R18 against the evidence store the call will write to ($CONSENT_IVR_STORE). Not the
    whole-flow proof: its verdict depends on the flow's shape and the engine, not on its words,
    and `validate`, `lint` and the FastAGI server run it; here it would be dead air."""
    from consent_ivr.lint.check import load_checked

    opened: list[Any] = []

    def versions() -> Any:
        from consent_ivr.paths import store_location
        from consent_ivr.store import open_store

        opened.append(open_store(store_location()))
        return opened[-1]

    try:
        return load_checked(path, store=versions)[0]
    finally:
        for store in opened:
            with contextlib.suppress(Exception):
                store.close()


def load_flow_cached(flow_path: str | os.PathLike[str]) -> Flow:
    """A flow checked as `lint.check.load_checked` checks it, from a cache; raises `FlowError`
    with every finding when the flow has an error."""
    path = os.fspath(flow_path)
    cache_path = _cache_path()
    folder = _open_private_dir(cache_path) if cache_path else None
    try:
        ident = _ident(path) if folder is not None else ""
        name = _entry_name(ident)
        if folder is not None:
            cached = _read(folder, name, ident)
            if cached is not None:
                return cached
        flow = _load_checked(path)
        if folder is not None:
            deps = _signature(_dependencies(flow, path))
            if deps is not None and _as_loaded(flow, path, deps):
                _write(folder, name, ident, deps, flow)
        return flow
    finally:
        if folder is not None:
            os.close(folder)
