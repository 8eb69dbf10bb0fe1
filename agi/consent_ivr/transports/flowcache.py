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

Each entry is bound to its content: it starts with an HMAC-SHA256 of the rest under a key only
the engine makes, checked before anything else is read; a missing or wrong MAC, or a key that
cannot be read, is a miss. The stamps alone would serve an entry whose bytes changed (one bit
moved a flow's accept key to 5 while the record still named the YAML's hash), and `marshal` must
never see bytes the engine did not write (it is not safe against malformed data). The key is 32
random bytes in the file ``key`` of the cache folder, made on first use (written to a temporary
name with ``O_EXCL|O_NOFOLLOW``, mode 0600, then linked into place, so no reader sees half a
key) and read through the folder's descriptor without following symlinks; one that is not a
private regular file of ours of the right size is replaced. It is not derived from the pseudonym
key: the gate and tracking steps load flows without that key, the caller-pseudonym secret stays
used for that one purpose, and a rotation of it need not touch the cache. What this guards
against: a changed or torn entry (a flipped bit, a partial write, a disk error) and entries from
elsewhere (another host, a restored backup: another key). Whoever can write into the private
folder can also read the key, as can anyone who can run code as this user, who could as well
edit the flows; no key this process can read would stop them.

This module runs before the first prompt of every process-AGI call: it uses `os.path`, a 64-bit
FNV-1a hash (for the entry's file name) and the C SHA-256 module behind hashlib (0.3 ms to
import, where hashlib loads OpenSSL: 3-4 ms) with RFC 2104's two hashes written out, rather than
pathlib, hashlib and hmac. An entry is read whole and unmarshalled from memory. (One file of
about 430 lines for that reason: each further module would be one more import before the first
prompt.)
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
from consent_ivr.paths import flow_files

try:  # the C SHA-256 behind hashlib (Python 3.11), without OpenSSL's import cost
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - other Pythons
    try:  # Python 3.12+
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # a build without the builtin hashes
        from hashlib import sha256 as _sha256
from _operator import _compare_digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Signature = tuple[PathStamp, ...]

#: Bump when the entry layout changes; entries of other formats are ignored.
FORMAT = 5

#: The MAC key's file in the cache folder, its size, and the size of an entry's MAC.
KEY_FILE = "key"
KEY_BYTES = 32
MAC_BYTES = 32
_IPAD = bytes(b ^ 0x36 for b in range(256))  # RFC 2104: key XOR ipad / opad, as tables
_OPAD = bytes(b ^ 0x5C for b in range(256))

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
        model.Returning,
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


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of `data` under `key` (at most one SHA-256 block, 64 bytes)."""
    block = key.ljust(64, b"\0")
    inner = _sha256(block.translate(_IPAD))
    inner.update(data)
    return bytes(_sha256(block.translate(_OPAD) + inner.digest()).digest())


def _read_key(folder: int) -> bytes | None:
    """The key in the folder if it is a private regular file of ours of the right size."""
    try:
        fd = os.open(KEY_FILE, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        private = st.st_uid == os.getuid() and not st.st_mode & 0o077
        if not (stat.S_ISREG(st.st_mode) and private and st.st_size == KEY_BYTES):
            return None
        key = os.read(fd, KEY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return key if len(key) == KEY_BYTES else None


def cache_key(folder: int) -> bytes | None:
    """The folder's MAC key, made on first use (and remade if it is not a valid key file);
    None if there is none to be had (the cache is then not used)."""
    key = _read_key(folder)
    if key is not None:
        return key
    missing = False
    try:
        os.stat(KEY_FILE, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        missing = True
    except OSError:
        return None
    tmp = f"{KEY_FILE}.{os.getpid()}.tmp"
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder
        )
        try:
            os.write(fd, os.urandom(KEY_BYTES))
        finally:
            os.close(fd)
        if missing:  # two first calls at once: the first link wins, both read that key
            with contextlib.suppress(FileExistsError):
                os.link(tmp, KEY_FILE, src_dir_fd=folder, dst_dir_fd=folder)
        else:  # not a key of ours (wrong size, mode, owner or type): replace it whole
            os.replace(tmp, KEY_FILE, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
    return _read_key(folder)


def seal(key: bytes, payload: bytes) -> bytes:
    """An entry's bytes: the MAC of the payload, then the payload."""
    return mac(key, payload) + payload


def unseal(key: bytes, blob: bytes) -> bytes | None:
    """The payload of an entry's bytes, or None unless its MAC is right."""
    payload = blob[MAC_BYTES:]
    if len(blob) <= MAC_BYTES or not _compare_digest(blob[:MAC_BYTES], mac(key, payload)):
        return None
    return payload


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


#: The code an entry depends on besides the flow's files: a changed model, loader (its schema
#: walk, section checks, cross-section pass and audio check), notice, audio rules, WAV reader,
#: lint rule or cue table, or this cache, invalidates every entry (records are rebuilt by
#: position; a rule may now refuse what it let pass).
_FLOW_DIR = os.path.dirname(model.__file__)
_LINT_DIR = os.path.join(os.path.dirname(_FLOW_DIR), "lint")
_FLOW_FILES = (
    "model.py",
    "loader.py",
    "schema.py",
    "sections.py",
    "purposes.py",
    "choice.py",
    "returning.py",
    "cross.py",
    "audio.py",
    "notice.py",
    "diagnostics.py",
    "audiofiles.py",
)
_CODE_FILES = (
    *(os.path.join(_FLOW_DIR, n) for n in _FLOW_FILES),
    os.path.join(os.path.dirname(_FLOW_DIR), "wav.py"),
    os.path.join(os.path.dirname(_FLOW_DIR), "paths.py"),  # which files of a folder are flows
    os.path.realpath(__file__),
    *sorted(
        os.path.join(folder, n)
        for folder in (_LINT_DIR, os.path.join(_LINT_DIR, "cues"))
        for n in os.listdir(folder)
        if n.endswith((".py", ".yaml"))
    ),
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
        deps += flow_files(folder)
    folders: set[str] = set()
    for prompt in flow.all_prompts():
        deps += [prompt.audio[lang] for lang in flow.languages]
        deps += [path for files in prompt.format_files.values() for path, _ident in files]
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
    hashed.update(
        (path, ident)
        for prompt in flow.all_prompts()
        for files in prompt.format_files.values()
        for path, ident in files
    )
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


def _read(folder: int, name: str, ident: str, key: bytes) -> Flow | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
        with os.fdopen(fd, "rb") as fh:
            payload = unseal(key, fh.read())
        if payload is None:  # changed, torn, from elsewhere, or of an older format
            return None
        stored_ident, deps, data = marshal.loads(payload)
        if stored_ident != ident or _signature([d[0] for d in deps]) != deps:
            return None
        flow = load_value(data)
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
        return None
    return flow if isinstance(flow, Flow) else None


def _write(folder: int, name: str, ident: str, deps: Signature, flow: Flow, key: bytes) -> None:
    tmp = f"{name}.{os.getpid()}.tmp"
    try:
        data = seal(key, marshal.dumps((ident, deps, dump_value(flow))))
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
        from consent_ivr.evidence.store import open_store
        from consent_ivr.paths import store_location

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
        key = cache_key(folder) if folder is not None else None
        ident = _ident(path) if key is not None else ""
        name = _entry_name(ident)
        if folder is not None and key is not None:
            cached = _read(folder, name, ident, key)
            if cached is not None:
                return cached
        flow = _load_checked(path)
        if folder is not None and key is not None:
            deps = _signature(_dependencies(flow, path))
            if deps is not None and _as_loaded(flow, path, deps):
                _write(folder, name, ident, deps, flow, key)
        return flow
    finally:
        if folder is not None:
            os.close(folder)
