"""A cache of validated flows for process AGI, so a call does not re-parse YAML and re-hash audio.

A cache entry is the pickled `Flow` plus the (mtime, size) of every file it was built from (the
YAML, the sound manifest, every audio file). It is used only if all of them are unchanged, and
only from a private folder (owned by this user, mode 0700): unpickling is code execution, so a
folder anyone else could write to is never read. Any doubt means: load and validate normally.
``CONSENT_IVR_CACHE`` names the folder (``off`` disables); default ``<tmp>/consent-ivr-<uid>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import sys
from pathlib import Path

from consent_ivr import __version__
from consent_ivr.flow.model import Flow

Signature = tuple[tuple[str, int, int], ...]


def cache_dir() -> Path | None:
    setting = os.environ.get("CONSENT_IVR_CACHE", "")
    if setting.lower() == "off":
        return None
    tmp = os.environ.get("TMPDIR") or "/tmp"  # not tempfile: it costs ms at every AGI start
    path = Path(setting) if setting else Path(tmp) / f"consent-ivr-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
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


def _entry(folder: Path, flow_path: Path) -> Path:
    from consent_ivr.paths import sounds_dir

    ident = f"{flow_path.resolve()}|{sounds_dir().resolve()}|{__version__}|{sys.version}"
    return folder / (hashlib.sha256(ident.encode()).hexdigest()[:32] + ".flow")


def _dependencies(flow: Flow, flow_path: Path) -> list[str]:
    from consent_ivr.paths import sounds_dir

    deps = [str(flow_path.resolve()), str(sounds_dir() / f"{flow.id}.manifest.json")]
    for prompt in flow.all_prompts():
        deps += [prompt.audio[lang] for lang in flow.languages]
    return deps


def load_flow_cached(flow_path: Path) -> Flow:
    """`load_flow` with a cache; raises `FlowError` exactly as `load_flow` does."""
    folder = cache_dir()
    entry = _entry(folder, flow_path) if folder else None
    if entry is not None:
        try:
            with open(entry, "rb") as fh:
                flow, deps = pickle.load(fh)
            if isinstance(flow, Flow) and _signature([d for d, _m, _s in deps]) == deps:
                return flow
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
            pass
    from consent_ivr.flow.loader import load_flow

    flow = load_flow(flow_path)
    if entry is not None:
        deps = _signature(_dependencies(flow, flow_path))
        if deps is not None:
            tmp = entry.with_suffix(f".{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    pickle.dump((flow, deps), fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, entry)
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    return flow
