"""Build small in-memory flows for engine tests (no YAML, no audio on disk)."""

from __future__ import annotations

import shutil
from pathlib import Path

from consent_ivr.flow.model import (
    Basis,
    Caps,
    Choice,
    Controller,
    Flow,
    Keys,
    Prompt,
    Purpose,
    Question,
    Returning,
)

RATE = 8000


def prompt(pid: str, seconds: float = 1.0, langs: tuple[str, ...] = ("de", "en")) -> Prompt:
    samples = int(seconds * RATE)
    return Prompt(
        id=pid,
        text={lang: f"{pid} text {lang}" for lang in langs},
        audio={lang: f"/snd/{lang}/{pid}.wav" for lang in langs},
        audio_sha256={lang: f"sha-{lang}-{pid}" for lang in langs},
        samples={lang: samples for lang in langs},
    )


def make_flow(
    *,
    purposes: tuple[str, ...] = ("ga_linkage",),
    notice: tuple[float, ...] = (2.0, 3.0),
    full: tuple[float, ...] = (4.0,),
    caps: Caps | None = None,
    keys: Keys | None = None,
    accept_during_notice: bool = False,
    noinput: int = 2,
    nomatch: int = 2,
    timeout_ms: int = 5000,
    returning: bool = False,
) -> Flow:
    return Flow(
        id="test-flow",
        version=1,
        notice_version="1",
        languages=("de", "en"),
        controller=Controller("Muster GmbH", "dsb@example.test"),
        policy_url="example.test/datenschutz",
        purposes=(
            Purpose("call_analytics", Basis.LEGITIMATE_INTEREST, {}),
            *tuple(Purpose(p, Basis.CONSENT, {}) for p in purposes),
        ),
        notice=tuple(prompt(f"seg{i + 1}", s) for i, s in enumerate(notice)),
        full_notice=tuple(prompt(f"full{i + 1}", s) for i, s in enumerate(full)),
        choice=Choice(
            keys=keys or Keys(),
            timeout_ms=timeout_ms,
            caps=caps or Caps(),
            noinput=tuple(prompt(f"noinput_{i + 1}") for i in range(noinput)),
            nomatch=tuple(prompt(f"nomatch_{i + 1}") for i in range(nomatch)),
            accept_during_notice=accept_during_notice,
        ),
        questions=tuple(Question(p, prompt(f"ask_{p}")) for p in purposes),
        close={k: prompt(f"close_{k}") for k in ("granted", "declined", "none", "partial")},
        source_path="<memory>",
        source_sha256="0" * 64,
        notice_sha256={"de": "a" * 64, "en": "b" * 64},
        returning=Returning(
            30,
            ("granted", "declined"),
            {o: prompt(f"reminder_{o}", 4.0) for o in ("granted", "declined")},
        )
        if returning
        else None,
    )


def copy_example_flows(folder: Path) -> Path:
    """Copy the example consent flow with its withdrawal flow into `folder` (a consent flow alone
    in a folder fails R17: nobody could withdraw by phone); returns the consent flow's path."""
    from consent_ivr.paths import flows_dir

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("call-tracking.yaml", "withdrawal.yaml"):
        shutil.copy(flows_dir() / name, folder / name)
    return folder / "call-tracking.yaml"
