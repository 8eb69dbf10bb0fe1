"""Whether the audio on disk is the audio a flow hashed (R13): the files Asterisk would play.

STREAM FILE names a prompt without a format (``…/de/call-tracking/who``) and Asterisk plays the
cheapest of the files it finds: ``who.wav``, but also ``who.ulaw``, ``who.gsm`` or ``who.m4a``
next to it (any extension a format module registers, add-ons included), and, for an absolute
name, first ``…/call-tracking/<channel language>/who.*`` (main/file.c, ``fileexists_core`` /
``fileexists_test``, "old layout"). So at validation a prompt's folder may hold, besides hidden
files, only regular files and no ``<prompt>.<ext>`` but the WAV; and while a call runs its
prompt's file and folder must keep the identity they had when the flow was loaded — a folder
changed by anything (a file added, removed or renamed, even for a moment) could have offered
Asterisk another file. Used by the loader, by a call after each play (`play_problem`), by the
server before it keeps an old flow version, and by the process-AGI flow cache. Only `os`: this
runs on the process-AGI path to the first prompt.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from consent_ivr.flow.model import Flow

#: (inode, size, mtime ns) of a WAV; (inode, mtime ns) of a folder.
FileIdent = tuple[int, int, int]
DirIdent = tuple[int, int]


#: (path, mtime ns, size, inode): what a cache entry or a flow reload is checked against.
PathStamp = tuple[str, int, int, int]


def path_stamp(path: str | os.PathLike[str]) -> PathStamp | None:
    """The file's (or folder's) stamp, or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.fspath(path), st.st_mtime_ns, st.st_size, st.st_ino)


def file_ident(st: os.stat_result) -> FileIdent:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def dir_ident(st: os.stat_result) -> DirIdent:
    return (st.st_ino, st.st_mtime_ns)


def _extension_like(text: str) -> bool:
    return bool(text) and all(c.isascii() and (c.isalnum() or c in "_-") for c in text)


def folder_problem(folder: str, prompt_id: str) -> tuple[str, str] | None:
    """(what is wrong, what to remove) if Asterisk could play another file than
    ``<folder>/<prompt_id>.wav`` for this prompt; None if not. Raises OSError if unreadable."""
    head = f"{prompt_id}."
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            path = os.path.join(folder, entry.name)
            if not entry.is_file():  # a folder, a dangling or folder link, a device, a pipe
                return (
                    f"{path} inside the audio folder is not a file: Asterisk looks for"
                    f" {entry.name}/<prompt> first when the channel language is {entry.name}",
                    path,
                )
            ext = entry.name[len(head) :]
            if entry.name.startswith(head) and ext != "wav" and _extension_like(ext):
                return (
                    f"audio {path} could be played instead of"
                    f" {os.path.join(folder, prompt_id)}.wav (Asterisk picks among the files of"
                    " a prompt's name), and its content is not checked",
                    path,
                )
    return None


def play_problem(
    audio: str, hashed: FileIdent | None, folder_at_load: DirIdent | None
) -> str | None:
    """After a play: why Asterisk may have played other audio than the file the flow hashed,
    or None. One `stat` of the file and one of its folder."""
    if hashed is None:
        return None
    try:
        if file_ident(os.stat(audio)) != hashed:
            return (
                f"audio {audio} changed on disk after the flow was loaded, so its hash would"
                " not name what was played"
            )
        folder = os.path.dirname(audio)
        if folder_at_load is not None and dir_ident(os.stat(folder)) != folder_at_load:
            return (
                f"the audio folder {folder} changed after the flow was loaded (a file added,"
                " removed or renamed), so another file may have been played"
            )
    except OSError as exc:
        return f"audio {audio} is unreadable ({exc.strerror or exc})"
    return None


def audio_intact(flow: Flow) -> str | None:
    """Why the flow's audio on disk is no longer exactly as it was validated and hashed, or
    None: every prompt file and folder still has its load-time identity."""
    for prompt in flow.all_prompts():
        for lang, ident in prompt.audio_file.items():
            problem = play_problem(prompt.audio[lang], ident, prompt.audio_dir.get(lang))
            if problem is not None:
                return problem
    return None
