"""Whether the audio on disk is the audio a flow hashed (R13): the files Asterisk would play.

STREAM FILE names a prompt without a format (``…/de/call-tracking/who``) and Asterisk plays the
file of the cheapest format for the channel among those it finds: ``who.wav``, but also
``who.ulaw``, ``who.gsm`` or ``who.m4a`` next to it (any extension a format module registers,
add-ons included), and, for an absolute name, first ``…/call-tracking/<channel language>/who.*``
(main/file.c, ``fileexists_core`` / ``fileexists_test``, "old layout"). So at validation a
prompt's folder may hold, besides hidden files, only regular files and no ``<prompt>.<ext>`` but
the files of the flow's formats (`FORMATS`, ``sounds: formats:``; the WAV always); and while a
call runs every one of its prompt's files and its folder must keep the identity they had when
the flow was loaded — a folder changed by anything (a file added, removed or renamed, even for a
moment) could have offered Asterisk another file. Used by the loader, by a call after each play
(`play_problem`), by the server before it keeps an old flow version, and by the process-AGI flow
cache. Only `os`: this runs on the process-AGI path to the first prompt.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from consent_ivr.flow.model import Flow

#: (inode, size, mtime ns) of an audio file; (inode, mtime ns) of a folder.
FileIdent = tuple[int, int, int]
DirIdent = tuple[int, int]
#: (path, identity) of each audio file of a prompt besides its WAV, in `FORMATS` order.
FormatFiles = tuple[tuple[str, FileIdent], ...]

#: The formats a prompt can be written in (``sounds: formats:`` in a flow), each with the one
#: extension it is written with, a name Asterisk 22's format modules register: format_wav.c
#: ``wav`` (8 kHz signed linear in RIFF; ``wav16`` is the 16 kHz one), format_pcm.c ``ulaw``
#: (of ``pcm|ulaw|ul|mu|ulw``), ``alaw`` (of ``alaw|al|alw``) and ``g722``. Each is one byte per
#: 8 kHz sample period but the WAV (two, plus its header): G.722 codes 16 kHz audio at 64 kbit/s,
#: and Asterisk counts its file positions in bytes, so ``endpos`` means the same in every format.
#: ``sln`` (format_sln.c ``sln|raw``) is the WAV's own codec: it would save no transcoding, and
#: two files of one codec leave which one Asterisk opens to the order its modules loaded in.
FORMATS: tuple[str, ...] = ("wav", "ulaw", "alaw", "g722")


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


def format_path(wav: str, fmt: str) -> str:
    """The file of a prompt in another format: ``…/who.wav`` -> ``…/who.ulaw``."""
    return f"{wav[:-4]}.{fmt}"


def folder_problem(
    folder: str, prompt_id: str, formats: tuple[str, ...] = ("wav",)
) -> tuple[str, str] | None:
    """(what is wrong, what to remove) if Asterisk could play another file than
    ``<folder>/<prompt_id>.<format>`` of one of the flow's `formats` for this prompt; None if
    not. Raises OSError if unreadable."""
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
            if entry.name.startswith(head) and ext not in formats and _extension_like(ext):
                listed = os.path.join(folder, f"{prompt_id}.{formats[0]}") + "".join(
                    f", {prompt_id}.{f}" for f in formats[1:]
                )
                return (
                    f"audio {path} could be played instead of {listed} (Asterisk picks among"
                    " the files of a prompt's name), and its content is not checked",
                    path,
                )
    return None


def play_problem(
    audio: str,
    hashed: FileIdent | None,
    folder_at_load: DirIdent | None,
    formats: FormatFiles = (),
) -> str | None:
    """After a play: why Asterisk may have played other audio than the files the flow hashed,
    or None. One `stat` of the WAV, one of each other format's file and one of the folder."""
    if hashed is None:
        return None
    try:
        for path, ident in ((audio, hashed), *formats):
            if file_ident(os.stat(path)) != ident:
                return (
                    f"audio {path} changed on disk after the flow was loaded, so its hash would"
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
            problem = play_problem(
                prompt.audio[lang],
                ident,
                prompt.audio_dir.get(lang),
                prompt.format_files.get(lang, ()),
            )
            if problem is not None:
                return problem
    return None
