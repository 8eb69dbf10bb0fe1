"""The FastAGI server's proof that a flow's audio is untouched since it was loaded (R13), one
`epoll_wait` per play instead of a `stat` of the prompt's files and folder (`play_problem`).

An `AudioWatch` holds one inotify descriptor and an epoll set with it and ``/proc/self/mountinfo``
(which the kernel flags when the mount table changes). `AudioWatch.watch_flow` watches, for each
prompt folder of a flow version, the folder (anything in it created, removed, renamed, written or
re-permissioned, or the folder itself removed or renamed), each prompt file of it (a write through
another hard link reaches only the file's own watch) and every folder above it up to ``/`` (only
events naming the next component of the path count, and the folder's own removal or rename).
*After* the watches are in place it compares the folder's files and the folder once with their
load-time identities (`play_problem`): only then is the folder clean for that version, so a
change between the load and the watch is seen too. A folder whose path or prompt files go through
a symbolic link, or on a file system not known to be local (a change made by another host of a
network file system raises no event here), is never clean: its plays keep the stats.

`FlowWatch.clean(folder)` is one `epoll.poll(0)`: nothing ready and the folder clean means no
event has touched it since it was verified. Anything ready is read (non-blocking) first: an event
makes the folders it concerns dirty; a queue overflow, an unmount, an unknown watch or a changed
mount table makes everything registered so far dirty. Dirty stays dirty for that registration: a
reload registers the new flow version afresh (new identities, new watches), while the calls still
on the old version keep seeing it dirty; and the server's flow watcher registers a version whose
watch lost its proof while its files stayed unchanged afresh (`FlowRegistry.rewatch_dirty`), which
verifies it again. Any doubt (an error, a registration in progress on
another thread) answers "not clean", and the caller then does the stats: the watch only ever
proves that nothing happened; `play_problem` stays the judge of what did.

Why one poll after the response suffices: fsnotify queues an event inside the syscall that
makes the change, and waking the inotify descriptor's wait queue puts it on the epoll's ready
list there and then; Asterisk answers a STREAM FILE only after the play, and the check runs
after that answer is read (as the stats did), so a change that completed before the answer is
ready by the time of the poll. The one change the stats may see and the watch does not: a
write through a shared writable memory map raises no inotify event (the stats see it by the
mtime the kernel sets at the first write fault); no sound tool writes a file that way, and one
that did is seen once it lets go of the file (its descriptors and its mapping). And a window
inside one syscall: the kernel raises the event at the end of a `write` or `rename`, after the
change is visible; a writer stalled in between while Asterisk opens, plays and answers would
pass this check where the stats, a moment later, would not (a play lasts seconds, the window
microseconds). Watches of
folders no flow uses any more stay until the server stops (a few per folder).
"""

from __future__ import annotations

import os
import select
import stat
import threading
import time
import weakref

from inotify_simple import INotify, flags

from consent_ivr.flow.audiofiles import play_problem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from consent_ivr.flow.audiofiles import DirIdent, FileIdent, FormatFiles
    from consent_ivr.flow.model import Flow

    #: (WAV path, its identity, its folder's, the other formats' files) of one prompt's play
    Played = tuple[str, FileIdent, DirIdent | None, FormatFiles]

MODIFY, ATTRIB, CLOSE_WRITE = int(flags.MODIFY), int(flags.ATTRIB), int(flags.CLOSE_WRITE)
MOVED_FROM, MOVED_TO = int(flags.MOVED_FROM), int(flags.MOVED_TO)
CREATE, DELETE = int(flags.CREATE), int(flags.DELETE)
DELETE_SELF, MOVE_SELF = int(flags.DELETE_SELF), int(flags.MOVE_SELF)
NAMED = MOVED_FROM | MOVED_TO | CREATE | DELETE | ATTRIB
GONE = DELETE_SELF | MOVE_SELF
#: a prompt folder: anything in it, or itself
FOLDER_EVENTS = MODIFY | CLOSE_WRITE | NAMED | GONE
#: a folder above it: its next path component (created, removed, renamed, chmod), or itself gone
ANCESTOR_EVENTS = NAMED | GONE
#: a prompt file, by its inode: written, chmod/chown/link count, removed or renamed
FILE_EVENTS = MODIFY | ATTRIB | CLOSE_WRITE | GONE
#: told without being asked for: everything registered so far is then dirty
EVERYTHING = int(flags.Q_OVERFLOW) | int(flags.UNMOUNT)
IGNORED = int(flags.IGNORED)  # a watch removed (its inode deleted): its folders are dirty
DIRS, NO_LINKS, ADD = int(flags.ONLYDIR), int(flags.DONT_FOLLOW), int(flags.MASK_ADD)

#: File systems whose changes all go through this kernel (and so raise inotify events). A
#: network or FUSE file system does not qualify: another host (or the FUSE daemon) changes files
#: without an event here; nor does overlay, whose upper and lower folders change under it
#: without an event on the overlay's own inodes.
LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "bcachefs"}
)

MOUNT_TABLE = "/proc/self/mountinfo"

_ANY, _NEXT = 0, 1  # an entry's kind: every event counts / only those naming the next component


class _Folder:
    """One registration of one prompt folder: clean until an event concerns it."""

    __slots__ = ("__weakref__", "clean", "generation")

    def __init__(self, generation: int) -> None:
        self.clean = True
        self.generation = generation


class FlowWatch:
    """What `AudioWatch.watch_flow` proved for one flow version: which of its prompt folders
    are still as the flow was loaded (`clean`)."""

    def __init__(self, watch: AudioWatch | None, folders: dict[str, _Folder]) -> None:
        self._watch = watch
        self._folders = folders

    @property
    def dirty(self) -> bool:
        """Whether some folder has lost its proof (as far as the events read so far tell): a
        new registration of the same version (`AudioWatch.watch_flow`) may win it back."""
        watch = self._watch
        return watch is None or any(
            not (f.clean and f.generation == watch._generation) for f in self._folders.values()
        )

    def clean(self, folder: str, arrived: float | None = None) -> bool:
        """True only if nothing has changed in `folder` (``os.path.dirname`` of a prompt's
        path) or on its path since it was verified; False on any doubt (then stat). `arrived`:
        when the play's response was read (`AudioWatch.unchanged`)."""
        try:
            state = self._folders.get(folder)
            return (
                state is not None
                and self._watch is not None
                and self._watch.unchanged(state, arrived)
            )
        except Exception:  # never consent on doubt: the caller stats
            return False


def _unescape(field: str) -> str:
    """A mount point as mountinfo writes it (space, tab, newline, backslash as octal)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def file_system_type(folder: str, mountinfo: str) -> str | None:
    """The type of the file system `folder` (absolute, no symbolic link) is on, by the last
    (topmost) of the mounts with the longest mount point above it; None if none is."""
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        parts = fields.split(" ")
        if not sep or len(parts) < 5 or not rest:
            continue
        point = _unescape(parts[4])
        inside = point == "/" or folder == point or folder.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), rest.split(" ")[0])
    return best[1] if best else None


class AudioWatch:
    """One inotify descriptor and epoll set for every flow version a server loads; `close` at
    the server's stop. `mount_events` is the file whose poll flags a change of the mount table.
    Raises OSError if inotify or that poll cannot be set up (the server then does without:
    every play is checked by `stat`)."""

    def __init__(self, mount_events: str = MOUNT_TABLE) -> None:
        self._lock = threading.Lock()
        self._wds: dict[int, list[tuple[weakref.ref[_Folder], int, str]]] = {}
        self._generation = 0  # raised when everything registered so far is dirty
        #: when the last poll whose events are all applied began (`time.monotonic()`)
        self._polled_at = float("-inf")
        self._closed = False
        self._inotify = INotify(nonblocking=True)
        try:
            self._mounts = os.open(mount_events, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                self._epoll = select.epoll()
                self._epoll.register(self._inotify.fileno(), select.EPOLLIN)
                self._epoll.register(self._mounts, select.EPOLLPRI | select.EPOLLERR)
            except BaseException:
                os.close(self._mounts)
                raise
        except BaseException:
            self._inotify.close()
            raise

    @classmethod
    def open(cls, log: Any) -> AudioWatch | None:
        """A new watch, or None (logged as ``server.audio_watch_unavailable``) where inotify or
        the mount table's poll is not available: then every play is checked by `stat`."""
        try:
            return cls()
        except Exception as exc:
            log.warning("server.audio_watch_unavailable", error=f"{type(exc).__name__}: {exc}")
            return None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._epoll.close()
            os.close(self._mounts)
            self._inotify.close()

    # ------------------------------------------------------------------ the check, per play
    def unchanged(self, state: _Folder, arrived: float | None = None) -> bool:
        """One `epoll.poll(0)`; reads what is ready. False while another thread registers.

        `arrived` (`time.monotonic()`, taken when the play's response was read off the socket)
        spares the poll when a poll that started later has already been applied: the play
        ended before its response was sent, so every change made during it had raised its
        event before that poll began. Under load, one poll then serves every response read in
        the same turn of the event loop."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed:
                return False
            if arrived is None or arrived >= self._polled_at:
                started = time.monotonic()
                ready = self._epoll.poll(0)
                if ready:
                    self._handle(ready)
                self._polled_at = started  # every event before `started` is applied
            return state.clean and state.generation == self._generation
        except Exception:  # never consent on doubt: the caller stats
            return False
        finally:
            self._lock.release()

    def _handle(self, ready: list[tuple[int, int]]) -> None:
        """With the lock: what `poll` found ready, read and applied. Events read but not
        applied (an error half-way) would be lost: then everything registered is dirty."""
        try:
            for fd, _events in ready:
                if fd == self._mounts:  # a mount or unmount anywhere: conservative
                    self._generation += 1
                else:
                    self._read_events()
        except BaseException:
            self._generation += 1
            raise

    def _read_events(self) -> None:
        for event in self._inotify.read(timeout=0):
            entries = self._wds.get(event.wd)
            if event.mask & EVERYTHING or entries is None:
                self._generation += 1
                continue
            gone = event.mask & IGNORED
            for ref, kind, name in entries:
                state = ref()
                if state is None:
                    continue
                if gone or kind == _ANY or event.name == name or event.mask & GONE:
                    state.clean = False
            if gone:
                del self._wds[event.wd]

    # ----------------------------------------------------------------- registering a flow
    def watch_flow(self, flow: Flow) -> FlowWatch:
        """Watch every prompt folder of `flow` and verify it once; any thread. A folder that
        cannot be watched or verified is simply not clean."""
        groups: dict[str, list[Played]] = {}
        for prompt in flow.all_prompts():
            for lang, ident in prompt.audio_file.items():
                audio = prompt.audio.get(lang)
                if audio:
                    groups.setdefault(os.path.dirname(audio), []).append(
                        (
                            audio,
                            ident,
                            prompt.audio_dir.get(lang),
                            prompt.format_files.get(lang, ()),
                        )
                    )
        folders: dict[str, _Folder] = {}
        try:
            with self._lock:
                self._prune()
            with open(MOUNT_TABLE, encoding="utf-8", errors="replace") as table:
                mounts = table.read()
        except Exception:
            mounts = ""  # no file system is then known to be local: nothing is clean
        for folder, played in groups.items():
            state = folders[folder] = _Folder(-1)
            try:
                self._watch_folder(folder, played, state, mounts)
            except Exception:
                state.clean = False
        return FlowWatch(self, folders)

    def _watch_folder(self, folder: str, played: list[Played], state: _Folder, mounts: str) -> None:
        files = [
            path for audio, _i, _d, formats in played for path in (audio, *(p for p, _ in formats))
        ]
        with self._lock:
            if self._closed:
                raise OSError("the audio watch is closed")
            ready = self._epoll.poll(0)
            if ready:  # what happened before this registration is not its own
                self._handle(ready)
            state.generation = self._generation
            parent = "/"
            for name in folder.split("/")[1:]:
                self._add(parent, ANCESTOR_EVENTS | DIRS, state, _NEXT, name)
                parent = os.path.join(parent, name)
            self._add(folder, FOLDER_EVENTS | DIRS, state, _ANY, "")
            for path in files:
                self._add(path, FILE_EVENTS, state, _ANY, "")
        # Only now, with every watch in place: a change from here on is an event.
        if not self._eligible(folder, files, mounts):
            state.clean = False
            return
        for audio, ident, dir_ident, formats in played:  # the gap since the load
            if play_problem(audio, ident, dir_ident, formats) is not None:
                state.clean = False
                return

    def _add(self, path: str, mask: int, state: _Folder, kind: int, name: str) -> None:
        """With the lock: watch `path` (not through a final symbolic link), adding to the
        events an earlier registration asked of the same inode."""
        wd = self._inotify.add_watch(path, mask | NO_LINKS | ADD)
        self._wds.setdefault(wd, []).append((weakref.ref(state), kind, name))

    def _prune(self) -> None:
        """With the lock: forget the registrations of flow versions no longer referenced."""
        for entries in self._wds.values():
            entries[:] = [e for e in entries if e[0]() is not None]

    def _eligible(self, folder: str, files: list[str], mounts: str) -> bool:
        """Whether `folder`'s changes are all seen: no symbolic link on its path or as one of
        its prompt files, every file on the folder's own file system (not one mounted over
        it), and that a local one (`mounts`: the mount table's text)."""
        if folder != os.path.abspath(folder) or os.path.realpath(folder) != folder:
            return False
        device = os.stat(folder).st_dev
        for path in files:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_dev != device:
                return False
        return file_system_type(folder, mounts) in LOCAL_FILE_SYSTEMS
