"""`consent-ivr graph`: the picture of a flow is the engine's behaviour, collapsed — its arrows
change when the flow's behaviour changes, the committed pictures are what it draws today, and
every error is one line."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consent_ivr.cli.main import main
from consent_ivr.flow.loader import load_flow, load_source
from consent_ivr.flow.model import Flow
from consent_ivr.lint.check import proof
from consent_ivr.lint.flowgraph import ANY, RECALL, RETURNING, FlowGraph, derive

ROOT = Path(__file__).resolve().parents[1]
PICTURES = ROOT / "docs" / "images"


def picture(suffix: str) -> Path:
    return PICTURES / f"call-tracking.de{suffix}"


def graph(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["graph", *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tracking() -> Flow:
    return load_flow(ROOT / "flows" / "call-tracking.yaml")


@pytest.fixture(scope="module")
def tracking_de(tracking: Flow) -> FlowGraph:
    return derive(tracking, "de")


def into(g: FlowGraph, target: str) -> list[tuple[str, str]]:
    return [(e.source, e.label) for e in g.edges if e.target == target]


def test_only_the_accept_key_leads_to_granted_and_too_early_it_lets_the_notice_go_on(
    tracking_de: FlowGraph,
) -> None:
    # granted: the accept key, or an honoured grant kept on its reminder
    assert set(into(tracking_de, "GRANTED")) == {
        (ANY, "1 agree (once the notice was heard)"),
        ("reminder_granted", "1 or silence: keep"),
    }
    assert (ANY, "2 decline") in into(tracking_de, "DECLINED")
    titles = {g.id: g.title for g in tracking_de.groups}
    assert "at each: 1 too early (the notice not yet heard): the prompt goes on" in titles["NOTICE"]
    assert "1 too early" in titles["FULL_NOTICE"] and "1 too early" not in titles["QUESTION"]


def test_every_prompt_and_every_outcome_the_engine_reaches_is_a_node(
    tracking: Flow, tracking_de: FlowGraph
) -> None:
    ids = {n.id for n in tracking_de.nodes}
    played = {p.id for p in tracking.all_prompts() if not p.id.startswith("close_")}
    assert played <= ids
    ends = proof(tracking, "de").terminal_statuses  # granted, declined, none, error
    assert {status.upper() for status in ends} <= ids
    assert "HUNGUP" in ids and "PARTIAL" not in ids  # one question: no partial outcome
    assert tracking_de.states == proof(tracking, "de").states


def test_silence_and_wrong_keys_lead_through_their_re_prompts_to_none_at_the_caps(
    tracking_de: FlowGraph,
) -> None:
    ask = "ask_ga_linkage"
    edges = {(e.source, e.target, e.label) for e in tracking_de.edges}
    assert (ask, "noinput_1", "silence (1st)") in edges
    assert (ask, "noinput_2", "silence (2nd)") in edges
    assert (ask, "NONE", "silence, past the caps (silence 2, 3 in all)") in edges
    assert (ask, "nomatch_1", "wrong key (1st)") in edges
    assert ("QUESTION", "NONE", "wrong key, past the caps (wrong key 2, 3 in all)") in edges
    assert all((r, ask, "") in edges for r in ("noinput_1", "noinput_2", "nomatch_1", "nomatch_2"))
    assert (ANY, "HUNGUP", "hang-up") in edges
    assert ("DECISION", "ERROR", "the record cannot be written") in edges


def test_the_example_flow_draws_as_a_readable_picture(tracking_de: FlowGraph) -> None:
    assert tracking_de.states > 2000  # thousands of engine states ...
    assert len(tracking_de.nodes) <= 22 and len(tracking_de.edges) <= 38  # ... a picture
    assert not any("0th" in e.label for e in tracking_de.edges)


def test_the_counts_the_docs_state_are_what_the_engine_draws(tracking_de: FlowGraph) -> None:
    text = (ROOT / "docs" / "flow-language.md").read_text(encoding="utf-8")
    stated = re.search(
        r"call-tracking flow's ([\d,]+) engine states\s+become (\d+) nodes\s+and (\d+) arrows",
        text,
    )
    assert stated, "docs/flow-language.md no longer states the example picture's counts"
    states, nodes, arrows = (int(n.replace(",", "")) for n in stated.groups())
    assert (states, nodes, arrows) == (
        tracking_de.states,
        len(tracking_de.nodes),
        len(tracking_de.edges),
    ), "update the counts in docs/flow-language.md, Seeing a flow"


def test_the_look_up_is_one_decision_point_with_three_ways_on(tracking_de: FlowGraph) -> None:
    assert tracking_de.node(RECALL).kind == "lookup"
    frame = next(g for g in tracking_de.groups if g.id == RETURNING)
    assert frame.members == (RECALL, "reminder_granted", "reminder_declined")
    assert frame.title.startswith("returning caller (look-up while who plays)")
    assert ("who", "played out, no key yet") in into(tracking_de, RECALL)
    ways = {(e.target, e.label) for e in tracking_de.edges if e.source == RECALL}
    assert ways == {
        ("reminder_granted", "honoured: granted earlier, this notice"),
        ("reminder_declined", "honoured: declined earlier, this notice"),
        ("analytics", "nothing to honour (none found, another notice, a failed look-up)"),
    }
    # a hang-up during the look-up is the hang-up at any prompt, not an arrow of its own
    assert not any(e.source == RECALL and e.kind == "hangup" for e in tracking_de.edges)


def test_on_the_granted_reminder_only_the_decline_key_leads_to_declined(
    tracking_de: FlowGraph,
) -> None:
    out = {(e.target, e.label) for e in tracking_de.edges if e.source == "reminder_granted"}
    assert out == {
        ("GRANTED", "1 or silence: keep"),
        ("DECLINED", "2 withdraw: recorded as declined"),
    }
    out = {(e.target, e.label) for e in tracking_de.edges if e.source == "reminder_declined"}
    assert out == {
        ("DECLINED", "2 or silence: keep"),
        ("analytics", "1 change: the rest of the notice, then the question"),
    }


def test_the_honoured_grant_reaches_granted_without_the_question(tracking_de: FlowGraph) -> None:
    # from the look-up on, the ways a caller who keeps the grant goes: no prompt of the question
    own = {e.source: e.target for e in tracking_de.edges if e.label.endswith(": keep")}
    assert own["reminder_granted"] == "GRANTED"
    frame = next(g for g in tracking_de.groups if g.id == RETURNING)
    assert "0 repeat: the reminder again (3 replays in all)" in frame.title
    # layer 2 heard from a reminder: its repeat key returns to the reminder too
    assert "at each, and in the full notice heard from one: 0 repeat: the reminder" in frame.title
    assert ("details_processing", "played: back where the caller was") in into(
        tracking_de, RETURNING
    )


def test_without_the_returning_block_there_is_no_look_up(tracking: Flow) -> None:
    g = derive(tracking._replace(returning=None), "de")
    ids = {n.id for n in g.nodes}
    assert RECALL not in ids and "reminder_granted" not in ids
    assert RETURNING not in {grp.id for grp in g.groups}
    assert ("who", "") not in into(g, "NONE")  # the look-up is never taken for "none"
    assert len(g.nodes) == 19 and len(g.edges) == 26


def test_a_swapped_accept_key_changes_the_arrows(tracking: Flow) -> None:
    keys = tracking.choice.keys._replace(accept="3")
    swapped = derive(tracking._replace(choice=tracking.choice._replace(keys=keys)), "de")
    assert (ANY, "3 agree (once the notice was heard)") in into(swapped, "GRANTED")
    assert ("reminder_granted", "3 or silence: keep") in into(swapped, "GRANTED")
    assert "3 too early" in next(g.title for g in swapped.groups if g.id == "NOTICE")
    assert not any(e.label.startswith("1 ") for e in swapped.edges)


def test_without_a_full_notice_there_is_no_way_to_it(tracking: Flow) -> None:
    keys = tracking.choice.keys._replace(full_notice=None)
    flow = tracking._replace(full_notice=(), choice=tracking.choice._replace(keys=keys))
    g = derive(flow, "de")
    assert "FULL_NOTICE" not in {grp.id for grp in g.groups}
    assert not any("all information" in e.label or "back where" in e.label for e in g.edges)
    assert {n.id for n in g.nodes}.isdisjoint({"details_controller", "details_processing"})


def test_a_lower_silence_cap_removes_the_second_silence_re_prompt(tracking: Flow) -> None:
    caps = tracking.choice.caps._replace(noinput=1)
    g = derive(tracking._replace(choice=tracking.choice._replace(caps=caps)), "de")
    assert "noinput_2" not in {n.id for n in g.nodes}
    assert ("ask_ga_linkage", "silence, past the caps (silence 1, 3 in all)") in into(g, "NONE")


def test_the_withdrawal_flow_says_withdraw_and_cancel() -> None:
    g = derive(load_flow(ROOT / "flows" / "withdrawal.yaml"), "en")
    assert into(g, "GRANTED") == [(ANY, "1 withdraw (once the notice was heard)")]
    assert into(g, "DECLINED") == [(ANY, "2 cancel")]
    assert g.node("GRANTED").title == "recorded" and g.node("DECLINED").title == "cancelled"
    # one silence re-prompt under a cap of two: it is played for the 1st and the 2nd silence
    assert ("ask_withdraw_ga_linkage", "silence (1st, 2nd)") in into(g, "noinput_1")
    assert len(g.nodes) <= 14 and len(g.edges) <= 18


def test_a_flow_without_audio_is_drawn_with_estimated_lengths(tmp_path: Path) -> None:
    copy = tmp_path / "withdrawal.yaml"
    shutil.copy(ROOT / "flows" / "withdrawal.yaml", copy)
    loaded = load_source(copy, sounds_root=tmp_path / "no-sounds")
    assert loaded.flow is not None and not loaded.ok  # R13: no audio
    g = derive(loaded.flow, "de")
    prompts = [n for n in g.nodes if n.kind == "prompt"]
    assert prompts and all(" · ~" in n.detail for n in prompts)
    with_audio = derive(load_flow(ROOT / "flows" / "withdrawal.yaml"), "de")
    assert not any("~" in n.detail for n in with_audio.nodes)


def test_reminders_without_audio_get_estimated_lengths_too(tmp_path: Path) -> None:
    copy = tmp_path / "call-tracking.yaml"
    shutil.copy(ROOT / "flows" / "call-tracking.yaml", copy)
    loaded = load_source(copy, sounds_root=tmp_path / "no-sounds")
    assert loaded.flow is not None and loaded.flow.returning is not None
    g = derive(loaded.flow, "de")
    for reminder in ("reminder_granted", "reminder_declined"):
        detail = g.node(reminder).detail
        assert detail.startswith(f"{reminder} · ~") and not detail.endswith(" ~0.0 s"), detail


def test_the_committed_pictures_are_what_the_engine_draws_today(tmp_path: Path) -> None:
    for suffix in (".dot", ".mmd"):
        fresh = tmp_path / f"now{suffix}"
        status, _out, err = graph("call-tracking", "--lang", "de", "-o", str(fresh))
        assert status == 0, err
        committed = picture(suffix).read_text(encoding="utf-8")
        assert fresh.read_text(encoding="utf-8") == committed, (
            f"{picture(suffix).relative_to(ROOT)} is out of date: run make pictures"
        )
    assert picture(".png").read_bytes().startswith(b"\x89PNG")


def test_svg_and_png_are_drawn_by_graphviz(tmp_path: Path) -> None:
    assert shutil.which("dot"), "Graphviz's dot is needed (make test installs it)"
    status, out, err = graph("withdrawal", "-o", str(tmp_path / "w.svg"))
    assert status == 0, err
    assert "wrote" in out and "<svg" in (tmp_path / "w.svg").read_text(encoding="utf-8")
    status, _out, err = graph("withdrawal", "--lang", "en", "-o", str(tmp_path / "w.png"))
    assert status == 0, err
    assert (tmp_path / "w.png").read_bytes().startswith(b"\x89PNG")


def test_without_o_the_dot_text_goes_to_stdout() -> None:
    status, out, _err = graph("withdrawal")
    assert status == 0 and out.startswith('digraph "withdrawal@1"')


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (("call-tracking", "-o", "flow.jpg"), 2, "unknown format '.jpg'; expected one of .svg"),
        (("call-tracking", "--lang", "fr"), 2, "does not serve language 'fr'; expected one of de"),
        (("no-such-flow",), 2, "no flow named 'no-such-flow'"),
        (("tests/broken-flows/missing-field.yaml",), 2, "missing-field.yaml:"),
    ],
)
def test_bad_input_is_one_line_of_error(args: tuple[str, ...], status: int, expected: str) -> None:
    got, out, err = graph(*args)
    assert got == status and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_missing_dot_program_is_one_line_of_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", "graph", "withdrawal", "-o", "w.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(tmp_path), "CONSENT_IVR_FLOWS": str(ROOT / "flows")},
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "consent-ivr graph: PNG needs Graphviz's dot program, which is not installed"
        " (Debian: apt-get install graphviz; or write .dot or .mmd)"
    ]
    assert not (tmp_path / "w.png").exists()


def test_a_prompt_named_like_an_outcome_stays_its_own_node(tracking: Flow) -> None:
    first = tracking.notice[0]._replace(id="none")
    g = derive(tracking._replace(notice=(first, *tracking.notice[1:])), "de")
    assert g.node("none").title == "notice 1/5" and g.node("NONE").kind == "outcome"
    assert ("START", "answered") in into(g, "none")
