"""`consent-ivr install-asterisk`: install the product on this Asterisk box, or take it off.

Reads Asterisk's folders (`install.layout`), plans the items (`install.plan`) and applies the
steps that change something (`install.apply`); `--dry-run` prints them and changes nothing,
`--uninstall` removes what the install manifest names. When the dialplan changed and Asterisk is
running, it is told to read it again (`install.reload`; `--no-reload` skips that): no restart.
Every failure is one line on stderr and exit status 1, with the box as it was; a failed dialplan
reload is a warning and exit status 3, with everything installed.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
from typing import Any, TextIO

from consent_ivr import paths
from consent_ivr.install.apply import run
from consent_ivr.install.files import InstallError, Step, scan_project
from consent_ivr.install.layout import (
    DEFAULT_RUN_DIR,
    Directories,
    Layout,
    LayoutError,
    parse_directories,
    resolve,
)
from consent_ivr.install.plan import DIALPLAN, Options, plan
from consent_ivr.install.reload import Outcome, reload_dialplan
from consent_ivr.install.steps import install_steps
from consent_ivr.install.uninstall import uninstall_steps

PROG = "consent-ivr install-asterisk"
#: The exit status when everything is installed but the running Asterisk did not reload.
RELOAD_FAILED = 3


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "install-asterisk",
        help="install on this Asterisk box: AGI entry, prompts, dialplan include, key, evidence "
        "and cache folders, FastAGI unit; reloads the dialplan (--dry-run first; --uninstall "
        "takes it off)",
        description="Install consent-ivr on this Asterisk box, reading Asterisk's folders from "
        "asterisk.conf's [directories] when present. A second run changes nothing; a file it did "
        "not write is never overwritten. A running Asterisk is told to reload its dialplan; "
        "process AGI reads its settings at each call: Asterisk is never restarted. Exit status: "
        "0 done, 1 nothing changed (an error), 3 installed but the dialplan reload failed.",
    )
    p.add_argument(
        "--asterisk-etc",
        default="/etc/asterisk",
        metavar="DIR",
        help="Asterisk's configuration folder (default /etc/asterisk)",
    )
    p.add_argument(
        "--sounds-dir",
        metavar="DIR",
        help="Asterisk's sounds folder (default <astdatadir>/sounds); the prompts go "
        "into DIR/consent-ivr",
    )
    p.add_argument("--agi-bin", metavar="DIR", help="Asterisk's AGI folder (default astagidir)")
    p.add_argument(
        "--user",
        default="asterisk",
        metavar="NAME",
        help="the user Asterisk runs as: owns the key, evidence and cache folders "
        "(default asterisk)",
    )
    p.add_argument(
        "--config-dir",
        default="/etc/consent-ivr",
        metavar="DIR",
        help="settings, key, flows and the install manifest (default /etc/consent-ivr)",
    )
    p.add_argument(
        "--state-dir",
        default="/var/lib/consent-ivr",
        metavar="DIR",
        help="the evidence folder (default /var/lib/consent-ivr)",
    )
    p.add_argument(
        "--cache-dir",
        default="/var/cache/consent-ivr",
        metavar="DIR",
        help="process AGI's flow cache (default /var/cache/consent-ivr)",
    )
    p.add_argument(
        "--systemd-dir",
        default="/etc/systemd/system",
        metavar="DIR",
        help="where consent-ivr.service (the FastAGI server's unit) goes "
        "(default /etc/systemd/system)",
    )
    p.add_argument(
        "--no-systemd",
        action="store_true",
        help="no FastAGI server unit (no systemd on this box)",
    )
    p.add_argument(
        "--no-reload",
        action="store_true",
        help='do not run `asterisk -rx "dialplan reload"` after a dialplan change',
    )
    p.add_argument("--dry-run", action="store_true", help="print each step, change nothing")
    p.add_argument(
        "--uninstall",
        action="store_true",
        help="remove what the install wrote (never the key or the evidence)",
    )
    p.set_defaults(run=run_command)  # fmt: skip


def _owner(user: str) -> tuple[str, tuple[int, int] | None]:
    """The user's group name, and (uid, gid) to give files to (None: no chown, not root)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise InstallError(
            f"no user {user!r} on this box: is Asterisk installed? (--user NAME: the user "
            "Asterisk runs as)"
        ) from None
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = str(entry.pw_gid)
    if os.geteuid() == 0:
        return group, (entry.pw_uid, entry.pw_gid)
    if entry.pw_uid != os.geteuid():
        me = pwd.getpwuid(os.geteuid()).pw_name
        raise InstallError(
            f"cannot give the key and the evidence folder to user {user!r} without root: run as "
            f"root, or give --user {me}"
        )
    return group, None


def _directories(etc: str) -> tuple[str | None, Directories]:
    """asterisk.conf in `etc` (None: there is none) and its [directories]."""
    conf = os.path.join(etc, "asterisk.conf")
    if not os.path.exists(conf):
        return None, Directories()
    try:
        with open(conf, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise InstallError(f"cannot read {conf}: {exc.strerror}") from None
    return conf, parse_directories(text, conf)


def _layout(args: argparse.Namespace) -> Layout:
    etc = os.path.abspath(args.asterisk_etc)
    if not os.path.isdir(etc):
        raise InstallError(f"Asterisk's configuration folder {etc} does not exist (--asterisk-etc "
                           "DIR)")  # fmt: skip
    conf, directories = _directories(etc)
    found = conf is not None
    layout = resolve(
        etc,
        directories,
        os.path.isdir,
        agi_bin=os.path.abspath(args.agi_bin) if args.agi_bin else None,
        sounds=os.path.abspath(args.sounds_dir) if args.sounds_dir else None,
        asterisk_conf=conf,
    )
    for what, folder, option in (
        ("configuration", layout.etc, "--asterisk-etc"),
        ("AGI", layout.agi_bin, "--agi-bin"),
        ("sounds", layout.sounds, "--sounds-dir"),
    ):
        if not os.path.isdir(folder):
            source = f" (from {conf})" if found and option != "--asterisk-etc" else ""
            raise InstallError(
                f"Asterisk's {what} folder {folder}{source} does not exist: is Asterisk "
                f"installed? ({option} DIR)"
            )
    return layout


def _options(args: argparse.Namespace, layout: Layout, group: str) -> Options:
    systemd = None if args.no_systemd else os.path.abspath(args.systemd_dir)
    if systemd is not None and not args.uninstall and not os.path.isdir(systemd):
        raise InstallError(f"the systemd unit folder {systemd} does not exist (--systemd-dir DIR, "
                           "or --no-systemd)")  # fmt: skip
    return Options(
        layout=layout,
        user=args.user,
        group=group,
        config_dir=os.path.abspath(args.config_dir),
        state_dir=os.path.abspath(args.state_dir),
        cache_dir=os.path.abspath(args.cache_dir),
        systemd_dir=systemd,
    )


def _steps(args: argparse.Namespace) -> tuple[list[Step], list[str], Options]:
    if args.uninstall:  # needs neither Asterisk's folders nor its user: both may be gone
        etc = os.path.abspath(args.asterisk_etc)
        try:  # only to find a running Asterisk's control socket
            conf, directories = _directories(etc)
        except (InstallError, LayoutError):
            conf, directories = None, Directories()
        placeholder = Layout(etc, "", "", conf, directories.run or DEFAULT_RUN_DIR)
        options = _options(args, placeholder, "")
        enabled = f"{options.systemd_dir}/multi-user.target.wants/consent-ivr.service"
        if options.systemd_dir is not None and os.path.lexists(enabled):
            raise InstallError(f"consent-ivr.service is enabled ({enabled}): run `systemctl "
                               "disable --now consent-ivr` first")  # fmt: skip
        steps, notes = uninstall_steps(options)
        return steps, notes, options
    group, owner = _owner(args.user)
    try:
        layout = _layout(args)
    except LayoutError as exc:
        raise InstallError(str(exc)) from None
    options = _options(args, layout, group)
    try:
        project = scan_project(paths.ROOT)
    except OSError as exc:
        raise InstallError(f"cannot read the project {paths.ROOT}: {exc}") from None
    steps, notes = install_steps(plan(options, project), options, owner)
    return steps, notes, options


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        steps, notes, options = _steps(args)
        if args.dry_run:
            if steps:
                print(f"dry run: {len(steps)} step(s) would be taken; nothing is changed", file=out)
        else:
            run(steps)
    except (InstallError, LayoutError) as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1
    for step in steps:
        print(step.line(), file=out)
    for note in notes:
        print(note, file=out)
    if not steps:
        if not args.uninstall:
            print(f"nothing to do: consent-ivr is installed as planned ({options.manifest})",
                  file=out)  # fmt: skip
        return 0
    if args.dry_run:
        return 0
    if args.uninstall:
        print(f"uninstalled: {len(steps)} step(s)", file=out)
    else:
        print(f"installed: {len(steps)} step(s); manifest {options.manifest}", file=out)
    if any("/asterisk.service.d/" in s.path and s.verb == "remove" for s in steps):
        print("note: removed an older install's drop-in for asterisk.service: `systemctl "
              "daemon-reload` when convenient (Asterisk need not restart)", file=out)  # fmt: skip
    status = _reload(args, options, steps, out, err)
    if options.systemd_dir is not None and not args.uninstall:
        print("for FastAGI: systemctl enable --now consent-ivr", file=out)
    return status


def _reload(
    args: argparse.Namespace, options: Options, steps: list[Step], out: TextIO, err: TextIO
) -> int:
    """Have a running Asterisk read the dialplan again if a step changed it; the exit status."""
    if not any(s.verb == "include" or os.path.basename(s.path) == DIALPLAN for s in steps):
        return 0
    if args.no_reload:
        print('dialplan: not reloaded (--no-reload): `asterisk -rx "dialplan reload"` makes '
              "Asterisk read it", file=out)  # fmt: skip
        return 0
    layout = options.layout
    done = reload_dialplan(layout.run_dir, layout.asterisk_conf, removed=args.uninstall)
    if done.outcome is Outcome.FAILED:
        print(f"{PROG}: warning: {done.message}; the files are in place: run "
              '`asterisk -rx "dialplan reload"` (or restart Asterisk)', file=err)  # fmt: skip
        return RELOAD_FAILED
    print(done.message, file=out)
    return 0
