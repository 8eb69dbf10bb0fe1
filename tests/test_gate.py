"""The tracking gate (R15): only a durable, current, unwithdrawn grant opens it — API and AGI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.evidence.store import open_store
from consent_ivr.harness.asterisk import (
    SimulatedAsterisk,
    WavSoundCatalog,
    run_fastagi,
    run_process,
)
from consent_ivr.paths import agi_script
from consent_ivr.protocol.codec import parse_200
from consent_ivr.protocol.session import Command
from consent_ivr.tracking.gate import (
    CheckGate,
    GateChecked,
    GateClosed,
    GateDecision,
    GateStep,
    check_gate,
    guarded,
    require_open,
)
from fastagi_kit import KEY, ServerThread
from storekit import store_url  # noqa: F401  (fixture: SQLite and PostgreSQL)

CALLER = "+49891234567"


def consent_call(srv: ServerThread, dtmf: str) -> dict[str, str]:
    host, port = srv.address
    r = run_fastagi(
        host,
        port,
        "call-tracking",
        dtmf=dtmf,
        sounds=WavSoundCatalog(),
        agi_env={"agi_callerid": CALLER},
    )
    return {k: v for k, v in r.variables.items() if k.startswith("CONSENT_")}


def gate_sim(variables: dict[str, str], **options: Any) -> SimulatedAsterisk:
    sim = SimulatedAsterisk(
        network=options.pop("network", True),
        answered=True,
        env={"agi_callerid": CALLER},
        **options,
    )
    for name, value in variables.items():
        sim.set_variable("__" + name, value)
    return sim


def gate_over_fastagi(srv: ServerThread, variables: dict[str, str]) -> dict[str, str]:
    host, port = srv.address
    sim = gate_sim(variables, network_script="gate?purpose=ga_linkage")
    r = run_fastagi(host, port, "gate?purpose=ga_linkage", sim=sim)
    return {k: v for k, v in r.variables.items() if k.startswith("CONSENT_GATE_")}


@pytest.fixture
def server(tmp_path: Path, store_url: str):  # noqa: F811
    with ServerThread(tmp_path, store_path=store_url) as srv:
        yield srv


def test_a_recorded_grant_opens_the_gate(server: ServerThread) -> None:
    variables = consent_call(server, "1")
    assert gate_over_fastagi(server, variables) == {
        "CONSENT_GATE_GA_LINKAGE": "open",
        "CONSENT_GATE_GA_LINKAGE_REASON": "granted",
    }


@pytest.mark.parametrize(
    "dtmf,reason", [("2", "variable=declined"), ("", "variable=none"), ("h@3", "variable=none")]
)
def test_anything_but_granted_keeps_it_closed(server: ServerThread, dtmf: str, reason: str) -> None:
    gate = gate_over_fastagi(server, consent_call(server, dtmf))
    assert gate == {"CONSENT_GATE_GA_LINKAGE": "closed", "CONSENT_GATE_GA_LINKAGE_REASON": reason}


def test_a_forged_variable_without_a_record_keeps_it_closed(server: ServerThread) -> None:
    variables = consent_call(server, "1")
    variables["CONSENT_RECORD_ID"] = "0" * 32  # set by hand in a dialplan, no evidence behind it
    assert gate_over_fastagi(server, variables)["CONSENT_GATE_GA_LINKAGE_REASON"] == "no_record"
    del variables["CONSENT_RECORD_ID"]
    assert gate_over_fastagi(server, variables)["CONSENT_GATE_GA_LINKAGE_REASON"] == "no_record"
    assert gate_over_fastagi(server, {})["CONSENT_GATE_GA_LINKAGE_REASON"] == "variable=unset"


def test_a_withdrawal_after_the_grant_closes_it(server: ServerThread, store_url: str) -> None:  # noqa: F811
    variables = consent_call(server, "1")
    store = open_store(store_url)
    try:
        store.withdraw({KEY.key_id: KEY.pseudonym(CALLER) or ""}, "ga_linkage", source="test")
    finally:
        store.close()
    gate = gate_over_fastagi(server, variables)
    assert gate["CONSENT_GATE_GA_LINKAGE"] == "closed"
    assert gate["CONSENT_GATE_GA_LINKAGE_REASON"] == "withdrawn"


def test_a_notice_that_is_no_longer_current_closes_it(server: ServerThread) -> None:
    variables = consent_call(server, "1")
    store = open_store(str(server.config.store_path))
    try:
        decision = check_gate(
            store,
            purpose="ga_linkage",
            channel_value="granted",
            record_id=variables["CONSENT_RECORD_ID"],
            current_notice_sha256="f" * 64,  # the notice in force has changed since the call
        )
    finally:
        store.close()
    assert decision == GateDecision(False, "notice_outdated", variables["CONSENT_RECORD_ID"])
    # a flow the server no longer serves has no current notice at all
    variables["CONSENT_FLOW"] = "retired-flow@1"
    gate = gate_over_fastagi(server, variables)
    assert gate["CONSENT_GATE_GA_LINKAGE_REASON"] == "notice_outdated"


class BrokenStore:
    def get(self, record_id: str) -> dict[str, Any] | None:
        raise OSError("disk on fire")

    def is_withdrawn(self, pseudonym: str, purpose: str, *, after: str = "") -> bool:
        raise AssertionError("not reached")


def test_a_store_that_cannot_answer_keeps_it_closed_and_never_raises() -> None:
    d = check_gate(BrokenStore(), purpose="ga_linkage", channel_value="granted", record_id="r1")
    assert not d.open and d.reason.startswith("store_error: OSError")


def test_guard_refuses_to_run_a_step_when_closed() -> None:
    ran: list[str] = []
    closed = GateDecision(False, "variable=declined", None)

    @guarded(lambda: closed, "ga_linkage")
    def send_to_google(event: str) -> None:
        ran.append(event)

    with pytest.raises(GateClosed, match="variable=declined"):
        send_to_google("lead")
    assert ran == []

    @guarded(lambda: GateDecision(True, "granted", "r1"), "ga_linkage")
    def send_allowed(event: str) -> None:
        ran.append(event)

    send_allowed("lead")
    assert ran == ["lead"]
    require_open(GateDecision(True, "granted", "r1"))


def test_the_gate_over_process_agi(server: ServerThread, store_url: str, tmp_path: Path) -> None:  # noqa: F811
    variables = consent_call(server, "1")
    sim = gate_sim(variables, network=False, request=str(agi_script()), args=["gate", "ga_linkage"])
    r = run_process(
        [sys.executable, str(agi_script()), "gate", "ga_linkage"],
        sim=sim,
        env={
            "CONSENT_IVR_STORE": store_url,
            "CONSENT_IVR_HMAC_KEY": KEY.secret.decode(),
            "CONSENT_IVR_CACHE": "off",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert r.stderr == b"" and r.exit_code == 0
    assert r.variables["CONSENT_GATE_GA_LINKAGE"] == "open"
    assert r.sim.inheritance["CONSENT_GATE_GA_LINKAGE"] == 2


def test_no_flow_may_be_called_like_a_route(tmp_path: Path) -> None:
    from consent_ivr.flow.diagnostics import FlowError
    from consent_ivr.flow.loader import load_flow
    from consent_ivr.paths import flows_dir
    from consent_ivr.transports.routes import ROUTES

    text = (flows_dir() / "call-tracking.yaml").read_text()
    assert ROUTES
    for route in ROUTES:
        path = tmp_path / f"{route}.yaml"
        path.write_text(text.replace("flow: call-tracking", f"flow: {route}", 1))
        with pytest.raises(FlowError, match=f"flow id '{route}' is the name of a built-in AGI"):
            load_flow(path, check_audio=False)


def test_the_gate_step_reads_three_variables_asks_for_one_check_and_sets_the_result() -> None:
    channel = {
        "CONSENT_GA_LINKAGE": "granted",
        "CONSENT_RECORD_ID": "r1",
        "CONSENT_FLOW": "call-tracking@3",
    }
    step = GateStep("ga_linkage")
    op = step.start()
    read = []
    while isinstance(op, Command):
        assert op.words == ("GET", "VARIABLE")
        (name,) = op.args
        read.append(name)
        op = step.on_response(parse_200(f"200 result=1 ({channel[name]})"))
    assert read == list(channel)
    assert op == CheckGate("ga_linkage", "granted", "r1", flow_id="call-tracking")
    decision = GateDecision(True, "granted", "r1")
    op = step.on_decision(decision)
    written = []
    while isinstance(op, Command):
        assert op.words == ("SET", "VARIABLE")
        written.append(op.args)
        op = step.on_response(parse_200("200 result=1"))
    assert written == [
        ("__CONSENT_GATE_GA_LINKAGE_REASON", "granted"),
        ("__CONSENT_GATE_GA_LINKAGE", "open"),
    ]
    assert op == GateChecked(decision)


def test_a_gone_channel_reads_as_unset_and_gets_no_more_gate_variables() -> None:
    step = GateStep("ga_linkage")
    step.start()
    step.on_response(parse_200("200 result=0"))  # CONSENT_GA_LINKAGE is not set
    step.on_response(None)  # the channel went away: every later read is unset too
    check = step.on_response(None)
    assert check == CheckGate("ga_linkage", None, None, flow_id="")
    assert isinstance(check, CheckGate)
    decision = check.decide(BrokenStore(), set())
    assert (decision.open, decision.reason) == (False, "variable=unset")
    first = step.on_decision(decision)
    assert isinstance(first, Command) and first.words == ("SET", "VARIABLE")
    assert step.on_response(None) == GateChecked(decision)  # no second SET VARIABLE


def test_the_gate_step_refuses_a_purpose_that_is_not_a_variable_name() -> None:
    with pytest.raises(ValueError):
        GateStep("ga linkage")
