"""The process-AGI flow cache: a hit equals a fresh load; a change or an unsafe folder reloads."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import consent_ivr
from consent_ivr.cli.sounds import approve_recordings
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import load_flow
from consent_ivr.paths import PROJECT_ROOT
from consent_ivr.transports import flowcache as cache
from flowkit import copy_example_flows


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(PROJECT_ROOT / "sounds", tmp_path / "sounds")
    copy_example_flows(tmp_path)
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    folder = tmp_path / "cache"
    monkeypatch.setenv("CONSENT_IVR_CACHE", str(folder))
    return tmp_path


def test_a_cache_hit_equals_a_fresh_load(copy: Path) -> None:
    path = copy / "call-tracking.yaml"
    first = cache.load_flow_cached(path)
    assert len(list((copy / "cache").glob("*.flow"))) == 1
    again = cache.load_flow_cached(path)
    assert again == first == load_flow(path)


def test_a_changed_audio_file_is_not_served_from_the_cache(copy: Path, monkeypatch) -> None:
    path = copy / "call-tracking.yaml"
    cache.load_flow_cached(path)
    wav = copy / "sounds" / "de" / "call-tracking" / "who.wav"
    wav.write_bytes(wav.read_bytes() + b"\0\0")
    os.utime(wav, ns=(1, 1))
    calls = []
    real = cache._load_checked

    def spy(p: str) -> object:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(cache, "_load_checked", spy)
    # loaded again (not served from the cache), and refused: the bytes are not the audio the
    # manifest approved for the text (R13)
    with pytest.raises(FlowError, match="not the audio made or approved for this text"):
        cache.load_flow_cached(path)
    assert calls == [str(path)]


def test_a_format_file_rewritten_in_place_is_not_served_from_the_cache(copy: Path) -> None:
    # who.g722 (sounds: formats: [wav, alaw, g722]) rewritten: its folder's mtime stays, so only
    # the file's own stamp tells; the reload finds it differs from the manifest (R13)
    path = copy / "call-tracking.yaml"
    cache.load_flow_cached(path)
    g722 = copy / "sounds" / "de" / "call-tracking" / "who.g722"
    data = bytearray(g722.read_bytes())
    data[0] ^= 0x55
    g722.write_bytes(bytes(data))
    with pytest.raises(FlowError, match=r"who\.g722 is not the audio made or approved"):
        cache.load_flow_cached(path)


def test_a_replaced_audio_file_of_the_same_size_and_mtime_is_not_served_from_the_cache(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rsync -t / cp -p of other audio of the same length: only the inode tells; the reload
    # finds the bytes differ from the manifest (R13), so no call plays them
    path = copy / "call-tracking.yaml"
    cache.load_flow_cached(path)
    wav = copy / "sounds" / "de" / "call-tracking" / "who.wav"
    st = os.stat(wav)
    data = bytearray(wav.read_bytes())
    data[-2:] = b"\x01\x02"  # other audio, same size
    replacement = wav.with_suffix(".new")
    replacement.write_bytes(bytes(data))
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, wav)
    with pytest.raises(FlowError, match="not the audio made or approved for this text"):
        cache.load_flow_cached(path)
    # approved as a recording of the same text, the new file is what the flow pins
    approve_recordings(path, ["who"], "de", copy / "sounds")
    after = cache.load_flow_cached(path)
    who = next(p for p in after.all_prompts() if p.id == "who")
    assert who.audio_sha256["de"] == hashlib.sha256(bytes(data)).hexdigest()
    assert who.audio_file["de"][0] == os.stat(wav).st_ino


def test_another_format_added_next_to_a_cached_prompt_is_refused(copy: Path) -> None:
    from consent_ivr.flow.diagnostics import FlowError

    path = copy / "call-tracking.yaml"
    cache.load_flow_cached(path)
    (copy / "sounds" / "de" / "call-tracking" / "who.sln").write_bytes(b"\0" * 1600)
    with pytest.raises(FlowError, match=r"who\.sln could be played instead of"):
        cache.load_flow_cached(path)


def _cache_filled_while(copy: Path, monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Fill the cache with a load during which `change()` happened (just after the loader had
    read and listed everything), then drop the patch but keep the copy's environment."""
    real = cache._load_checked

    def load_then_change(p: str) -> object:
        flow = real(p)
        change()
        return flow

    monkeypatch.setattr(cache, "_load_checked", load_then_change)
    cache.load_flow_cached(copy / "call-tracking.yaml")
    monkeypatch.undo()
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(copy / "sounds"))
    monkeypatch.setenv("CONSENT_IVR_CACHE", str(copy / "cache"))


def test_audio_replaced_while_the_flow_loads_is_not_cached_with_the_old_hash(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav = copy / "sounds" / "de" / "call-tracking" / "who.wav"

    def rebuild() -> None:  # a sounds build (file and manifest), just after the hashing
        data = bytearray(wav.read_bytes())
        data[-2:] = b"\x01\x02"
        wav.with_suffix(".new").write_bytes(bytes(data))
        os.replace(wav.with_suffix(".new"), wav)
        approve_recordings(copy / "call-tracking.yaml", ["who"], "de", copy / "sounds")

    _cache_filled_while(copy, monkeypatch, rebuild)
    again = cache.load_flow_cached(copy / "call-tracking.yaml")  # not new file + old hash
    who = next(p for p in again.all_prompts() if p.id == "who")
    st = os.stat(wav)
    assert who.audio_file["de"] == (st.st_ino, st.st_size, st.st_mtime_ns)


def test_another_format_added_while_the_flow_loads_is_not_cached_as_valid(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consent_ivr.flow.diagnostics import FlowError

    gsm = copy / "sounds" / "de" / "call-tracking" / "who.gsm"
    _cache_filled_while(copy, monkeypatch, lambda: gsm.write_bytes(b"\0" * 330))
    with pytest.raises(FlowError, match=r"who\.gsm could be played instead"):
        cache.load_flow_cached(copy / "call-tracking.yaml")


def test_a_folder_changed_while_the_flow_loads_is_not_cached_with_its_old_identity(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call fails when its prompt folder differs from the load: a cached stale folder
    # identity would fail every call.
    folder = copy / "sounds" / "de" / "call-tracking"
    _cache_filled_while(copy, monkeypatch, lambda: (folder / "NOTES.txt").write_text("studio B"))
    again = cache.load_flow_cached(copy / "call-tracking.yaml")
    st = os.stat(folder)
    assert all(p.audio_dir["de"] == (st.st_ino, st.st_mtime_ns) for p in again.all_prompts())


def test_a_folder_others_can_write_is_never_read(copy: Path) -> None:
    folder = copy / "cache"
    folder.mkdir()
    folder.chmod(0o777)
    assert cache.cache_dir() is None
    cache.load_flow_cached(copy / "call-tracking.yaml")
    assert list(folder.iterdir()) == []


def test_cache_off(copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_IVR_CACHE", "off")
    assert cache.cache_dir() is None


def folder_key(folder: Path) -> bytes:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        key = cache.cache_key(fd)
    finally:
        os.close(fd)
    assert key is not None
    return key


def read_entry(entry: Path, ident: str) -> object:
    key = folder_key(entry.parent)
    folder = os.open(entry.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return cache._read(folder, entry.name, ident, key)
    finally:
        os.close(folder)


def entry_content(entry: Path, folder: Path | None = None) -> Any:
    """(ident, deps, data) of a valid entry (of the cache `folder`, default: where it is)."""
    import marshal

    payload = cache.unseal(folder_key(folder or entry.parent), entry.read_bytes())
    assert payload is not None
    return marshal.loads(payload)


def write_entry(entry: Path, content: Any) -> None:
    """An entry with a valid MAC, as only the engine (or a test holding its key) can write."""
    import marshal

    entry.write_bytes(cache.seal(folder_key(entry.parent), marshal.dumps(content)))


def test_a_corrupt_cache_entry_is_ignored_and_replaced(copy: Path) -> None:
    path = copy / "call-tracking.yaml"
    fresh = cache.load_flow_cached(path)
    (entry,) = (copy / "cache").glob("*.flow")
    entry.write_bytes(b"\x00garbage")
    assert cache.load_flow_cached(path) == fresh
    assert read_entry(entry, cache._ident(str(path))) == fresh  # rewritten, valid again


def test_an_entry_naming_a_class_outside_the_model_is_never_rebuilt(copy: Path) -> None:

    path = copy / "call-tracking.yaml"
    fresh = cache.load_flow_cached(path)
    (entry,) = (copy / "cache").glob("*.flow")
    ident, deps, _data = entry_content(entry)
    write_entry(entry, (ident, deps, ("R", "Popen", (("T", ("id",)),))))
    assert read_entry(entry, ident) is None
    assert cache.load_flow_cached(path) == fresh


def test_every_example_flow_survives_the_cache_round_trip() -> None:
    from consent_ivr.paths import flow_files, flows_path

    for path in flow_files(flows_path()):
        flow = load_flow(path)
        assert cache.load_value(cache.dump_value(flow)) == flow


def test_a_symlinked_cache_folder_is_never_used(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = copy / "elsewhere"
    real.mkdir(mode=0o700)
    (copy / "link").symlink_to(real)
    monkeypatch.setenv("CONSENT_IVR_CACHE", str(copy / "link"))
    assert cache.cache_dir() is None
    cache.load_flow_cached(copy / "call-tracking.yaml")
    assert list(real.iterdir()) == []


def test_a_symlinked_entry_is_never_followed(copy: Path) -> None:

    path = copy / "call-tracking.yaml"
    cache.load_flow_cached(path)
    (entry,) = (copy / "cache").glob("*.flow")
    planted = copy / "planted.flow"
    planted.write_bytes(entry.read_bytes())
    ident, _deps, _data = entry_content(planted, entry.parent)
    entry.unlink()
    entry.symlink_to(planted)
    assert read_entry(entry, ident) is None


def test_a_changed_model_loader_or_lint_rule_invalidates_every_entry(copy: Path) -> None:

    path = copy / "call-tracking.yaml"
    fresh = cache.load_flow_cached(path)
    (entry,) = (copy / "cache").glob("*.flow")
    ident, deps, data = entry_content(entry)
    code = {d for d, _m, _s, _i in deps if d.endswith(".py")}
    names = {os.path.basename(d) for d in code}
    assert names >= {"model.py", "loader.py", "flowcache.py", "rules_choice.py", "check.py"}
    assert any(d.endswith("lint/cues/de.yaml") for d, _m, _s, _i in deps)  # a cue table too
    assert "notice_sha256" in ident  # the record layout is part of the ident
    older = tuple((d, m - 1 if d in code else m, s, i) for d, m, s, i in deps)  # code changed
    write_entry(entry, (ident, older, data))
    assert read_entry(entry, ident) is None
    assert cache.load_flow_cached(path) == fresh


def test_every_module_the_loader_decides_a_flow_with_is_a_dependency_of_every_entry(
    copy: Path,
) -> None:
    """The loader's modules (schema walk, section checks, audio check, ...) and the WAV reader:
    a change in any of them may change which flows are valid, so it must invalidate the cache."""
    agi = Path(consent_ivr.__file__).parent.parent
    code = "import sys, consent_ivr.flow.loader; print(*(m.__file__ for m in sys.modules.values()"
    code += " if m.__name__.startswith('consent_ivr.') and getattr(m, '__file__', None)))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(agi)},
        timeout=60,
        check=True,
    )
    loaded = {os.path.realpath(f) for f in done.stdout.split()}
    decide = {
        f
        for f in loaded
        if os.path.dirname(f) == os.path.realpath(agi / "consent_ivr" / "flow")
        and not f.endswith("__init__.py")
    } | {os.path.realpath(agi / "consent_ivr" / "wav.py")}
    assert {os.path.basename(f) for f in decide} >= {"loader.py", "schema.py", "audio.py"}
    cache.load_flow_cached(copy / "call-tracking.yaml")
    (entry,) = (copy / "cache").glob("*.flow")
    _ident, deps, _data = entry_content(entry)
    assert decide - {os.path.realpath(d) for d, _m, _s, _i in deps} == set()


def test_a_value_the_cache_cannot_hold_is_refused_not_converted() -> None:
    from enum import StrEnum

    class Other(StrEnum):
        A = "a"

    with pytest.raises(TypeError):
        cache.dump_value(Other.A)
    with pytest.raises(TypeError):
        cache.dump_value(1.5)


def _flip_accept_key(entry: Path) -> None:
    """Change one bit of the entry so that, read as it is, it says accept key 5 (0x31 -> 0x35)."""
    import marshal

    from consent_ivr.flow.model import Flow

    def flow_in(data: bytes) -> Flow | None:
        try:
            _ident, _deps, value = marshal.loads(data)
            flow = cache.load_value(value)
        except Exception:
            return None
        return flow if isinstance(flow, Flow) else None

    data = entry.read_bytes()
    # the marshalled part, after any header the entry has
    start = next(i for i in range(len(data)) if flow_in(data[i:]) is not None)
    for at in (i for i in range(start, len(data)) if data[i] == 0x31):
        flipped = data[:at] + bytes([data[at] ^ 0x04]) + data[at + 1 :]
        flow = flow_in(flipped[start:])
        if flow is not None and flow.choice.keys.accept == "5":
            entry.write_bytes(flipped)
            return
    raise AssertionError("no single bit of the entry holds the accept key")


def test_an_entry_with_one_bit_changed_is_never_used(copy: Path) -> None:
    path = copy / "call-tracking.yaml"
    fresh = cache.load_flow_cached(path)
    (entry,) = (copy / "cache").glob("*.flow")
    stamp = os.stat(entry)
    _flip_accept_key(entry)
    os.utime(entry, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the flow's files are unchanged
    again = cache.load_flow_cached(path)
    assert again.choice.keys.accept == "1"
    assert again == fresh == load_flow(path)


@given(key=st.binary(min_size=0, max_size=64), data=st.binary(max_size=300))
def test_the_entry_mac_is_hmac_sha256(key: bytes, data: bytes) -> None:
    import hmac

    assert cache.mac(key, data) == hmac.new(key, data, "sha256").digest()


def test_the_mac_key_is_made_once_private_and_kept(copy: Path) -> None:
    cache.load_flow_cached(copy / "call-tracking.yaml")
    key_file = copy / "cache" / cache.KEY_FILE
    st_key = key_file.lstat()
    assert stat.S_ISREG(st_key.st_mode) and stat.S_IMODE(st_key.st_mode) == 0o600
    assert st_key.st_size == cache.KEY_BYTES
    key = key_file.read_bytes()
    cache.load_flow_cached(copy / "call-tracking.yaml")
    assert key_file.read_bytes() == key == folder_key(copy / "cache")
    assert [p.name for p in (copy / "cache").iterdir() if p.name.endswith(".tmp")] == []


def test_an_entry_without_a_mac_is_a_miss(copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import marshal

    path = copy / "call-tracking.yaml"
    fresh = cache.load_flow_cached(path)
    (entry,) = (copy / "cache").glob("*.flow")
    entry.write_bytes(marshal.dumps(entry_content(entry)))  # the previous format: no MAC
    calls: list[object] = []
    real = cache._load_checked
    monkeypatch.setattr(cache, "_load_checked", lambda p: calls.append(p) or real(p))
    assert cache.load_flow_cached(path) == fresh
    assert calls == [str(path)]


def test_a_key_file_that_is_a_symlink_is_never_read_and_is_replaced(copy: Path) -> None:
    path = copy / "call-tracking.yaml"
    fresh = cache.load_flow_cached(path)
    folder = copy / "cache"
    (entry,) = folder.glob("*.flow")
    ident, deps, _data = entry_content(entry)
    known = copy / "known.key"  # a key someone else knows, planted through a symlink
    known.write_bytes(b"k" * cache.KEY_BYTES)
    known.chmod(0o600)
    (folder / cache.KEY_FILE).unlink()
    (folder / cache.KEY_FILE).symlink_to(known)
    forged = fresh._replace(
        choice=fresh.choice._replace(keys=fresh.choice.keys._replace(accept="5"))
    )
    import marshal

    payload = marshal.dumps((ident, deps, cache.dump_value(forged)))
    entry.write_bytes(cache.seal(known.read_bytes(), payload))
    again = cache.load_flow_cached(path)
    assert again.choice.keys.accept == "1" and again == fresh
    assert not (folder / cache.KEY_FILE).is_symlink()
    assert (folder / cache.KEY_FILE).read_bytes() != known.read_bytes()


def test_a_key_file_of_the_wrong_size_is_replaced_and_its_entries_are_misses(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy / "call-tracking.yaml"
    fresh = cache.load_flow_cached(path)
    key_file = copy / "cache" / cache.KEY_FILE
    key_file.write_bytes(b"short")
    calls: list[object] = []
    real = cache._load_checked
    monkeypatch.setattr(cache, "_load_checked", lambda p: calls.append(p) or real(p))
    assert cache.load_flow_cached(path) == fresh
    assert calls == [str(path)]
    assert len(key_file.read_bytes()) == cache.KEY_BYTES
    assert cache.load_flow_cached(path) == fresh and calls == [str(path)]  # a hit again
