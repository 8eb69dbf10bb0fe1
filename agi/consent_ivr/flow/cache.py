"""A cache of validated flows for process AGI, so a call does not re-parse YAML and re-hash audio.

A cache entry holds the `Flow` as plain data (`marshal`: built into the interpreter, nothing to
import; rebuilt here into the model's record classes and nothing else) plus the (mtime, size) of
every file it was built from (the YAML, the sound manifest, every audio file). It is used only if
all of them are unchanged, and only from a private folder (owned by this user, mode 0700), so no
other user can plant an entry. Any doubt means: load and validate normally.
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
from consent_ivr.flow.model import Flow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Signature = tuple[tuple[str, int, int], ...]

#: Bump when the entry layout changes; entries of other formats are ignored.
FORMAT = 2

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
    setting = os.environ.get("CONSENT_IVR_CACHE", "")
    if setting.lower() == "off":
        return None
    tmp = os.environ.get("TMPDIR") or "/tmp"  # not tempfile: it costs ms at every AGI start
    path = setting or os.path.join(tmp, f"consent-ivr-{os.getuid()}")
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        st = os.stat(path)
    except OSError:
        return None
    private = st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return path if private and stat.S_ISDIR(st.st_mode) else None


def _signature(paths: list[str]) -> Signature | None:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            return None
        out.append((p, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _ident(flow_path: str) -> str:
    from consent_ivr.paths import sounds_path

    return "|".join(
        (
            os.path.realpath(flow_path),
            os.path.realpath(sounds_path()),
            __version__,
            sys.version,
            str(FORMAT),
        )
    )


def _entry(folder: str, ident: str) -> str:
    # The name only spreads entries; the entry stores its full ident and is checked against it.
    h = 0xCBF29CE484222325
    for byte in ident.encode("utf-8", "surrogateescape"):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(folder, f"{h:016x}.flow")


def _dependencies(flow: Flow, flow_path: str) -> list[str]:
    from consent_ivr.paths import sounds_path

    deps = [os.path.realpath(flow_path), os.path.join(sounds_path(), f"{flow.id}.manifest.json")]
    for prompt in flow.all_prompts():
        deps += [prompt.audio[lang] for lang in flow.languages]
    return deps


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
    if value is None or isinstance(value, (str, int, frozenset)):
        return value
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


def _read(entry: str, ident: str) -> Flow | None:
    try:
        with open(entry, "rb") as fh:
            stored_ident, deps, data = marshal.load(fh)
        if stored_ident != ident or _signature([d for d, _m, _s in deps]) != deps:
            return None
        flow = load_value(data)
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
        return None
    return flow if isinstance(flow, Flow) else None


def load_flow_cached(flow_path: str | os.PathLike[str]) -> Flow:
    """`load_flow` with a cache; raises `FlowError` exactly as `load_flow` does."""
    path = os.fspath(flow_path)
    folder = cache_dir()
    ident = _ident(path) if folder else ""
    entry = _entry(folder, ident) if folder else None
    if entry is not None:
        cached = _read(entry, ident)
        if cached is not None:
            return cached
    from consent_ivr.flow.loader import load_flow

    flow = load_flow(flow_path)
    if entry is not None:
        deps = _signature(_dependencies(flow, path))
        if deps is not None:
            tmp = f"{entry}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as fh:
                    marshal.dump((ident, deps, dump_value(flow)), fh)
                os.replace(tmp, entry)
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    return flow
