"""Whether a file lies on a network file system, where an SQLite evidence store must not live.

SQLite's own documentation: its locking relies on POSIX advisory locks, which NFS, SMB/CIFS and
other network file systems implement unreliably or not at all, and WAL mode needs shared memory
between the processes on one host ("WAL does not work over a network filesystem"). Two writers (a
server and a process-AGI call, or two servers) could then both append to the chain: a broken chain
or a corrupt file, found only when the evidence is needed. The store refuses such a path when it
connects, with the file system's name; PostgreSQL is the store for several hosts.

The file system is read from ``/proc/self/mountinfo`` (Linux): the mount with the longest mount
point that contains the store's folder. Where that file cannot be read (another OS), nothing is
refused.
"""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

#: File system types (mountinfo's field after ``-``) whose locks SQLite cannot rely on.
NETWORK_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "ocfs2",
        "gfs2",
        "davfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.davfs",
    }
)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_type(path: Path, mountinfo: Path | None = None) -> str | None:
    """The type of the file system holding `path` (its nearest existing ancestor), or None when
    the mount table cannot be read."""
    try:
        lines = (mountinfo or MOUNTINFO).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    target = Path(os.path.realpath(path))
    best, best_type = -1, None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = _unescape(fields[4])
        if target == Path(point) or Path(point) in target.parents:
            if len(point) > best:  # the later of two equal mount points is the one in use
                best, best_type = len(point), right.split()[0]
            elif len(point) == best:
                best_type = right.split()[0]
    return best_type


def network_filesystem(path: Path, mountinfo: Path | None = None) -> str | None:
    """The network file system type holding `path`, or None if it is local (or unknown)."""
    kind = filesystem_type(path, mountinfo)
    return kind if kind is not None and kind in NETWORK_TYPES else None
