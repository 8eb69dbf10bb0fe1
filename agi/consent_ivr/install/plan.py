"""What an Asterisk box needs for consent-ivr, as a list of items (sans I/O).

`plan` turns the folders (`layout.Layout`), the options and a listing of the project into the
items the box must hold, in the order they are installed: the consent-ivr folders (settings and
key, evidence, flow cache), the flows, the prompts under Asterisk's sounds folder, the agi-bin
entry (a sh script that gives process AGI its settings, `agi_entry`), the dialplan file and its
``#include`` line, and the FastAGI server's unit. Nothing asks for a restart of Asterisk. It
reads and writes nothing; `apply` compares the items with the disk.
"""

from __future__ import annotations

from consent_ivr.envfile import ENV_FILE_VARIABLE
from consent_ivr.install.layout import Layout
from consent_ivr.records import Record

#: The dialplan file installed into Asterisk's configuration folder and included once.
DIALPLAN = "extensions_consent.conf"
#: The configuration file that gets the ``#include`` line.
EXTENSIONS = "extensions.conf"
#: The comment line put above the ``#include`` line, so a reader (and --uninstall) knows it.
INCLUDE_MARK = "; added by consent-ivr install-asterisk (removed by --uninstall)"
#: The first line of every file the installer generates.
MARK = "Installed by `consent-ivr install-asterisk` (--uninstall removes it); not to be edited."
#: The manifest of what was installed, in the settings folder.
MANIFEST = "installed.json"


class Dir(Record):
    """A folder. `private`: mode and owner are enforced on an existing folder too; `keep`: never
    removed (the evidence)."""

    path: str
    mode: int = 0o755
    owned: bool = False  #: owned by the Asterisk user (else by whoever installs)
    private: bool = False
    keep: bool = False


class File(Record):
    """A file with exactly these bytes: a copy of `source` (a project file) or `content`."""

    path: str
    source: str | None = None
    content: bytes | None = None
    mode: int = 0o644
    #: A symbolic link to this target found at `path` is replaced: what an older install (or
    #: the manual `ln -s`) put there.
    replaces_link: str | None = None


class Key(Record):
    """The pseudonym key: made (random, 0600, the Asterisk user's) when missing, else left as it
    is; never overwritten, never removed."""

    path: str


class Include(Record):
    """``#include "<name>"`` in `conf`, once (added with `INCLUDE_MARK` above it when absent)."""

    conf: str
    name: str


Item = Dir | File | Key | Include


class Project(Record):
    """What the project ships, relative to its root: the flow files (flows/), the prompt files
    (sounds/, any format), and the text of the FastAGI server's unit."""

    root: str
    flows: tuple[str, ...]
    sounds: tuple[str, ...]
    unit_template: str


class Options(Record):
    layout: Layout
    user: str = "asterisk"
    group: str = "asterisk"
    config_dir: str = "/etc/consent-ivr"
    state_dir: str = "/var/lib/consent-ivr"
    cache_dir: str = "/var/cache/consent-ivr"
    systemd_dir: str | None = "/etc/systemd/system"  #: None: no FastAGI server unit

    @property
    def sounds_dir(self) -> str:
        return f"{self.layout.sounds}/consent-ivr"

    @property
    def flows_dir(self) -> str:
        return f"{self.config_dir}/flows"

    @property
    def key_file(self) -> str:
        return f"{self.config_dir}/hmac.key"

    @property
    def manifest(self) -> str:
        return f"{self.config_dir}/{MANIFEST}"

    @property
    def env_file(self) -> str:
        return f"{self.config_dir}/consent-ivr.env"

    def environment(self, process_agi: bool) -> list[tuple[str, str]]:
        """The variables the installed product runs with (the flow cache only for process AGI)."""
        env = [
            ("CONSENT_IVR_HMAC_KEY_FILE", self.key_file),
            ("CONSENT_IVR_STORE", f"{self.state_dir}/evidence.sqlite3"),
            ("CONSENT_IVR_FLOWS", self.flows_dir),
            ("CONSENT_IVR_SOUNDS", self.sounds_dir),
        ]
        return [*env, ("CONSENT_IVR_CACHE", self.cache_dir)] if process_agi else env


def systemd_quote(value: str) -> str:
    """A value for `Environment=` / `ReadWritePaths=`: quoted, with systemd's escapes (`%` is
    a specifier)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def sh_quote(value: str) -> str:
    """A word for POSIX sh: in single quotes (a `'` inside written `'\\''`)."""
    return "'" + value.replace("'", "'\\''") + "'"


def agi_entry(options: Options, project: Project) -> bytes:
    """The agi-bin entry `consent-ivr.agi`: a sh script that sets the installed folders and
    names the settings file (read by the launcher's Python: `consent_ivr.envfile`), then runs the
    project's launcher. Asterisk starts it afresh for each call, so a changed setting applies to
    the next call: no restart of Asterisk, no systemd drop-in.

    It starts the virtualenv's Python on the launcher itself, as the launcher's own shell part
    would (`-S`), saving a second shell's start (~1 ms of every call's dead air); without a
    virtualenv it runs the launcher, whose shell part picks the Python."""
    env = [*options.environment(True), (ENV_FILE_VARIABLE, options.env_file)]
    launcher = sh_quote(f"{project.root}/agi/consent-ivr.agi")
    python = sh_quote(f"{project.root}/.venv/bin/python")
    lines = [
        "#!/bin/sh",
        f"# {MARK}",
        "# Process AGI's entry (AGI(consent-ivr.agi,<flow>[,<language>])): the folders this box's",
        f"# install put things in; a setting in {options.env_file} wins (read at",
        "# each call, never run as shell code), then the project's launcher.",
        *(f"export {k}={sh_quote(v)}" for k, v in env),
        f'if [ -x {python} ]; then exec {python} -S {launcher} "$@"; fi',
        f'exec {launcher} "$@"',
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def server_unit(options: Options, project: Project) -> bytes:
    """The FastAGI server's unit: the project's template with this box's project folder, user,
    settings and evidence folder."""
    out = [
        f"# {MARK}",
        f"# Made from {project.root}/asterisk-config/consent-ivr.service for this box.",
    ]
    template = project.unit_template.replace("/opt/consent-ivr", project.root).splitlines()
    start = next((i for i, line in enumerate(template) if line.startswith("[")), 0)
    for line in template[start:]:  # the template's own header comment says how to install it
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else ""
        if key == "User":
            out.append(f"User={options.user}")
        elif key == "Group":
            out.append(f"Group={options.group}")
        elif key == "EnvironmentFile":
            env = options.environment(False)
            out += [f"Environment={systemd_quote(f'{k}={v}')}" for k, v in env]
            out.append(f"EnvironmentFile=-{options.env_file}")
        elif key == "ReadWritePaths":
            out.append(f"ReadWritePaths={systemd_quote(options.state_dir)}")
        else:
            out.append(line)
    return ("\n".join(out) + "\n").encode("utf-8")


def _tree(root: str, files: tuple[str, ...], source_root: str) -> list[Item]:
    """The folders (parents first) and files of a copied tree."""
    folders = sorted(
        {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
    )
    items: list[Item] = [Dir(root)]
    items += [Dir(f"{root}/{d}") for d in folders]
    items += [File(f"{root}/{f}", source=f"{source_root}/{f}") for f in sorted(files)]
    return items


def plan(options: Options, project: Project) -> list[Item]:
    """Every item the box needs, in the order they are installed."""
    lay = options.layout
    launcher = f"{project.root}/agi/consent-ivr.agi"
    items: list[Item] = [
        Dir(options.config_dir, 0o700, owned=True, private=True),
        Key(options.key_file),
        Dir(options.state_dir, 0o700, owned=True, private=True, keep=True),
        Dir(options.cache_dir, 0o700, owned=True, private=True),
    ]
    items += _tree(options.flows_dir, project.flows, f"{project.root}/flows")
    items += _tree(options.sounds_dir, project.sounds, f"{project.root}/sounds")
    items += [
        File(
            f"{lay.agi_bin}/consent-ivr.agi",
            content=agi_entry(options, project),
            mode=0o755,
            replaces_link=launcher,
        ),
        File(f"{lay.etc}/{DIALPLAN}", source=f"{project.root}/asterisk-config/{DIALPLAN}"),
        Include(f"{lay.etc}/{EXTENSIONS}", DIALPLAN),
    ]
    if options.systemd_dir is not None:
        unit = server_unit(options, project)
        items.append(File(f"{options.systemd_dir}/consent-ivr.service", content=unit))
    return items
