"""The FastAGI server's flows: every valid flow of a folder by id, reloaded as one table.

A reload loads and checks the files off the event loop (`FlowRegistry.load`, any thread) and swaps
the table in one assignment on the loop (`FlowRegistry.apply`): a call sees the old table or the
new one, and keeps the `Flow` it started with. A file that fails keeps its previous version while
that version's audio is intact. With the server's `AudioWatch`, each version loaded (or kept) is
registered with it as it is loaded, and a call gets that version's `FlowWatch` (`audio_watch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

from consent_ivr.evidence.store import open_store
from consent_ivr.flow.audiofiles import PathStamp, audio_intact, path_stamp
from consent_ivr.flow.audiowatch import AudioWatch, FlowWatch
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.model import Flow
from consent_ivr.lint.check import load_checked
from consent_ivr.paths import flow_files, sounds_dir


def _stat_all(paths: list[Path]) -> Stamp:
    return tuple(s for s in map(path_stamp, paths) if s is not None)  # a file gone: left out


#: What a reload compares: (path, mtime ns, size, inode) of every file the flows depend on.
Stamp = tuple[PathStamp, ...]


@dataclasses.dataclass(frozen=True)
class LoadedFlows:
    """A flow table loaded off the event loop, ready to be swapped in."""

    stamp: Stamp
    by_file: dict[Path, Flow]
    flows: dict[str, Flow]
    errors: list[str]
    #: flow id -> (the version, its watch), for the versions registered with the audio watch
    watches: dict[str, tuple[Flow, FlowWatch]] = dataclasses.field(default_factory=dict)


class FlowRegistry:
    """Every valid flow of a folder by id; reloads swap the whole table at once."""

    def __init__(
        self, flows_dir: Path, log: Any, store_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.flows_dir = flows_dir
        self.log = log
        #: the evidence store the linter asks which versions it already holds (R18)
        self.store_path = store_path
        self._flows: dict[str, Flow] = {}
        self._by_file: dict[Path, Flow] = {}
        self._stamp: Stamp = ()
        #: the server's watch on the flows' audio (None: every play is checked by `stat`)
        self.audio: AudioWatch | None = None
        self._watches: dict[str, tuple[Flow, FlowWatch]] = {}

    def get(self, flow_id: str) -> Flow | None:
        return self._flows.get(flow_id)

    def audio_watch(self, flow: Flow) -> FlowWatch | None:
        """The audio watch of this very version of a flow (None: its plays are stat'ed)."""
        entry = self._watches.get(flow.id)
        return entry[1] if entry is not None and entry[0] is flow else None

    @property
    def flows(self) -> dict[str, Flow]:
        return dict(self._flows)

    def _files(self) -> list[Path]:
        return [Path(p) for p in flow_files(str(self.flows_dir))]

    def _current_stamp(self) -> Stamp:
        """(path, mtime ns, size, inode) of every flow file, sound manifest, audio folder of a
        flow (`<sounds>/<lang>/<flow id>`, one per manifest) and file in it: a rebuilt prompt,
        or another format of one added next to it, reloads the flows (R13)."""
        root = sounds_dir()
        manifests = sorted(root.glob("*.manifest.json"))
        paths: list[Path] = [*self._files(), *manifests]
        folders = {
            folder
            for manifest in manifests
            for folder in root.glob(f"*/{manifest.name.removesuffix('.manifest.json')}")
        }
        # and the folders of the flows in use, even if their manifest is gone
        folders.update(
            Path(os.path.dirname(path))
            for flow in self._flows.values()
            for prompt in flow.all_prompts()
            for path in prompt.audio.values()
            if path
        )
        for folder in sorted(folders):
            paths.append(folder)
            with contextlib.suppress(OSError):
                paths += sorted(folder.iterdir())  # a sub-folder's own files: via its mtime
        return _stat_all(paths)

    def changed(self) -> bool:
        return self._current_stamp() != self._stamp

    def load(self) -> LoadedFlows:
        """Load and validate every flow file; a file that fails keeps its previous version.
        Any thread: it only reads the current table, which `apply` replaces on the loop."""
        stamp = self._current_stamp()  # before loading: a change while loading reloads again
        errors: list[str] = []
        by_file: dict[Path, Flow] = {}
        opened: list[Any] = []

        def versions() -> Any:  # opened on first use, in this thread, closed below
            if not opened and self.store_path is not None:
                opened.append(open_store(os.fspath(self.store_path)))
            return opened[0] if opened else None

        try:
            for path in self._files():
                self._load_one(path, by_file, errors, versions)
        finally:
            for store in opened:
                with contextlib.suppress(Exception):
                    store.close()
        flows: dict[str, Flow] = {}
        for path, flow in by_file.items():
            if flow.id in flows:
                errors.append(f"{path}: flow id {flow.id} is defined twice; the first file wins")
                self.log.error("flows.duplicate_id", file=str(path), flow=flow.id)
                continue
            flows[flow.id] = flow
        watches: dict[str, tuple[Flow, FlowWatch]] = {}
        if self.audio is not None:  # each version afresh: its own identities, its own watch
            for flow in flows.values():
                try:
                    watches[flow.id] = (flow, self.audio.watch_flow(flow))
                except Exception as exc:  # not watched: its plays are stat'ed
                    self.log.error("flows.audio_watch_failed", flow=flow.label, error=repr(exc))
        return LoadedFlows(stamp, by_file, flows, errors, watches)

    def rewatch_dirty(self) -> dict[str, tuple[Flow, FlowWatch]]:
        """Any thread: the current flows whose audio watch lost its proof while their files
        stayed as they were (an event that changed nothing the stats see: a hard link made
        elsewhere, a mount elsewhere, a queue overflow), watched and verified afresh; without
        this, one such event would leave every later play to the stats until a reload."""
        fresh: dict[str, tuple[Flow, FlowWatch]] = {}
        if self.audio is None:
            return fresh
        for flow_id, (flow, watch) in list(self._watches.items()):
            if watch.dirty:
                with contextlib.suppress(Exception):  # still dirty: the stats go on
                    fresh[flow_id] = (flow, self.audio.watch_flow(flow))
        return fresh

    def apply_watches(self, fresh: dict[str, tuple[Flow, FlowWatch]]) -> None:
        """On the loop: take the fresh watches of the versions still current (calls already
        running keep the watch they started with)."""
        for flow_id, entry in fresh.items():
            if self._flows.get(flow_id) is entry[0]:
                self._watches[flow_id] = entry

    def _load_one(
        self, path: Path, by_file: dict[Path, Flow], errors: list[str], versions: Any
    ) -> None:
        """Load one file with every lint rule and the proof (`load_checked`); a file that fails
        keeps its previous version while that version's audio is intact."""
        try:
            by_file[path] = load_checked(path, store=versions, run_proof=True)[0]
        except FlowError as exc:
            errors.append(str(exc))
            old = self._by_file.get(path)
            # the old version keeps serving only while its audio is still what it hashed:
            # otherwise its calls would play other audio than their evidence names
            broken = audio_intact(old) if old is not None else None
            self.log.error(
                "flows.rejected",
                file=str(path),
                error=str(exc),
                keeps=old.label if old and not broken else None,
                dropped=f"{old.label}: {broken}" if old and broken else None,
            )
            if old is not None and not broken:
                by_file[path] = old

    def apply(self, loaded: LoadedFlows) -> list[str]:
        """Swap in a loaded table (one assignment: a call sees the old table or the new one)."""
        self._stamp = loaded.stamp
        self._by_file = loaded.by_file
        self._flows = loaded.flows
        self._watches = loaded.watches
        self.log.info("flows.loaded", flows=sorted(f.label for f in loaded.flows.values()))
        return loaded.errors

    def reload(self) -> list[str]:
        """Load and swap in one step (start-up, before any call). Returns the errors."""
        return self.apply(self.load())
