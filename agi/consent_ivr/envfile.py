"""The settings file (`/etc/consent-ivr/consent-ivr.env`) read into process AGI's environment.

The FastAGI server gets the file from systemd (`EnvironmentFile=`); process AGI is started by
Asterisk for each call, and `consent-ivr install-asterisk`'s agi-bin entry names the file in
``$CONSENT_IVR_ENV_FILE``, which `apply` reads here — so a changed setting applies to the next
call, with no restart of Asterisk. The file is data, never run: each line is ``NAME=value``
(``NAME`` of letters, digits and ``_``, not starting with a digit; spaces around ``=`` allowed;
a value wholly in ``"..."`` or ``'...'`` loses the quotes, and in ``"..."`` a backslash escapes
the next character), or blank, or a ``#``/``;`` comment — the part of systemd's syntax that the
example file uses. Any other line is ignored with a warning naming its line, as systemd ignores
it. Plain string work, no imports: this runs before every call's first prompt.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import MutableMapping

#: The variable that names the settings file (set by the installed agi-bin entry).
ENV_FILE_VARIABLE = "CONSENT_IVR_ENV_FILE"

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")


def is_name(name: str) -> bool:
    """Whether `name` is a variable name: ``[A-Za-z_][A-Za-z0-9_]*``."""
    return bool(name) and name[0] in _NAME_START and set(name) <= _NAME_CHARS


def _unquote(value: str) -> str | None:
    """The value without its quotes (None: an opening quote is never closed)."""
    if not value or value[0] not in "\"'":
        return value
    quote = value[0]
    if len(value) < 2 or value[-1] != quote:
        return None
    inner = value[1:-1]
    if quote == "'":
        return None if "'" in inner else inner
    out: list[str] = []
    chars = iter(inner)
    for ch in chars:
        if ch == "\\":
            ch = next(chars, "\\")
        elif ch == '"':
            return None  # a quote inside: more than one quoted value on the line
        out.append(ch)
    return "".join(out)


def parse(text: str) -> tuple[dict[str, str], list[int]]:
    """The settings of an env file's text (a later line wins), and the numbers of the lines
    ignored as not ``NAME=value``."""
    settings: dict[str, str] = {}
    ignored: list[int] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        unquoted = _unquote(value.strip()) if equals else None
        if unquoted is None or not is_name(name):
            ignored.append(number)
            continue
        settings[name] = unquoted
    return settings, ignored


def apply(environ: MutableMapping[str, str]) -> tuple[str | None, list[str]]:
    """Read the file ``environ[CONSENT_IVR_ENV_FILE]`` names into `environ` (its settings win).

    Returns (an error, warnings): no variable or no such file is no error (the file is optional,
    as systemd's ``EnvironmentFile=-``); a file that exists but cannot be read is — the caller
    fails the call closed, since the settings it holds (store, key) are unknown."""
    path = environ.get(ENV_FILE_VARIABLE)
    if not path:
        return None, []
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None, []
    except OSError as exc:
        return f"cannot read the settings file {path}: {exc.strerror}", []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"settings file {path} is not UTF-8 text", []
    settings, ignored = parse(text)
    environ.update(settings)
    warnings = [f"{path}:{n}: line ignored: expected NAME=value" for n in ignored]
    return None, warnings
