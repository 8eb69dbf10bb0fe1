"""`--uninstall`: the steps that remove what the manifest names and is still as it was written —
never the key, never the evidence folder."""

from __future__ import annotations

import os
import shutil

from consent_ivr.install.files import Step, Undo, include_lines, read, read_manifest, write
from consent_ivr.install.plan import Options
from consent_ivr.install.steps import Changes, remove_empty_dirs, remove_files, remove_links


def uninstall_steps(options: Options) -> tuple[list[Step], list[str]]:
    """The steps that remove what the manifest in `options.config_dir` names (never the key or
    the evidence); only the settings folder of `options` is used."""
    old = read_manifest(options.manifest)
    if old is None:
        return [], [f"nothing to uninstall: no manifest {options.manifest}"]
    p = Changes(options, old, None)
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
    before = read(options.manifest)

    def forget() -> Undo:
        os.unlink(options.manifest)
        return lambda: write(options.manifest, before, 0o644)

    # the manifest goes before the folders: its own folder may be one of them
    first_rmdir = next((i for i, s in enumerate(p.steps) if s.verb == "rmdir"), len(p.steps))
    p.steps.insert(first_rmdir, Step("remove", options.manifest, "(the manifest)", forget,
                                     options.config_dir))  # fmt: skip
    kept = [k for k in (old.key or options.key_file, *old.kept) if os.path.exists(k)]
    if kept:
        notes.append(f"kept {', '.join(kept)}: the key and the evidence are never removed")
    return p.steps, notes


def _remove_include(p: Changes, conf: str, name: str) -> list[str]:
    try:
        text = read(conf).decode("utf-8")
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
