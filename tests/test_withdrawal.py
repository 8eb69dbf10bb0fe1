"""Withdrawal on the phone (R17): one key records it for the caller's pseudonym; gates close."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ivr.cli.simulate import SIMULATED_CALLER, simulate_call
from consent_ivr.engine import Call, SetVariables
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import load_flow
from consent_ivr.harness.asterisk import WavSoundCatalog, run_fastagi
from consent_ivr.lint.check import load_checked
from consent_ivr.lint.proof import prove
from consent_ivr.paths import flows_dir
from fastagi_kit import KEY, ServerThread
from fastagi_kit import gate_reason as gate
from storekit import store_url  # noqa: F401  (fixture: SQLite and PostgreSQL)

CALLER = "+49891234567"


@pytest.fixture(scope="module")
def withdrawal():
    return load_flow(flows_dir() / "withdrawal.yaml")


def call(srv: ServerThread, path: str, dtmf: str, caller: str = CALLER) -> dict[str, str]:
    host, port = srv.address
    r = run_fastagi(
        host, port, path, dtmf=dtmf, sounds=WavSoundCatalog(), agi_env={"agi_callerid": caller}
    )
    return dict(r.variables)


def test_one_key_withdraws_and_every_later_gate_closes(tmp_path: Path, store_url: str) -> None:  # noqa: F811
    with ServerThread(tmp_path, store_path=store_url) as srv:
        consent = call(srv, "call-tracking", "1")
        assert gate(srv, consent) == "granted"
        w = call(srv, "withdrawal", "1")
        assert w["CONSENT_WITHDRAWAL"] == "recorded"
        assert w["CONSENT_WITHDRAWAL_GA_LINKAGE"] == "recorded"
        assert "CONSENT_STATUS" not in w and "CONSENT_GA_LINKAGE" not in w  # grants nothing
        assert gate(srv, consent) == "withdrawn"
        # a grant given after the withdrawal is a new decision and opens the gate again
        again = call(srv, "call-tracking", "1")
        assert gate(srv, again) == "granted"
    store = open_store(store_url)
    try:
        assert store.is_withdrawn(KEY.pseudonym(CALLER) or "", "ga_linkage")
        record = store.get(w["CONSENT_RECORD_ID"])
        assert record is not None and record["kind"] == "withdrawal"
        assert record["status"] == "recorded" and record["outcomes"][0]["outcome"] == "recorded"
        assert store.verify().ok
    finally:
        store.close()


@pytest.mark.parametrize("dtmf,word", [("2", "cancelled"), ("", "none"), ("h@2", "none")])
def test_cancel_silence_or_hangup_record_no_withdrawal(
    tmp_path: Path,
    store_url: str,  # noqa: F811
    dtmf: str,
    word: str,
) -> None:
    with ServerThread(tmp_path, store_path=store_url) as srv:
        consent = call(srv, "call-tracking", "1")
        w = call(srv, "withdrawal", dtmf)
        assert w["CONSENT_WITHDRAWAL"] == word
        assert gate(srv, consent) == "granted"
    store = open_store(store_url)
    try:
        assert not store.is_withdrawn(KEY.pseudonym(CALLER) or "", "ga_linkage")
    finally:
        store.close()


def test_an_anonymous_caller_cannot_withdraw_by_phone(tmp_path: Path) -> None:
    with ServerThread(tmp_path) as srv:
        w = call(srv, "withdrawal", "1", caller="unknown")
    assert w["CONSENT_WITHDRAWAL"] == "error"
    assert w["CONSENT_WITHDRAWAL_GA_LINKAGE"] == "error"


def test_withdrawal_takes_no_more_key_presses_than_consent(withdrawal) -> None:
    consent = load_flow(flows_dir() / "call-tracking.yaml")
    assert withdrawal.choice.keys.accept == consent.choice.keys.accept
    for lang in ("de", "en"):
        c = simulate_call(consent, "1", language=lang)
        w = simulate_call(withdrawal, "1", language=lang)
        assert c.variables["CONSENT_STATUS"] == "granted"
        assert w.variables["CONSENT_WITHDRAWAL"] == "recorded"
        assert len(w.evidence["keys"]) == len(c.evidence["keys"]) == 1
        assert SIMULATED_CALLER not in str(w.evidence)


@pytest.mark.parametrize("lang", ["de", "en"])
def test_no_path_of_the_withdrawal_flow_sets_a_consent_variable(withdrawal, lang: str) -> None:
    result = prove(withdrawal, lang)
    assert result.violations == []  # confirmed only by the accept key, after the notice
    # and no action of any path touches CONSENT_STATUS or CONSENT_<PURPOSE>
    call = Call(withdrawal, lang)
    first = call.start()
    assert isinstance(first, SetVariables)
    names = {n for n, _v in first.values}
    assert names == {"CONSENT_WITHDRAWAL", "CONSENT_FLOW", "CONSENT_WITHDRAWAL_GA_LINKAGE"}


def test_the_loader_checks_kind_and_the_withdrawal_notice(tmp_path: Path, monkeypatch) -> None:
    text = (flows_dir() / "withdrawal.yaml").read_text()
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(flows_dir().parent / "sounds"))
    bad = tmp_path / "withdrawal.yaml"
    bad.write_text(text.replace("kind: withdrawal", "kind: withdraw"))
    with pytest.raises(FlowError, match="unknown flow kind 'withdraw'; expected consent or"):
        load_flow(bad, check_audio=False)
    bad.write_text(text.replace("covers: [withdrawal]", "covers: [purposes]"))
    with pytest.raises(
        FlowError, match=r"R9 error: the first layer \(notice\) does not cover: withdrawal"
    ):
        load_checked(bad)


def test_the_engine_less_error_outcome_of_a_withdrawal_flow_leaves_consent_alone(
    withdrawal,
) -> None:
    # start-up failures and bugs set the error outcome without the engine; on a withdrawal
    # call that must be CONSENT_WITHDRAWAL*, never the consent variables the caller has
    from consent_ivr.protocol.session import error_variables

    names = [name for name, _value in error_variables(withdrawal)]
    assert names[0] == "CONSENT_WITHDRAWAL"
    assert not any(n == "CONSENT_STATUS" or n == "CONSENT_GA_LINKAGE" for n in names)
    assert dict(error_variables(withdrawal))["CONSENT_WITHDRAWAL_GA_LINKAGE"] == "error"
