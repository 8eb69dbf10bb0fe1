"""Whether the audio on disk is the audio a flow hashed (R13): the files Asterisk would play.

STREAM FILE names a prompt without a format (``…/de/call-tracking/who``) and Asterisk plays the
cheapest of the files it finds: ``who.wav``, but also ``who.ulaw`` or ``who.gsm`` next to it,
and, for an absolute name, first ``…/call-tracking/<channel language>/who.*`` (main/file.c,
``fileexists_test``, "old layout"). So a prompt's folder must hold no other format of a prompt
and no sub-folder, and its WAV must still be the file that was hashed. Used by the loader (at
validation), by a call after each play (`play_problem`), by the server before it keeps an old
flow version, and by the process-AGI flow cache before it stores an entry. Only `os`: this runs
on the process-AGI path to the first prompt.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from consent_ivr.flow.model import Flow

#: File name extensions of Asterisk's sound formats (formats/*.c).
# fmt: off
ASTERISK_FORMATS = frozenset({
    "g719", "g722", "g723", "g723sf", "g726-16", "g726-24", "g726-32", "g726-40", "g729", "gsm",
    "h263", "h264", "ilbc", "pcm", "ulaw", "ul", "mu", "ulw", "alaw", "al", "alw", "au", "sln",
    "raw", "sln12", "sln16", "sln24", "sln32", "sln44", "sln48", "sln96", "sln192", "slin",
    "siren7", "siren14", "vox", "wav16", "WAV", "wav49", "ogg", "oga", "spx", "opus", "mp3",
})
# fmt: on

#: (inode, size, mtime ns) of a WAV; (inode, mtime ns) of a folder.
FileIdent = tuple[int, int, int]
DirIdent = tuple[int, int]


def file_ident(st: os.stat_result) -> FileIdent:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def dir_ident(st: os.stat_result) -> DirIdent:
    return (st.st_ino, st.st_mtime_ns)


def folder_problem(folder: str, prompt_id: str) -> tuple[str, str] | None:
    """(what is wrong, what to remove) if Asterisk could play another file than
    ``<folder>/<prompt_id>.wav`` for this prompt; None if not. Raises OSError if unreadable."""
    head = f"{prompt_id}."
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            path = os.path.join(folder, entry.name)
            if entry.is_dir():
                return (
                    f"folder {path} inside the audio folder: Asterisk looks for"
                    f" {entry.name}/<prompt> there first (a channel language)",
                    path,
                )
            if entry.name.startswith(head) and entry.name[len(head) :] in ASTERISK_FORMATS:
                return (
                    f"audio {path} would be played instead of"
                    f" {os.path.join(folder, prompt_id)}.wav (Asterisk picks among the formats"
                    " of a prompt), and its content is not checked",
                    path,
                )
    return None


def play_problem(
    audio: str, prompt_id: str, hashed: FileIdent | None, folder_at_load: DirIdent | None
) -> str | None:
    """After a play: why the file may not be the one the flow hashed, or None. One `stat` of the
    file and one of its folder; the folder is listed only if it changed since the load (a
    neighbour rebuilt is fine, another format or a sub-folder added is not)."""
    if hashed is None:
        return None
    try:
        if file_ident(os.stat(audio)) != hashed:
            return (
                f"audio {audio} changed on disk after the flow was loaded, so its hash would"
                " not name what was played"
            )
        folder = os.path.dirname(audio)
        if folder_at_load is None or dir_ident(os.stat(folder)) == folder_at_load:
            return None
        problem = folder_problem(folder, prompt_id)
    except OSError as exc:
        return f"audio {audio} is unreadable ({exc.strerror or exc})"
    return None if problem is None else problem[0]


def audio_intact(flow: Flow) -> str | None:
    """Why the flow's audio on disk is no longer what it hashed at load time, or None. Every
    folder is listed (no folder identity matches ``(-1, -1)``)."""
    for prompt in flow.all_prompts():
        for lang, ident in prompt.audio_file.items():
            problem = play_problem(prompt.audio[lang], prompt.id, ident, (-1, -1))
            if problem is not None:
                return problem
    return None
