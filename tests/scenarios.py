"""The shared table of consent-call scenarios (issue #2), run over every transport.

Times are computed from the example flow's audio, so a re-recorded notice does not break them:
`t_question(flow, lang)` is when the question starts (answer 0.5 s + the whole first layer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import PlayEntry, SimResult
from consent_ivr.protocol.session import audio_argument

ANSWER_S = 0.5


def notice_seconds(flow: Flow, lang: str) -> float:
    return sum(p.samples[lang] for p in flow.notice) / 8000


def t_question(flow: Flow, lang: str) -> float:
    return ANSWER_S + notice_seconds(flow, lang)


def t_wait(flow: Flow, lang: str) -> float:
    return t_question(flow, lang) + flow.questions[0].prompt.samples[lang] / 8000


@dataclass(frozen=True)
class Scenario:
    name: str
    dtmf: Callable[[Flow, str], str]
    status: str
    reason: str
    agistatus: str = "SUCCESS"
    prompts: tuple[str, ...] = ()  # prompt ids that must have been played (in this order)
    key_meanings: tuple[str, ...] | None = None
    hung_up: bool = False  # what the evidence record says
    extra: dict[str, object] = field(default_factory=dict)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "accept after the notice",
        lambda f, lang: "1",
        "granted",
        "key",
        prompts=(
            "who",
            "analytics",
            "google",
            "voluntary",
            "rights",
            "ask_ga_linkage",
            "close_granted",
        ),
        key_meanings=("accept",),
    ),
    Scenario(
        "decline during the notice",
        lambda f, lang: "2@5.0",
        "declined",
        "key",
        prompts=("who", "analytics", "close_declined"),
        key_meanings=("decline",),
    ),
    Scenario(
        "accept during a mandatory segment is not counted and asked again",
        lambda f, lang: "1@5.0,1",
        "granted",
        "key",
        prompts=("analytics", "analytics", "google", "ask_ga_linkage"),
        key_meanings=("early_accept", "accept"),
    ),
    Scenario(
        "silence re-prompts then none",
        lambda f, lang: "",
        "none",
        "timeout",
        prompts=(
            "ask_ga_linkage",
            "noinput_1",
            "ask_ga_linkage",
            "noinput_2",
            "ask_ga_linkage",
            "close_none",
        ),
        key_meanings=(),
    ),
    Scenario(
        "wrong keys then none after the cap",
        lambda f, lang: "5,7,3",
        "none",
        "invalid",
        # each wrong key barges into the next re-prompt at once (re-prompts take every key)
        prompts=("ask_ga_linkage", "nomatch_1", "nomatch_2", "close_none"),
        key_meanings=("invalid", "invalid", "invalid"),
    ),
    Scenario(
        "full notice then accept",
        lambda f, lang: "9,1",
        "granted",
        "key",
        prompts=("ask_ga_linkage", "details_controller", "details_processing", "ask_ga_linkage"),
        key_meanings=("full_notice", "accept"),
    ),
    Scenario(
        "repeat then decline",
        lambda f, lang: "0,2",
        "declined",
        "key",
        prompts=(
            "rights",
            "ask_ga_linkage",
            "who",
            "analytics",
            "google",
            "voluntary",
            "rights",
            "ask_ga_linkage",
        ),
        key_meanings=("repeat", "decline"),
    ),
    Scenario(
        "hang-up during the notice",
        lambda f, lang: "h@12.0",
        "none",
        "hangup",
        agistatus="HANGUP",
        prompts=("who", "analytics"),
        key_meanings=(),
        hung_up=True,
    ),
    Scenario(
        "hang-up during the question",
        lambda f, lang: f"h@{t_question(f, lang) + 1.0:.3f}",
        "none",
        "hangup",
        agistatus="HANGUP",
        prompts=("rights", "ask_ga_linkage"),
        hung_up=True,
    ),
    Scenario(
        "hang-up while waiting for the key",
        lambda f, lang: f"h@{t_wait(f, lang) + 2.0:.3f}",
        "none",
        "hangup",
        agistatus="HANGUP",
        prompts=("ask_ga_linkage",),
        hung_up=True,
    ),
    Scenario(
        "hang-up after the decision keeps the decision",
        lambda f, lang: "1,h",
        "granted",
        "key",
        agistatus="HANGUP",
        prompts=("ask_ga_linkage",),
        key_meanings=("accept",),
        hung_up=False,  # the record was written before the caller hung up
    ),
)


CONSENT_VARS = (
    "CONSENT_STATUS",
    "CONSENT_GA_LINKAGE",
    "CONSENT_REASON",
    "CONSENT_RECORD_ID",
    "CONSENT_FLOW",
    "CONSENT_NOTICE_SHA256",
)


def played_ids(result: SimResult, flow: Flow, lang: str) -> list[str]:
    by_audio = {audio_argument(p.audio[lang]): p.id for p in flow.all_prompts()}
    return [by_audio.get(e.file, e.file) for e in result.transcript if isinstance(e, PlayEntry)]


def is_subsequence(needle: tuple[str, ...], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(x == y for y in it) for x in needle)


def check_scenario(
    sc: Scenario, lang: str, flow: Flow, result: SimResult, ev: dict[str, Any] | None
) -> None:
    """The expectations of one scenario, the same for every transport."""
    v = result.variables
    assert result.agistatus == sc.agistatus
    assert v["CONSENT_STATUS"] == sc.status
    assert v["CONSENT_GA_LINKAGE"] == sc.status
    assert v["CONSENT_REASON"] == sc.reason
    assert v["CONSENT_FLOW"] == "call-tracking@1"
    assert v["CONSENT_NOTICE_SHA256"] == flow.notice_sha256[lang]
    for name in CONSENT_VARS:  # inherited by forwarded and dialled legs
        assert result.sim.inheritance[name] == 2, name
    played = played_ids(result, flow, lang)
    assert is_subsequence(sc.prompts, played), played
    # the evidence record exists, matches the variables and pins what was heard
    assert ev is not None and ev["record_id"] == v["CONSENT_RECORD_ID"]
    assert ev["status"] == sc.status and ev["reason"] == sc.reason
    assert ev["flow"]["language"] == lang and ev["flow"]["sha256"] == flow.source_sha256
    assert ev["hung_up"] == sc.hung_up
    if sc.key_meanings is not None:
        assert tuple(k["meaning"] for k in ev["keys"]) == sc.key_meanings
    audio = {p.id: p.audio_sha256[lang] for p in flow.all_prompts()}
    for play in ev["plays"]:
        assert play["audio_sha256"] == audio[play["prompt_id"]]
        done = play["endpos"] == play["samples"] and play["stopped_by"] is None
        assert play["completed"] == done
    if sc.status == "granted":
        assert ev["informed"] is True
    caller = result.sim.env.get("agi_callerid", "")
    assert caller and caller not in json.dumps(ev)
    assert ev["call"]["caller_pseudonym"] and len(ev["call"]["caller_pseudonym"]) == 64
