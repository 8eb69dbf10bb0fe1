"""The FastAGI server's audio watch (R13, `flow.audiowatch`): real files, real inotify.

Every change the per-play `stat`s catch makes the watch call the folder dirty, and the runner's
check then reports it; a clean folder costs no `stat` at all; whatever the watch cannot vouch for
(a symbolic link, an overflow, a failed watch, an error, a mount) falls back to the stats.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consent_ivr.engine import Play
from consent_ivr.engine.events import Role
from consent_ivr.flow import audiowatch
from consent_ivr.flow.audiofiles import dir_ident, file_ident, format_path
from consent_ivr.flow.audiowatch import AudioWatch, FlowWatch, file_system_type
from consent_ivr.flow.model import Flow, Prompt
from consent_ivr.transports.runner import audio_changed
from flowkit import make_flow

OTHER_FORMATS = ("alaw", "g722")
AN_HOUR_AGO = time.time_ns() - 3600 * 10**9  # any write after loading gets another mtime


def _place(root: Path, prompt: Prompt) -> Prompt:
    """`prompt` with its audio in `root/<lang>/f/` (WAV and other formats), identities taken as
    the loader takes them."""
    audio, files, dirs, formats = {}, {}, {}, {}
    for lang in prompt.audio:
        folder = root / lang / "f"
        folder.mkdir(parents=True, exist_ok=True)
        wav = str(folder / f"{prompt.id}.wav")
        paths = [wav, *(format_path(wav, fmt) for fmt in OTHER_FORMATS)]
        for path in paths:
            Path(path).write_bytes(f"{prompt.id} {lang} {path[-4:]}".encode() * 40)
            os.utime(path, ns=(AN_HOUR_AGO, AN_HOUR_AGO))
        audio[lang] = wav
        files[lang] = file_ident(os.stat(wav))
        formats[lang] = tuple((p, file_ident(os.stat(p))) for p in paths[1:])
    for lang in prompt.audio:  # the folders once every file is in
        folder = root / lang / "f"
        os.utime(folder, ns=(AN_HOUR_AGO, AN_HOUR_AGO))
        dirs[lang] = dir_ident(os.stat(folder))
    return prompt._replace(audio=audio, audio_file=files, audio_dir=dirs, format_files=formats)


def flow_on_disk(root: Path) -> Flow:
    """A small flow whose every prompt is on disk in `root/<de|en>/f/` in three formats."""
    flow = make_flow(notice=(1.0,), full=(), noinput=1, nomatch=0)
    flow = flow._replace(
        notice=tuple(_place(root, p) for p in flow.notice),
        choice=flow.choice._replace(noinput=tuple(_place(root, p) for p in flow.choice.noinput)),
        questions=tuple(q._replace(prompt=_place(root, q.prompt)) for q in flow.questions),
        close={k: _place(root, p) for k, p in flow.close.items()},
    )
    return reloaded(flow)


def reloaded(flow: Flow) -> Flow:
    """The flow as a reload would load it from what is on disk now (new identities)."""

    def again(p: Prompt) -> Prompt:
        return p._replace(
            audio_file={lang: file_ident(os.stat(w)) for lang, w in p.audio.items()},
            audio_dir={lang: dir_ident(os.stat(os.path.dirname(w))) for lang, w in p.audio.items()},
            format_files={
                lang: tuple((path, file_ident(os.stat(path))) for path, _ in files)
                for lang, files in p.format_files.items()
            },
        )

    return flow._replace(
        notice=tuple(map(again, flow.notice)),
        choice=flow.choice._replace(noinput=tuple(map(again, flow.choice.noinput))),
        questions=tuple(q._replace(prompt=again(q.prompt)) for q in flow.questions),
        close={k: again(p) for k, p in flow.close.items()},
    )


def play_of(flow: Flow, lang: str = "en") -> Play:
    """The play of the flow's first prompt, as the engine hands it to the runner."""
    p = flow.notice[0]
    return Play(
        prompt_id=p.id,
        role=Role.NOTICE,
        audio=p.audio[lang],
        escape="",
        offset=0,
        samples=8000,
        audio_file=p.audio_file[lang],
        audio_dir=p.audio_dir[lang],
        format_files=p.format_files[lang],
    )


@pytest.fixture
def watch() -> Iterator[AudioWatch]:
    w = AudioWatch()
    yield w
    w.close()


@pytest.fixture
def sounds(tmp_path: Path) -> Path:
    return tmp_path / "sounds"


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every `os.stat` from here on, by path."""
    seen: list[str] = []
    real = os.stat

    def counting(path: object, *args: object, **kw: object) -> os.stat_result:
        seen.append(os.fspath(path))  # type: ignore[call-overload]
        return real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting)
    return seen


def test_a_clean_folder_is_checked_without_a_single_stat(
    sounds: Path, watch: AudioWatch, stats: list[str]
):
    flow = flow_on_disk(sounds)
    fw = watch.watch_flow(flow)
    play = play_of(flow)
    stats.clear()
    assert audio_changed(play, fw) is None
    assert stats == []
    # without the watch: the WAV, each other format and the folder
    assert audio_changed(play) is None
    assert len(stats) == 1 + len(OTHER_FORMATS) + 1


class _CountingEpoll:
    """The watch's epoll, its polls counted."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.polls = 0

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        self.polls += 1
        return self.real.poll(timeout)  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self.real.close()  # type: ignore[attr-defined]


def test_one_poll_serves_every_response_that_arrived_before_it(sounds: Path, watch: AudioWatch):
    flow = flow_on_disk(sounds)
    fw = watch.watch_flow(flow)
    play = play_of(flow)
    epoll = watch._epoll = _CountingEpoll(watch._epoll)  # type: ignore[assignment]
    arrived = [time.monotonic() for _ in range(5)]  # five responses read in one loop turn
    assert all(audio_changed(play, fw, t) is None for t in arrived)
    assert epoll.polls == 1  # the first one polled; it began after all five had arrived
    assert audio_changed(play, fw, time.monotonic()) is None  # one that arrived after it
    assert audio_changed(play, fw) is None  # no arrival time: always a poll
    assert epoll.polls == 3


def test_a_change_before_a_response_arrived_is_never_missed_by_the_shortcut(
    sounds: Path, watch: AudioWatch
):
    flow = flow_on_disk(sounds)
    fw = watch.watch_flow(flow)
    play = play_of(flow)
    assert audio_changed(play, fw, time.monotonic()) is None  # a poll: clean
    _rewrite_in_place(Path(play.audio))  # during the next play
    arrived = time.monotonic()  # its response comes after the change
    problem = audio_changed(play, fw, arrived)
    assert problem is not None and problem == audio_changed(play)


def _rewrite_in_place(wav: Path) -> None:
    data = bytearray(wav.read_bytes())
    data[0] ^= 0x55
    wav.write_bytes(bytes(data))  # same inode, same size


def _replace_by_rename(wav: Path) -> None:
    (wav.parent / ".staged").write_bytes(wav.read_bytes())
    st = os.stat(wav)
    os.utime(wav.parent / ".staged", ns=(st.st_atime_ns, st.st_mtime_ns))  # rsync -t
    os.replace(wav.parent / ".staged", wav)


def _replace_folder(wav: Path) -> None:
    folder = wav.parent
    folder.rename(folder.with_name("f-old"))
    shutil.copytree(folder.with_name("f-old"), folder)  # copy2: same names, sizes, mtimes


def _replace_ancestor(wav: Path) -> None:
    lang = wav.parent.parent  # sounds/en
    lang.rename(lang.with_name("en-old"))
    shutil.copytree(lang.with_name("en-old"), lang)


CHANGES: dict[str, Callable[[Path], object]] = {
    "wav-rewritten-in-place": _rewrite_in_place,
    "wav-replaced-by-rename": _replace_by_rename,
    "wav-mtime-touched": lambda wav: os.utime(wav),
    "alaw-rewritten-in-place": lambda wav: _rewrite_in_place(wav.with_suffix(".alaw")),
    "gsm-added-next-to-it": lambda wav: wav.with_suffix(".gsm").write_bytes(b"\0" * 33),
    "g722-removed": lambda wav: wav.with_suffix(".g722").unlink(),
    "another-prompt-removed": lambda wav: (wav.parent / "close_none.wav").unlink(),
    "folder-renamed-and-another-put-in-its-place": _replace_folder,
    "ancestor-renamed-and-another-tree-put-in-its-place": _replace_ancestor,
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_every_change_the_stats_catch_makes_the_folder_dirty_and_is_reported(
    sounds: Path, watch: AudioWatch, change: Callable[[Path], object]
):
    flow = flow_on_disk(sounds)
    fw = watch.watch_flow(flow)
    play = play_of(flow)
    folder = os.path.dirname(play.audio)
    assert fw.clean(folder) and audio_changed(play, fw) is None
    change(Path(play.audio))
    assert not fw.clean(folder)
    problem = audio_changed(play, fw)
    assert problem is not None and problem == audio_changed(play)  # the stats' own verdict
    assert not fw.clean(folder)  # dirty stays dirty
    assert fw.clean(os.path.dirname(play_of(flow, "de").audio))  # the other folder is untouched


def test_a_change_between_the_load_and_the_watch_is_found_by_the_watch_s_own_check(
    sounds: Path, watch: AudioWatch
):
    flow = flow_on_disk(sounds)
    play = play_of(flow)
    _replace_by_rename(Path(play.audio))  # after the identities were taken, before the watch
    fw = watch.watch_flow(flow)
    assert not fw.clean(os.path.dirname(play.audio))
    assert audio_changed(play, fw) is not None


def test_a_write_through_another_hard_link_makes_the_folder_dirty(
    sounds: Path, tmp_path: Path, watch: AudioWatch
):
    flow = flow_on_disk(sounds)
    play = play_of(flow)
    os.link(play.audio, tmp_path / "elsewhere.wav")  # not in any watched folder
    flow = reloaded(flow)  # (the link changed the file's ctime only: identities are equal)
    fw = watch.watch_flow(flow)
    assert fw.clean(os.path.dirname(play.audio))
    _rewrite_in_place(tmp_path / "elsewhere.wav")
    assert not fw.clean(os.path.dirname(play.audio))
    assert audio_changed(play, fw) is not None


def test_names_other_than_the_path_s_next_folder_leave_it_clean(sounds: Path, watch: AudioWatch):
    flow = flow_on_disk(sounds)
    fw = watch.watch_flow(flow)
    folder = os.path.dirname(play_of(flow).audio)
    (sounds / "fr").mkdir()  # beside en/ and de/
    (sounds / "en" / "g").mkdir()  # beside en/f/
    (sounds.parent / "notes.txt").write_text("x")
    assert fw.clean(folder)
    (sounds / "en" / "g").rename(sounds / "en" / "f2")
    assert fw.clean(folder)


def test_a_reload_watches_the_new_version_while_the_old_one_stays_dirty(
    sounds: Path, watch: AudioWatch
):
    old = flow_on_disk(sounds)
    old_watch = watch.watch_flow(old)
    play = play_of(old)
    folder = os.path.dirname(play.audio)
    held = open(play.audio, "rb")  # noqa: SIM115  (Asterisk still playing the old file)
    _replace_by_rename(Path(play.audio))
    assert not old_watch.clean(folder)
    new = reloaded(old)
    new_watch = watch.watch_flow(new)
    assert new_watch.clean(folder) and not old_watch.clean(folder)
    held.close()  # the old inode goes now: its watch's last events must not touch the new one
    assert new_watch.clean(folder) and not old_watch.clean(folder)
    assert audio_changed(play_of(new), new_watch) is None
    assert audio_changed(play, old_watch) is not None


@pytest.mark.parametrize("link", ["folder", "file"])
def test_a_path_through_a_symbolic_link_is_never_clean_and_keeps_the_stats(
    tmp_path: Path, watch: AudioWatch, stats: list[str], link: str
):
    if link == "folder":
        flow = flow_on_disk(tmp_path / "real")
        (tmp_path / "sounds").symlink_to(tmp_path / "real")
        flow = reloaded(_through(flow, str(tmp_path / "real"), str(tmp_path / "sounds")))
    else:
        flow = flow_on_disk(tmp_path / "sounds")
        wav = Path(play_of(flow).audio)
        wav.rename(tmp_path / "target.wav")
        wav.symlink_to(tmp_path / "target.wav")
        flow = reloaded(flow)
    fw = watch.watch_flow(flow)
    play = play_of(flow)
    assert not fw.clean(os.path.dirname(play.audio))
    stats.clear()
    assert audio_changed(play, fw) is None and len(stats) == 4  # unchanged, proven by stat


def _through(flow: Flow, real: str, link: str) -> Flow:
    def moved(p: Prompt) -> Prompt:
        return p._replace(
            audio={lang: w.replace(real, link) for lang, w in p.audio.items()},
            format_files={
                lang: tuple((path.replace(real, link), i) for path, i in files)
                for lang, files in p.format_files.items()
            },
        )

    return flow._replace(
        notice=tuple(map(moved, flow.notice)),
        choice=flow.choice._replace(noinput=tuple(map(moved, flow.choice.noinput))),
        questions=tuple(q._replace(prompt=moved(q.prompt)) for q in flow.questions),
        close={k: moved(p) for k, p in flow.close.items()},
    )


def test_an_overflowed_event_queue_makes_every_folder_dirty(
    sounds: Path, watch: AudioWatch, stats: list[str]
):
    flow = flow_on_disk(sounds)
    fw = watch.watch_flow(flow)
    folders = {os.path.dirname(play_of(flow, lang).audio) for lang in ("de", "en")}
    assert all(fw.clean(f) for f in folders)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    junk = sounds / "junk"  # a name beside en/ and de/: alone it would leave them clean
    for _ in range(limit // 2 + 10):
        junk.touch()
        junk.unlink()
    assert not any(fw.clean(f) for f in folders)
    stats.clear()
    assert audio_changed(play_of(flow), fw) is None and len(stats) == 4


def test_a_failed_watch_leaves_the_folder_to_the_stats(
    sounds: Path, watch: AudioWatch, stats: list[str], monkeypatch: pytest.MonkeyPatch
):
    flow = flow_on_disk(sounds)

    def no_more_watches(path: str, mask: int) -> int:
        raise OSError(28, "No space left on device (max_user_watches)")

    monkeypatch.setattr(watch._inotify, "add_watch", no_more_watches)
    fw = watch.watch_flow(flow)
    stats.clear()
    assert not fw.clean(os.path.dirname(play_of(flow).audio))
    assert audio_changed(play_of(flow), fw) is None and len(stats) == 4
    _replace_by_rename(Path(play_of(flow).audio))
    assert audio_changed(play_of(flow), fw) is not None


def test_an_error_inside_the_watch_means_not_clean(
    sounds: Path, watch: AudioWatch, stats: list[str], monkeypatch: pytest.MonkeyPatch
):
    flow = flow_on_disk(sounds)
    fw = watch.watch_flow(flow)
    folder = os.path.dirname(play_of(flow).audio)
    assert fw.clean(folder)

    class Broken:
        def poll(self, timeout: float) -> list[tuple[int, int]]:
            raise OSError(9, "Bad file descriptor")

    class FailsHalfWay(dict):  # type: ignore[type-arg]
        def get(self, *args: object) -> object:
            raise RuntimeError("a bug, with the events already read")

    real_wds = watch._wds
    monkeypatch.setattr(watch, "_wds", FailsHalfWay(real_wds))
    (sounds / "junk").touch()  # an event that alone would leave the folder clean
    assert not fw.clean(folder)
    monkeypatch.setattr(watch, "_wds", real_wds)
    assert not fw.clean(folder)  # events read and lost count as a change of everything
    assert watch.watch_flow(flow).clean(folder)  # until the version is registered again
    monkeypatch.setattr(watch, "_epoll", Broken())
    assert not fw.clean(folder)
    monkeypatch.setattr(watch, "unchanged", lambda state: 1 / 0)
    assert not fw.clean(folder)
    stats.clear()
    assert audio_changed(play_of(flow), fw) is None and len(stats) == 4


def test_a_closed_watch_and_a_version_it_never_saw_are_not_clean(sounds: Path):
    flow = flow_on_disk(sounds)
    watch = AudioWatch()
    fw = watch.watch_flow(flow)
    folder = os.path.dirname(play_of(flow).audio)
    assert fw.clean(folder) and not fw.clean(str(sounds))
    watch.close()
    assert not fw.clean(folder)
    assert not watch.watch_flow(flow).clean(folder)
    assert not FlowWatch(None, {}).clean(folder)


def test_a_changed_mount_table_makes_every_folder_dirty(sounds: Path, tmp_path: Path):
    # the kernel flags /proc/self/mountinfo's poll on every mount change; here a FIFO stands in
    # for it (a writer that comes and goes flags its poll the same way)
    fifo = tmp_path / "mounts"
    os.mkfifo(fifo)
    watch = AudioWatch(mount_events=str(fifo))
    try:
        flow = flow_on_disk(sounds)
        fw = watch.watch_flow(flow)
        folders = {os.path.dirname(play_of(flow, lang).audio) for lang in ("de", "en")}
        assert all(fw.clean(f) for f in folders)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert not any(fw.clean(f) for f in folders)
    finally:
        watch.close()


MOUNT_OVER = """
import os, shutil, subprocess, sys
from pathlib import Path
import test_audio_watch as t
from consent_ivr.flow.audiowatch import AudioWatch
from consent_ivr.transports.runner import audio_changed
tmp = Path(sys.argv[1])
watch = AudioWatch()
flow = t.flow_on_disk(tmp / "sounds")
fw = watch.watch_flow(flow)
play = t.play_of(flow)
folder = os.path.dirname(play.audio)
shutil.copytree(folder, tmp / "other")
before = fw.clean(folder)
subprocess.run(["mount", "--bind", str(tmp / "other"), folder], check=True)
print(before, fw.clean(folder), audio_changed(play, fw) is not None)
"""


def in_own_mount_namespace(script: str, tmp_path: Path) -> list[str]:
    """Run `script` (with `tmp_path` as its argument) in a mount namespace of its own — as root,
    or as a user mapped to root in a user namespace of its own — so that its mounts are seen by
    the watch in it and by nobody else, and go away with it whatever happens; its printed words."""
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.append("--map-root-user")
    done = subprocess.run(
        [*unshare, sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd=Path(__file__).parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_a_mount_over_the_prompt_folder_is_seen(tmp_path: Path):
    clean_before, clean_after, reported = in_own_mount_namespace(MOUNT_OVER, tmp_path)
    assert clean_before == "True"  # the watch vouched for the folder before the mount
    assert clean_after == "False"  # the mount table changed under it
    assert reported == "True"  # and the stats then see other inodes behind the same path


def test_only_a_local_file_system_is_trusted():
    table = "\n".join(
        [
            "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
            "40 27 0:40 / /srv/sounds rw - nfs4 nas:/sounds rw",
            "41 40 0:41 / /srv/sounds/de rw - tmpfs none rw",
            "42 27 0:42 / /mnt/with\\040space rw - fuse.sshfs host:/x rw",
        ]
    )
    assert file_system_type("/var/lib/asterisk/sounds/en/f", table) == "ext4"
    assert file_system_type("/srv/sounds/en/f", table) == "nfs4"
    assert file_system_type("/srv/sounds/de/f", table) == "tmpfs"
    assert file_system_type("/srv/soundsx/de/f", table) == "ext4"
    assert file_system_type("/mnt/with space/f", table) == "fuse.sshfs"
    assert "nfs4" not in audiowatch.LOCAL_FILE_SYSTEMS
    assert "fuse.sshfs" not in audiowatch.LOCAL_FILE_SYSTEMS
    assert "ext4" in audiowatch.LOCAL_FILE_SYSTEMS


def test_a_folder_on_a_network_file_system_keeps_the_stats(
    sounds: Path, watch: AudioWatch, monkeypatch: pytest.MonkeyPatch
):
    flow = flow_on_disk(sounds)
    monkeypatch.setattr(audiowatch, "file_system_type", lambda folder, table: "nfs4")
    fw = watch.watch_flow(flow)
    assert not fw.clean(os.path.dirname(play_of(flow).audio))


def test_an_overlay_file_system_keeps_the_stats(
    sounds: Path, watch: AudioWatch, monkeypatch: pytest.MonkeyPatch
):
    # its upper and lower folders change under it without an event on the overlay's inodes
    flow = flow_on_disk(sounds)
    monkeypatch.setattr(audiowatch, "file_system_type", lambda folder, table: "overlay")
    fw = watch.watch_flow(flow)
    assert not fw.clean(os.path.dirname(play_of(flow).audio))


FILE_MOUNTED_IN = """
import os, subprocess, sys
from pathlib import Path
import test_audio_watch as t
from consent_ivr.flow.audiowatch import AudioWatch
tmp = Path(sys.argv[1])
flow = t.flow_on_disk(tmp / "sounds")
play = t.play_of(flow)
other = tmp / "elsewhere"
other.mkdir()
subprocess.run(["mount", "-t", "tmpfs", "none", str(other)], check=True)
(other / "who.wav").write_bytes(Path(play.audio).read_bytes())
subprocess.run(["mount", "--bind", str(other / "who.wav"), play.audio], check=True)
flow = t.reloaded(flow)  # its identities as loaded now, the mounted file's included
print(AudioWatch().watch_flow(flow).clean(os.path.dirname(play.audio)))
"""


def test_a_prompt_file_mounted_in_from_another_file_system_keeps_the_stats(tmp_path: Path):
    # another file system's changes (NFS, say) raise no event on the folder's watches
    assert in_own_mount_namespace(FILE_MOUNTED_IN, tmp_path) == ["False"]


# ------------------------------------------------------------------ the FastAGI server's calls
@pytest.fixture
def own_sounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the example flow and its sounds; returns the flows folder."""
    from consent_ivr.paths import PROJECT_ROOT
    from flowkit import copy_example_flows

    flows = tmp_path / "flows"
    copy_example_flows(flows)
    shutil.copytree(PROJECT_ROOT / "sounds", tmp_path / "sounds")
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    return flows


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every play the runner checked by `stat` (`play_problem`), by its WAV."""
    from consent_ivr.transports import runner

    seen: list[str] = []
    real = runner.play_problem

    def counting(audio: str, *args: object) -> str | None:
        seen.append(audio)
        return real(audio, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "play_problem", counting)
    return seen


def _call(srv: object, dtmf: str = "1") -> dict[str, str]:
    from consent_ivr.harness.asterisk import WavSoundCatalog, run_fastagi
    from fastagi_kit import fresh_caller

    host, port = srv.address  # type: ignore[attr-defined]
    sim = {"sounds": WavSoundCatalog(), "agi_env": {"agi_callerid": fresh_caller()}}
    return dict(run_fastagi(host, port, "call-tracking?lang=en", dtmf=dtmf, **sim).variables)


def _same_audio_new_inode(wav: Path) -> None:
    """What `rsync -t` or a rebuild of identical audio does: same bytes and mtime, new file."""
    _replace_by_rename(wav)


def test_sounds_changed_between_two_calls_end_the_second_as_error_without_consent(
    tmp_path: Path, own_sounds: Path, checks: list[str]
):
    from fastagi_kit import ServerThread

    who = tmp_path / "sounds" / "en" / "call-tracking" / "who.wav"
    with ServerThread(tmp_path, flows_dir=own_sounds) as srv:  # no reload poll
        first = _call(srv)
        assert first["CONSENT_STATUS"] == "granted"
        assert checks == []  # every play proven by the watch: not one stat
        _same_audio_new_inode(who)
        second = _call(srv)
        assert second["CONSENT_STATUS"] == "error"
        assert all(v != "granted" for k, v in second.items() if k.startswith("CONSENT_"))
        record = srv.records()[-1]
        assert record["status"] == "error"
        assert any(str(who) in e and "changed on disk" in e for e in record["errors"])
        assert checks  # the watch said dirty: the stats judged
        checks.clear()
        srv.run(srv.server.reload())  # the new version is watched afresh
        assert _call(srv)["CONSENT_STATUS"] == "granted" and checks == []


def test_a_prompt_changed_while_it_plays_ends_the_call_as_error(tmp_path: Path, own_sounds: Path):
    from fastagi_kit import RawPeer, ServerThread

    with ServerThread(tmp_path, flows_dir=own_sounds) as srv:
        peer = RawPeer(srv.address, "call-tracking?lang=en", stall_at=b"STREAM FILE", dtmf="1")
        peer.send_env()
        assert peer.run() is False  # the first prompt is playing
        assert peer.pending is not None
        name = peer.pending.split(b'"')[1].decode()  # STREAM FILE "<path without format>" ...
        _rewrite_in_place(Path(name + ".g722"))
        assert peer.resume() is True
        assert peer.sim.variables["CONSENT_STATUS"] == "error"
        record = srv.records()[-1]
    assert record["status"] == "error"
    assert any(".g722" in e and "changed on disk" in e for e in record["errors"])


def test_a_server_without_inotify_checks_every_play_by_stat(
    tmp_path: Path,
    own_sounds: Path,
    checks: list[str],
    monkeypatch: pytest.MonkeyPatch,
    no_caller_number_in_logs: list[dict[str, object]],
):
    from fastagi_kit import ServerThread

    def unavailable(self: AudioWatch, mount_events: str = "") -> None:
        raise OSError(24, "Too many open files (inotify instances)")

    monkeypatch.setattr(AudioWatch, "__init__", unavailable)
    with ServerThread(tmp_path, flows_dir=own_sounds) as srv:
        assert srv.server.flows.audio is None
        assert _call(srv)["CONSENT_STATUS"] == "granted"
        assert checks
        _same_audio_new_inode(tmp_path / "sounds" / "en" / "call-tracking" / "who.wav")
        assert _call(srv)["CONSENT_STATUS"] == "error"
    events = [e["event"] for e in no_caller_number_in_logs]
    assert "server.audio_watch_unavailable" in events


def test_the_server_s_connections_note_when_each_answer_came_off_the_socket() -> None:
    from consent_ivr.transports.fastagi.stream import AgiStream, start_agi_server

    async def scenario() -> tuple[float, float | None, float | None, float]:
        seen: asyncio.Queue[AgiStream] = asyncio.Queue()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await seen.put(AgiStream(reader, writer))

        server = await start_agi_server(accept, "127.0.0.1", 0, limit=4096, backlog=8)
        port = server.sockets[0].getsockname()[1]
        before = time.monotonic()
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        stream = await seen.get()
        idle = stream.arrived
        w.write(b"200 result=0 endpos=1234\n")
        assert await stream.readline() == b"200 result=0 endpos=1234\n"
        after = time.monotonic()
        w.close()
        server.close()
        await server.wait_closed()
        return before, idle, stream.arrived, after

    before, idle, arrived, after = asyncio.run(scenario())
    assert idle is None  # nothing read yet: no shortcut
    assert arrived is not None and before <= arrived <= after


def test_a_watch_that_lost_its_proof_to_a_harmless_event_is_won_back_without_a_reload(
    own_sounds: Path, tmp_path: Path
):
    # a hard link made elsewhere changes a prompt's link count (an event) but nothing the stats
    # compare: the server's flow watcher registers the same version afresh, which verifies it
    # again; a real change stays dirty
    from consent_ivr.logs import get_logger
    from consent_ivr.transports.fastagi.flows import FlowRegistry

    registry = FlowRegistry(own_sounds, get_logger(component="test"))
    registry.audio = AudioWatch()
    try:
        registry.apply(registry.load())
        flow = registry.get("call-tracking")
        assert flow is not None
        wav = flow.notice[0].audio["de"]
        folder = os.path.dirname(wav)
        assert registry.audio_watch(flow).clean(folder)  # type: ignore[union-attr]
        os.link(wav, tmp_path / "backup.wav")
        assert not registry.audio_watch(flow).clean(folder)  # type: ignore[union-attr]
        assert not registry.changed()  # nothing a reload would see
        registry.apply_watches(registry.rewatch_dirty())
        assert registry.audio_watch(flow).clean(folder)  # type: ignore[union-attr]
        assert registry.rewatch_dirty() == {}  # nothing in doubt: nothing done
        _rewrite_in_place(Path(wav))
        registry.apply_watches(registry.rewatch_dirty())
        assert not registry.audio_watch(flow).clean(folder)  # type: ignore[union-attr]
    finally:
        registry.audio.close()
