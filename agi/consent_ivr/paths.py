"""Where flows, sounds and the evidence store live by default, with environment overrides.

Plain strings underneath (`os.path`): process AGI locates its flow before the first prompt and
does not import pathlib for it; the `Path` forms are for everything else.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    #: The repository (or unpacked release) root: the folder that holds agi/, flows/, sounds/.
    PROJECT_ROOT: Path

#: The project root as a string.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


#: The evidence store when neither --store nor $CONSENT_IVR_STORE names one.
DEFAULT_STORE = "/var/lib/consent-ivr/evidence.sqlite3"


def store_location(environ: Mapping[str, str] | None = None, given: str | None = None) -> str:
    """The evidence store to use: `given` (a --store option), else $CONSENT_IVR_STORE, else
    `DEFAULT_STORE` — the one rule every command and both transports follow."""
    env = os.environ if environ is None else environ
    return given or env.get("CONSENT_IVR_STORE") or DEFAULT_STORE


def flows_path() -> str:
    """Folder of flow files: $CONSENT_IVR_FLOWS or <root>/flows."""
    return os.environ.get("CONSENT_IVR_FLOWS") or os.path.join(ROOT, "flows")


def sounds_path() -> str:
    """Prompt audio, laid out <lang>/<flow>/<prompt>.wav: $CONSENT_IVR_SOUNDS or <root>/sounds."""
    return os.environ.get("CONSENT_IVR_SOUNDS") or os.path.join(ROOT, "sounds")


#: A flow's test file beside it (`consent-ivr test`): `<flow>.test.yaml`. It is not a flow.
FLOW_TEST_SUFFIX = ".test.yaml"


def is_flow_file(name: str) -> bool:
    """Whether a file in a flows folder is a flow: `.yaml` or `.yml`, not hidden (an editor's lock
    file), not a flow test — the one rule by which the server, the linter, the flow cache and the
    commands list a folder's flows."""
    base = os.path.basename(name)
    return (
        base.endswith((".yaml", ".yml"))
        and not base.startswith(".")
        and not base.endswith((FLOW_TEST_SUFFIX, ".test.yml"))
    )


def flow_files(folder: str) -> list[str]:
    """The flows in `folder` (`is_flow_file`), as sorted paths; an unreadable folder raises
    OSError."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if is_flow_file(n))


def flows_dir() -> Path:
    """`flows_path()` as a Path."""
    from pathlib import Path

    return Path(flows_path())


def sounds_dir() -> Path:
    """`sounds_path()` as a Path."""
    from pathlib import Path

    return Path(sounds_path())


def agi_script() -> Path:
    """The process-AGI entry point that Asterisk runs from its agi-bin."""
    from pathlib import Path

    return Path(ROOT, "agi", "consent-ivr.agi")


def __getattr__(name: str) -> object:
    if name == "PROJECT_ROOT":
        from pathlib import Path

        return Path(ROOT)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
