"""`consent-ivr install-asterisk` on temporary trees shaped like a Debian and a RHEL Asterisk
install, with and without asterisk.conf, as root and as a user without rights.

Each tree lives in a folder of its own under /tmp (mode 0755, so the `nobody` user of the
unprivileged tests can reach it); the Asterisk user is `nobody`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from consent_ivr.cli.main import main, parser
from consent_ivr.harness.asterisk import SimResult, WavSoundCatalog, run_process
from consent_ivr.install import steps
from consent_ivr.install.files import write
from consent_ivr.install.layout import (
    Directories,
    Layout,
    LayoutError,
    parse_directories,
    resolve,
)
from consent_ivr.install.plan import Options, Project, agi_entry
from consent_ivr.paths import PROJECT_ROOT

SITE_PACKAGES = next(p for p in sys.path if p.endswith("site-packages"))
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
NOBODY = pwd.getpwnam("nobody")
STOCK_EXTENSIONS = "[general]\nstatic=yes\n\n[default]\nexten => s,1,Hangup()\n"

#: Where Asterisk's folders are, relative to the tree, per distribution.
SHAPES = {
    "debian": {"data": "usr/share/asterisk", "agi": "usr/share/asterisk/agi-bin"},
    "rhel": {"data": "var/lib/asterisk", "agi": "var/lib/asterisk/agi-bin"},
}


class Box:
    """A temporary tree shaped like an Asterisk install, and the command line for it."""

    def __init__(self, root: Path, shape: str, asterisk_conf: bool) -> None:
        self.root = root
        self.shape = SHAPES[shape]
        self.asterisk_conf = asterisk_conf
        self.etc = root / "etc/asterisk"
        self.agi_bin = root / self.shape["agi"]
        self.sounds = root / self.shape["data"] / "sounds"
        self.config = root / "etc/consent-ivr"
        self.state = root / "var/lib/consent-ivr"
        self.cache = root / "var/cache/consent-ivr"
        self.systemd = root / "etc/systemd/system"
        for d in (self.etc, self.agi_bin, self.sounds / "en", self.systemd, root / "var/lib",
                  root / "var/cache", root / "var/spool/asterisk"):  # fmt: skip
            d.mkdir(parents=True, exist_ok=True)
        (self.etc / "extensions.conf").write_text(STOCK_EXTENSIONS)
        (self.sounds / "en" / "hello-world.gsm").write_bytes(b"stock sound")
        if asterisk_conf:
            (self.etc / "asterisk.conf").write_text(
                "[directories]\n"
                f"astetcdir => {self.etc}\n"
                f"astagidir => {self.agi_bin}\n"
                f"astdatadir => {root / self.shape['data']}\n"
                f"astvarlibdir => {root / 'var/lib/asterisk'}\n"
                f"astspooldir => {root / 'var/spool/asterisk'}\n"
                f"astrundir => {root / 'var/run/asterisk'}\n"
                "\n[options]\nverbose = 3\n"
            )

    def args(self, *extra: str, user: str = "nobody") -> list[str]:
        argv = ["install-asterisk", "--asterisk-etc", str(self.etc), "--user", user,
                "--config-dir", str(self.config), "--state-dir", str(self.state),
                "--cache-dir", str(self.cache), "--systemd-dir", str(self.systemd)]  # fmt: skip
        if not self.asterisk_conf:  # Asterisk's compiled-in folders are outside the tree
            argv += ["--agi-bin", str(self.agi_bin), "--sounds-dir", str(self.sounds)]
        return argv + list(extra)

    def run(self, *extra: str, user: str = "nobody") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(self.args(*extra, user=user), out, err)
        return code, out.getvalue(), err.getvalue()

    def install(self, *extra: str) -> str:
        code, out, err = self.run(*extra)
        assert code == 0 and not err, err
        return out

    def snapshot(self) -> dict[str, tuple[int, int, int, bytes | str | None]]:
        """Every path under the tree: mode, owner, group and content (a link's target)."""
        seen: dict[str, tuple[int, int, int, bytes | str | None]] = {}
        for here, dirs, files in os.walk(self.root):
            for name in [*dirs, *files]:
                p = os.path.join(here, name)
                st = os.lstat(p)
                if os.path.islink(p):
                    body: bytes | str | None = os.readlink(p)
                elif os.path.isfile(p):
                    body = Path(p).read_bytes()
                else:
                    body = None
                seen[os.path.relpath(p, self.root)] = (st.st_mode, st.st_uid, st.st_gid, body)
        return seen

    def entry_env(self) -> dict[str, str]:
        """The variables the agi-bin entry exports (`export NAME='value'` lines)."""
        text = (self.agi_bin / "consent-ivr.agi").read_text()
        words = [shlex.split(line)[1] for line in text.splitlines() if line.startswith("export ")]
        return dict(w.split("=", 1) for w in words)


def new_tree() -> Path:
    assert os.geteuid() == 0, "these tests run as root: they give files to nobody and drop to it"
    root = Path(tempfile.mkdtemp(prefix="consent-ivr-box-", dir="/tmp"))
    root.chmod(0o755)
    return root


@pytest.fixture
def trees() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


SHAPED = [("debian", True), ("debian", False), ("rhel", True), ("rhel", False)]


@pytest.fixture(params=SHAPED, ids=["debian", "debian-no-conf", "rhel", "rhel-no-conf"])
def box(request: pytest.FixtureRequest, trees: list[Path]) -> Box:
    trees.append(new_tree())
    shape, conf = request.param
    return Box(trees[-1], shape, conf)


@pytest.fixture
def debian(trees: list[Path]) -> Box:
    trees.append(new_tree())
    return Box(trees[-1], "debian", True)


def project_files(folder: str) -> dict[str, bytes]:
    base = PROJECT_ROOT / folder
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def installed_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def owner_and_mode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_mode & 0o7777


# -- where things go ---------------------------------------------------------------------


def test_every_piece_lands_in_asterisks_own_folders_on_debian_and_rhel_trees(box: Box) -> None:
    box.install()
    entry = box.agi_bin / "consent-ivr.agi"
    assert not entry.is_symlink() and owner_and_mode(entry) == (0, 0o755)
    lines = entry.read_text().splitlines()
    assert lines[0] == "#!/bin/sh" and "Installed by `consent-ivr install-asterisk`" in lines[1]
    launcher, python = f"'{PROJECT_ROOT}/agi/consent-ivr.agi'", f"'{PROJECT_ROOT}/.venv/bin/python'"
    assert lines[-2:] == [
        f'if [ -x {python} ]; then exec {python} -S {launcher} "$@"; fi',
        f'exec {launcher} "$@"',
    ]
    assert installed_files(box.sounds / "consent-ivr") == project_files("sounds")
    flows = {n for n in os.listdir(PROJECT_ROOT / "flows") if not n.endswith(".test.yaml")}
    assert set(os.listdir(box.config / "flows")) == flows
    dialplan = (PROJECT_ROOT / "asterisk-config/extensions_consent.conf").read_bytes()
    assert (box.etc / "extensions_consent.conf").read_bytes() == dialplan
    assert (box.etc / "extensions.conf").read_text().count(
        '#include "extensions_consent.conf"'
    ) == 1
    assert owner_and_mode(box.config / "hmac.key") == (NOBODY.pw_uid, 0o600)
    assert len((box.config / "hmac.key").read_bytes().strip()) >= 16
    for private in (box.state, box.cache, box.config):
        assert owner_and_mode(private) == (NOBODY.pw_uid, 0o700)
    assert box.entry_env() == {
        "CONSENT_IVR_HMAC_KEY_FILE": str(box.config / "hmac.key"),
        "CONSENT_IVR_STORE": str(box.state / "evidence.sqlite3"),
        "CONSENT_IVR_FLOWS": str(box.config / "flows"),
        "CONSENT_IVR_SOUNDS": str(box.sounds / "consent-ivr"),
        "CONSENT_IVR_CACHE": str(box.cache),
        "CONSENT_IVR_ENV_FILE": str(box.config / "consent-ivr.env"),
    }
    assert not (box.systemd / "asterisk.service.d").exists()  # nothing for Asterisk's unit
    assert (box.sounds / "en/hello-world.gsm").read_bytes() == b"stock sound"


def test_the_server_unit_runs_serve_as_the_asterisk_user_with_the_installed_settings(
    debian: Box,
) -> None:
    debian.install()
    unit = (debian.systemd / "consent-ivr.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == str(PROJECT_ROOT / ".venv/bin/consent-ivr")
    assert parser().parse_args(argv[1:]).command == "serve"
    assert settings["User"] == "nobody" and settings["Group"] == "nogroup"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert f'"CONSENT_IVR_STORE={debian.state}/evidence.sqlite3"' in unit
    assert settings["ReadWritePaths"] == f'"{debian.state}"'
    assert settings["EnvironmentFile"] == f"-{debian.config}/consent-ivr.env"


def test_asterisk_conf_directories_decide_where_agi_bin_and_sounds_are(debian: Box) -> None:
    elsewhere = debian.root / "srv/asterisk"
    (elsewhere / "agi").mkdir(parents=True)
    (elsewhere / "sounds").mkdir()
    (debian.etc / "asterisk.conf").write_text(
        "[directories](!)\nastagidir => /nowhere/agi-bin\n"  # a template: Asterisk ignores it
        f"[directories]\nastagidir => {elsewhere}/agi ; where this box keeps them\n"
        f"astdatadir => {elsewhere}\n"
    )
    debian.install()
    assert (elsewhere / "agi/consent-ivr.agi").is_file()
    assert (elsewhere / "sounds/consent-ivr/call-tracking.manifest.json").is_file()
    assert not (debian.agi_bin / "consent-ivr.agi").exists()


def test_the_folders_come_from_the_directories_section_never_from_a_template() -> None:
    text = (
        "[directories](!) ; remove the (!) to enable this\nastagidir => /template/agi\n"
        "[options]\nastagidir => /options/agi\n"
        "[directories]\nastdatadir => /srv/a ; a comment\nastdatadir => /srv/b/\n"
    )
    assert parse_directories(text) == Directories(etc=None, agi=None, data="/srv/b")
    with pytest.raises(LayoutError, match=r"asterisk.conf:2: astagidir is 'agi-bin'; expected"):
        parse_directories("[directories]\nastagidir => agi-bin\n")


def test_without_asterisk_conf_the_debian_folders_are_tried_before_the_rhel_ones() -> None:
    debian = resolve("/etc/asterisk", Directories(), {"/usr/share/asterisk"}.__contains__)
    assert (debian.agi_bin, debian.sounds) == (
        "/usr/share/asterisk/agi-bin",
        "/usr/share/asterisk/sounds",
    )
    rhel = resolve("/etc/asterisk", Directories(), {"/var/lib/asterisk"}.__contains__)
    assert (rhel.agi_bin, rhel.sounds) == ("/var/lib/asterisk/agi-bin", "/var/lib/asterisk/sounds")
    given = resolve("/e", Directories(data="/d"), lambda _: False, agi_bin="/a")
    assert (given.agi_bin, given.sounds) == ("/a", "/d/sounds")
    with pytest.raises(
        LayoutError, match=r"is Asterisk installed\? give --agi-bin DIR and --sounds"
    ):
        resolve("/etc/asterisk", Directories(), lambda _: False)


# -- idempotency, dry run, refusals -----------------------------------------------------


def test_a_second_run_changes_nothing_and_says_so(box: Box) -> None:
    box.install()
    before = box.snapshot()
    out = box.install()
    assert out.startswith("nothing to do: consent-ivr is installed as planned"), out
    assert box.snapshot() == before


def test_a_dry_run_prints_each_step_and_changes_nothing(box: Box) -> None:
    before = box.snapshot()
    out = box.install("--dry-run")
    assert box.snapshot() == before
    lines = out.splitlines()
    assert lines[0].startswith("dry run: ") and "nothing is changed" in lines[0]
    count = int(lines[0].split()[2])
    steps = lines[1 : count + 1]
    assert f"create   {box.agi_bin}/consent-ivr.agi" in steps
    assert f"key      {box.config}/hmac.key (new, 0600, nobody)" in steps
    assert f'include  {box.etc}/extensions.conf + #include "extensions_consent.conf"' in steps
    sound_files = len(project_files("sounds"))
    assert sum(s.startswith(f"create   {box.sounds}/consent-ivr/") for s in steps) == sound_files
    real = box.install()  # and the real run takes exactly those steps
    assert real.splitlines()[:count] == steps


@pytest.mark.parametrize("where", ["dialplan", "agi-bin", "sound"])
def test_a_file_it_did_not_write_is_never_overwritten_and_nothing_is_installed(
    debian: Box, where: str
) -> None:
    foreign = {
        "dialplan": debian.etc / "extensions_consent.conf",
        "agi-bin": debian.agi_bin / "consent-ivr.agi",
        "sound": debian.sounds / "consent-ivr/call-tracking.manifest.json",
    }[where]
    foreign.parent.mkdir(exist_ok=True)
    foreign.write_text("; someone else's\n")
    before = debian.snapshot()
    code, out, err = debian.run()
    assert code == 1 and not out
    assert err == (
        f"consent-ivr install-asterisk: {foreign} exists and was not written by consent-ivr "
        "install-asterisk; refusing to overwrite it (move it away, then run again)\n"
    )
    assert debian.snapshot() == before


def test_a_file_changed_since_it_was_installed_is_not_overwritten(debian: Box) -> None:
    debian.install()
    entry = debian.agi_bin / "consent-ivr.agi"
    entry.write_text(entry.read_text().replace("exec ", "export CONSENT_IVR_LOG=/tmp/x\nexec "))
    code, _out, err = debian.run("--cache-dir", str(debian.root / "var/cache/other"))
    assert code == 1 and f"{entry} was changed since consent-ivr install-asterisk wrote it" in err
    assert err.count("\n") == 1


def test_an_identical_file_made_by_hand_is_adopted_and_later_uninstalled(debian: Box) -> None:
    dialplan = debian.etc / "extensions_consent.conf"  # the old manual step: cp ... /etc/asterisk
    shutil.copy(PROJECT_ROOT / "asterisk-config/extensions_consent.conf", dialplan)
    out = debian.install()
    assert f"adopt    {dialplan} (already as planned)" in out
    debian.install("--uninstall")
    assert not os.path.lexists(dialplan)


def test_a_hand_made_link_to_the_launcher_is_replaced_by_the_entry(debian: Box) -> None:
    link = debian.agi_bin / "consent-ivr.agi"  # the old manual step: ln -s ... agi-bin/
    link.symlink_to(PROJECT_ROOT / "agi/consent-ivr.agi")
    out = debian.install()
    assert f"replace  {link} (was a link -> {PROJECT_ROOT}/agi/consent-ivr.agi)" in out
    assert not link.is_symlink() and debian.entry_env()["CONSENT_IVR_FLOWS"]
    debian.install("--uninstall")
    assert not os.path.lexists(link)


def test_the_include_line_is_added_once_and_a_hand_written_one_is_left_alone(debian: Box) -> None:
    debian.install()
    debian.install("--cache-dir", str(debian.root / "var/cache/elsewhere"))
    conf = (debian.etc / "extensions.conf").read_text()
    assert conf.count("#include") == 1
    assert conf == STOCK_EXTENSIONS + "; added by consent-ivr install-asterisk (removed by " \
        '--uninstall)\n#include "extensions_consent.conf"\n'  # fmt: skip
    debian.install("--uninstall")
    assert (debian.etc / "extensions.conf").read_text() == STOCK_EXTENSIONS

    hand = STOCK_EXTENSIONS + '#include "extensions_consent.conf" ; mine\n'
    (debian.etc / "extensions.conf").write_text(hand)
    debian.install()
    debian.install("--uninstall")
    assert (debian.etc / "extensions.conf").read_text() == hand


# -- uninstall ---------------------------------------------------------------------------


def test_uninstall_removes_exactly_what_it_installed_and_never_the_key_or_evidence(
    box: Box,
) -> None:
    stock = box.snapshot()
    box.install()
    (box.state / "evidence.sqlite3").write_bytes(b"records")
    (box.cache / "abc.flow").write_bytes(b"cached")
    key = (box.config / "hmac.key").read_bytes()
    out = box.install("--uninstall")
    assert f"kept {box.config}/hmac.key, {box.state}: the key and the evidence are never" in out
    after = box.snapshot()
    assert (box.config / "hmac.key").read_bytes() == key
    assert (box.state / "evidence.sqlite3").read_bytes() == b"records"
    left = {os.path.relpath(p, box.root) for p in (box.config, box.config / "hmac.key",
            box.state, box.state / "evidence.sqlite3")}  # fmt: skip
    assert set(after) - set(stock) == left
    assert {k: v for k, v in after.items() if k in stock} == stock
    assert box.install("--uninstall").startswith("nothing to uninstall: no manifest")


def test_an_existing_key_is_never_overwritten_nor_removed(debian: Box) -> None:
    debian.config.mkdir(mode=0o700)
    key = debian.config / "hmac.key"
    key.write_bytes(b"an old key of at least sixteen bytes\n")  # root's: Asterisk cannot read it
    out = debian.install()
    assert f"note: {key} (kept as it is) does not belong to nobody: unless nobody may read" in out
    debian.install("--uninstall")
    assert key.read_bytes() == b"an old key of at least sixteen bytes\n"


def test_a_file_changed_after_install_is_left_by_uninstall(debian: Box) -> None:
    debian.install()
    dialplan = debian.etc / "extensions_consent.conf"
    dialplan.write_text(dialplan.read_text() + "; my change\n")
    out = debian.install("--uninstall")
    assert f"left {dialplan}: changed since it was installed" in out
    assert dialplan.read_text().endswith("; my change\n")


def test_moving_the_sounds_folder_removes_the_old_copy(debian: Box) -> None:
    debian.install()
    other = debian.root / "srv/sounds"
    other.mkdir(parents=True)
    out = debian.install("--sounds-dir", str(other))
    assert f"rmdir    {debian.sounds}/consent-ivr" in out
    assert not (debian.sounds / "consent-ivr").exists()
    assert installed_files(other / "consent-ivr") == project_files("sounds")
    assert debian.entry_env()["CONSENT_IVR_SOUNDS"] == f"{other}/consent-ivr"


def test_uninstall_works_after_asterisk_and_its_user_are_gone(debian: Box) -> None:
    debian.install()
    shutil.rmtree(debian.etc)
    code, out, err = debian.run("--uninstall", user="asterisk-removed")
    assert code == 0 and not err, err
    assert f"left {debian.etc}/extensions.conf: cannot read it" in out
    assert not (debian.agi_bin / "consent-ivr.agi").exists()
    assert not (debian.config / "installed.json").exists()


def test_uninstall_refuses_while_the_server_unit_is_enabled(debian: Box) -> None:
    debian.install()
    wants = debian.systemd / "multi-user.target.wants"
    wants.mkdir()
    (wants / "consent-ivr.service").symlink_to(debian.systemd / "consent-ivr.service")
    code, _out, err = debian.run("--uninstall")
    assert code == 1 and "systemctl disable --now consent-ivr" in err


# -- errors, rights and rollback --------------------------------------------------------


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        ("agi-bin", "Asterisk's AGI folder {agi_bin} (from {etc}/asterisk.conf) does not exist: "
                    "is Asterisk installed? (--agi-bin DIR)"),
        ("etc", "Asterisk's configuration folder {etc} does not exist (--asterisk-etc DIR)"),
        ("extensions.conf", "{etc}/extensions.conf does not exist: is {etc} Asterisk's "
                            "configuration folder? (--asterisk-etc DIR)"),
        ("user", "no user 'asterisk-x' on this box: is Asterisk installed? (--user NAME: the "
                 "user Asterisk runs as)"),
        ("systemd", "the systemd unit folder {systemd} does not exist (--systemd-dir DIR, or "
                    "--no-systemd)"),
    ],
)  # fmt: skip
def test_a_missing_folder_or_user_is_one_clear_line(
    debian: Box, break_it: str, expected: str
) -> None:
    user = "asterisk-x" if break_it == "user" else "nobody"
    target = {"agi-bin": debian.agi_bin, "etc": debian.etc, "systemd": debian.systemd,
              "extensions.conf": debian.etc / "extensions.conf"}.get(break_it)  # fmt: skip
    if target is not None and target.is_dir():
        shutil.rmtree(target)
    elif target is not None:
        target.unlink()
    code, out, err = debian.run(user=user)
    message = expected.format(agi_bin=debian.agi_bin, etc=debian.etc, systemd=debian.systemd)
    assert (code, out, err) == (1, "", f"consent-ivr install-asterisk: {message}\n")


def test_a_failure_halfway_undoes_every_step_already_taken(
    debian: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = debian.snapshot()

    def refuse_agi_bin(path: str, data: bytes, mode: int) -> None:
        if path.startswith(str(debian.agi_bin)):
            raise PermissionError(13, "Permission denied")
        write(path, data, mode)

    monkeypatch.setattr(steps, "write", refuse_agi_bin)
    code, out, err = debian.run()
    assert code == 1 and not out
    assert err == (
        f"consent-ivr install-asterisk: cannot create {debian.agi_bin}/consent-ivr.agi: "
        "Permission denied; nothing was changed (undone)\n"
    )
    assert debian.snapshot() == before


def require_checkout_readable_by_nobody() -> None:
    """The runs as `nobody` below execute this checkout's code, as Asterisk's user executes an
    installed box's (`/opt/consent-ivr` must be readable by it). A checkout inside a folder only
    its owner may enter (e.g. one `mktemp -d` made, mode 0700) cannot be: fail with that reason,
    not with the import error `nobody` would get."""
    probe = [*AS_NOBODY, "test", "-r", str(PROJECT_ROOT / "agi" / "consent_ivr" / "__init__.py")]
    if subprocess.run(probe, check=False).returncode != 0:
        pytest.fail(
            f"user nobody cannot read this checkout ({PROJECT_ROOT}): a folder above it is closed"
            " to other users; clone it where Asterisk's user could read it (as on a real box)"
        )


def run_as_nobody(box: Box, *extra: str, user: str = "nobody") -> subprocess.CompletedProcess[str]:
    require_checkout_readable_by_nobody()
    argv = [*AS_NOBODY, sys.executable, "-m", "consent_ivr.cli.main", *box.args(*extra, user=user)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")


def test_a_user_without_rights_gets_one_line_and_nothing_changes(box: Box) -> None:
    before = box.snapshot()
    done = run_as_nobody(box)
    assert done.returncode == 1 and not done.stdout
    assert done.stderr == (
        f"consent-ivr install-asterisk: cannot mkdir {box.config}: no permission to write in "
        f"{box.root}/etc (run as root, or as a user who may write there); nothing was changed\n"
    )
    assert box.snapshot() == before


def test_without_root_the_files_cannot_be_given_to_another_user(debian: Box) -> None:
    done = run_as_nobody(debian, user="root")
    assert done.returncode == 1
    assert done.stderr == (
        "consent-ivr install-asterisk: cannot give the key and the evidence folder to user "
        "'root' without root: run as root, or give --user nobody\n"
    )


def test_a_user_may_install_into_a_tree_of_its_own_without_root(debian: Box) -> None:
    for here, dirs, files in os.walk(debian.root):
        for name in [here, *(os.path.join(here, n) for n in dirs + files)]:
            os.chown(name, NOBODY.pw_uid, NOBODY.pw_gid)
    done = run_as_nobody(debian)
    assert done.returncode == 0, done.stderr
    assert owner_and_mode(debian.config / "hmac.key") == (NOBODY.pw_uid, 0o600)
    again = run_as_nobody(debian)
    assert again.stdout.startswith("nothing to do"), again.stdout + again.stderr


# -- a live call on the installed box ----------------------------------------------------


def python_for_nobody(box: Box) -> Path:
    """A folder with a `python3` the Asterisk user can run that has the project's packages.

    Here the virtualenv's Python links into root's private home, which `nobody` cannot enter, so
    the launcher falls back to `python3` on PATH (its documented fallback): this one is the
    system's Python of the same version with the virtualenv's packages."""
    require_checkout_readable_by_nobody()
    system = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
    assert system.exists(), f"{system} is needed for the calls as nobody"
    folder = box.root / "python-bin"
    folder.mkdir(exist_ok=True)
    shim = folder / "python3"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(SITE_PACKAGES)} exec {system} "$@"\n')
    shim.chmod(0o755)
    return folder


def call(box: Box, dtmf: str = "1") -> SimResult:
    """A call through the installed agi-bin entry, run as Asterisk runs it: as its user, with
    nothing of consent-ivr in the environment (no systemd drop-in, no restart)."""
    agi = str(box.agi_bin / "consent-ivr.agi")
    return run_process(
        [*AS_NOBODY, agi, "call-tracking"],
        env={"PATH": f"{python_for_nobody(box)}:{os.environ['PATH']}"},
        cwd="/",
        request=agi,
        dtmf=dtmf,
        sounds=WavSoundCatalog(),
        timeout=30,
    )


def records(store: Path) -> int:
    with sqlite3.connect(store) as db:
        count: int = db.execute("SELECT count(*) FROM evidence").fetchone()[0]
    return count


def test_a_call_on_the_installed_box_runs_as_the_asterisk_user_and_is_recorded(box: Box) -> None:
    box.install()
    result = call(box)
    assert result.exit_code == 0, result.stderr
    assert result.variables["CONSENT_GA_LINKAGE"] == "granted"
    said = [line.decode() for direction, line in result.log if direction == "S>A"]
    sounds = [line for line in said if line.startswith("STREAM FILE")]
    assert sounds and all(f'"{box.sounds}/consent-ivr/' in line for line in sounds), sounds[:2]
    store = box.state / "evidence.sqlite3"
    assert store.stat().st_uid == NOBODY.pw_uid and store.stat().st_size > 0
    assert any(p.suffix == ".flow" for p in box.cache.iterdir())  # the flow cache was used


def write_env_file(box: Box, text: str, mode: int = 0o640) -> Path:
    """The operator's settings file, as the example says: root's, group of the Asterisk user."""
    env_file = box.config / "consent-ivr.env"
    env_file.write_text(text)
    os.chown(env_file, 0, NOBODY.pw_gid)
    env_file.chmod(mode)
    return env_file


def test_a_changed_settings_file_applies_to_the_next_call_without_reinstall(debian: Box) -> None:
    debian.install()
    installed_store = debian.state / "evidence.sqlite3"
    assert call(debian).exit_code == 0
    assert records(installed_store) == 1
    other = debian.root / "srv/evidence"
    other.mkdir(parents=True)
    os.chown(other, NOBODY.pw_uid, NOBODY.pw_gid)
    write_env_file(debian, f'# mine\nCONSENT_IVR_STORE = "{other}/moved.sqlite3"\n')
    before = debian.snapshot()
    result = call(debian, "2")
    assert result.exit_code == 0, result.stderr
    assert result.variables["CONSENT_STATUS"] == "declined"
    assert records(other / "moved.sqlite3") == 1  # the next call used the file's store
    assert records(installed_store) == 1
    assert debian.install().startswith("nothing to do")  # nothing to reinstall
    changed = {k for k, v in debian.snapshot().items() if before.get(k) != v}
    assert changed == {"srv/evidence/moved.sqlite3"}, changed


def test_a_hostile_settings_file_is_read_as_data_and_never_run(debian: Box) -> None:
    debian.install()
    pwned = debian.root / "pwned"
    env_file = write_env_file(debian, (
        f"CONSENT_IVR_NOTE=$(touch {pwned}-1)\n"
        f"`touch {pwned}-2`\n"
        f"touch {pwned}-3; CONSENT_IVR_X=1\n"
        f'CONSENT_IVR_Y="a" ; touch {pwned}-4\n'
        f"$(touch {pwned}-5)=1\n"
    ))  # fmt: skip
    result = call(debian)
    assert result.exit_code == 0, result.stderr
    assert result.variables["CONSENT_STATUS"] == "granted"
    assert not list(debian.root.glob("pwned*"))
    for line in (2, 3, 4, 5):  # the Asterisk console names each line that is not NAME=value
        assert f"{env_file}:{line}: line ignored: expected NAME=value" in result.stderr.decode()


def test_a_settings_file_asterisk_cannot_read_ends_each_call_as_error(debian: Box) -> None:
    debian.install()
    env_file = write_env_file(debian, "CONSENT_IVR_STORE=postgresql://db/evidence\n", 0o600)
    result = call(debian)
    assert result.exit_code == 1
    assert result.variables["CONSENT_STATUS"] == "error"  # fail closed: never consent
    assert f"cannot read the settings file {env_file}: Permission denied" in result.stderr.decode()
    assert not (debian.state / "evidence.sqlite3").exists()


def test_the_entry_quotes_every_path_for_sh_and_starts_the_virtualenv_or_the_launcher(
    tmp_path: Path,
) -> None:
    odd = str(tmp_path / "it's a $HOME `x`")
    layout = Layout(f"{odd}/etc", f"{odd}/agi-bin", f"{odd}/sounds", None)
    options = Options(layout=layout, config_dir=f"{odd}/conf", state_dir=f"{odd}/state",
                      cache_dir=f"{odd}/cache")  # fmt: skip
    root = tmp_path / "project's root"
    (root / "agi").mkdir(parents=True)
    launcher = root / "agi/consent-ivr.agi"  # a stand-in that shows what it was given
    launcher.write_text('#!/bin/sh\nenv | grep ^CONSENT_IVR_ | sort; printf "%s\\n" "$@"\n')
    launcher.chmod(0o755)
    project = Project(str(root), (), (), "")
    entry = tmp_path / "consent-ivr.agi"
    entry.write_bytes(agi_entry(options, project))
    done = subprocess.run(["sh", str(entry), "a b", "$x"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]}, check=True)  # fmt: skip
    expected = sorted(f"{k}={v}" for k, v in options.environment(True))
    expected = sorted([*expected, f"CONSENT_IVR_ENV_FILE={odd}/conf/consent-ivr.env"])
    assert done.stdout.splitlines() == [*expected, "a b", "$x"]  # no virtualenv: the launcher
    (root / ".venv/bin").mkdir(parents=True)
    python = root / ".venv/bin/python"  # a stand-in that shows its arguments
    python.write_text('#!/bin/sh\necho venv; printf "%s\\n" "$@"\n')
    python.chmod(0o755)
    done = subprocess.run(["sh", str(entry), "a b"], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["venv", "-S", str(launcher), "a b"]


# -- upgrading an older install (the systemd drop-in and the agi-bin link) ---------------


def make_older_install(box: Box) -> tuple[Path, Path]:
    """Turn a fresh install into what the install before the agi-bin entry left: a link in
    agi-bin and a drop-in for asterisk.service, both in the manifest."""
    box.install()
    entry = box.agi_bin / "consent-ivr.agi"
    launcher = str(PROJECT_ROOT / "agi/consent-ivr.agi")
    entry.unlink()
    entry.symlink_to(launcher)
    drop_in_dir = box.systemd / "asterisk.service.d"
    drop_in_dir.mkdir()
    drop_in = drop_in_dir / "consent-ivr.conf"
    drop_in.write_text("# Installed by `consent-ivr install-asterisk`\n[Service]\n")
    manifest_path = box.config / "installed.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"][str(entry)]
    manifest["files"][str(drop_in)] = hashlib.sha256(drop_in.read_bytes()).hexdigest()
    manifest["links"] = {str(entry): launcher}
    manifest["dirs"].append(str(drop_in_dir))
    manifest_path.write_text(json.dumps(manifest))
    return entry, drop_in


def test_an_older_install_is_upgraded_to_the_entry_and_loses_its_drop_in(debian: Box) -> None:
    entry, drop_in = make_older_install(debian)
    out = debian.install()
    assert f"replace  {entry} (was a link -> {PROJECT_ROOT}/agi/consent-ivr.agi)" in out
    assert f"remove   {drop_in}" in out and f"rmdir    {drop_in.parent}" in out
    assert "systemctl daemon-reload` when convenient (Asterisk need not restart)" in out
    assert "restart asterisk" not in out
    assert not entry.is_symlink() and not drop_in.parent.exists()
    assert call(debian).variables["CONSENT_STATUS"] == "granted"
    assert debian.install().startswith("nothing to do")
    debian.install("--uninstall")
    assert not os.path.lexists(entry)


def test_uninstalling_an_older_install_removes_its_link_and_drop_in(debian: Box) -> None:
    entry, drop_in = make_older_install(debian)
    out = debian.install("--uninstall")
    assert f"remove   {entry} -> {PROJECT_ROOT}/agi/consent-ivr.agi" in out
    assert f"remove   {drop_in}" in out
    assert not os.path.lexists(entry) and not drop_in.parent.exists()


# -- the dialplan reload of a running Asterisk ------------------------------------------


class FakeAsterisk:
    """An `asterisk` command on PATH that records its arguments, and (if `running`) a control
    socket in the box's astrundir, as a running Asterisk has."""

    def __init__(self, box: Box, monkeypatch: pytest.MonkeyPatch, answer: str, status: int = 0,
                 running: bool = True) -> None:  # fmt: skip
        bin_dir = box.root / "usr/sbin"
        bin_dir.mkdir(parents=True)
        self.calls = box.root / "asterisk-calls"
        script = bin_dir / "asterisk"
        script.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {self.calls}\necho >> {self.calls}\n'
                          f"echo {shlex.quote(answer)}\nexit {status}\n")  # fmt: skip
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        self.socket: socket.socket | None = None
        if running:
            run_dir = box.root / "var/run/asterisk"
            run_dir.mkdir(parents=True)
            self.socket = socket.socket(socket.AF_UNIX)
            self.socket.bind(str(run_dir / "asterisk.ctl"))
        self.conf = box.etc / "asterisk.conf"

    def ran(self) -> list[list[str]]:
        if not self.calls.exists():
            return []
        return [line.split("|")[:-1] for line in self.calls.read_text().splitlines()]


@pytest.fixture
def socket_closer() -> Iterator[list[FakeAsterisk]]:
    made: list[FakeAsterisk] = []
    yield made
    for fake in made:
        if fake.socket is not None:
            fake.socket.close()


def test_a_running_asterisk_reloads_its_dialplan_after_install_and_uninstall(
    debian: Box, monkeypatch: pytest.MonkeyPatch, socket_closer: list[FakeAsterisk]
) -> None:
    fake = FakeAsterisk(debian, monkeypatch, "Dialplan reloaded.")
    socket_closer.append(fake)
    out = debian.install()
    assert 'dialplan: reloaded (`asterisk -rx "dialplan reload"`: Dialplan reloaded.)' in out
    assert fake.ran() == [["-C", str(fake.conf), "-rx", "dialplan reload"]]
    assert debian.install().startswith("nothing to do")  # no change, no reload
    assert len(fake.ran()) == 1
    out = debian.install("--uninstall")
    assert "dialplan: reloaded" in out and len(fake.ran()) == 2


def test_no_reload_leaves_the_running_asterisk_alone(
    debian: Box, monkeypatch: pytest.MonkeyPatch, socket_closer: list[FakeAsterisk]
) -> None:
    fake = FakeAsterisk(debian, monkeypatch, "Dialplan reloaded.")
    socket_closer.append(fake)
    out = debian.install("--no-reload")
    assert 'dialplan: not reloaded (--no-reload): `asterisk -rx "dialplan reload"`' in out
    assert fake.ran() == []


def test_an_asterisk_that_is_not_running_reads_the_include_when_it_starts(
    debian: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAsterisk(debian, monkeypatch, "never asked", running=False)
    out = debian.install()
    assert (
        f"dialplan: Asterisk is not running (no control socket {debian.root}/var/run/asterisk/"
        "asterisk.ctl); it reads the include when it starts"
    ) in out
    assert "it no longer reads the include when it starts" in debian.install("--uninstall")
    assert fake.ran() == []


def test_a_failed_reload_is_one_warning_and_exit_status_3_with_everything_installed(
    debian: Box, monkeypatch: pytest.MonkeyPatch, socket_closer: list[FakeAsterisk]
) -> None:
    answer = "Unable to connect to remote asterisk (does /x/asterisk.ctl exist?)"
    fake = FakeAsterisk(debian, monkeypatch, answer, status=1)
    socket_closer.append(fake)
    code, out, err = debian.run()
    assert code == 3
    assert err == (
        f'consent-ivr install-asterisk: warning: `asterisk -rx "dialplan reload"` failed (exit '
        f'status 1): {answer}; the files are in place: run `asterisk -rx "dialplan reload"` '
        "(or restart Asterisk)\n"
    )
    assert out.count("installed: ") == 1 and (debian.config / "installed.json").exists()
    assert debian.install().startswith("nothing to do")
