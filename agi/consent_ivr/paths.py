"""Where flows, sounds and the evidence store live by default, with environment overrides."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository (or unpacked release) root: the folder that holds agi/, flows/ and sounds/.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def flows_dir() -> Path:
    """Folder of flow files: $CONSENT_IVR_FLOWS or <root>/flows."""
    return Path(os.environ.get("CONSENT_IVR_FLOWS") or PROJECT_ROOT / "flows")


def sounds_dir() -> Path:
    """Prompt audio, laid out <lang>/<flow>/<prompt>.wav: $CONSENT_IVR_SOUNDS or <root>/sounds."""
    return Path(os.environ.get("CONSENT_IVR_SOUNDS") or PROJECT_ROOT / "sounds")


def agi_script() -> Path:
    """The process-AGI entry point that Asterisk runs from its agi-bin."""
    return PROJECT_ROOT / "agi" / "consent-ivr.agi"
